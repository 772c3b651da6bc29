//! The `dandelion` command line: global settings every command shares, and one
//! subcommand per role or client verb.
//!
//! Settings are layered: the config file, then `DANDELION_*` environment
//! variables, then these flags. clap reads the last two (each flag names its
//! variable in `--help`), and [`Global::apply`] lays them over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dandelion_core::config::{self, Config};
use dandelion_core::ids::Role;
use dandelion_core::pinned::PinnedUrl;

#[derive(Debug, Parser)]
#[command(
    name = "dandelion",
    version,
    about = "Dandelion: a delivery network for live streams and files, built from idle household upload bandwidth",
    long_about = "Dandelion: a delivery network for live streams and files, built from idle household upload bandwidth.\n\n\
        An entrance keeps the registry of boxes; boxes, on household devices, keep files for their TTL and serve \
        them to viewers; a publisher takes files from users, places them on the best boxes and redirects viewers \
        there. This one binary runs each role, a whole local network (`up`), and the client commands that talk \
        to running daemons.",
    after_help = "Settings come from the config file (--config, else ./dandelion.toml, else \
        /etc/dandelion/dandelion.toml), then DANDELION_* environment variables, then flags. \
        See dandelion.example.toml for every setting."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// `dandelion-box`: `dandelion box` alone, for a household device. Without the
/// entrance's, publisher's and client verbs' code its idle memory is about
/// 2 MiB smaller (docs/performance.md, "TLS (issue 13)").
#[derive(Debug, Parser)]
#[command(
    name = "dandelion-box",
    version,
    about = "A Dandelion box alone: receive files from trusted publishers, keep them for their TTL, serve them to viewers",
    long_about = "A Dandelion box alone: receive files from trusted publishers, keep them for their TTL, serve them \
        to viewers.\n\n\
        The same daemon as `dandelion box`, with the same configuration and flags, in a binary without the other \
        roles and the client commands: smaller, for a household device. For `id`, `check` and the rest, use \
        `dandelion`.",
    after_help = "Settings come from the config file (--config, else ./dandelion.toml, else \
        /etc/dandelion/dandelion.toml), then DANDELION_* environment variables, then flags. \
        See the [box] section of dandelion.example.toml."
)]
pub struct BoxCli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub role: RoleArgs,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file (TOML, a section per role).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "DANDELION_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Where keys, tokens, the embedded store, logs and stored files live.
    #[arg(long, global = true, env = "DANDELION_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level or directives, e.g. `debug` or `dandelion_core=debug,info`.
    #[arg(long, global = true, env = "DANDELION_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// `text`, or `json` for one object per line (journald, Loki); the
    /// config's `log_format`. Text has colour only on a terminal and never
    /// with NO_COLOR set.
    #[arg(
        long,
        global = true,
        env = "DANDELION_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<dandelion_core::logging::LogFormat>,
    /// PEM bundle of CA certificates to trust besides the system's, for every
    /// https:// and wss:// connection (a private CA); the config's `ca_file`.
    #[arg(long, global = true, env = "DANDELION_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Where a daemon keeps its state: flags of the commands that open the store
/// (the three roles and `check`), not of the clients, which talk to daemons.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `embedded` (default: a file in the data directory) or a redis:// URL shared by several daemons.
    #[arg(long, env = "DANDELION_STORE", value_name = "SPEC")]
    pub store: Option<String>,
    /// Prefix of every key on a shared Redis.
    #[arg(long, env = "DANDELION_STORE_PREFIX", value_name = "PREFIX")]
    pub store_prefix: Option<String>,
}

impl StoreArgs {
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.store {
            config.store = v.clone();
        }
        if let Some(v) = &self.store_prefix {
            config.store_prefix = v.clone();
        }
    }
}

