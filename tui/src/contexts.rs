//! Opening a console context (`--context NAME`, `:context NAME`): its daemons'
//! URLs and each one's own token, its CA trusted. File reading happens here,
//! at the edge; [`crate::app::App::open_context`] only swaps the tabs.

use std::path::PathBuf;

use dandelion_core::console::contexts;

use crate::app::Tokens;

/// Where contexts are looked up: `--contexts` when given, else the default
/// file and the data directory's (see [`contexts::find`]).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub explicit: Option<PathBuf>,
    pub data_dir: PathBuf,
}

/// The daemons of context `name` and their tokens. A daemon whose token
/// cannot be read still gets its tab, which shows the daemon's refusal; a CA
/// that cannot be read is logged, and the tabs say their certificates are
/// not trusted.
pub fn open(source: &Source, name: &str) -> anyhow::Result<(Vec<String>, Tokens)> {
    let context = contexts::find(source.explicit.as_deref(), &source.data_dir, name)?;
    if let Err(e) = context.trust() {
        tracing::warn!("{e}");
    }
    let mut tokens = Tokens::default();
    let mut urls = Vec::new();
    for daemon in &context.daemons {
        dandelion_core::console::console_url(&daemon.url)
            .map_err(|e| anyhow::anyhow!("context `{name}`, daemon `{}`: {e}", daemon.name))?;
        match daemon.token() {
            Ok(token) => {
                tokens
                    .by_url
                    .insert(daemon.url.trim_end_matches('/').to_owned(), token);
            }
            Err(why) => tracing::warn!(daemon = %daemon.name, "no admin token: {why}"),
        }
        urls.push(daemon.url.clone());
    }
    Ok((urls, tokens))
}
