//! A provisioned admin token, as an operator deploying across machines gives
//! one: `admin_token_file` is what the daemon takes and what client commands
//! beside it send; a rotated file takes effect without a restart; a missing or
//! empty one stops the start with its path named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::wait_for;

const SOON: Duration = Duration::from_secs(30);
/// A well-formed box ID nobody runs: evicting it is an admin call with no
/// other effect, and the answer says whether the token was taken.
const BOX_ID: &str = "box-0123456789abcdef0123456789abcdef";

/// `dandelion evict` as an operator on the entrance's machine runs it: with
/// the entrance's config, and `--token` only when given.
fn evict(entrance: &Daemon, token: Option<&str>) -> Output {
    let mut cmd = Command::new(binary("dandelion"));
    cmd.env_remove("DANDELION_CONFIG")
        .env_remove("DANDELION_ADMIN_TOKEN")
        .arg("--config")
        .arg(entrance.data_dir().join("dandelion.toml"))
        .args(["evict", BOX_ID, "--reason", "test", "--entrance"])
        .arg(entrance.origin());
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    run(&mut cmd)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn provisioned(root: &Path, token: &str) -> std::path::PathBuf {
    let file = root.join("entrance-admin.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    file
}

#[test]
fn a_provisioned_admin_token_is_taken_rotated_without_a_restart_and_sent_by_client_commands() {
    let root = tempfile::tempdir().unwrap();
    let file = provisioned(root.path(), "first-provisioned-token");
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .set(format!(
            "admin_token_file = {:?}",
            file.display().to_string()
        ))
        .spawn();
    assert!(
        !entrance.data_dir().join("admin.token").exists(),
        "a token was generated beside the provisioned one"
    );

    // The client command beside it reads the same file.
    let out = evict(&entrance, None);
    assert!(out.status.success(), "{}", text(&out));
    let out = evict(&entrance, Some("a-wrong-token"));
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong admin token"), "{}", text(&out));

    // Rotated: the new file is written, the daemon told (as `systemctl reload`).
    std::fs::write(&file, "second-provisioned-token\n").unwrap();
    let pid = entrance.pid().unwrap().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    wait_for("the rotated token to be taken", SOON, || {
        evict(&entrance, Some("second-provisioned-token"))
            .status
            .success()
            .then_some(())
    });
    let old = evict(&entrance, Some("first-provisioned-token"));
    assert!(text(&old).contains("wrong admin token"), "{}", text(&old));
    assert_eq!(entrance.pid().unwrap().to_string(), pid, "no restart");

    // A rotation that leaves the file empty keeps the token in use, and says so.
    std::fs::write(&file, "\n").unwrap();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    wait_for("the bad file to be logged", SOON, || {
        entrance
            .log()
            .contains("the admin token in use stays")
            .then_some(())
    });
    let out = evict(&entrance, Some("second-provisioned-token"));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_missing_empty_or_weak_admin_token_file_stops_the_start_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("box");
    std::fs::create_dir_all(&data).unwrap();
    let empty = root.path().join("empty.token");
    std::fs::write(&empty, "  \n").unwrap();
    let weak = root.path().join("weak.token");
    std::fs::write(&weak, "admin\n").unwrap();
    for file in [root.path().join("missing.token"), empty, weak] {
        // Given as the flag's environment variable, as a unit's Environment= would.
        let out = run(Command::new(binary("dandelion-box"))
            .env_remove("DANDELION_CONFIG")
            .env("DANDELION_DATA_DIR", &data)
            .env("DANDELION_ADMIN_TOKEN_FILE", &file)
            .args(["--listen", "127.0.0.1:0"]));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        let error = said
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("");
        assert!(
            error.starts_with("error: the admin token (admin_token_file): ")
                && error.contains(&file.display().to_string()),
            "{said}"
        );
        assert!(!data.join("admin.token").exists());
    }
}
