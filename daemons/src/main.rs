//! The `dandelion` binary: parses the command line, loads the configuration, sets
//! up logging and hands over to the command. Everything with logic in it lives in
//! `dandelion-core` or in the command modules.

mod check;
mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dandelion_core::config::Config;
use dandelion_core::logging;
use dandelion_daemons::shutdown::{self, Shutdown};
use dandelion_daemons::{boxnode, server};

use cli::{Cli, Command};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(&config, file.as_deref(), args.role)),
        Command::Id(args) => check::print_id(&config, args.role),
        Command::Box(args) => {
            if let Some(listen) = args.listen {
                config.boxnode.listen = listen;
            }
            config.boxnode.entrances.extend(args.entrances);
            // Held until the box returns, so the last log lines reach the file.
            let _log = logging::init(&config.log_level, Some(&config.data_dir))?;
            runtime.block_on(async {
                let listener = server::bind(config.boxnode.listen).await?;
                let shutdown = Shutdown::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    shutdown::signal().await;
                    trigger.trigger();
                });
                boxnode::run(listener, &config, shutdown).await
            })
        }
        other => {
            let name = match other {
                Command::Up(_) => "up",
                Command::Entrance(_) => "entrance",
                Command::Publisher(_) => "publisher",
                Command::Push(_) => "push",
                Command::Where(_) => "where",
                Command::Boxes(_) => "boxes",
                Command::Evict(_) => "evict",
                Command::Check(_) | Command::Id(_) | Command::Box(_) => "check",
            };
            anyhow::bail!(
                "`dandelion {name}` is not available in this build yet; see README.md for what is"
            )
        }
    }
}
