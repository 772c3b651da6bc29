//! Real `dandelion` daemons as child processes, each with its own data directory,
//! config file, port and log, for end-to-end tests.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::hosts::Host;
use crate::process::{Running, binary};
use crate::{free_port, wait_for};

/// How long a daemon may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds a daemon's config and starts it.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    role: String,
    data_dir: PathBuf,
    top_level: Vec<String>,
    section: Vec<String>,
    env: Vec<(String, String)>,
    port: Option<u16>,
    tls: bool,
    listen: Ipv4Addr,
    alone: bool,
    host: Option<Host>,
    internet: bool,
}

impl DaemonBuilder {
    /// `role` is `entrance`, `box` or `publisher`; `data_dir` is created if needed.
    pub fn new(role: &str, data_dir: &Path) -> DaemonBuilder {
        DaemonBuilder {
            role: role.to_owned(),
            data_dir: data_dir.to_owned(),
            top_level: Vec::new(),
            section: Vec::new(),
            env: Vec::new(),
            port: None,
            tls: false,
            listen: Ipv4Addr::LOCALHOST,
            alone: false,
            host: None,
            internet: false,
        }
    }

    /// An entrance as on the internet: it calls no box's data URL on a
    /// private or loopback address (`reachability_private` left off, where
    /// every other test entrance has it on) and limits new box identities per
    /// address and prefix (every other test entrance has no such limits).
    pub fn internet(mut self) -> Self {
        self.internet = true;
        self
    }

    /// A `key = value` line (TOML) at the top level of the config file.
    pub fn top(mut self, line: impl Into<String>) -> Self {
        self.top_level.push(line.into());
        self
    }

    /// A `key = value` line (TOML) in the role's section.
    pub fn set(mut self, line: impl Into<String>) -> Self {
        self.section.push(line.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serve TLS with this certificate and key. Readiness is then read from the
    /// daemon's systemd notification (`READY=1` on `NOTIFY_SOCKET`), since a
    /// plain HTTP probe would only be refused (and counted) by a TLS listener.
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.section
            .push(format!("tls_cert = {:?}", cert.display().to_string()));
        self.section
            .push(format!("tls_key = {:?}", key.display().to_string()));
        self.tls = true;
        self
    }

    /// Listen on `ip` (such as 0.0.0.0, to be reached at the machine's other
    /// addresses) instead of 127.0.0.1; the test still talks to it on 127.0.0.1.
    pub fn listen_on(mut self, ip: Ipv4Addr) -> Self {
        self.listen = ip;
        self
    }

    /// Run a box as `dandelion-box`, the role alone (as household devices run
    /// it), instead of `dandelion box`.
    pub fn alone(mut self) -> Self {
        assert_eq!(self.role, "box", "only the box has a binary of its own");
        self.alone = true;
        self
    }

    /// Run on `host` of a test LAN ([`crate::hosts`]), listening on its LAN
    /// address: [`Daemon::origin`] is then that address, reachable from the
    /// LAN's other hosts (not from the test process). Readiness is read from
    /// the daemon's systemd notification, which crosses namespaces.
    pub fn on(mut self, host: &Host) -> Self {
        self.listen = host.ip();
        self.host = Some(host.clone());
        self
    }

    /// Listen on this port instead of a free one (to restart on the same address).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn spawn(self) -> Daemon {
        fs::create_dir_all(&self.data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.data_dir.display()));
        let port = match self.port {
            Some(p) => p,
            None => free_port().unwrap_or_else(|e| panic!("{e}")),
        };
        let config_path = self.data_dir.join("dandelion.toml");
        let mut text = format!(
            "data_dir = {:?}\nlog_level = \"debug\"\n",
            self.data_dir.display().to_string()
        );
        for line in &self.top_level {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!(
            "\n[{}]\nlisten = \"{}:{port}\"\n",
            self.role, self.listen
        ));
        for line in &self.section {
            text.push_str(line);
            text.push('\n');
        }
        if self.role == "entrance" && !self.internet {
            // Test boxes serve on loopback or a namespace LAN's private
            // addresses, and many of them start from one address.
            text.push_str("reachability_private = true\n");
            text.push_str("new_boxes_per_address_per_hour = 0\n");
            text.push_str("new_boxes_per_prefix_per_hour = 0\n");
        }
        fs::write(&config_path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let log_path = self.data_dir.join(format!("{}.stderr", self.role));
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let program = binary(if self.alone {
            "dandelion-box"
        } else {
            "dandelion"
        });
        let mut command = match &self.host {
            Some(host) => host.command(program),
            None => Command::new(program),
        };
        if !self.alone {
            command.arg(&self.role);
        }
        command
            .arg("--config")
            .arg(&config_path)
            .current_dir(&self.data_dir)
            .env_remove("DANDELION_CONFIG")
            .env_remove("DANDELION_DATA_DIR")
            .env_remove("DANDELION_STORE")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let ready = (self.tls || self.host.is_some()).then(|| {
            let path = self.data_dir.join("ready.notify");
            let _ = fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path)
                .unwrap_or_else(|e| panic!("cannot bind {}: {e}", path.display()));
            socket
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
            command.env("NOTIFY_SOCKET", &path);
            socket
        });
        let process = Running::spawn(&mut command);
        let mut daemon = Daemon {
            builder: self,
            port,
            process: Some(process),
            log_path,
        };
        daemon.wait_listening(ready.as_ref());
        daemon
    }
}

