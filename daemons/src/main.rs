//! The `dandelion` binary: parses the command line, loads the configuration, sets
//! up logging and hands over to the command. Everything with logic in it lives in
//! `dandelion-core` or in the `dandelion_daemons` library.

mod admin;
mod check;

use std::process::ExitCode;

use clap::Parser;
use dandelion_core::console::contexts;
use dandelion_core::ids::Role;
use dandelion_daemons::cli::{self, Cli, Command};
use dandelion_daemons::{client, entrance, launch, publisher, server, up};

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
    // Needs no configuration: a broken config file must not stop it.
    if let Command::Completions(args) = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        cli::write_completions(
            args.shell,
            &mut command,
            "dandelion",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let (mut config, file) = launch::configure(&cli.global, cli.command.store_args())?;
    let runtime = launch::runtime()?;
    // Client commands may name a console context; its CA is trusted from here.
    let named = cli.command.context_args();
    let context = match named.and_then(|c| c.context.as_ref()) {
        Some(name) => {
            let file = named.and_then(|c| c.contexts.as_deref());
            let context = contexts::find(file, &config.data_dir, name)?;
            context.trust()?;
            Some(context)
        }
        None => None,
    };
    let context = context.as_ref();
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(&config, file.as_deref(), args.role)),
        Command::Id(args) => check::print_id(&config, args.role),
        Command::Boxes(args) => runtime.block_on(admin::boxes(
            &args,
            context,
            &config.data_dir,
            &config.admin_token_file(Role::Entrance),
        )),
        Command::Evict(args) => runtime.block_on(admin::evict(
            &args,
            context,
            &config.data_dir,
            &config.admin_token_file(Role::Entrance),
        )),
        Command::Invite(args) => runtime.block_on(admin::invite(
            &args,
            context,
            &config.data_dir,
            &config.admin_token_file(Role::Entrance),
        )),
        Command::Owners(args) => runtime.block_on(admin::owners(
            &args,
            context,
            &config.data_dir,
            &config.admin_token_file(Role::Entrance),
        )),
        Command::Push(args) => runtime.block_on(client::push(&config, context, &args)),
        Command::Where(args) => runtime.block_on(client::where_is(&config, context, &args)),
        Command::Stats(args) => runtime.block_on(client::stats(&config, context, &args)),
        Command::Entrance(args) => {
            // An entrance's --entrance flags name its peers.
            launch::apply_role_args(
                &args,
                &mut config.entrance.listen,
                &mut config.entrance.peers,
                &mut config.entrance.admin_token_file,
            );
            launch::serve(&runtime, &config, |s| async {
                entrance::run(server::bind(config.entrance.listen).await?, &config, s).await
            })
        }
        Command::Box(args) => launch::run_box(&runtime, &mut config, &args),
        Command::Publisher(args) => {
            launch::apply_role_args(
                &args,
                &mut config.publisher.listen,
                &mut config.publisher.entrances,
                &mut config.publisher.admin_token_file,
            );
            launch::serve(&runtime, &config, |s| async {
                publisher::run(server::bind(config.publisher.listen).await?, &config, s).await
            })
        }
        Command::Up(args) => {
            let ports = up::Ports::new(args.port_base)
                .ok_or_else(|| anyhow::anyhow!("--port-base must be 1 to {}", up::MAX_PORT_BASE))?;
            launch::serve(&runtime, &config, |s| {
                up::run(&config, args.boxes, ports, s)
            })
        }
        // Answered above, before the configuration is read.
        Command::Completions(_) => Ok(()),
    }
}
