//! Configuration: one TOML file with a section per role, then `DANDELION_*`
//! environment variables, then command-line flags.
//!
//! This module owns the file layer and the shape of the settings; the binaries
//! apply the environment and flag layers on top (clap reads both), so every
//! override is visible in `--help`. A file with a syntax error or an unknown key is
//! refused with the file, line and key named: a typo that silently falls back to a
//! default is the worst kind of configuration bug on a fleet.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};

use crate::ids::Role;
use crate::pinned::PinnedUrl;

/// The name looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE_NAME: &str = "dandelion.toml";

/// System-wide location looked for after the working directory.
pub const SYSTEM_FILE: &str = "/etc/dandelion/dandelion.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where keys, tokens, the embedded store, logs and (on a box) files live.
    pub data_dir: PathBuf,
    /// `embedded` (a redb file in the data directory) or a `redis://` URL.
    pub store: String,
    /// Prefix of every key on a shared Redis.
    pub store_prefix: String,
    /// Upper bound of the embedded store's page cache. Only pages the daemon
    /// touches fill it, so a box's small store uses a few MiB whatever this says;
    /// an entrance with 20 000 boxes touches every box's pages each heartbeat
    /// interval and needs about 100 MiB not to read its file on every heartbeat.
    pub store_cache: ByteSize,
    /// `info`, `debug`, … or per-module directives like `dandelion=debug,warn`.
    pub log_level: String,
    /// `text` (for people; colour only on a terminal, never with `NO_COLOR`)
    /// or `json` (one object per line, for journald/Loki pipelines).
    pub log_format: crate::logging::LogFormat,
    /// Whether to also write the daily-rotated `dandelion.log` in the data directory.
    pub log_file: bool,
    /// A PEM bundle of CA certificates every `https://` and `wss://` client of
    /// this daemon trusts besides the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Lets the join and admin tokens cross plain `http://`/`ws://` connections
    /// off this machine, in both directions. Only for a network you trust: on
    /// any other, anyone on the path reads and replays them.
    pub insecure_plain_tokens: bool,
    /// A file holding the secret handshake nonces are made under (at least 32
    /// bytes). Processes of one role given the same file accept each other's
    /// nonces; without it each process makes a random one at start.
    pub nonce_secret_file: Option<PathBuf>,
    /// What every listener of this process allows one client and all of them.
    pub limits: Limits,
    pub entrance: EntranceConfig,
    #[serde(rename = "box")]
    pub boxnode: BoxConfig,
    pub publisher: PublisherConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("dandelion-data"),
            store: "embedded".into(),
            store_prefix: String::new(),
            store_cache: ByteSize::mib(128),
            log_level: "info".into(),
            log_format: crate::logging::LogFormat::Text,
            log_file: true,
            ca_file: None,
            insecure_plain_tokens: false,
            nonce_secret_file: None,
            limits: Limits::default(),
            entrance: EntranceConfig::default(),
            boxnode: BoxConfig::default(),
            publisher: PublisherConfig::default(),
        }
    }
}

