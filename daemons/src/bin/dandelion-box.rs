//! The `dandelion-box` binary: the box role alone, for household devices where
//! every resident page counts. It links only what `dandelion box` runs, so the
//! entrance's, publisher's and client commands' code is not in it.

use std::process::ExitCode;

use clap::Parser;
use dandelion_daemons::cli::BoxCli;
use dandelion_daemons::launch;

fn main() -> ExitCode {
    let cli = BoxCli::parse();
    let run = || -> anyhow::Result<()> {
        let (mut config, _file) = launch::configure(&cli.global, Some(&cli.role.store))?;
        launch::run_box(&launch::runtime()?, &mut config, &cli.role)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
