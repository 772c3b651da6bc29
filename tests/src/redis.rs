//! A real `redis-server` for tests, on a free loopback port, gone when dropped.
//!
//! Each server is private to its test (own port, own temporary directory, no
//! persistence), so tests run in parallel without seeing each other's keys. Readiness
//! is checked with a raw `PING` over TCP — this crate must not depend on the code
//! under test, nor on a Redis client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a new port when the chosen one was taken in the meantime (the
/// bind-then-release way of finding a free port is racy).
const ATTEMPTS: usize = 5;

/// A running `redis-server`, killed and reaped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    // Kept for the lifetime of the server: its working directory.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or does not become ready in time.
    pub fn start() -> Self {
        let mut last_failure = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(server) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start after {ATTEMPTS} attempts: {last_failure}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let port = crate::free_port()?;
        let log = dir.path().join("redis.log");
        let spawned = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; the Redis tests need it: \
                 run `apt-get install redis-server`"
            ),
            Err(e) => return Err(format!("cannot run redis-server: {e}")),
        };
        let mut server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {port} exited ({status}): {log}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGSTOP) until the guard is dropped: it keeps its
    /// connections open and answers nothing, as a hung server does.
    ///
    /// # Panics
    ///
    /// If the signal cannot be sent.
    pub fn freeze(&self) -> Frozen<'_> {
        signal(self.child.id(), "-STOP");
        Frozen(self)
    }
}

/// A frozen [`RedisServer`]; dropping it lets the server go on (SIGCONT).
#[derive(Debug)]
pub struct Frozen<'a>(&'a RedisServer);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal(self.0.child.id(), "-CONT");
    }
}

fn signal(pid: u32, which: &str) {
    let sent = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "cannot send {which} to redis-server {pid}");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a Redis server answers `+PONG` on `port`.
fn ping(port: u16) -> bool {
    let timeout = Duration::from_millis(500);
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0_u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