/// The `[limits]` section: what one client, and all of them together, may hold
/// of a daemon open to the internet. Defaults and reasons are listed in
/// `docs/security.md` ("Limits").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections open at once from all addresses. The daemon lowers it to
    /// stay below its file-descriptor limit (`LimitNOFILE`), saying so at start.
    pub max_connections: usize,
    /// Connections open at once from one IPv4 address or IPv6 /64; the
    /// `trusted_proxies` are not held to it.
    pub max_connections_per_address: usize,
    /// How long a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed
    /// (a stalled download, a half-sent body, a silent WebSocket).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// How often a daemon pings the WebSocket sessions it serves; a session
    /// that sends nothing, not even the pong, for twice this is closed.
    #[serde(deserialize_with = "duration")]
    pub ws_ping_interval: Duration,
    /// Session handshakes (`GET /dandelion/nonce`, each a signature) one address
    /// may start a minute, in a burst or spread out; 0: no limit.
    pub handshakes_per_minute: u32,
    /// TLS handshakes one address may start a minute; 0: no limit.
    pub tls_handshakes_per_minute: u32,
    /// Failed credentials (wrong join or admin token, bad proof) one address
    /// may make a minute; past them it is refused (429) until the next is due.
    pub failed_credentials_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 8192,
            max_connections_per_address: 256,
            header_read_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            ws_ping_interval: Duration::from_secs(20),
            handshakes_per_minute: 120,
            tls_handshakes_per_minute: 600,
            failed_credentials_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntranceConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) and its key: with both, this listener
    /// serves `https://` and `wss://` only. Read again when the files change or
    /// on SIGHUP, so a renewal needs no restart.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The file holding this daemon's admin token, provisioned by the operator
    /// (it must exist). Without it, `admin.token` in the data directory,
    /// generated on first start. Either is read again when it changes or on
    /// SIGHUP, so a token is rotated without a restart.
    pub admin_token_file: Option<PathBuf>,
    /// The URL others reach this entrance at, when it differs from `listen`
    /// (a proxy, NAT, TLS terminator).
    pub public_url: Option<String>,
    /// Silence after which a box is dropped (the original's 120 s).
    #[serde(deserialize_with = "duration")]
    pub expire_box_time: Duration,
    /// The interval boxes are told to send heartbeats at.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// Other entrances of the same network, handed to boxes and publishers, each
    /// as `URL#entrance-ID` (see [`PinnedUrl`]).
    pub peers: Vec<PinnedUrl>,
    /// Boxes returned by a `SEARCH` that does not ask for a count.
    pub search_count: u32,
    /// Public keys (hex) of the publishers allowed to search and to publish.
    pub publisher_keys: Vec<String>,
    /// Accept the original 2017 boxes and publishers, which cannot authenticate.
    pub legacy_peers: bool,
    /// Where original 2017 publishers may search from: addresses (`"192.0.2.7"`)
    /// or networks (`"192.0.2.0/24"`). They cannot prove who they are, so their
    /// address is all there is to admit them by; they are shown legacy boxes
    /// only. Empty (the default): no original publisher is answered.
    #[serde(deserialize_with = "networks")]
    pub legacy_publishers: Vec<ipnet::IpNet>,
    /// A GeoLite2-City compatible database for locating boxes.
    pub geoip_db: Option<PathBuf>,
    /// A GeoLite2-ASN compatible database for `ORG`.
    pub asn_db: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Share of boxes going silent within one expiry period that makes the entrance
    /// suspect its own network and stop expiring.
    pub self_preservation_threshold: f64,
    /// Fewer registered boxes than this never trigger self-preservation: one box
    /// of two going quiet is news about that box, not about the entrance.
    pub self_preservation_min_boxes: u32,
    /// A join token shared by every box, or a file holding it: for a closed
    /// network whose box owners are all trusted alike. Without one, boxes join
    /// only with an invitation (`dandelion invite`), each bound to an owner.
    /// An older install's generated `join.token` in the data directory is still
    /// honoured, with a warning.
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    /// Boxes one owner may enrol, unless `dandelion owners cap` says otherwise
    /// for that owner; 0 for no cap.
    pub max_boxes_per_owner: u32,
    /// New box identities admitted per hour from one address (IPv4 address,
    /// IPv6 /64) and from one network prefix (IPv4 /24, IPv6 /48); 0 switches
    /// a limit off. Known boxes reconnecting are not counted.
    pub new_boxes_per_address_per_hour: u32,
    pub new_boxes_per_prefix_per_hour: u32,
    /// The key namespace of the registry in the store (`{namespace}:BOX_SET`, …).
    /// Entrances sharing one Redis set the same value to see the same boxes;
    /// when absent it is the entrance's own ID.
    pub namespace: Option<String>,
    /// Whether to call each box's data URL to prove it is reachable from outside.
    pub reachability_check: bool,
    /// How often registered boxes are checked again.
    #[serde(deserialize_with = "duration")]
    pub reachability_interval: Duration,
    /// How long one check may take.
    #[serde(deserialize_with = "duration")]
    pub reachability_timeout: Duration,
    /// Whether a box's data URL may lead to a loopback, private or link-local
    /// address. Off for a network on the internet, where such a URL would make
    /// the entrance probe its own networks; on for one inside a LAN or a
    /// machine (`dandelion up` sets it).
    pub reachability_private: bool,
    /// Addresses a box's data URL may lead to besides the one the box connects
    /// from (a box that connects over IPv6 and serves on IPv4, a front that
    /// serves for boxes behind it).
    pub reachability_allow: Vec<IpAddr>,
    /// How long an evicted box is refused.
    #[serde(deserialize_with = "duration")]
    pub ban_time: Duration,
}

