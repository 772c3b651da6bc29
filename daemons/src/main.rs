//! The `dandelion` binary: parses the command line, loads the configuration, sets
//! up logging and hands over to the command. Everything with logic in it lives in
//! `dandelion-core` or in the command modules.

mod admin;
mod check;
mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dandelion_core::config::Config;

use cli::{Cli, Command};
use dandelion_daemons::shutdown::{Shutdown, signal};

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

/// `dandelion entrance`: logging held for the daemon's lifetime, SIGTERM/SIGINT
/// turned into a graceful shutdown.
async fn entrance(mut config: Config, args: cli::RoleArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.entrance.listen = listen;
    }
    if !args.entrances.is_empty() {
        config.entrance.peers = args.entrances;
    }
    dandelion_core::config::prepare_data_dir(&config.data_dir)?;
    let _log = dandelion_core::logging::init(
        &config.log_level,
        config.log_file.then_some(config.data_dir.as_path()),
    )?;
    let listener = dandelion_daemons::server::bind(config.entrance.listen).await?;
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        signal().await;
        trigger.trigger();
    });
    dandelion_daemons::entrance::run(listener, &config, shutdown).await
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (mut config, file) = Config::load(cli.global.config.as_deref())?;
    cli.global.apply(&mut config);
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(&config, file.as_deref(), args.role)),
        Command::Id(args) => check::print_id(&config, args.role),
        Command::Entrance(args) => runtime.block_on(entrance(config, args)),
        Command::Boxes(args) => runtime.block_on(admin::boxes(&args)),
        Command::Evict(args) => runtime.block_on(admin::evict(&args, &config.data_dir)),
        other => {
            let name = match other {
                Command::Up(_) => "up",
                Command::Entrance(_) => "entrance",
                Command::Box(_) => "box",
                Command::Publisher(_) => "publisher",
                Command::Push(_) => "push",
                Command::Where(_) => "where",
                Command::Boxes(_) => "boxes",
                Command::Evict(_) => "evict",
                Command::Check(_) | Command::Id(_) => "check",
            };
            anyhow::bail!(
                "`dandelion {name}` is not available in this build yet; see README.md for what is"
            )
        }
    }
}
