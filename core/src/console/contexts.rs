//! Console contexts (the model: kubeconfig contexts): named sets of daemons,
//! each with its URL and where its admin token comes from, and the CA that
//! vouches for their certificates. One file serves `dandelion-console
//! --context NAME` and, later, the client commands; `dandelion up` writes one
//! for its local network.
//!
//! ```toml
//! [[context]]
//! name = "prod"
//! ca_file = "/etc/dandelion/ca.pem"          # optional: a private CA
//!
//! [[context.daemon]]
//! name = "entrance"
//! url = "https://entrance.example.net:7070"
//! token_file = "/home/me/.config/dandelion/entrance.token"
//!
//! [[context.daemon]]
//! name = "publisher"
//! url = "https://publisher.example.net:7072"
//! token_env = "PROD_PUBLISHER_TOKEN"         # or from the environment
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `dandelion up` writes into its base data directory (beside
/// `network.json`).
pub const CONTEXTS_FILE: &str = "contexts.toml";

/// The context `dandelion up` writes for its network.
pub const LOCAL_CONTEXT: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read the contexts file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("contexts file {path}: {cause}")]
    Parse { path: PathBuf, cause: String },
    #[error("no context named `{name}`: {tried}; name a file with --contexts")]
    NotFound { name: String, tried: String },
    #[error("context `{context}` has no {role} (give one of its daemons role = \"{role}\")")]
    NoRole { context: String, role: String },
    #[error("no context named `{name}` in {path} (it has: {known})")]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    #[serde(default, rename = "context")]
    pub contexts: Vec<Context>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub name: String,
    /// PEM bundle of CA certificates the context's daemons are vouched for by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, rename = "daemon")]
    pub daemons: Vec<Daemon>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// What its tab is called.
    pub name: String,
    pub url: String,
    /// `entrance`, `publisher` or `box`: which daemon client commands use
    /// (`push` the publisher, `boxes` the entrance). Without it, a daemon
    /// named after the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A file holding its admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding its admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl Contexts {
    pub fn load(path: &Path) -> Result<Contexts, ContextError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ContextError::Read {
            path: path.to_owned(),
            cause,
        })?;
        toml::from_str(&text).map_err(|e| ContextError::Parse {
            path: path.to_owned(),
            cause: e.to_string().trim().replace('\n', " "),
        })
    }

    /// The context named `name`; the error lists the ones there are.
    pub fn get(&self, name: &str, path: &Path) -> Result<&Context, ContextError> {
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ContextError::Unknown {
                name: name.to_owned(),
                path: path.to_owned(),
                known: match self.contexts.is_empty() {
                    true => "none".to_owned(),
                    false => self
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            })
    }

    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

impl Context {
    /// Every TLS client of this process trusts the context's CA from now on.
    pub fn trust(&self) -> Result<(), ContextError> {
        match &self.ca_file {
            None => Ok(()),
            Some(ca) => crate::tls::trust(ca).map_err(|e| ContextError::Parse {
                path: ca.clone(),
                cause: format!("context `{}`'s ca_file: {e}", self.name),
            }),
        }
    }

    /// The daemon client commands use for `role`: the first whose `role` is
    /// it, else the first named after it.
    pub fn daemon_for(&self, role: &str) -> Result<&Daemon, ContextError> {
        self.daemons
            .iter()
            .find(|d| d.role.as_deref() == Some(role))
            .or_else(|| self.daemons.iter().find(|d| d.name == role))
            .ok_or_else(|| ContextError::NoRole {
                context: self.name.clone(),
                role: role.to_owned(),
            })
    }
}

/// The context `name`: from `explicit` when given (an error there is final),
/// else the first of [`default_path`] and `data_dir/contexts.toml` that has it.
/// Its CA is not trusted yet: see [`Context::trust`].
pub fn find(explicit: Option<&Path>, data_dir: &Path, name: &str) -> Result<Context, ContextError> {
    let context = match explicit {
        Some(path) => Contexts::load(path)?.get(name, path)?.clone(),
        None => {
            let mut tried = Vec::new();
            let mut found = None;
            for path in default_path()
                .into_iter()
                .chain([data_dir.join(CONTEXTS_FILE)])
            {
                if !path.exists() {
                    tried.push(format!("{} (absent)", path.display()));
                    continue;
                }
                match Contexts::load(&path)?.get(name, &path) {
                    Ok(context) => {
                        found = Some(context.clone());
                        break;
                    }
                    Err(e) => tried.push(e.to_string()),
                }
            }
            found.ok_or_else(|| ContextError::NotFound {
                name: name.to_owned(),
                tried: tried.join("; "),
            })?
        }
    };
    Ok(context)
}

impl Daemon {
    /// Its admin token, or why there is none (a file that cannot be read, a
    /// variable that is not set), for its tab to say.
    pub fn token(&self) -> Result<String, String> {
        if let Some(path) = &self.token_file {
            return std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("cannot read its token file {}: {e}", path.display()));
        }
        if let Some(var) = &self.token_env {
            return std::env::var(var)
                .map(|t| t.trim().to_owned())
                .map_err(|_| format!("its token variable {var} is not set"));
        }
        Err("no token_file or token_env given for it".to_owned())
    }
}

/// Where contexts are kept when no file is named: `$XDG_CONFIG_HOME` (else
/// `~/.config`) `/dandelion/contexts.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("dandelion").join(CONTEXTS_FILE))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = r#"
[[context]]
name = "prod"
ca_file = "/etc/dandelion/ca.pem"

[[context.daemon]]
name = "entrance"
url = "https://entrance.example.net:7070"
token_file = "/nonexistent/entrance.token"

[[context.daemon]]
name = "publisher"
url = "https://publisher.example.net:7072"
token_env = "DANDELION_TEST_SURELY_UNSET_TOKEN"

[[context]]
name = "lab"
"#;

    #[test]
    fn a_context_names_its_daemons_and_where_each_token_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTEXTS_FILE);
        std::fs::write(&path, EXAMPLE).unwrap();
        let all = Contexts::load(&path).unwrap();
        let prod = all.get("prod", &path).unwrap();
        assert_eq!(prod.daemons.len(), 2);
        assert_eq!(
            prod.ca_file.as_deref(),
            Some(Path::new("/etc/dandelion/ca.pem"))
        );
        let missing = prod.daemons[0].token().unwrap_err();
        assert!(missing.contains("/nonexistent/entrance.token"), "{missing}");
        let unset = prod.daemons[1].token().unwrap_err();
        assert!(
            unset.contains("DANDELION_TEST_SURELY_UNSET_TOKEN"),
            "{unset}"
        );
        let err = all.get("staging", &path).unwrap_err().to_string();
        assert!(
            err.contains("no context named `staging`") && err.contains("prod, lab"),
            "{err}"
        );
        // What `up` writes reads back the same.
        let again: Contexts = toml::from_str(&all.to_toml().unwrap()).unwrap();
        assert_eq!(again, all);
    }

    #[test]
    fn a_typo_is_an_error_naming_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTEXTS_FILE);
        std::fs::write(&path, "[[context]]\nname = \"x\"\n[[context.daemon]]\nname = \"e\"\nurl = \"https://e\"\ntoken_fil = \"/t\"\n").unwrap();
        let err = Contexts::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("token_fil"),
            "{err}"
        );
    }
}