impl Default for EntranceConfig {
    fn default() -> Self {
        EntranceConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            tls_cert: None,
            tls_key: None,
            admin_token_file: None,
            public_url: None,
            expire_box_time: Duration::from_secs(120),
            heartbeat_interval: Duration::from_secs(5),
            peers: Vec::new(),
            search_count: 20,
            publisher_keys: Vec::new(),
            legacy_peers: false,
            legacy_publishers: Vec::new(),
            geoip_db: None,
            asn_db: None,
            trusted_proxies: Vec::new(),
            self_preservation_threshold: 0.5,
            self_preservation_min_boxes: 3,
            join_token: None,
            join_token_file: None,
            max_boxes_per_owner: 4,
            new_boxes_per_address_per_hour: 5,
            new_boxes_per_prefix_per_hour: 20,
            namespace: None,
            reachability_check: true,
            reachability_interval: Duration::from_secs(300),
            reachability_timeout: Duration::from_secs(3),
            reachability_private: false,
            reachability_allow: Vec::new(),
            ban_time: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoxConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) and its key: with both, this listener
    /// serves `https://` and `wss://` only. Read again when the files change or
    /// on SIGHUP, so a renewal needs no restart.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The file holding this daemon's admin token, provisioned by the operator
    /// (it must exist). Without it, `admin.token` in the data directory,
    /// generated on first start. Either is read again when it changes or on
    /// SIGHUP, so a token is rotated without a restart.
    pub admin_token_file: Option<PathBuf>,
    /// TLS-terminating proxies in front of this listener: they forward in
    /// clear what crossed the network encrypted, so tokens from them are
    /// accepted over plain HTTP.
    pub trusted_proxies: Vec<IpAddr>,
    /// The URL viewers and publishers reach this box at.
    pub public_url: Option<String>,
    /// Entrances to register with, each as `URL#entrance-ID`: the box sends its
    /// join token to, and believes publisher keys from, only an entrance that
    /// proved that ID. More are learned from their replies, IDs included.
    pub entrances: Vec<PinnedUrl>,
    /// The network's join token, or a file holding it, where the entrance
    /// admits boxes by one shared token.
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    /// This box's invitation (`dinv-…`, from the operator's `dandelion invite`),
    /// or a file holding it: presented until the entrance has enrolled the box,
    /// harmless afterwards. Exclusive with a join token.
    pub invitation: Option<String>,
    pub invitation_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// Upload cap across all viewers, in bytes per second (`"2 MB"`); none if absent.
    pub upload_cap: Option<ByteSize>,
    /// Concurrent downloads served at most.
    pub max_downloads: u32,
    /// Publisher sessions open at once; more are refused with 503 before the
    /// upgrade. Each may buffer one file frame (about 1 MiB).
    pub max_publisher_sessions: u32,
    /// File bytes received and not yet written to disk, across all publisher
    /// sessions; a session whose frame does not fit waits (and stops reading).
    pub upload_memory: ByteSize,
    /// Disk space the box may use for stored files; none if absent.
    pub storage_quota: Option<ByteSize>,
    /// Disk space one publisher may use, so one busy publisher cannot crowd out the
    /// others; none if absent (then only `storage_quota` applies).
    pub publisher_quota: Option<ByteSize>,
    pub max_file_size: ByteSize,
    /// Longest TTL granted; the original's "0 = forever" maps to this.
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    /// Public keys (hex) of publishers trusted besides those the entrances name.
    pub publisher_keys: Vec<String>,
    /// Source address for connections to entrances, for hosts with several
    /// addresses (and tests running several boxes on 127.0.0.x); the OS picks when absent.
    pub bind_outgoing: Option<std::net::IpAddr>,
    /// Bytes uploaded to an entrance to measure the uplink, at start and every
    /// `uplink_test_interval`; 0 switches the measurement off.
    pub uplink_test_size: ByteSize,
    #[serde(deserialize_with = "duration")]
    pub uplink_test_interval: Duration,
}

