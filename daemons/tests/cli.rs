//! The `dandelion` binary as an operator meets it: `--help`, start-up checks, and
//! the exact error messages for bad configuration, data directories and stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dandelion_testkit::process::run;
use dandelion_testkit::redis::RedisServer;

fn dandelion(data_dir: &Path) -> Command {
    // Run where no ./dandelion.toml can be picked up by accident: the nearest
    // existing ancestor of the data directory, which is inside the test's tempdir.
    let cwd = data_dir.ancestors().find(|p| p.is_dir()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dandelion"));
    cmd.current_dir(cwd)
        .env_remove("DANDELION_CONFIG")
        .env_remove("DANDELION_STORE")
        .env("DANDELION_DATA_DIR", data_dir)
        .env("DANDELION_LOG_LEVEL", "warn");
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_describes_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dandelion(&dir.path().join("d")).arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in [
        "up",
        "entrance",
        "box",
        "publisher",
        "push",
        "where",
        "boxes",
        "evict",
        "invite",
        "owners",
        "check",
        "id",
    ] {
        assert!(
            help.contains(&format!("\n  {cmd} ")),
            "`{cmd}` missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[env: DANDELION_DATA_DIR="), "{help}");
    let push = stdout(&run(
        dandelion(&dir.path().join("d")).args(["push", "--help"])
    ));
    for flag in ["--to", "--as", "--ttl", "--replicas", "--watch"] {
        assert!(push.contains(flag), "push --help lacks {flag}:\n{push}");
    }
    // What a push gets when it says nothing: the publisher decides, and the
    // help says what it decides unless configured otherwise.
    let words = push.split_whitespace().collect::<Vec<_>>().join(" ");
    for default in [
        "60s unless configured",
        "1 unless configured",
        "means https://",
    ] {
        assert!(
            words.contains(default),
            "push --help lacks `{default}`:\n{push}"
        );
    }
    // Each command offers the flags it uses: the store's on commands that
    // open it, contexts on the clients, and neither where they would be
    // accepted and ignored.
    let help_of = |cmd: &str| stdout(&run(dandelion(&dir.path().join("d")).args([cmd, "--help"])));
    for (cmd, has, lacks) in [
        (
            "entrance",
            &["--store", "--store-prefix", "--listen"][..],
            &["--context"][..],
        ),
        ("publisher", &["--store", "--store-prefix"], &["--context"]),
        ("check", &["--store", "--store-prefix"], &["--context"]),
        (
            "push",
            &["--context", "--contexts"],
            &["--store", "--listen"],
        ),
        ("boxes", &["--context", "--entrance"], &["--store"]),
        ("up", &["--boxes", "--port-base"], &["--store", "--context"]),
        ("id", &["--data-dir"], &["--store", "--context"]),
    ] {
        let help = help_of(cmd);
        for flag in has {
            assert!(help.contains(flag), "{cmd} --help lacks {flag}:\n{help}");
        }
        for flag in lacks {
            assert!(
                !help.contains(&format!("{flag} ")),
                "{cmd} --help offers {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn check_creates_the_identity_once_and_logs_to_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run(dandelion(&data).arg("check"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("config file:    none found, using the defaults"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "store:          embedded, {}",
        data.join("dandelion.redb").display()
    )));
    let box_id = text
        .lines()
        .find_map(|l| l.strip_prefix("box ID:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(box_id.starts_with("box-") && box_id.len() == 36, "{box_id}");
    let mode = std::fs::metadata(data.join("box.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let again = run(dandelion(&data).arg("id").arg("box"));
    assert!(
        stdout(&again).contains(&format!("id:         {box_id}")),
        "the ID survives a restart"
    );

    let log = std::fs::read_to_string(data.join("dandelion.log")).unwrap_or_default();
    assert!(log.is_empty(), "at warn level nothing is logged: {log}");
    let out = run(dandelion(&data)
        .env("DANDELION_LOG_LEVEL", "info")
        .arg("check"));
    assert!(out.status.success());
    let log = std::fs::read_to_string(data.join("dandelion.log")).unwrap();
    assert!(log.contains("configuration checked"), "{log}");
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_dir = dir.path().join("from-file");
    let env_dir = dir.path().join("from-env");
    let flag_dir = dir.path().join("from-flag");
    let config = dir.path().join("dandelion.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", file_dir.display().to_string()),
    )
    .unwrap();
    let mut cmd = dandelion(&env_dir);
    cmd.env_remove("DANDELION_DATA_DIR")
        .arg("--config")
        .arg(&config)
        .args(["id", "entrance"]);
    assert!(run(&mut cmd).status.success());
    assert!(file_dir.join("entrance.key").exists());
    assert!(
        run(dandelion(&env_dir)
            .arg("--config")
            .arg(&config)
            .args(["id", "entrance"]))
        .status
        .success()
    );
    assert!(env_dir.join("entrance.key").exists());
    let out = run(dandelion(&env_dir)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&flag_dir)
        .args(["id", "box"]));
    assert!(out.status.success());
    assert!(flag_dir.join("box.key").exists() && !env_dir.join("box.key").exists());
}

/// A malformed key or a guessable token in the file is refused when the file
/// is read, naming the file and the key, rather than starting a network that
/// any box can join or no publisher can use.
#[test]
fn weak_or_malformed_secrets_in_the_config_are_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dandelion.toml");
    for (text, key, says) in [
        (
            "[entrance]\npublisher_keys = [\"zz-not-a-key\"]\n",
            "entrance.publisher_keys",
            "`zz-not-a-key` is not a public key",
        ),
        (
            "[box]\npublisher_keys = [\"abc\"]\n",
            "box.publisher_keys",
            "`abc` is not a public key",
        ),
        (
            "[entrance]\njoin_token = \"a\"\n",
            "entrance.join_token",
            "at least 16 characters, this one has 1",
        ),
        (
            "[box]\njoin_token = \"password\"\n",
            "box.join_token",
            "at least 16 characters, this one has 8",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = run(dandelion(&dir.path().join("d"))
            .arg("--config")
            .arg(&config)
            .arg("check"));
        assert_eq!(out.status.code(), Some(1), "{text}");
        let said = stderr(&out);
        assert!(
            said.starts_with(&format!(
                "error: config file {}: invalid setting `{key}`: ",
                config.display()
            )) && said.contains(says),
            "{said}"
        );
    }
    // A join token file is read when the role starts: a weak one stops it.
    let token = dir.path().join("join.token");
    std::fs::write(&token, "short\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[entrance]\njoin_token_file = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    let out = run(dandelion(&dir.path().join("d"))
        .arg("--config")
        .arg(&config)
        .args(["entrance", "--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.contains("entrance.join_token_file")
            && said.contains(&token.display().to_string())
            && said.contains("at least 16 characters"),
        "{said}"
    );
}

/// Outside systemd (no `UMask=`), under a umask of 022: the daemon still keeps
/// its data directory 0700 and its logs and tokens 0600, and narrows what an
/// earlier run left wider.
#[test]
fn a_daemon_keeps_its_data_directory_and_logs_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("entrance");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old_log = data.join("dandelion.2026-01-01.log");
    std::fs::write(&old_log, "an earlier run\n").unwrap();
    std::fs::set_permissions(&old_log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let entrance = dandelion_testkit::daemon::DaemonBuilder::new("entrance", &data).spawn();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&old_log), 0o600);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let logs: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log") && *p != old_log)
        .collect();
    assert!(!logs.is_empty(), "today's log file");
    for log in logs {
        assert_eq!(mode(&log), 0o600, "{}", log.display());
    }
    drop(entrance);
}

#[test]
fn unknown_config_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dandelion.toml");
    std::fs::write(
        &config,
        "log_level = \"info\"\n[box]\nupload_cap = \"1 MiB\"\nmax_dowloads = 3\n",
    )
    .unwrap();
    let out = run(dandelion(&dir.path().join("d"))
        .arg("--config")
        .arg(&config)
        .arg("check"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: config file {}, line 4, column 1: unknown field `max_dowloads`, expected one of `listen`, \
             `tls_cert`, `tls_key`, `admin_token_file`, `trusted_proxies`, `public_url`, `entrances`, `join_token`, `join_token_file`, `invitation`, `invitation_file`, `heartbeat_interval`, `upload_cap`, \
             `max_downloads`, `max_publisher_sessions`, `upload_memory`, `storage_quota`, `publisher_quota`, `max_file_size`, `max_ttl`, `publisher_keys`, \
             `bind_outgoing`, `uplink_test_size`, `uplink_test_interval`\n",
            config.display()
        )
    );
    assert!(
        !dir.path().join("d").exists(),
        "a refused config changes nothing"
    );
}

#[test]
fn config_syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dandelion.toml");
    std::fs::write(&config, "[entrance]\nlisten = 0.0.0.0:7070\n").unwrap();
    let out = run(dandelion(&dir.path().join("d"))
        .arg("--config")
        .arg(&config)
        .arg("check"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: config file {}, line 2, column ",
            config.display()
        )),
        "{err}"
    );
}