/// Which console context a client command talks to: flags of the client
/// commands only.
#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The console context whose daemons to talk to, each with its own token
    /// (`push`/`where`/`stats` its publisher, `boxes`/`evict`/`invite`/`owners`
    /// its entrance); see docs/console.md, "Contexts".
    #[arg(long, global = true, env = "DANDELION_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The contexts file (default: $XDG_CONFIG_HOME/dandelion/contexts.toml,
    /// then contexts.toml in the data directory, where `dandelion up` writes it).
    #[arg(long, global = true, env = "DANDELION_CONTEXTS", value_name = "FILE")]
    pub contexts: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a whole local network: one entrance, N boxes and one publisher, on the embedded store.
    Up(UpArgs),
    /// Run the entrance: the registry boxes announce themselves to and publishers search.
    Entrance(RoleArgs),
    /// Run a box: receive files from trusted publishers, keep them for their TTL, serve them to viewers.
    Box(RoleArgs),
    /// Run a publisher: take files from users, place them on the best boxes, redirect viewers to them.
    Publisher(RoleArgs),
    /// Push files or directories to a publisher, with progress.
    Push(PushArgs),
    /// Show which boxes hold a file, their URLs and the TTL left.
    Where(WhereArgs),
    /// Show the publisher's offload ledger: the share of viewer bytes served by
    /// boxes, per stream and in total.
    Stats(StatsArgs),
    /// List the entrance's boxes as a table.
    Boxes(BoxesArgs),
    /// Evict a box from the entrance at once and refuse its heartbeats for a while.
    Evict(EvictArgs),
    /// Issue an invitation: a one-time code that enrols one box for an owner
    /// (printed alone on stdout; the box sets it as box.invitation).
    Invite(InviteArgs),
    /// List box owners with their boxes; revoke an owner or cap their boxes.
    Owners(OwnersArgs),
    /// Check the configuration, data directory, identity and store, then exit.
    Check(CheckArgs),
    /// Print a role's ID and public key (creating its key pair on first use).
    Id(IdArgs),
    /// Print the shell completion script for bash, zsh or fish, e.g.
    /// `dandelion completions bash > /etc/bash_completion.d/dandelion`.
    Completions(CompletionsArgs),
}

impl Command {
    /// The store flags of a command that opens the store.
    pub fn store_args(&self) -> Option<&StoreArgs> {
        match self {
            Command::Entrance(a) | Command::Box(a) | Command::Publisher(a) => Some(&a.store),
            Command::Check(a) => Some(&a.store),
            _ => None,
        }
    }

    /// The context flags of a client command.
    pub fn context_args(&self) -> Option<&ContextArgs> {
        match self {
            Command::Push(a) => Some(&a.access.context),
            Command::Where(a) => Some(&a.access.context),
            Command::Stats(a) => Some(&a.access.context),
            Command::Boxes(a) => Some(&a.access.context),
            Command::Evict(a) => Some(&a.access.context),
            Command::Invite(a) => Some(&a.access.context),
            Command::Owners(a) => Some(&a.access.context),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are made for: those the package installs them for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the completion script of `command` (named `name`) for `shell`.
pub fn write_completions(
    shell: Shell,
    command: &mut clap::Command,
    name: &str,
    out: &mut dyn std::io::Write,
) {
    clap_complete::generate(shell.generator(), command, name, out);
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Address to listen on (default: the role's section of the config, else 0.0.0.0:7070/7071/7072).
    #[arg(long, env = "DANDELION_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Entrance to talk to (boxes and publishers) or a peer entrance (entrances),
    /// as URL#ID: `ws://host:7070/dandelion/ws#entrance-<32 hex>`. Only a daemon
    /// that proves that ID is signed for and trusted. Repeat for several.
    #[arg(
        long = "entrance",
        env = "DANDELION_ENTRANCES",
        value_delimiter = ',',
        value_name = "URL#ID"
    )]
    pub entrances: Vec<PinnedUrl>,
    /// File holding this daemon's admin token, provisioned by the operator
    /// (default: the role's `admin_token_file`, else `admin.token` in the data
    /// directory, created on first start). Read again when it changes or on SIGHUP.
    #[arg(long, env = "DANDELION_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of boxes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub boxes: u16,
    /// The entrance's port; the publisher listens two above it and the boxes
    /// from eleven above (7070, 7072, 7081…). Another base runs a second
    /// network beside the first.
    #[arg(
        long,
        default_value_t = crate::up::DEFAULT_PORT_BASE,
        value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::up::MAX_PORT_BASE)),
        value_name = "PORT"
    )]
    pub port_base: u16,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Files or directories to push.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Name to publish a single file under (default: its file name).
    #[arg(long = "as", value_name = "NAME")]
    pub name: Option<String>,
    /// How long boxes keep the file, e.g. 60s or 2h [default: the publisher's
    /// default_ttl, 60s unless configured; at most its max_ttl, 24h].
    #[arg(long, value_parser = config::parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// Boxes to place each file on [default: the publisher's replicas, 1
    /// unless configured].
    #[arg(long, value_name = "K")]
    pub replicas: Option<u32>,
    /// Keep pushing what appears or changes in the directories (a live encoder's output).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub access: PublisherAccess,
}