impl Default for BoxConfig {
    fn default() -> Self {
        BoxConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7071)),
            tls_cert: None,
            tls_key: None,
            admin_token_file: None,
            trusted_proxies: Vec::new(),
            public_url: None,
            entrances: Vec::new(),
            join_token: None,
            join_token_file: None,
            invitation: None,
            invitation_file: None,
            heartbeat_interval: Duration::from_secs(5),
            upload_cap: None,
            max_downloads: 256,
            max_publisher_sessions: 16,
            upload_memory: ByteSize::mib(8),
            storage_quota: None,
            publisher_quota: None,
            max_file_size: ByteSize::gib(4),
            max_ttl: Duration::from_secs(24 * 3600),
            publisher_keys: Vec::new(),
            bind_outgoing: None,
            uplink_test_size: ByteSize::mib(1),
            uplink_test_interval: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublisherConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) and its key: with both, this listener
    /// serves `https://` and `wss://` only. Read again when the files change or
    /// on SIGHUP, so a renewal needs no restart.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The file holding this daemon's admin token, provisioned by the operator
    /// (it must exist). Without it, `admin.token` in the data directory,
    /// generated on first start. Either is read again when it changes or on
    /// SIGHUP, so a token is rotated without a restart.
    pub admin_token_file: Option<PathBuf>,
    /// TLS-terminating proxies in front of this listener: they forward in
    /// clear what crossed the network encrypted, so tokens from them are
    /// accepted over plain HTTP, and their `X-Forwarded-For` and
    /// `X-Forwarded-Proto` place viewers for redirects.
    pub trusted_proxies: Vec<IpAddr>,
    pub public_url: Option<String>,
    /// Entrances to search, each as `URL#entrance-ID` (see [`PinnedUrl`]).
    pub entrances: Vec<PinnedUrl>,
    /// How often every entrance is asked for boxes (the original's 10 s).
    #[serde(deserialize_with = "duration")]
    pub search_interval: Duration,
    /// How many boxes to ask for (the original's 20).
    pub search_count: u32,
    /// Boxes each file is placed on unless the push says otherwise.
    pub replicas: u32,
    /// TTL of a push that names none (the original's 60 s).
    #[serde(deserialize_with = "duration")]
    pub default_ttl: Duration,
    /// Longest TTL a push may ask for.
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    pub max_file_size: ByteSize,
    /// Files up to this size are kept in the store, in the commit that
    /// acknowledges their push, instead of as files in the origin directory:
    /// one group-committed write for many live segments instead of a create,
    /// two fsyncs and a rename each. On Redis they would take its memory for
    /// their TTL, so unset means 1 MiB on the embedded store and 0 (every file
    /// on disk) on Redis. At most [`STORE_FILES_UP_TO_MAX`].
    pub store_files_up_to: Option<ByteSize>,
    /// Files being placed at once; a publish session carries up to
    /// `link::PIPELINE` transfers at once, so the default fills 4 sessions.
    pub max_transfers: usize,
    /// Failed transfers after which a file is reported failed.
    pub max_attempts: u32,
    /// Several front ends on one store: how long one may stay silent before
    /// the others take it for dead, take back its jobs and fetch the files
    /// only it held back from their boxes.
    #[serde(deserialize_with = "duration")]
    pub front_end_dead_after: Duration,
    /// Where the audience is (`"latitude,longitude"`), to prefer boxes near it.
    pub audience_location: Option<String>,
    /// Also place files on unverified boxes of the original's kind.
    pub unverified_boxes: bool,
    /// A GeoLite2-City compatible database for locating viewers, so each is sent
    /// to the nearest box holding the file.
    pub geoip_db: Option<PathBuf>,
    /// Publish sessions kept open to the best-ranked boxes, so a file goes out
    /// without waiting for a handshake; 0 opens a session only when a file is sent.
    pub keep_sessions: usize,
    /// How often each box holding files is asked for one of them, as a viewer
    /// would, to skip boxes that fail to serve; 0 turns the probes off.
    #[serde(deserialize_with = "duration")]
    pub serve_probe_interval: Duration,
    /// How long one serve probe may take before it counts as failed.
    #[serde(deserialize_with = "duration")]
    pub serve_probe_timeout: Duration,
    /// How long a box may keep failing its serve probes before the copies it
    /// holds are placed on other boxes. A box back within it (a restart, a
    /// router rebooting) keeps its files once a probe shows it serves them.
    #[serde(deserialize_with = "duration")]
    pub replace_after: Duration,
    /// How long an upload forwarded to boxes as it arrives (cut-through) may
    /// send nothing before its boxes' transfers are dropped: a stalled upload
    /// must not hold a publish session's places. The publisher's own copy
    /// still completes if the upload resumes; the boxes get it afterwards.
    #[serde(deserialize_with = "duration")]
    pub upload_stall_timeout: Duration,
}

