//! Test harness for Dandelion's end-to-end tests.
//!
//! It starts real things — processes, a real `redis-server` — on loopback and waits on
//! conditions with deadlines instead of sleeping. Nothing here depends on
//! `dandelion-core`, so core's own tests can use it without a dependency cycle.

pub mod balancer;
pub mod browser;
pub mod daemon;
pub mod geo;
pub mod hosts;
pub mod media;
pub mod network;
pub mod process;
pub mod redis;
pub mod tls;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1. Another process may take it
/// before the caller binds it, so callers that can retry should.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// Polls `check` until it returns `Some` or `timeout` passes, then panics naming
/// `what`. The short pause between polls only spaces out the checks; the deadline,
/// not a sleep, decides when the test gives up.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir`, at any depth (none if `dir` cannot be read): what a
/// test looks through to say a file was or was not left behind.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The sum of a Prometheus counter over all its series in `/metrics` text
/// (`name` alone or with labels).
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
