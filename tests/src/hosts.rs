//! Separate machines for end-to-end tests, as network namespaces.
//!
//! A [`Lan`] is a switch (a bridge in a namespace of its own) and the hosts
//! plugged into it; each [`Host`] is a namespace with its own loopback and one
//! address on the LAN, `10.213.0.N/24`. Daemons on different hosts reach each
//! other only over that LAN — their `127.0.0.1` is their own — so addresses,
//! pins, certificates and tokens have to be exchanged as on real machines. The
//! test process stays in the machine's own namespace and runs commands on a
//! host with [`Host::command`]; nothing is routed to or from the machine's real
//! network.
//!
//! It needs root and iproute2's `ip` (CI runs as root). Where either is missing
//! [`Lan::new`] returns `None` after saying so, and the test returns early: a
//! skip that shows in the test's output, never a silent pass.
//!
//! ```no_run
//! use dandelion_testkit::hosts::Lan;
//! let Some(mut lan) = Lan::new("example") else { return };
//! let entrance = lan.host("entrance");
//! let viewer = lan.host("viewer");
//! // `viewer.command("curl")` runs curl on the viewer's host, which reaches
//! // the entrance at `entrance.ip()` over the LAN.
//! ```
//!
//! Everything is removed when the `Lan` is dropped (deleting a namespace takes
//! its interfaces with it), also when the test panics.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The test LAN's network; each `Lan` is isolated, so all of them use it.
const SUBNET: [u8; 3] = [10, 213, 0];

/// A switch and the hosts on it; removed on drop.
#[derive(Debug)]
pub struct Lan {
    tag: String,
    switch: String,
    namespaces: Vec<String>,
    next: u8,
}

/// One machine on a [`Lan`].
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    ip: Ipv4Addr,
    /// The switch's namespace and this host's port on it, to cut its cable.
    switch: String,
    port: String,
}

impl Lan {
    /// A new, empty LAN, named after the test (`test` shows in `ip netns`
    /// while it runs). `None`, with a line saying why, where namespaces cannot
    /// be made here.
    pub fn new(test: &str) -> Option<Lan> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let short: String = test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let tag = format!("dl{}-{n}-{short}", std::process::id());
        let switch = format!("{tag}-switch");
        if let Err(why) = ip(&["netns", "add", &switch]) {
            eprintln!(
                "SKIPPED: cannot make network namespaces here (needs root and iproute2): {why}"
            );
            return None;
        }
        let lan = Lan {
            tag,
            switch: switch.clone(),
            namespaces: vec![switch.clone()],
            next: 10,
        };
        must(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &switch, "link", "set", "br0", "up"]);
        Some(lan)
    }

    /// Plugs a new host named `name` into the switch, with the next address.
    pub fn host(&mut self, name: &str) -> Host {
        let n = self.next;
        assert!(n < 250, "a test LAN holds at most 240 hosts");
        self.next += 1;
        let ns = format!("{}-{name}", self.tag);
        must(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let port = format!("h{n}");
        must(&[
            "-n",
            &ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        must(&["-n", &self.switch, "link", "set", &port, "master", "br0"]);
        must(&["-n", &self.switch, "link", "set", &port, "up"]);
        let ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], n);
        must(&["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        must(&["-n", &ns, "link", "set", "eth0", "up"]);
        must(&["-n", &ns, "link", "set", "lo", "up"]);
        Host {
            name: name.to_owned(),
            ns,
            ip,
            switch: self.switch.clone(),
            port,
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

impl Host {
    /// The host's address on the LAN.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace, for running something on this host that
    /// [`Host::command`] cannot start (`ip netns exec NAMESPACE …`, say in a
    /// pseudo-terminal).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Cuts the host's cable: its port on the switch goes down, and whatever is
    /// sent to or from it vanishes without a reset — a dead line or a household
    /// router that hung, which no peer can tell from a slow one.
    pub fn cut(&self) {
        must(&["-n", &self.switch, "link", "set", &self.port, "down"]);
    }

    /// `program` run on this host (`ip netns exec`, which execs it: the
    /// child's PID is the program's, so signals reach it).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}
