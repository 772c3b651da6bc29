//! The real `dandelion-console` in a pseudo-terminal (portable-pty, its screen
//! read back through vt100), measured from outside as an operator would feel it.
//!
//! `idle`: attached to a running `dandelion up` network, untouched; the
//! console's CPU over a window from /proc/PID/stat, with the `dandelion up`
//! process's CPU over the same window as context.
//!
//! ```text
//! console_bench idle --console target/release/dandelion-console --data-dir DIR \
//!     --up-pid PID [--boxes 3] [--seconds 30]
//! ```
//!
//! `keys`: attached to the fake entrance of `daemons/examples/console_feed.rs`,
//! key press → screen change latency (Tab through the views until the new view's
//! title shows; `j` until the detail line names the next box), first with the
//! feed idle (the baseline), then while it pushes `--rate` heartbeats a second.
//!
//! ```text
//! console_bench keys --console target/release/dandelion-console \
//!     --feed target/release/examples/console_feed [--boxes 2000] [--rate 2000] [--samples 150]
//! ```
//!
//! Everything is on loopback and every wait has a deadline.

#[path = "common/machine.rs"]
mod machine;
use machine::machine_load;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 40;
const COLS: u16 = 120;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let mut flags = std::collections::BTreeMap::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        flags.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let get = |name: &str| -> anyhow::Result<String> {
        flags
            .get(name)
            .cloned()
            .with_context(|| format!("--{name} is needed"))
    };
    // Paths as given, made absolute: the console runs in a scratch directory.
    let path = |name: &str| -> anyhow::Result<PathBuf> {
        let given = get(name)?;
        std::fs::canonicalize(&given).with_context(|| format!("--{name} {given}"))
    };
    let num = |name: &str, default: u64| -> anyhow::Result<u64> {
        flags.get(name).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("--{name} takes a number"))
        })
    };
    println!("{}", machine_load());
    match mode.as_str() {
        "idle" => idle(
            &path("console")?,
            &path("data-dir")?,
            get("up-pid")?.parse().context("--up-pid takes a PID")?,
            num("boxes", 3)?,
            num("seconds", 30)?.clamp(5, 600),
        ),
        "keys" => keys(
            &path("console")?,
            &path("feed")?,
            num("boxes", 2000)?,
            num("rate", 2000)?,
            usize::try_from(num("samples", 150)?.clamp(10, 2000))?,
        ),
        _ => bail!("usage: console_bench idle|keys [--flag value]… (see the file's comment)"),
    }
}

/// The console in a PTY: its screen as a vt100 parser, woken on every chunk it prints.
struct Console {
    screen: Arc<(Mutex<vt100::Parser>, Condvar)>,
    writer: Box<dyn Write + Send>,
    /// Kept open for as long as the console draws on the terminal.
    _master: Box<dyn portable_pty::MasterPty + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    pid: u32,
    _dir: PathBuf,
}

