//! The `dandelion-console` command line, in the library so that `cargo xtask`
//! makes its man page with the daemons' (see xtask/src/assets.rs).

use std::path::PathBuf;

use clap::Parser;

/// `dandelion-console`'s flags.
#[derive(Debug, Parser)]
#[command(
    name = "dandelion-console",
    version,
    about = "Live view and controls of a Dandelion network, for the terminal (works over ssh)",
    long_about = "Live view and controls of a Dandelion network, for the terminal (works over ssh).\n\n\
        Attaches to one or more daemons (entrance, box, publisher) and shows what each knows: boxes with live \
        bandwidth, where they are on a map, the publisher's queue and placements, a box's stored files, and an \
        event log. Push a file from a keyboard file picker, or evict a box after confirming.\n\n\
        Keys: ? help, q quit, / filter, j/k or arrows move, Tab next view, 1-9 daemon tab, : commands \
        (:connect URL), Esc back, Shift+letter sorts.",
    after_help = "With --context NAME it attaches to that context's daemons, each with its own token (see \
        docs/console.md). With no URL it attaches to the network that `dandelion up` started in --data-dir, with \
        each daemon's own admin token. Given URLs, every daemon gets the same --token."
)]
pub struct Cli {
    /// Daemon URLs to attach to, e.g. http://127.0.0.1:7070 (each becomes a tab).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// Admin token for the daemons.
    #[arg(
        long,
        env = "DANDELION_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// File holding the admin token (e.g. a daemon's data-dir/admin.token).
    #[arg(
        long,
        env = "DANDELION_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM bundle of CA certificates to trust besides the system's, for
    /// daemons whose certificates a private CA signed.
    #[arg(long, env = "DANDELION_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Open the daemons of this context, each with its own token and the
    /// context's CA (see --contexts; `dandelion up` writes `local`).
    #[arg(
        long,
        env = "DANDELION_CONTEXT",
        value_name = "NAME",
        conflicts_with_all = ["urls", "token", "token_file"]
    )]
    pub context: Option<String>,
    /// The contexts file (default: $XDG_CONFIG_HOME/dandelion/contexts.toml, then
    /// contexts.toml in --data-dir, where `dandelion up` writes it).
    #[arg(long, env = "DANDELION_CONTEXTS", value_name = "FILE")]
    pub contexts: Option<PathBuf>,
    /// Where `dandelion up` keeps its network (read when no URL is given).
    #[arg(
        long,
        env = "DANDELION_DATA_DIR",
        default_value = "dandelion-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Colour theme: `dark`, `light`, or a path to a theme TOML file.
    #[arg(
        long,
        env = "DANDELION_THEME",
        default_value = "dark",
        value_name = "THEME"
    )]
    pub theme: String,
    /// Where the console writes its own log (never to the terminal it draws on);
    /// default: dandelion-console.log in the system's temporary directory.
    #[arg(long, env = "DANDELION_CONSOLE_LOG", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}