/// The largest `publisher.store_files_up_to`, and its value on the embedded
/// store: an upload is gathered in memory up to this size before its bytes go
/// anywhere (`publisher::intake::PIECE`).
pub const STORE_FILES_UP_TO_MAX: ByteSize = ByteSize::mib(1);

impl PublisherConfig {
    /// `store_files_up_to` in bytes, its default worked out for the store in
    /// use (`shared`: Redis).
    pub fn store_files_up_to(&self, shared: bool) -> u64 {
        match self.store_files_up_to {
            Some(size) => size.as_u64(),
            None if shared => 0,
            None => STORE_FILES_UP_TO_MAX.as_u64(),
        }
    }
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7072)),
            tls_cert: None,
            tls_key: None,
            admin_token_file: None,
            trusted_proxies: Vec::new(),
            public_url: None,
            entrances: Vec::new(),
            search_interval: Duration::from_secs(10),
            search_count: 20,
            replicas: 1,
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            max_file_size: ByteSize::gib(4),
            store_files_up_to: None,
            max_transfers: 16,
            max_attempts: 5,
            front_end_dead_after: Duration::from_secs(30),
            audience_location: None,
            unverified_boxes: false,
            geoip_db: None,
            keep_sessions: 4,
            serve_probe_interval: Duration::from_secs(10),
            serve_probe_timeout: Duration::from_secs(2),
            replace_after: Duration::from_secs(60),
            upload_stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path}, line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("config file {path}: invalid setting `{key}`: {reason}")]
    InvalidIn {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl Config {
    /// Where `role`'s admin token is read from, by the daemon and by client
    /// commands run beside it: the role's `admin_token_file`, else
    /// `admin.token` in the data directory.
    pub fn admin_token_file(&self, role: crate::ids::Role) -> PathBuf {
        let provisioned = match role {
            crate::ids::Role::Entrance => &self.entrance.admin_token_file,
            crate::ids::Role::Box => &self.boxnode.admin_token_file,
            crate::ids::Role::Publisher => &self.publisher.admin_token_file,
        };
        provisioned
            .clone()
            .unwrap_or_else(|| crate::secrets::admin_token_path(&self.data_dir))
    }

    /// Parses a config file's text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason } => ConfigError::InvalidIn {
                path: path.to_owned(),
                key,
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Loads `path`, or with none the first of `./dandelion.toml` and
    /// `/etc/dandelion/dandelion.toml` that exists, or the defaults. Returns the
    /// file actually used, for the start-up log.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let candidates: Vec<PathBuf> = match path {
            Some(p) => vec![p.to_owned()],
            None => vec![PathBuf::from(DEFAULT_FILE_NAME), PathBuf::from(SYSTEM_FILE)],
        };
        for candidate in candidates {
            match fs::read_to_string(&candidate) {
                Ok(text) => return Ok((Config::parse(&text, &candidate)?, Some(candidate))),
                Err(e) if e.kind() == ErrorKind::NotFound && path.is_none() => continue,
                Err(cause) => {
                    return Err(ConfigError::Read {
                        path: candidate,
                        cause,
                    });
                }
            }
        }
        Ok((Config::default(), None))
    }

    /// Checks what serde cannot: ranges and relations between settings. Called
    /// after the file is read and again after overrides are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.store_prefix.contains(['{', '}']) {
            return invalid(
                "store_prefix",
                "must not contain `{` or `}` (they mark Redis Cluster hash tags)",
            );
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections_per_address == 0 {
            return invalid(
                "limits.max_connections",
                "max_connections and max_connections_per_address must be at least 1",
            );
        }
        for (key, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.ws_ping_interval", l.ws_ping_interval),
        ] {
            if value.is_zero() {
                return invalid(key, "must be longer than zero");
            }
        }
        let e = &self.entrance;
        if e.expire_box_time.is_zero() {
            return invalid("entrance.expire_box_time", "must be longer than zero");
        }
        if e.heartbeat_interval.is_zero() || e.heartbeat_interval >= e.expire_box_time {
            return invalid(
                "entrance.heartbeat_interval",
                "must be longer than zero and shorter than entrance.expire_box_time",
            );
        }
        if !(0.0..=1.0).contains(&e.self_preservation_threshold) {
            return invalid(
                "entrance.self_preservation_threshold",
                "must be between 0 and 1",
            );
        }
        if e.namespace
            .as_deref()
            .is_some_and(|n| n.is_empty() || n.contains(['{', '}', ':']))
        {
            return invalid(
                "entrance.namespace",
                "must not be empty or contain `{`, `}` or `:`",
            );
        }
        if e.reachability_interval.is_zero() || e.reachability_timeout.is_zero() {
            return invalid(
                "entrance.reachability_interval",
                "reachability_interval and reachability_timeout must be longer than zero",
            );
        }
        for (section, cert, key) in [
            ("entrance", &e.tls_cert, &e.tls_key),
            ("box", &self.boxnode.tls_cert, &self.boxnode.tls_key),
            (
                "publisher",
                &self.publisher.tls_cert,
                &self.publisher.tls_key,
            ),
        ] {
            if cert.is_some() != key.is_some() {
                return invalid(
                    &format!("{section}.tls_cert"),
                    "tls_cert and tls_key go together: give both, or neither for plain HTTP",
                );
            }
        }
        for (key, pins) in [
            ("entrance.peers", &e.peers),
            ("box.entrances", &self.boxnode.entrances),
            ("publisher.entrances", &self.publisher.entrances),
        ] {
            for pin in pins {
                if let Err(err) = pin.require_role(Role::Entrance) {
                    return invalid(key, &err.to_string());
                }
            }
        }
        for (key, keys) in [
            ("entrance.publisher_keys", &e.publisher_keys),
            ("box.publisher_keys", &self.boxnode.publisher_keys),
        ] {
            for k in keys {
                if crate::identity::parse_public_key(k.trim()).is_err() {
                    return invalid(
                        key,
                        &format!(
                            "`{}` is not a public key (64 hex digits; `dandelion id publisher` \
                             prints it)",
                            k.escape_debug()
                        ),
                    );
                }
            }
        }
        for (key, token) in [
            ("entrance.join_token", &e.join_token),
            ("box.join_token", &self.boxnode.join_token),
        ] {
            if let Some(reason) = token
                .as_deref()
                .and_then(|t| crate::tokens::weakness(t.trim()))
            {
                return invalid(key, &reason);
            }
        }
        let b = &self.boxnode;
        if (b.join_token.is_some() || b.join_token_file.is_some())
            && (b.invitation.is_some() || b.invitation_file.is_some())
        {
            return invalid(
                "box.invitation",
                "a box presents either a join token or an invitation, not both",
            );
        }
        if let Some(code) = &b.invitation
            && !code.trim().starts_with("dinv-")
        {
            return invalid(
                "box.invitation",
                "an invitation starts with `dinv-`; `dandelion invite OWNER` on the entrance makes one",
            );
        }
        if self.boxnode.heartbeat_interval.is_zero() {
            return invalid("box.heartbeat_interval", "must be longer than zero");
        }
        if self.boxnode.uplink_test_interval.is_zero() {
            return invalid("box.uplink_test_interval", "must be longer than zero");
        }
        if self.boxnode.max_downloads == 0 {
            return invalid("box.max_downloads", "must be at least 1");
        }
        if self.boxnode.max_publisher_sessions == 0 {
            return invalid("box.max_publisher_sessions", "must be at least 1");
        }
        let one_frame = crate::frame::Limits::default().max_chunked_message();
        if self.boxnode.upload_memory.as_u64() < one_frame as u64
            || self.boxnode.upload_memory.as_u64() > u64::from(u32::MAX)
        {
            return invalid(
                "box.upload_memory",
                &format!("must hold at least one file frame ({one_frame} bytes) and at most 4 GiB"),
            );
        }
        if self.publisher.search_interval.is_zero() {
            return invalid("publisher.search_interval", "must be longer than zero");
        }
        if self.publisher.replicas == 0 {
            return invalid("publisher.replicas", "must be at least 1");
        }
        if self.publisher.default_ttl.is_zero()
            || self.publisher.default_ttl > self.publisher.max_ttl
        {
            return invalid(
                "publisher.default_ttl",
                "must be longer than zero and at most publisher.max_ttl",
            );
        }
        if self.publisher.max_transfers == 0 {
            return invalid("publisher.max_transfers", "must be at least 1");
        }
        if self
            .publisher
            .store_files_up_to
            .is_some_and(|size| size > STORE_FILES_UP_TO_MAX)
        {
            return invalid(
                "publisher.store_files_up_to",
                "must be at most 1 MiB: bigger files are streamed to disk and to \
                 their boxes as they arrive",
            );
        }
        if self.publisher.serve_probe_timeout.is_zero() {
            return invalid("publisher.serve_probe_timeout", "must be longer than zero");
        }
        if self.publisher.upload_stall_timeout.is_zero() {
            return invalid("publisher.upload_stall_timeout", "must be longer than zero");
        }
        Ok(())
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A duration as whole seconds (`120`) or in words (`"2m"`, `"500ms"`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Addresses and networks: `"192.0.2.7"` is the network of that one address.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{}` is not an IP address or a network like 192.0.2.0/24",
                        text.escape_debug()
                    ))
                })
        })
        .collect()
}

/// Parses `"90"`, `"90s"`, `"2m"`, `"1h 30m"`: shared by the config file and flags.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "`{}` is not a duration like 30s or 2m: {e}",
            text.escape_debug()
        )
    })
}

/// Data directory errors.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {cause}")]
    Create {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("data directory {path} is not writable: {cause}")]
    NotWritable {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Creates the data directory if needed and proves it is writable, so that a bad
/// path fails at start-up with its name rather than later inside some write.
pub fn prepare_data_dir(path: &Path) -> Result<(), DataDirError> {
    fs::create_dir_all(path).map_err(|cause| DataDirError::Create {
        path: path.to_owned(),
        cause,
    })?;
    // Keys, tokens, the store and logs live here: nobody else's to list.
    crate::secrets::narrow(path, 0o700);
    let probe = path.join(format!(".write-test-{}", std::process::id()));
    let result = fs::write(&probe, b"ok");
    let _ = fs::remove_file(&probe);
    result.map_err(|cause| DataDirError::NotWritable {
        path: path.to_owned(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/dandelion/dandelion.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.entrance.expire_box_time, Duration::from_secs(120));
        assert_eq!(c.boxnode.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.publisher.search_interval, Duration::from_secs(10));
        assert_eq!(c.publisher.search_count, 20);
        assert_eq!(c.publisher.default_ttl, Duration::from_secs(60));
    }

    #[test]
    fn sections_durations_and_sizes_parse() {
        let c = parse(
            r#"
data_dir = "/var/lib/dandelion"
store = "redis://127.0.0.1:6379/0"

[entrance]
expire_box_time = "2m"
peers = ["ws://10.0.0.2:7070/dandelion/ws#entrance-0123456789abcdef0123456789abcdef"]

[box]
upload_cap = "2 MiB"
storage_quota = 1000000
heartbeat_interval = 3
"#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/dandelion"));
        assert_eq!(c.entrance.expire_box_time, Duration::from_secs(120));
        assert_eq!(c.boxnode.upload_cap, Some(ByteSize::mib(2)));
        assert_eq!(c.boxnode.storage_quota, Some(ByteSize::b(1_000_000)));
        assert_eq!(c.boxnode.heartbeat_interval, Duration::from_secs(3));
    }

    #[test]
    fn legacy_publishers_are_addresses_or_networks() {
        let c = parse(
            "[entrance]\nlegacy_publishers = [\"192.0.2.7\", \"198.51.100.9/24\", \"::1\"]\n",
        )
        .unwrap();
        let nets: Vec<String> = c
            .entrance
            .legacy_publishers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["192.0.2.7/32", "198.51.100.0/24", "::1/128"]);
        let err =
            parse("[entrance]\nlegacy_publishers = [\"publisher.example.org\"]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`publisher.example.org` is not an IP address or a network"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("store = \"embedded\"\n\n[entrance]\nexpire_box_tme = 30\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml, line 4, column 1: unknown field `expire_box_tme`, expected one of \
             `listen`, `tls_cert`, `tls_key`, `admin_token_file`, `public_url`, `expire_box_time`, `heartbeat_interval`, `peers`, `search_count`, `publisher_keys`, \
             `legacy_peers`, `legacy_publishers`, `geoip_db`, `asn_db`, `trusted_proxies`, `self_preservation_threshold`, \
             `self_preservation_min_boxes`, `join_token`, `join_token_file`, `max_boxes_per_owner`, \
             `new_boxes_per_address_per_hour`, `new_boxes_per_prefix_per_hour`, `namespace`, `reachability_check`, \
             `reachability_interval`, `reachability_timeout`, `reachability_private`, `reachability_allow`, `ban_time`"
        );
    }

    #[test]
    fn entrances_must_be_pinned_to_an_entrance_id() {
        let err = parse("[box]\nentrances = [\"ws://10.0.0.2:7070/dandelion/ws\"]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml, line 2, column 13: `ws://10.0.0.2:7070/dandelion/ws` \
             names no peer ID: write it as `ws://10.0.0.2:7070/dandelion/ws#entrance-<32 hex>` (an \
             entrance prints its ID when it starts, at `GET /`, and with `dandelion id entrance`)"
        );
        let err = parse(
            "[publisher]\nentrances = [\"ws://e/dandelion/ws#box-0123456789abcdef0123456789abcdef\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml: invalid setting `publisher.entrances`: `ws://e/dandelion/ws` is pinned to \
             box-0123456789abcdef0123456789abcdef; expected an ID starting `entrance-`"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("data_dir = \"/srv\"\nstore = embedded\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("config file /etc/dandelion/dandelion.toml, line 2, column 9: "),
            "{text}"
        );
    }

    #[test]
    fn wrong_types_and_bad_values_are_refused() {
        let err = parse("[box]\nheartbeat_interval = \"soon\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml, line 2, column 22: `soon` is not a duration like 30s or 2m: \
             expected number at 0"
        );
        let err = parse("[publisher]\nreplicas = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml: invalid setting `publisher.replicas`: must be at least 1"
        );
        let err = parse("[publisher]\nserve_probe_timeout = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml: invalid setting `publisher.serve_probe_timeout`: must be longer than zero"
        );
        let err = parse("[publisher]\nstore_files_up_to = \"2 MiB\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml: invalid setting `publisher.store_files_up_to`: \
             must be at most 1 MiB: bigger files are streamed to disk and to their boxes as they arrive"
        );
        let err = parse("store_prefix = \"{x}\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /etc/dandelion/dandelion.toml: invalid setting `store_prefix`: must not contain `{` or `}` (they mark Redis Cluster hash tags)"
        );
    }

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let example = include_str!("../../dandelion.example.toml");
        let parsed = parse(example).unwrap();
        let expected = Config {
            data_dir: PathBuf::from("/var/lib/dandelion"),
            ..Config::default()
        };
        assert_eq!(parsed, expected, "the example documents the real defaults");
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read config file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn data_dir_that_cannot_be_created_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, "x").unwrap();
        let bad = file.join("data");
        let err = prepare_data_dir(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create data directory {}: Not a directory (os error 20)",
                bad.display()
            )
        );
        prepare_data_dir(&dir.path().join("fresh/nested")).unwrap();
    }

    #[test]
    fn durations_in_words_or_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-3").is_err());
    }
}