impl Console {
    fn start(bin: &Path, args: &[&str], dir: &Path) -> anyhow::Result<Console> {
        let pty = native_pty_system().openpty(PtySize {
            rows: ROWS,
            cols: COLS,
            pixel_width: 0,
            pixel_height: 0,
        })?;
        let mut cmd = CommandBuilder::new(bin);
        for a in args {
            cmd.arg(a);
        }
        cmd.arg("--log-file");
        cmd.arg(dir.join("console.log"));
        cmd.cwd(dir);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        cmd.env_remove("DANDELION_ADMIN_TOKEN");
        let child = pty.slave.spawn_command(cmd)?;
        drop(pty.slave);
        let pid = child.process_id().context("the console has no PID")?;
        let screen = Arc::new((
            Mutex::new(vt100::Parser::new(
                std::num::NonZero::new(ROWS).context("rows")?,
                std::num::NonZero::new(COLS).context("cols")?,
                0,
            )),
            Condvar::new(),
        ));
        let mut reader = pty.master.try_clone_reader()?;
        std::thread::spawn({
            let screen = screen.clone();
            move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let (parser, changed) = &*screen;
                    parser
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .process(&buf[..n]);
                    changed.notify_all();
                }
            }
        });
        let writer = pty.master.take_writer()?;
        Ok(Console {
            screen,
            writer,
            _master: pty.master,
            child,
            pid,
            _dir: dir.to_owned(),
        })
    }

    fn text(&self) -> String {
        self.screen
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .screen()
            .contents()
    }

    /// When the screen first satisfied `check`, waiting at most `timeout`.
    fn wait(&self, timeout: Duration, check: impl Fn(&str) -> bool) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let (parser, changed) = &*self.screen;
        let mut guard = parser.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if check(&guard.screen().contents()) {
                return Some(Instant::now());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn must(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        if self.wait(timeout, check).is_none() {
            bail!(
                "timed out after {timeout:?} waiting for {what}; the screen:\n{}",
                self.text()
            );
        }
        Ok(())
    }

    fn keys(&mut self, keys: &str) -> anyhow::Result<Instant> {
        let at = Instant::now();
        self.writer.write_all(keys.as_bytes())?;
        self.writer.flush()?;
        Ok(at)
    }

    fn quit(mut self) -> anyhow::Result<()> {
        self.keys("q")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        bail!("the console did not quit on q");
    }
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("console-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn idle(
    console: &Path,
    data_dir: &Path,
    up_pid: u32,
    boxes: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let dir = scratch_dir("idle")?;
    let data = data_dir.to_str().context("--data-dir is not UTF-8")?;
    let c = Console::start(console, &["--data-dir", data], &dir)?;
    let want = format!("Boxes {boxes}");
    c.must(
        "the boxes of the network, all active",
        Duration::from_secs(30),
        |s| {
            s.contains(&want)
                && s.matches(" active ").count() >= usize::try_from(boxes).unwrap_or(0)
        },
    )?;
    // Let the first views, the map and the first ticks settle.
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(seconds);
    let (c0, u0, t0) = (cpu_time(c.pid)?, cpu_time(up_pid)?, Instant::now());
    std::thread::sleep(window);
    let (c1, u1, t1) = (cpu_time(c.pid)?, cpu_time(up_pid)?, Instant::now());
    let wall = (t1 - t0).as_secs_f64();
    let pct = |a: Duration, b: Duration| 100.0 * (b - a).as_secs_f64() / wall;
    println!(
        "console idle on a steady network ({boxes} boxes, Boxes view, 120x40 PTY): \
         CPU {:.2} % of one core over {wall:.1} s ({:.0} ms)",
        pct(c0, c1),
        (c1 - c0).as_secs_f64() * 1e3
    );
    println!(
        "`dandelion up` (entrance + {boxes} boxes + publisher, one process) over the same window: CPU {:.2} % of one core",
        pct(u0, u1)
    );
    let verdict = if pct(c0, c1) < 1.0 { "met" } else { "NOT met" };
    println!("target < 1 %: {verdict}");
    let screen = c.text();
    c.quit()?;
    if std::env::var_os("CONSOLE_BENCH_SHOW").is_some() {
        println!("{screen}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The fake feed, started; its address.
fn start_feed(
    feed: &Path,
    boxes: u64,
    rate: u64,
) -> anyhow::Result<(Child, String, BufReader<std::process::ChildStdout>)> {
    let mut child = Command::new(feed)
        .args(["--listen", "127.0.0.1:0", "--duration", "600"])
        .args(["--boxes", &boxes.to_string(), "--rate", &rate.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", feed.display()))?;
    let mut out = BufReader::new(child.stdout.take().context("feed stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("the feed said {line:?}"))?
        .to_owned();
    Ok((child, addr, out))
}

/// The full box ID on the detail line under the table.
fn detail_id(screen: &str) -> Option<String> {
    screen.lines().rev().find_map(|l| {
        let at = l.find("box-")?;
        let id: String = l[at..].chars().take(4 + 32).collect();
        (id.len() == 36 && id[4..].chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
    })
}

#[derive(Debug, Default)]
struct Samples {
    tab: Vec<f64>,
    j: Vec<f64>,
    missed: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (
        percentile(&s, 0.5),
        percentile(&s, 0.99),
        percentile(&s, 1.0),
    )
}

/// One phase: a fresh feed at `rate` and a fresh console; `samples` key presses of each kind.
fn phase(
    console: &Path,
    feed: &Path,
    boxes: u64,
    rate: u64,
    samples: usize,
) -> anyhow::Result<Samples> {
    let (mut feed, addr, mut feed_out) = start_feed(feed, boxes, rate)?;
    let dir = scratch_dir(&format!("keys-{rate}"))?;
    let url = format!("http://{addr}");
    let mut c = Console::start(console, &[&url, "--token", "bench"], &dir)?;
    let want = format!("Boxes {boxes}");
    c.must("the fake entrance's boxes", Duration::from_secs(30), |s| {
        s.contains(&want)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = (cpu_time(c.pid)?, Instant::now());
    let mut out = Samples::default();
    let timeout = Duration::from_secs(5);
    // A fixed pseudo-random pause between presses, so they fall at every phase of a frame.
    let mut seed = 0x2545_f491_u64;
    let mut pause = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        Duration::from_millis(40 + (seed >> 33) % 80)
    };
    // What each press of Tab brings: Geo, Events, then Boxes again.
    let views: [fn(&str) -> bool; 3] = [
        |s| s.contains("Where the boxes are"),
        |s| s.contains("and up (l)"),
        |s| s.contains("· sort ID"),
    ];
    for i in 0..samples {
        std::thread::sleep(pause());
        let shown = views[i % 3];
        let pressed = c.keys("\t")?;
        match c.wait(timeout, shown) {
            Some(at) => out.tab.push((at - pressed).as_secs_f64() * 1e3),
            None => out.missed += 1,
        }
    }
    // Back to the Boxes view, then walk down its table.
    for _ in 0..(3 - samples % 3) % 3 {
        c.keys("\t")?;
        std::thread::sleep(Duration::from_millis(200));
    }
    c.must("the Boxes view", timeout, views[2])?;
    for _ in 0..samples {
        std::thread::sleep(pause());
        let before = detail_id(&c.text());
        let pressed = c.keys("j")?;
        match c.wait(timeout, |s| {
            detail_id(s).is_some_and(|id| Some(id) != before)
        }) {
            Some(at) => out.j.push((at - pressed).as_secs_f64() * 1e3),
            None => out.missed += 1,
        }
    }
    let cpu1 = (cpu_time(c.pid)?, Instant::now());
    let cpu = 100.0 * (cpu1.0 - cpu0.0).as_secs_f64() / (cpu1.1 - cpu0.1).as_secs_f64();
    c.quit()?;
    let mut said = String::new();
    feed_out.read_line(&mut said)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while feed.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if feed.try_wait()?.is_none() {
        feed.kill()?;
    }
    println!(
        "feed at {rate}/s: {}; console CPU while measured {cpu:.1} % of one core",
        said.trim()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn keys(console: &Path, feed: &Path, boxes: u64, rate: u64, samples: usize) -> anyhow::Result<()> {
    println!("{boxes} boxes, 120x40 PTY, {samples} presses of Tab and of j per phase");
    let quiet = phase(console, feed, boxes, 0, samples)?;
    let busy = phase(console, feed, boxes, rate, samples)?;
    println!("key press → screen shows it (ms):");
    for (key, q, b) in [("Tab", &quiet.tab, &busy.tab), ("j", &quiet.j, &busy.j)] {
        let (q50, q99, qmax) = summary(q);
        let (b50, b99, bmax) = summary(b);
        println!(
            "  {key:<3}  feed idle: p50 {q50:5.1}  p99 {q99:5.1}  max {qmax:5.1}   \
             feed at {rate}/s: p50 {b50:5.1}  p99 {b99:5.1}  max {bmax:5.1}   ratio p50 {:.1}x p99 {:.1}x",
            b50 / q50,
            b99 / q99
        );
    }
    println!(
        "presses whose change never showed within 5 s: idle {}, busy {}",
        quiet.missed, busy.missed
    );
    Ok(())
}
