//! What operators read of a running daemon. Its log: plain text in pipes,
//! files and journald, colour only on a terminal (and never with `NO_COLOR`),
//! one JSON object per line when `log_format = "json"`. Its `/metrics`:
//! OpenMetrics said as such, the build, and the process's own figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::DaemonBuilder;
use dandelion_testkit::network::NetworkBuilder;
use dandelion_testkit::process::{Running, binary, run};
use dandelion_testkit::wait_for;
use serde_json::Value;

const ESC: char = '\u{1b}';

#[test]
fn pipes_and_files_get_plain_text_and_json_is_one_object_per_line() {
    let root = tempfile::tempdir().unwrap();
    let text = DaemonBuilder::new("entrance", &root.path().join("text")).spawn();
    let file = root.path().join("text/dandelion.log");
    let logged = wait_for("the log file", Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| !t.is_empty())
    });
    let stderr = text.log();
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains(ESC), "colour codes in a pipe: {stderr:?}");
    assert!(
        !logged.contains(ESC),
        "colour codes in the file: {logged:?}"
    );

    let json = DaemonBuilder::new("entrance", &root.path().join("json"))
        .top("log_format = \"json\"")
        .spawn();
    let stderr = json.log();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(event.get(field).is_some(), "no `{field}` in {line}");
        }
    }
    assert!(
        lines.iter().any(|l| {
            let event: Value = serde_json::from_str(l).unwrap();
            event["level"] == "INFO" && event["message"].as_str().is_some_and(|m| !m.is_empty())
        }),
        "no INFO event with its message at the top level: {stderr}"
    );
    let logged = std::fs::read_to_string(root.path().join("json/dandelion.log")).unwrap();
    for line in logged.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("the file is not JSON lines ({e}): {line}"));
    }
}

/// The daemon's stderr on a pseudo-terminal (util-linux `script`), as an
/// operator running it by hand sees it.
fn on_a_terminal(root: &std::path::Path, name: &str, no_color: Option<&str>) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dandelion.toml"),
        format!(
            "data_dir = {:?}\nlog_file = false\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let cmd = format!(
        "exec {} --config {} entrance --listen 127.0.0.1:0",
        binary("dandelion").display(),
        dir.join("dandelion.toml").display()
    );
    let out = dir.join("terminal.out");
    let mut script = Command::new("script");
    script
        .args(["-q", "-f", "-e", "-c", &cmd])
        .arg(&out)
        .env_remove("DANDELION_CONFIG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(v) = no_color {
        script.env("NO_COLOR", v);
    }
    let running = Running::spawn(&mut script);
    let said = wait_for(
        "the entrance to log its start on the terminal",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.contains("listening"))
        },
    );
    // Killing `script` would leave the daemon on its terminal: stop it first.
    let pid = running.id();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = Command::new("kill").args(["-TERM", child]).status();
    }
    said
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed to give the daemon a terminal");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let coloured = on_a_terminal(root.path(), "tty", None);
    assert!(
        coloured.contains(ESC),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(root.path(), "no-color", Some("1"));
    assert!(!plain.contains(ESC), "colour despite NO_COLOR=1: {plain:?}");
}

/// The `content-type` an answer says it is.
fn content_type(answer: &dandelion_core::http::Response) -> Option<&str> {
    answer
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
}

