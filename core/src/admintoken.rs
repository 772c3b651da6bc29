//! A daemon's admin token: the bearer its operators and consoles present.
//!
//! It lives in a file: one the operator provisions (`admin_token_file`, so
//! several daemons and the console can be given tokens from one secret store),
//! or else `admin.token` in the data directory, generated on first start. Either
//! file is read again when it changes or on SIGHUP, so a token is rotated
//! without a restart; a rotated file that cannot be read keeps the token in use.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use crate::secrets::{self, SecretError};

#[derive(Debug)]
pub struct AdminToken {
    path: PathBuf,
    provisioned: bool,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    token: String,
    /// The file's modification time and length when `token` was read (or when
    /// a failed read was last attempted), to notice a change cheaply.
    seen: Option<(SystemTime, u64)>,
}

impl AdminToken {
    /// Loads the token from `provisioned` (which must exist: a missing or
    /// unreadable file is an error naming it), or from the data directory's
    /// `admin.token`, creating it. The bool says whether it was created now.
    pub fn open(
        data_dir: &Path,
        provisioned: Option<&Path>,
    ) -> Result<(AdminToken, bool), SecretError> {
        let (path, token, created) = match provisioned {
            Some(path) => (path.to_owned(), secrets::read_token_file(path)?, false),
            None => {
                let path = secrets::admin_token_path(data_dir);
                let (token, created) = secrets::load_or_create(&path, || secrets::random_hex(32))?;
                (path, token, created)
            }
        };
        let seen = stamp(&path);
        Ok((
            AdminToken {
                path,
                provisioned: provisioned.is_some(),
                current: RwLock::new(Loaded { token, seen }),
            },
            created,
        ))
    }

    /// The file the token is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the operator provisioned the file (`admin_token_file`).
    pub fn provisioned(&self) -> bool {
        self.provisioned
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let loaded = self.current.read().unwrap_or_else(|p| p.into_inner());
        crate::tokens::matches(presented, &loaded.token)
    }

    /// Reads the file again when it changed since the last read (or always,
    /// with `force`, as on SIGHUP). `Ok(true)` when a token was loaded; on an
    /// error the token in use stays, and the same file is not tried again until
    /// it changes once more.
    pub fn reload(&self, force: bool) -> Result<bool, SecretError> {
        let now = stamp(&self.path);
        {
            let loaded = self.current.read().unwrap_or_else(|p| p.into_inner());
            if !force && loaded.seen == now {
                return Ok(false);
            }
        }
        let read = match self.provisioned {
            true => secrets::read_token_file(&self.path),
            false => secrets::read_secret(&self.path),
        };
        let mut loaded = self.current.write().unwrap_or_else(|p| p.into_inner());
        loaded.seen = now;
        let token = read?;
        loaded.token = token;
        Ok(true)
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_provisioned_token_is_used_rotated_and_kept_when_the_new_file_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("entrance.token");
        std::fs::write(&file, "first-token-0123456789\n").unwrap();
        let (token, created) = AdminToken::open(dir.path(), Some(&file)).unwrap();
        assert!(!created);
        assert!(token.matches("first-token-0123456789"));
        assert!(
            !secrets::admin_token_path(dir.path()).exists(),
            "nothing generated"
        );

        std::fs::write(&file, "second-token-longer\n").unwrap();
        assert!(token.reload(false).unwrap());
        assert!(token.matches("second-token-longer") && !token.matches("first-token-0123456789"));
        assert!(!token.reload(false).unwrap(), "unchanged: not read again");

        std::fs::write(&file, "   \n").unwrap();
        assert!(token.reload(true).is_err());
        assert!(
            token.matches("second-token-longer"),
            "a bad file keeps the token"
        );
    }

    #[test]
    fn a_missing_provisioned_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope.token");
        let err = AdminToken::open(dir.path(), Some(&file))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.token"), "{err}");
        assert!(!secrets::admin_token_path(dir.path()).exists());
    }

    #[test]
    fn without_a_file_one_is_generated_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (token, created) = AdminToken::open(dir.path(), None).unwrap();
        assert!(created);
        let written = std::fs::read_to_string(secrets::admin_token_path(dir.path())).unwrap();
        assert!(token.matches(written.trim()));
        assert_eq!(token.path(), secrets::admin_token_path(dir.path()));
    }
}
