//! A whole Dandelion network of real processes — an entrance, boxes and a
//! publisher, each a `dandelion` process with its own port and data directory —
//! wired the way an operator would: the publisher's key trusted everywhere, one
//! join token, every box and the publisher pointed at the entrance and pinned to
//! its ID.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::{Daemon, DaemonBuilder};
use crate::process::{binary, run};

pub const JOIN_TOKEN: &str = "testkit-join-token";

/// The running network; every process is killed when it is dropped.
#[derive(Debug)]
pub struct Network {
    pub entrance: Daemon,
    pub boxes: Vec<Daemon>,
    pub publisher: Daemon,
    /// The private CA every daemon trusts, on a network started with `tls()`.
    pub ca_file: Option<PathBuf>,
}

/// What `dandelion id ROLE` prints for a data directory (creating the key if
/// needed): the ID and the public key.
pub fn identity(dir: &Path, role: &str) -> (String, String) {
    let out = run(Command::new(binary("dandelion"))
        .arg("--data-dir")
        .arg(dir)
        .args(["id", role]));
    assert!(out.status.success(), "dandelion id {role} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    (field("id:"), field("public key:"))
}

/// The publisher key a data directory holds (created if needed), as
/// `dandelion id publisher` prints it.
pub fn publisher_key(dir: &Path) -> String {
    identity(dir, "publisher").1
}

/// The entrance ID a data directory holds (created if needed), as
/// `dandelion id entrance` prints it: what boxes and publishers pin.
pub fn entrance_id(dir: &Path) -> String {
    identity(dir, "entrance").0
}

/// A box that joins the plain (not TLS) network under `root`, whose entrance
/// is `entrance`, after it started: in `root/name`, set up as
/// [`NetworkBuilder::start`] sets up its own boxes.
pub fn box_joining(root: &Path, entrance: &Daemon, name: &str) -> DaemonBuilder {
    let key = publisher_key(&root.join("publisher"));
    let entrance_ws = format!(
        "ws://127.0.0.1:{}/dandelion/ws#{}",
        entrance.port(),
        entrance_id(&root.join("entrance"))
    );
    DaemonBuilder::new("box", &root.join(name))
        .set(format!("entrances = [{entrance_ws:?}]"))
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
}

/// How to start a [`Network`].
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    root: PathBuf,
    boxes: usize,
    located: bool,
    heartbeat_secs: u64,
    expire_secs: u64,
    publisher_lines: Vec<String>,
    publisher_top: Vec<String>,
    entrance_top: Vec<String>,
    tls: bool,
}

impl NetworkBuilder {
    /// `boxes` boxes under `root` (entrance/, box-N/, publisher/).
    pub fn new(root: &Path, boxes: usize) -> NetworkBuilder {
        NetworkBuilder {
            root: root.to_owned(),
            boxes,
            located: false,
            heartbeat_secs: 1,
            expire_secs: 10,
            publisher_lines: Vec::new(),
            publisher_top: Vec::new(),
            entrance_top: Vec::new(),
            tls: false,
        }
    }

    /// The entrance and the publisher share a GeoIP database that puts
    /// 127.0.0.2/.3/.4 in Taipei, Tokyo and London, and box `i` connects from
    /// 127.0.0.(2 + i), so boxes and viewers have real places.
    pub fn located(mut self) -> Self {
        self.located = true;
        self
    }

    /// The entrance's `expire_box_time`, in seconds (default 10).
    pub fn expire_after(mut self, secs: u64) -> Self {
        self.expire_secs = secs;
        self
    }

    /// Every daemon on TLS with a certificate from a private CA (`root/pki`)
    /// that every daemon trusts (`ca_file`), as an operator's own CA would be;
    /// URLs are `https://` and `wss://`, and the network file names the CA.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// A `key = value` line (TOML) for the publisher's section.
    pub fn publisher_setting(mut self, line: impl Into<String>) -> Self {
        self.publisher_lines.push(line.into());
        self
    }

    /// A top-level `key = value` line (TOML) for the publisher's config: its
    /// `store`, for one.
    pub fn publisher_top(mut self, line: impl Into<String>) -> Self {
        self.publisher_top.push(line.into());
        self
    }

    /// A top-level `key = value` line (TOML) for the entrance's config.
    pub fn entrance_top(mut self, line: impl Into<String>) -> Self {
        self.entrance_top.push(line.into());
        self
    }

