//! `dandelion-console`: the operator's terminal dashboard for a Dandelion network.
//!
//! It attaches to daemons' `/dandelion/console` endpoints with an admin token and
//! draws what each role knows. This build parses its command line; the screens
//! arrive with the console milestone (see README.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "dandelion-console",
    version,
    about = "Live view and controls of a Dandelion network, for the terminal (works over ssh)",
    long_about = "Live view and controls of a Dandelion network, for the terminal (works over ssh).\n\n\
        Attaches to one or more daemons (entrance, box, publisher) and shows what each knows: boxes with live \
        bandwidth, where they are on a map, the publisher's queue and placements, a box's stored files, and an \
        event log. Push a file from a keyboard file picker, or evict a box after confirming.\n\n\
        Keys: ? help, q quit, / filter, j/k or arrows move, Tab next view, : commands, Esc back.",
    after_help = "With no URL it attaches to the network that `dandelion up` started."
)]
struct Cli {
    /// Daemon URLs to attach to, e.g. http://127.0.0.1:7070 (each becomes a tab).
    #[arg(value_name = "URL")]
    urls: Vec<String>,
    /// Admin token for the daemons.
    #[arg(
        long,
        env = "DANDELION_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// File holding the admin token (e.g. a daemon's data-dir/admin.token).
    #[arg(
        long,
        env = "DANDELION_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
    /// Colour theme: `dark`, `light`, or a path to a theme TOML file.
    #[arg(
        long,
        env = "DANDELION_THEME",
        default_value = "dark",
        value_name = "THEME"
    )]
    theme: String,
    /// Where the console writes its own log (never to the terminal it draws on).
    #[arg(long, env = "DANDELION_CONSOLE_LOG", value_name = "FILE")]
    log_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "error: the console screens are not available in this build yet; see README.md for what is"
    );
    ExitCode::FAILURE
}
