//! The real `dandelion-console` in a real pseudo-terminal, attached to a real
//! network of `dandelion` processes, driven by keys as an operator would: it
//! sees the boxes appear with their cities, pushes a file through the picker
//! and sees it placed, evicts a box after confirming, keeps drawing while the
//! entrance is down and reconnects by itself when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dandelion_testkit::daemon::DaemonBuilder;
use dandelion_testkit::hosts::{Host, Lan};
use dandelion_testkit::network::{
    JOIN_TOKEN, NetworkBuilder, entrance_id, identity, publisher_key,
};
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::tls::TestCa;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 40;
const COLS: u16 = 120;

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
}

impl Screen {
    fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Waits until the screen satisfies `check`, failing with the screen as it was.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if check(&text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, what: &str, needle: &str, timeout: Duration) {
        self.wait(what, timeout, |s| s.contains(needle));
    }

    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }
}

/// The line of the screen that contains `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

/// `dandelion-console` logging to `log`, in a clean environment.
fn console_command(log: &std::path::Path) -> CommandBuilder {
    console_command_on(None, log)
}

/// [`console_command`] on `host` of a test LAN, when given.
fn console_command_on(host: Option<&Host>, log: &std::path::Path) -> CommandBuilder {
    let console = env!("CARGO_BIN_EXE_dandelion-console");
    let mut cmd = match host {
        Some(host) => {
            let mut cmd = CommandBuilder::new("ip");
            cmd.args(["netns", "exec", host.namespace(), console]);
            cmd
        }
        None => CommandBuilder::new(console),
    };
    cmd.arg("--log-file");
    cmd.arg(log);
    cmd.env("TERM", "xterm-256color");
    for var in [
        "DANDELION_ADMIN_TOKEN",
        "DANDELION_ADMIN_TOKEN_FILE",
        "DANDELION_CONTEXT",
        "DANDELION_CONTEXTS",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` in a new pseudo-terminal; the screen it draws, and the child.
fn open_console(cmd: CommandBuilder) -> (Screen, Box<dyn portable_pty::Child + Send + Sync>) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: ROWS,
            cols: COLS,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(
        std::num::NonZero::new(ROWS).unwrap(),
        std::num::NonZero::new(COLS).unwrap(),
        0,
    )));
    let mut reader = pty.master.try_clone_reader().unwrap();
    std::thread::spawn({
        let parser = parser.clone();
        move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.lock().unwrap().process(&buf[..n]);
            }
        }
    });
    let screen = Screen {
        parser,
        writer: pty.master.take_writer().unwrap(),
    };
    (screen, child)
}

#[test]
fn an_operator_watches_pushes_evicts_and_rides_out_an_entrance_restart() {
    let root = tempfile::tempdir().unwrap();
    // On TLS, as a real network runs: the console attaches over wss:// to every
    // daemon, trusting the network's CA from the network file.
    let mut net = NetworkBuilder::new(&root.path().join("net"), 3)
        .located()
        .tls()
        .start();
    let described = root.path().join("described");
    std::fs::create_dir_all(&described).unwrap();
    net.write_network_file(&described);
    let uploads = root.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("clip.ts"), vec![42u8; 120_000]).unwrap();

    let mut cmd = console_command(&root.path().join("console.log"));
    cmd.arg("--data-dir");
    cmd.arg(&described);
    cmd.cwd(&uploads);
    let (mut screen, mut child) = open_console(cmd);

    // Three boxes appear with their cities (the entrance's GeoIP database).
    screen.wait(
        "three live boxes in their cities",
        Duration::from_secs(30),
        |s| {
            ["Taipei", "Tokyo", "London", "Boxes 3"]
                .iter()
                .all(|c| s.contains(c))
                && s.matches(" active ").count() >= 3
        },
    );

    // Push a file through the picker on the publisher's tab; it gets placed.
    screen.keys("2");
    screen.wait_for(
        "the publisher's view",
        "Queue & placements",
        Duration::from_secs(10),
    );
    screen.keys("p");
    screen.wait_for("the file picker", "clip.ts", Duration::from_secs(5));
    screen.keys("j\r");
    screen.wait("the pushed file placed", Duration::from_secs(30), |s| {
        line_with(s, "clip.ts").is_some_and(|l| l.contains("placed"))
    });

    // Evict the first box after confirming with a reason.
    screen.keys("1");
    screen.wait_for("the entrance's view", "Boxes 3", Duration::from_secs(10));
    screen.keys("e");
    screen.wait_for(
        "the eviction confirmation",
        "Evict box-",
        Duration::from_secs(5),
    );
    let confirm = screen.text();
    let victim = line_with(&confirm, "Evict box-")
        .and_then(|l| l.split("Evict ").nth(1))
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned();
    screen.keys("pty test eviction\r");
    screen.wait_for(
        "the eviction to be confirmed",
        &format!("evicted {victim}"),
        Duration::from_secs(10),
    );
    screen.wait(
        "the evicted box shown evicted",
        Duration::from_secs(10),
        |s| s.contains(" evicted ") && s.matches(" active ").count() == 2,
    );

    // The entrance dies: its tab says it is reconnecting, the rest still works.
    net.entrance.kill9();
    screen.wait_for(
        "the entrance's tab reconnecting",
        "reconnecting in",
        Duration::from_secs(20),
    );
    screen.keys("2");
    screen.wait(
        "the publisher's tab still drawn",
        Duration::from_secs(5),
        |s| s.contains("Queue & placements") && s.contains("clip.ts"),
    );
    screen.keys("1");
    net.entrance.restart();
    screen.wait(
        "the entrance back, with its boxes",
        Duration::from_secs(40),
        |s| {
            !line_with(s, "entrance-").is_some_and(|l| l.contains("reconnecting"))
                && s.matches(" active ").count() >= 2
                && s.contains(" evicted ")
        },
    );

    screen.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the console did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the console exited with {status:?}");
}

/// A context names each daemon with its own token source: the console opens a
/// tab per daemon with that daemon's token and the context's CA. A daemon whose
/// token is wrong says so in its own tab, and the others keep working.
#[test]
fn a_context_opens_each_daemon_with_its_own_token() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(&root.path().join("net"), 1)
        .tls()
        .start();
    let token_file = |d: &dandelion_testkit::daemon::Daemon| d.data_dir().join("admin.token");
    let wrong = root.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-boxs-token\n").unwrap();
    let contexts = root.path().join("contexts.toml");
    std::fs::write(
        &contexts,
        format!(
            "[[context]]\nname = \"lab\"\nca_file = {ca:?}\n\n\
             [[context.daemon]]\nname = \"entrance\"\nurl = {e:?}\ntoken_file = {et:?}\n\n\
             [[context.daemon]]\nname = \"publisher\"\nurl = {p:?}\ntoken_env = \"LAB_PUBLISHER_TOKEN\"\n\n\
             [[context.daemon]]\nname = \"box\"\nurl = {b:?}\ntoken_file = {bt:?}\n\n\
             [[context]]\nname = \"solo\"\nca_file = {ca:?}\n\n\
             [[context.daemon]]\nname = \"publisher\"\nurl = {p:?}\ntoken_env = \"LAB_PUBLISHER_TOKEN\"\n",
            ca = net.ca_file.as_ref().unwrap().display().to_string(),
            e = net.entrance.origin(),
            et = token_file(&net.entrance).display().to_string(),
            p = net.publisher.origin(),
            b = net.boxes[0].origin(),
            bt = wrong.display().to_string(),
        ),
    )
    .unwrap();
    let publisher_token = std::fs::read_to_string(token_file(&net.publisher)).unwrap();

    let mut cmd = console_command(&root.path().join("console.log"));
    cmd.args(["--context", "lab", "--contexts"]);
    cmd.arg(&contexts);
    cmd.env("LAB_PUBLISHER_TOKEN", publisher_token.trim());
    let (mut screen, mut child) = open_console(cmd);

    screen.wait("the entrance's box, active", Duration::from_secs(30), |s| {
        s.contains("Boxes 1") && s.contains(" active ")
    });
    screen.keys("2");
    screen.wait_for(
        "the publisher's view, with the token from the environment",
        "Queue & placements",
        Duration::from_secs(10),
    );
    screen.keys("3");
    screen.wait_for(
        "the box's tab saying its token is wrong",
        "wrong admin token",
        Duration::from_secs(10),
    );
    screen.keys("1");
    screen.wait_for(
        "the entrance still shown",
        "Boxes 1",
        Duration::from_secs(10),
    );

    // `:context` switches: the old tabs go, the new context's open.
    screen.keys(":context nope\r");
    screen.wait_for(
        "an unknown context named on the status line",
        "no context named `nope`",
        Duration::from_secs(10),
    );
    screen.keys(":context solo\r");
    screen.wait(
        "only the publisher, after switching",
        Duration::from_secs(10),
        |s| {
            s.contains("Queue & placements")
                && s.contains("context solo: 1 daemon(s)")
                && !s.contains("entrance-")
        },
    );
    screen.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the console did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The documented deployment on five hosts of a test LAN: an entrance and a
/// publisher with certificates from the operator's CA, two household boxes
/// without, and a viewer. Keys and pins are exchanged as docs/operations.md
/// says, each daemon has a provisioned admin token, everything between hosts
/// is TLS except viewers' downloads from the boxes. A file pushed with
/// `dandelion push` reaches a viewer through the publisher's redirect, and the
/// console on the viewer's host attaches to all four daemons with their own
/// tokens from a context.
#[test]
fn the_documented_deployment_works_across_five_hosts() {
    let Some(mut lan) = Lan::new("five-hosts") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    let (e_host, p_host, b1_host, b2_host, viewer) = (
        lan.host("entrance"),
        lan.host("publisher"),
        lan.host("box1"),
        lan.host("box2"),
        lan.host("viewer"),
    );
    let ca = TestCa::new(&dir("pki"), "operator-ca");
    let ca_file = ca.ca_file.display().to_string();
    // 1. The publisher's key; 2. the entrance's ID (docs/operations.md).
    let key = publisher_key(&dir("publisher"));
    let entrance_pin = entrance_id(&dir("entrance"));
    // Provisioned admin tokens, one per daemon.
    let tokens = dir("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let token_file = |name: &str| {
        let path = tokens.join(format!("{name}.token"));
        std::fs::write(&path, format!("{name}-admin-token-0123456789\n")).unwrap();
        path.display().to_string()
    };

    let (e_cert, e_key) = ca.issue_for("entrance", &[e_host.ip().to_string()]);
    let entrance = DaemonBuilder::new("entrance", &dir("entrance"))
        .on(&e_host)
        .tls(&e_cert, &e_key)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .set(format!("admin_token_file = {:?}", token_file("entrance")))
        .spawn();
    let entrance_url = format!("wss://{}/dandelion/ws#{entrance_pin}", entrance.addr());
    let start_box = |host: &Host, name: &str| {
        DaemonBuilder::new("box", &dir(name))
            .on(host)
            .alone()
            .top(format!("ca_file = {ca_file:?}"))
            .set(format!("entrances = [{entrance_url:?}]"))
            .set(format!("join_token = {JOIN_TOKEN:?}"))
            .set("heartbeat_interval = 1")
            .set(format!("admin_token_file = {:?}", token_file(name)))
            .spawn()
    };
    let box1 = start_box(&b1_host, "box1");
    let box2 = start_box(&b2_host, "box2");
    let (p_cert, p_key) = ca.issue_for("publisher", &[p_host.ip().to_string()]);
    // Its address as players are given it (public_url), on a port chosen first.
    let p_port = dandelion_testkit::free_port().unwrap();
    let public = format!("https://{}:{p_port}", p_host.ip());
    let publisher = DaemonBuilder::new("publisher", &dir("publisher"))
        .on(&p_host)
        .port(p_port)
        .tls(&p_cert, &p_key)
        .top(format!("ca_file = {ca_file:?}"))
        .set(format!("entrances = [{entrance_url:?}]"))
        .set("search_interval = 1")
        .set(format!("public_url = {public:?}"))
        .set(format!("admin_token_file = {:?}", token_file("publisher")))
        .spawn();

    // Push from the viewer's host, as an operator's laptop would.
    let clip = dir("clip.ts");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&clip, &bytes).unwrap();
    let client = |args: &[&str]| {
        let mut c = viewer.command(binary("dandelion"));
        c.arg("--data-dir")
            .arg(dir("laptop"))
            .args(["--ca-file", &ca_file])
            .env_remove("DANDELION_ADMIN_TOKEN")
            .args(args);
        c
    };
    let publisher_token = std::fs::read_to_string(tokens.join("publisher.token")).unwrap();
    let pushed = run(&mut client(&[
        "push",
        clip.to_str().unwrap(),
        "--to",
        &public,
        "--token",
        publisher_token.trim(),
        "--replicas",
        "2",
    ]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&pushed.stdout),
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(
        said.contains(&format!("players: {public}/clip.ts")),
        "{said}"
    );
    wait_for_on("the clip placed on both boxes", || {
        let out = run(&mut client(&[
            "where",
            "clip.ts",
            "--to",
            &public,
            "--token",
            publisher_token.trim(),
        ]));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains(&b1_host.ip().to_string()) && text.contains(&b2_host.ip().to_string()))
            .then_some(())
    });
    // The viewer follows the publisher's redirect to a box and gets the bytes.
    let fetched = run(viewer
        .command("curl")
        .args(["-sSL", "--max-time", "10", "--cacert", &ca_file])
        .arg(format!("{public}/clip.ts")));
    assert!(
        fetched.stdout == bytes,
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );

    // The console on the viewer's host, from a context: each daemon its own token.
    let contexts = dir("contexts.toml");
    let mut text = format!("[[context]]\nname = \"five\"\nca_file = {ca_file:?}\n");
    // A household box has no certificate a CA signed: it is named over
    // https:// with its ID, and proves that ID with its identity certificate.
    let pinned = |daemon: &dandelion_testkit::daemon::Daemon, name: &str| {
        let id = identity(&dir(name), "box").0;
        format!("https://{}#{id}", daemon.addr())
    };
    for (name, url) in [
        ("entrance", entrance.origin()),
        ("publisher", publisher.origin()),
        ("box1", pinned(&box1, "box1")),
        ("box2", pinned(&box2, "box2")),
    ] {
        text.push_str(&format!(
            "\n[[context.daemon]]\nname = {name:?}\nurl = {url:?}\ntoken_file = {:?}\n",
            tokens.join(format!("{name}.token")).display().to_string()
        ));
    }
    std::fs::write(&contexts, text).unwrap();
    let mut cmd = console_command_on(Some(&viewer), &dir("console.log"));
    cmd.args(["--context", "five", "--contexts"]);
    cmd.arg(&contexts);
    let (mut screen, mut child) = open_console(cmd);
    screen.wait(
        "both boxes active at the entrance",
        Duration::from_secs(30),
        |s| s.contains("Boxes 2") && s.matches(" active ").count() >= 2,
    );
    screen.keys("2");
    screen.wait_for(
        "the publisher's placements",
        "clip.ts",
        Duration::from_secs(10),
    );
    for tab in ["3", "4"] {
        screen.keys(tab);
        screen.wait_for(
            "a box's own view",
            "publishers connected",
            Duration::from_secs(10),
        );
        assert!(!screen.text().contains("admin token"), "{}", screen.text());
    }
    screen.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the console did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` for up to 30 s.
fn wait_for_on(what: &str, check: impl FnMut() -> Option<()>) {
    dandelion_testkit::wait_for(what, Duration::from_secs(30), check);
}

/// A context whose CA file is missing still opens: each tab says its daemon's
/// certificate is not trusted, and the console keeps running.
#[test]
fn a_context_with_a_missing_ca_says_so_in_its_tabs() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(&root.path().join("net"), 0)
        .tls()
        .start();
    let contexts = root.path().join("contexts.toml");
    std::fs::write(
        &contexts,
        format!(
            "[[context]]\nname = \"lab\"\nca_file = \"/nonexistent/ca.pem\"\n\n\
             [[context.daemon]]\nname = \"entrance\"\nurl = {:?}\ntoken_file = {:?}\n",
            net.entrance.origin(),
            net.entrance
                .data_dir()
                .join("admin.token")
                .display()
                .to_string(),
        ),
    )
    .unwrap();
    let mut cmd = console_command(&root.path().join("console.log"));
    cmd.args(["--context", "lab", "--contexts"]);
    cmd.arg(&contexts);
    let (mut screen, mut child) = open_console(cmd);
    screen.wait_for(
        "the tab saying the certificate is not trusted",
        "UnknownIssuer",
        Duration::from_secs(15),
    );
    screen.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the console did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    }
}