#[test]
fn unusable_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let out = run(dandelion(&data).arg("check"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot create data directory {}: Not a directory (os error 20)\n",
            data.display()
        )
    );
}

#[test]
fn unreachable_redis_fails_fast_with_url_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let out = run(dandelion(&dir.path().join("d")).args([
        "check",
        "--store",
        &format!("redis://127.0.0.1:{port}/0"),
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the Redis store at redis://127.0.0.1:{port}/0: "
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // A server that accepts and never answers must not hang start-up either.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let out = run(dandelion(&dir.path().join("d")).args([
        "check",
        "--store",
        &format!("redis://127.0.0.1:{port}/"),
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot reach the Redis store at redis://127.0.0.1:{port}/: "
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_against_a_real_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = run(dandelion(&dir.path().join("d")).args([
        "check",
        "--store",
        &redis.url(),
        "--store-prefix",
        "t1:",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("store:          {} (answering)", redis.url())));
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out =
        run(dandelion(&dir.path().join("d")).args(["publisher", "--listen", &addr.to_string()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("error: cannot listen on {addr}: ")),
        "{}",
        stderr(&out)
    );
}

/// `dandelion-box` is `dandelion box` alone: the same flags and config, and a
/// clear error for anything that is not the box.
#[test]
fn dandelion_box_runs_the_box_alone_with_the_same_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let program = env!("CARGO_BIN_EXE_dandelion-box");
    let out = run(Command::new(program).arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--listen",
        "--entrance",
        "--config",
        "--data-dir",
        "--ca-file",
    ] {
        assert!(
            help.contains(flag),
            "dandelion-box --help lacks {flag}:\n{help}"
        );
    }
    assert!(help.contains("`dandelion box`"), "{help}");

    // Another command is not taken for the box: it is refused, and nothing starts.
    let out = run(Command::new(program)
        .current_dir(dir.path())
        .env("DANDELION_DATA_DIR", &data)
        .args(["entrance"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unexpected argument 'entrance'"),
        "{}",
        stderr(&out)
    );
    assert!(
        !data.exists(),
        "a refused command created the data directory"
    );

    // The same start-up errors as `dandelion box`.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run(Command::new(program)
        .current_dir(dir.path())
        .env_remove("DANDELION_CONFIG")
        .env_remove("DANDELION_STORE")
        .env("DANDELION_DATA_DIR", &data)
        .env("DANDELION_LOG_LEVEL", "warn")
        .args(["--listen", &addr.to_string()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("error: cannot listen on {addr}: ")),
        "{}",
        stderr(&out)
    );
}

/// `up` runs every daemon on its own embedded store: a store it would not
/// use is refused before anything starts, not silently ignored.
#[test]
fn up_refuses_a_store_it_would_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("redis.toml");
    std::fs::write(&config, "store = \"redis://:secret@127.0.0.1:1/0\"\n").unwrap();
    let out = run(dandelion(&dir.path().join("net"))
        .arg("--config")
        .arg(&config)
        .args(["up", "--boxes", "1"])
        .stdin(std::process::Stdio::null()));
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains(
            "`dandelion up` runs every daemon on its own embedded store, not on redis://"
        ),
        "{said}"
    );
    assert!(!said.contains("secret"), "the password is shown: {said}");
    assert!(!dir.path().join("net/network.json").exists());
    // `up` has no --store flag to ignore.
    let out = run(dandelion(&dir.path().join("net")).args(["up", "--store", "embedded"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unexpected argument '--store'"),
        "{}",
        stderr(&out)
    );
    let out = run(dandelion(&dir.path().join("net")).args(["up", "--port-base", "65500"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--port-base"), "{}", stderr(&out));
}

/// Completion scripts come from the binary itself, even where its config
/// file is broken (a shell start-up must not fail on it).
#[test]
fn completions_for_each_shell_whatever_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "this is = = not toml").unwrap();
    for (shell, mark) in [
        ("bash", "_dandelion()"),
        ("zsh", "#compdef dandelion"),
        ("fish", "complete -c dandelion"),
    ] {
        let out = run(dandelion(&dir.path().join("d"))
            .args(["--config"])
            .arg(&broken)
            .args(["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("push"), "{shell} completes no subcommands");
    }
    let out = run(dandelion(&dir.path().join("d")).args(["completions", "tcsh"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("possible values: bash, zsh, fish"),
        "{}",
        stderr(&out)
    );
}

/// What the README promises a newcomer matches the workspace: the Rust
/// version it names is the one Cargo enforces, the license texts Cargo.toml
/// names are there, and the push example outlives reading pace.
#[test]
fn the_readme_says_what_the_workspace_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let (readme, manifest) = (read("README.md"), read("Cargo.toml"));
    let rust = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        readme.contains(&format!("Rust {rust} or newer")),
        "the README does not name Rust {rust}"
    );
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(read(license).len() > 1000, "{license}");
    }
    let push = readme
        .lines()
        .find(|l| l.contains("-- push ./some-file.ts"))
        .unwrap();
    assert!(push.contains("--ttl 1h"), "{push}");
    assert!(
        readme.contains("> some-file.ts"),
        "the README never makes the file it pushes"
    );
}