    pub fn start(self) -> Network {
        let root = &self.root;
        let ca = self
            .tls
            .then(|| crate::tls::TestCa::new(&root.join("pki"), "testkit-ca"));
        // On TLS: a certificate of its own, and the CA trusted, for a daemon.
        let secured = |b: DaemonBuilder, name: &str| match &ca {
            Some(ca) => {
                let (cert, key) = ca.issue(name);
                b.top(format!("ca_file = {:?}", ca.ca_file.display().to_string()))
                    .tls(&cert, &key)
            }
            None => b,
        };
        let publisher_dir = root.join("publisher");
        let key = publisher_key(&publisher_dir);
        let geo_db = self.located.then(|| crate::geo::write_city_db(root));
        let hb = self.heartbeat_secs;
        let entrance_dir = root.join("entrance");
        let entrance_id = entrance_id(&entrance_dir);
        let mut entrance = DaemonBuilder::new("entrance", &entrance_dir)
            .set(format!("join_token = {JOIN_TOKEN:?}"))
            .set(format!("publisher_keys = [{key:?}]"))
            .set(format!("heartbeat_interval = {hb}"))
            .set(format!("expire_box_time = {}", self.expire_secs));
        if let Some(db) = &geo_db {
            entrance = entrance.set(format!("geoip_db = {:?}", db.display().to_string()));
        }
        for line in &self.entrance_top {
            entrance = entrance.top(line.clone());
        }
        let entrance = secured(entrance, "entrance").spawn();
        let ws = if self.tls { "wss" } else { "ws" };
        // Pinned as an operator would: the URL and the ID `dandelion id entrance` printed.
        let entrance_ws = format!(
            "{ws}://127.0.0.1:{}/dandelion/ws#{entrance_id}",
            entrance.port()
        );
        let boxes = (0..self.boxes)
            .map(|i| {
                let mut b = DaemonBuilder::new("box", &root.join(format!("box-{i}")))
                    .set(format!("entrances = [{entrance_ws:?}]"))
                    .set(format!("join_token = {JOIN_TOKEN:?}"))
                    .set(format!("publisher_keys = [{key:?}]"))
                    .set(format!("heartbeat_interval = {hb}"));
                if self.located {
                    b = b.set(format!("bind_outgoing = \"127.0.0.{}\"", 2 + i));
                }
                secured(b, &format!("box-{i}")).spawn()
            })
            .collect();
        let mut publisher = DaemonBuilder::new("publisher", &publisher_dir)
            .set(format!("entrances = [{entrance_ws:?}]"));
        // A search round a second, unless the test says otherwise.
        if !self
            .publisher_lines
            .iter()
            .any(|l| l.starts_with("search_interval"))
        {
            publisher = publisher.set("search_interval = 1");
        }
        // Copies of a dead box are placed again after 3 s, not the default
        // minute, unless the test says otherwise.
        if !self
            .publisher_lines
            .iter()
            .any(|l| l.starts_with("replace_after"))
        {
            publisher = publisher.set("replace_after = 3");
        }
        for line in &self.publisher_lines {
            publisher = publisher.set(line.clone());
        }
        for line in &self.publisher_top {
            publisher = publisher.top(line.clone());
        }
        if let Some(db) = &geo_db {
            publisher = publisher.set(format!("geoip_db = {:?}", db.display().to_string()));
        }
        let publisher = secured(publisher, "publisher").spawn();
        Network {
            entrance,
            boxes,
            publisher,
            ca_file: ca.map(|ca| ca.ca_file),
        }
    }
}

impl Network {
    /// Writes the `network.json` that `dandelion up` would, into `dir`, so the
    /// client commands and the console find this network (and each daemon's
    /// admin token) with `--data-dir dir`.
    pub fn write_network_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("network.json");
        let text = serde_json::json!({
            "entrance": self.entrance.origin(),
            "publisher": self.publisher.origin(),
            "boxes": self.boxes.iter().map(Daemon::origin).collect::<Vec<_>>(),
            "entrance_dir": self.entrance.data_dir(),
            "publisher_dir": self.publisher.data_dir(),
            "box_dirs": self.boxes.iter().map(Daemon::data_dir).collect::<Vec<_>>(),
            "ca_file": self.ca_file,
        });
        std::fs::write(&path, text.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// A daemon's admin token.
    pub fn admin_token(daemon: &Daemon) -> String {
        let path = daemon.data_dir().join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }
}
