//! The `dandelion` binary: parses the command line, loads the configuration, sets
//! up logging and hands over to the command. Everything with logic in it lives in
//! `dandelion-core` or in the `dandelion_daemons` library.

mod admin;
mod check;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dandelion_core::config::{self, Config};
use dandelion_core::logging;
use dandelion_core::pinned::PinnedUrl;
use dandelion_daemons::cli::{Cli, Command, RoleArgs};
use dandelion_daemons::shutdown::{self, Shutdown};
use dandelion_daemons::{boxnode, client, entrance, publisher, server, up};

/// See the `mimalloc` feature in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (mut config, file) = Config::load(cli.global.config.as_deref())?;
    cli.global.apply(&mut config);
    config.validate()?;
    // Every https:// and wss:// client of this process trusts it, daemons and
    // client verbs alike.
    if let Some(ca) = &config.ca_file {
        dandelion_core::tls::trust(ca).context("ca_file")?;
    }
    dandelion_core::tokens::allow_plain(config.insecure_plain_tokens);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(&config, file.as_deref(), args.role)),
        Command::Id(args) => check::print_id(&config, args.role),
        Command::Boxes(args) => runtime.block_on(admin::boxes(&args, &config.data_dir)),
        Command::Evict(args) => runtime.block_on(admin::evict(&args, &config.data_dir)),
        Command::Push(args) => runtime.block_on(client::push(&config, &args)),
        Command::Where(args) => runtime.block_on(client::where_is(&config, &args)),
        Command::Entrance(args) => {
            // An entrance's --entrance flags name its peers.
            apply_role_args(
                &args,
                &mut config.entrance.listen,
                &mut config.entrance.peers,
            );
            serve(&runtime, &config, |s| async {
                entrance::run(server::bind(config.entrance.listen).await?, &config, s).await
            })
        }
        Command::Box(args) => {
            apply_role_args(
                &args,
                &mut config.boxnode.listen,
                &mut config.boxnode.entrances,
            );
            serve_with_log_buffer(&runtime, &config, BOX_LOG_LINES, |s| async {
                boxnode::run(server::bind(config.boxnode.listen).await?, &config, s).await
            })
        }
        Command::Publisher(args) => {
            apply_role_args(
                &args,
                &mut config.publisher.listen,
                &mut config.publisher.entrances,
            );
            serve(&runtime, &config, |s| async {
                publisher::run(server::bind(config.publisher.listen).await?, &config, s).await
            })
        }
        Command::Up(args) => serve(&runtime, &config, |s| up::run(&config, args.boxes, s)),
    }
}

/// Flags of a role command over its config section.
fn apply_role_args(args: &RoleArgs, listen: &mut SocketAddr, urls: &mut Vec<PinnedUrl>) {
    if let Some(addr) = args.listen {
        *listen = addr;
    }
    urls.extend(args.entrances.iter().cloned());
}

/// Lines a box's log file writer queues. tracing-appender's default, 128 000,
/// allocates and touches ~4 MiB up front: over a quarter of an idle box's RSS
/// (issue 5's target is < 10 MiB; measured in docs/performance.md). A box logs a
/// few lines per stored file and the writer drains the queue in microseconds, so
/// 4 096 lines (128 KiB) still absorb any burst it makes; beyond that lines are
/// dropped, never the daemon blocked. Entrances and publishers keep the default.
const BOX_LOG_LINES: usize = 4096;

/// Runs daemons until SIGTERM or SIGINT. Logging is held until they return, so
/// the last lines reach the file.
fn serve<F, Fut>(
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
    config::prepare_data_dir(&config.data_dir)?;
    let _log = logging::init_with_buffer(
        &config.log_level,
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