/// Whether an HTTP server answers on `addr`. A TCP connection alone is not
/// enough: the kernel accepts connections as soon as the port is bound, before
/// the daemon has finished starting (created its tokens, opened its store).
fn answers_http(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    builder: DaemonBuilder,
    port: u16,
    process: Option<Running>,
    log_path: PathBuf,
}

impl Daemon {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it listens: 127.0.0.1, or its host's LAN address.
    pub fn addr(&self) -> SocketAddr {
        let ip = match &self.builder.host {
            Some(host) => host.ip(),
            None => Ipv4Addr::LOCALHOST,
        };
        SocketAddr::from((ip, self.port))
    }

    /// `http://<addr>`, or `https://…` for a daemon on TLS.
    pub fn origin(&self) -> String {
        let scheme = if self.builder.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    pub fn data_dir(&self) -> &Path {
        &self.builder.data_dir
    }

    /// `Bearer <admin token>`, for the daemon's admin API (the token it wrote
    /// into its data directory).
    pub fn admin_auth(&self) -> String {
        let path = self.data_dir().join("admin.token");
        let token = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        format!("Bearer {}", token.trim())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Running::id)
    }

    /// What the daemon wrote to stderr so far; for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_listening(&mut self, ready: Option<&UnixDatagram>) {
        let addr = self.addr();
        let mut notified = String::new();
        let log_path = self.log_path.clone();
        let process = self.process.as_mut();
        let mut exited = None;
        let mut process = process;
        wait_for(
            &format!("{} to answer HTTP on {addr}", self.builder.role),
            START_TIMEOUT,
            || {
                if let Some(p) = process.as_mut()
                    && let Ok(Some(status)) = p.child().try_wait()
                {
                    exited = Some(status);
                    return Some(());
                }
                match ready {
                    Some(socket) => {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = socket.recv(&mut buf) {
                            notified.push_str(&String::from_utf8_lossy(buf.get(..n)?));
                            notified.push('\n');
                        }
                        notified.lines().any(|l| l == "READY=1").then_some(())
                    }
                    None => answers_http(addr).then_some(()),
                }
            },
        );
        if let Some(status) = exited {
            panic!(
                "{} exited during start-up ({status}):\n{}",
                self.builder.role,
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
    }

    /// `kill -9`: no chance to clean up, as after a power cut.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.child().kill();
            let _ = p.child().wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (killing it after `timeout`). Returns
    /// whether it exited successfully in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut p) = self.process.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(p.id().to_string())
            .status();
        let mut status = None;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = p.child().try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        status.is_some_and(|s| s.success())
    }

    /// Starts the daemon again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        let again = self.builder.clone().port(self.port).spawn();
        *self = again;
    }
}

/// A failing test shows what each of its daemons said last: the daemons are
/// separate processes (on separate hosts, perhaps), and their logs are what
/// explains most failures.
impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last {} lines of the {} at {} ({}):\n{}",
                tail.len(),
                self.builder.role,
                self.addr(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}
