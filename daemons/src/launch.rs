//! What every daemon binary does before and around its role: load the layered
//! configuration, start the runtime and logging, run until SIGTERM or SIGINT.
//! Shared by `dandelion` (every role) and `dandelion-box` (the box alone).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use dandelion_core::config::{self, Config};
use dandelion_core::logging;
use dandelion_core::pinned::PinnedUrl;

use crate::boxnode;
use crate::cli::{Global, RoleArgs, StoreArgs};
use crate::server;
use crate::shutdown::{self, Shutdown};

/// The configuration after the file, the environment and the flags (`global`'s,
/// and `store`'s for a command that opens the store), and the file it came
/// from; process-wide settings (trusted CAs, the plain-token opt-out) applied.
pub fn configure(
    global: &Global,
    store: Option<&StoreArgs>,
) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let (mut config, file) = Config::load(global.config.as_deref())?;
    global.apply(&mut config);
    if let Some(store) = store {
        store.apply(&mut config);
    }
    config.validate()?;
    // Every https:// and wss:// client of this process trusts it, daemons and
    // client verbs alike.
    if let Some(ca) = &config.ca_file {
        dandelion_core::tls::trust(ca).context("ca_file")?;
    }
    dandelion_core::tokens::allow_plain(config.insecure_plain_tokens);
    Ok((config, file))
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Flags of a role command over its config section.
pub fn apply_role_args(
    args: &RoleArgs,
    listen: &mut SocketAddr,
    urls: &mut Vec<PinnedUrl>,
    admin_token_file: &mut Option<PathBuf>,
) {
    if let Some(addr) = args.listen {
        *listen = addr;
    }
    urls.extend(args.entrances.iter().cloned());
    if let Some(file) = &args.admin_token_file {
        *admin_token_file = Some(file.clone());
    }
}

/// Lines a box's log file writer queues. tracing-appender's default, 128 000,
/// allocates and touches ~4 MiB up front: over a quarter of an idle box's RSS
/// (issue 5's target is < 10 MiB; measured in docs/performance.md). A box logs a
/// few lines per stored file and the writer drains the queue in microseconds, so
/// 4 096 lines (128 KiB) still absorb any burst it makes; beyond that lines are
/// dropped, never the daemon blocked. Entrances and publishers keep the default.
const BOX_LOG_LINES: usize = 4096;

/// Runs a box with its role flags `args` until SIGTERM or SIGINT.
pub fn run_box(
    runtime: &tokio::runtime::Runtime,
    config: &mut Config,
    args: &RoleArgs,
) -> anyhow::Result<()> {
    apply_role_args(
        args,
        &mut config.boxnode.listen,
        &mut config.boxnode.entrances,
        &mut config.boxnode.admin_token_file,
    );
    let config = &*config;
    serve_with_log_buffer(runtime, config, BOX_LOG_LINES, |s| async {
        boxnode::run(server::bind(config.boxnode.listen).await?, config, s).await
    })
}

/// Runs daemons until SIGTERM or SIGINT. Logging is held until they return, so
/// the last lines reach the file.
pub fn serve<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    daemons: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    serve_with_log_buffer(runtime, config, logging::DEFAULT_BUFFERED_LINES, daemons)
}

/// [`serve`] with the log file writer queueing `log_lines` lines.
fn serve_with_log_buffer<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    log_lines: usize,
    daemons: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Before anything is created: keys, tokens, logs and stored files are
    // this user's alone, under systemd or not.
    dandelion_core::secrets::private_from_now();
    config::prepare_data_dir(&config.data_dir)?;
    let _log = logging::init_with_buffer(
        &config.log_level,
        config.log_format,
        config.log_file.then_some(config.data_dir.as_path()),
        log_lines,
    )?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            shutdown::signal().await;
            trigger.trigger();
        });
        daemons(shutdown).await
    })
}