#[derive(Debug, Args)]
pub struct WhereArgs {
    /// The published name.
    pub name: String,
    #[command(flatten)]
    pub access: PublisherAccess,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print the ledger as JSON (what `GET /api/ledger` answers).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: PublisherAccess,
}

/// How client commands reach a publisher.
#[derive(Debug, Args)]
pub struct PublisherAccess {
    /// Publisher URL; a bare host:port means https:// (default: the local
    /// network started by `dandelion up`).
    #[arg(long, env = "DANDELION_PUBLISHER", value_name = "URL")]
    pub to: Option<String>,
    /// The publisher's admin token (default: read from its data directory).
    #[arg(
        long,
        env = "DANDELION_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub context: ContextArgs,
}

#[derive(Debug, Args)]
pub struct BoxesArgs {
    /// Only boxes in this state (active, stale, unreachable, evicted, legacy).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Only boxes in this country (ISO code).
    #[arg(long, value_name = "CODE")]
    pub country: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: EntranceAccess,
}

/// How operator commands reach the entrance's admin API.
#[derive(Debug, Args)]
pub struct EntranceAccess {
    /// Entrance URL; a bare host:port means https:// (default: the local
    /// network started by `dandelion up`).
    #[arg(long, global = true, env = "DANDELION_ENTRANCE", value_name = "URL")]
    pub entrance: Option<String>,
    /// Admin token (default: read from the entrance's data directory).
    #[arg(
        long,
        global = true,
        env = "DANDELION_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub context: ContextArgs,
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Whom the box will belong to: a name of letters, digits and ._@+-
    /// (an e-mail address does). Revoking the owner removes all their boxes.
    #[arg(value_name = "OWNER")]
    pub owner: String,
    /// How long the invitation stays valid, e.g. 1h or 7d (at most 90d).
    #[arg(long, value_parser = config::parse_duration, default_value = "7d", value_name = "DURATION")]
    pub expires: Duration,
    #[command(flatten)]
    pub access: EntranceAccess,
}

#[derive(Debug, Args)]
pub struct OwnersArgs {
    #[command(subcommand)]
    pub action: Option<OwnersAction>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: EntranceAccess,
}

#[derive(Debug, Subcommand)]
pub enum OwnersAction {
    /// Revoke an owner: their boxes leave at once and their keys can never join
    /// again; their unused invitations are void.
    Revoke {
        #[arg(value_name = "OWNER")]
        owner: String,
        /// Why; logged and shown in the console's events.
        #[arg(long, required = true)]
        reason: String,
    },
    /// Set how many boxes an owner may enrol (0: no cap; `default`: the
    /// entrance's max_boxes_per_owner).
    Cap {
        #[arg(value_name = "OWNER")]
        owner: String,
        #[arg(value_name = "N|default")]
        max_boxes: String,
    },
}

#[derive(Debug, Args)]
pub struct EvictArgs {
    /// The box to evict.
    #[arg(value_name = "BOX-ID")]
    pub box_id: String,
    /// Why; the box and the event log are told.
    #[arg(long, required = true)]
    pub reason: String,
    #[command(flatten)]
    pub access: EntranceAccess,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The role whose identity to load (all three when absent).
    #[arg(long, value_parser = parse_role, value_name = "ROLE")]
    pub role: Option<Role>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// entrance, box or publisher.
    #[arg(value_parser = parse_role, value_name = "ROLE")]
    pub role: Role,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|e: dandelion_core::ids::IdError| e.to_string())
}

impl Global {
    /// Lays the environment and flag layer over the file's settings.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.log_level {
            config.log_level = v.clone();
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if let Some(v) = &self.ca_file {
            config.ca_file = Some(v.clone());
        }
    }
}
