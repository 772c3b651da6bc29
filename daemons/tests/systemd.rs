//! Readiness for systemd (`Type=notify`): each role, run as a real process with
//! `NOTIFY_SOCKET` set, says `READY=1` once it listens and `STOPPING=1` when
//! told to stop, on a real datagram socket standing in for systemd's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use dandelion_testkit::daemon::DaemonBuilder;
use dandelion_testkit::wait_for;

/// Waits for a datagram containing `line` on `socket`.
fn wait_for_line(socket: &UnixDatagram, line: &str) {
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    wait_for(
        &format!("{line} on the notify socket"),
        Duration::from_secs(20),
        || {
            while let Ok(n) = socket.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
            seen.lines().any(|l| l == line).then_some(())
        },
    );
}

#[test]
fn every_role_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let root = tempfile::tempdir().unwrap();
    for role in ["entrance", "box", "publisher"] {
        let path = root.path().join(format!("{role}.notify"));
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut builder = DaemonBuilder::new(role, &root.path().join(role))
            .env("NOTIFY_SOCKET", path.to_str().unwrap());
        // The box as its unit runs it.
        if role == "box" {
            builder = builder.alone();
        }
        let mut daemon = builder.spawn();
        wait_for_line(&socket, "READY=1");
        assert!(
            daemon.terminate(Duration::from_secs(20)),
            "{role} did not stop cleanly"
        );
        wait_for_line(&socket, "STOPPING=1");
    }
}

/// The commented configs in `deploy/` are read as strictly as any: a typo or a
/// stale key there would stop a real deployment at start.
#[test]
fn the_deploy_configs_load_and_name_the_units_data_directories() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for role in ["entrance", "box", "publisher"] {
        let path = deploy.join(format!("{role}.toml"));
        let (config, _) = dandelion_core::config::Config::load(Some(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let state_dir = format!("/var/lib/dandelion/{role}");
        assert_eq!(config.data_dir, std::path::Path::new(&state_dir));
        let unit =
            std::fs::read_to_string(deploy.join(format!("systemd/dandelion-{role}.service")))
                .unwrap();
        assert!(unit.contains(&format!("StateDirectory=dandelion/{role}\n")));
        assert!(unit.contains(&format!("ReadWritePaths={state_dir}\n")));
        let exec = match role {
            "box" => "ExecStart=/usr/local/bin/dandelion-box --config /etc/dandelion/box.toml\n"
                .to_owned(),
            _ => format!(
                "ExecStart=/usr/local/bin/dandelion --config /etc/dandelion/{role}.toml {role}\n"
            ),
        };
        assert!(unit.contains(&exec), "{role}'s unit does not say {exec}");
        assert!(unit.contains("Type=notify\n"));
    }
}