/// The value of the one sample of `name` (no labels) in exposition `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_say_their_format_the_build_and_the_processs_own_figures() {
    let root = tempfile::tempdir().unwrap();
    let daemon = DaemonBuilder::new("box", &root.path().join("box")).spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // As Prometheus asks.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let answer = rt
        .block_on(HttpClient::default().get(
            &format!("{}/metrics", daemon.origin()),
            &[("accept", accept)],
        ))
        .unwrap();
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(
        content_type(&answer),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = answer.text();
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics: {text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("dandelion_build_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(
        (1e6..1e9).contains(&rss),
        "resident memory of {rss} bytes: {text}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        assert!(sample(&text, name).is_some(), "no {name}: {text}");
    }
}

/// What each role measures of its own work, present from the start and
/// moving once there is work: the entrance's heartbeat replies, the
/// publisher's redirects and files by state, the box's household limits.
#[test]
fn each_role_measures_its_latencies_queues_and_limits() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 1).start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let metrics = |origin: &str| {
        rt.block_on(http.get(&format!("{origin}/metrics"), &[]))
            .unwrap()
            .text()
    };
    let publisher = metrics(&net.publisher.origin());
    for state in ["queued", "placed", "failed"] {
        assert!(
            publisher.contains(&format!("dandelion_jobs{{state=\"{state}\"}} 0")),
            "no {state} jobs at 0 before any push: {publisher}"
        );
    }
    let text = metrics(&net.boxes[0].origin());
    assert_eq!(
        sample(&text, "dandelion_box_upload_cap_bytes_per_second"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "dandelion_box_storage_quota_bytes"),
        Some(0.0),
        "{text}"
    );

    let file = root.path().join("clip.ts");
    std::fs::write(&file, vec![5u8; 30_000]).unwrap();
    let token = std::fs::read_to_string(root.path().join("publisher/admin.token")).unwrap();
    let origin = net.publisher.origin();
    let out = run(Command::new(binary("dandelion"))
        .arg("push")
        .arg(&file)
        .args(["--to", &origin, "--token", token.trim()])
        .env_remove("DANDELION_CONFIG"));
    assert!(out.status.success(), "{out:?}");
    wait_for("a redirect to the box", Duration::from_secs(20), || {
        let r = rt
            .block_on(http.get(&format!("{origin}/clip.ts"), &[]))
            .ok()?;
        (r.status.as_u16() == 302).then_some(())
    });
    let publisher = wait_for("the placed file counted", Duration::from_secs(10), || {
        let text = metrics(&origin);
        text.contains("dandelion_jobs{state=\"placed\"} 1")
            .then_some(text)
    });
    for histogram in [
        "dandelion_redirect_seconds_count",
        "dandelion_push_to_placed_seconds_count",
    ] {
        assert!(
            sample(&publisher, histogram).is_some_and(|n| n >= 1.0),
            "{histogram}: {publisher}"
        );
    }
    let entrance = metrics(&net.entrance.origin());
    assert!(
        sample(&entrance, "dandelion_heartbeat_reply_seconds_count").is_some_and(|n| n >= 1.0),
        "{entrance}"
    );
    assert!(
        entrance.contains("dandelion_heartbeat_reply_seconds_bucket{le=\"0.0005\"}"),
        "{entrance}"
    );
}

/// `promtool` from Debian's `prometheus` package, which `.ci/run` installs.
fn promtool(args: &[&str]) -> Command {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "this test needs promtool (apt-get install prometheus; .ci/run does it)"
    );
    let mut c = Command::new("promtool");
    c.args(args);
    c
}

/// Runs `cmd` with `input` on stdin; panics with what it said unless it succeeds.
fn succeeds(mut cmd: Command, input: &str, what: &str) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `deploy/` gives operators holds against the daemons as they run:
/// promtool lints each role's `/metrics`, checks and unit-tests the alert
/// rules, and every metric the rules and the Grafana dashboard name is one a
/// role exposes.
#[test]
fn promtool_accepts_the_metrics_and_rules_and_the_dashboard_names_real_metrics() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 1).start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let mut exposed = String::new();
    for (role, origin) in [
        ("entrance", net.entrance.origin()),
        ("publisher", net.publisher.origin()),
        ("box", net.boxes[0].origin()),
    ] {
        let answer = rt
            .block_on(http.get(&format!("{origin}/metrics"), &[]))
            .unwrap();
        assert_eq!(
            content_type(&answer),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = answer.text();
        succeeds(
            promtool(&["check", "metrics"]),
            &text,
            &format!("promtool check metrics on the {role}'s /metrics"),
        );
        exposed.push_str(&text);
    }
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    let rules_test = deploy.join("prometheus/alerts_test.yml");
    succeeds(
        promtool(&["check", "rules", rules.to_str().unwrap()]),
        "",
        "promtool check rules",
    );
    succeeds(
        promtool(&["test", "rules", rules_test.to_str().unwrap()]),
        "",
        "promtool test rules",
    );

    let dashboard = std::fs::read_to_string(deploy.join("grafana/dandelion.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let name = regex_lite::Regex::new(r"\b(?:dandelion|process)_[a-z0-9_]+").unwrap();
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let mut named = 0;
    for text in exprs
        .iter()
        .map(String::as_str)
        .chain([rules_text.as_str()])
    {
        for m in name.find_iter(text) {
            named += 1;
            assert!(
                exposed.contains(m.as_str()),
                "`{}` is named by the dashboard or the rules but no role exposes it",
                m.as_str()
            );
        }
    }
    assert!(named >= 20, "only {named} metric names found");
}
