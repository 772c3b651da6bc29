//! Screenshots of every console view, from the real `dandelion-console` in a
//! real pseudo-terminal attached to a running `dandelion up` network: it waits
//! for what each view should show, presses the keys an operator would, and
//! writes the terminal's screen, colours and all, as a PNG. Run by
//! `screenshots/take.sh`, which starts the network and pushes the files first.
//!
//! Nothing here changes the network: the eviction is typed and then cancelled.

mod render;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use dandelion_core::console::LocalNetwork;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

#[derive(Debug, Parser)]
#[command(about = "Screenshots of dandelion-console's views, as PNGs")]
struct Args {
    /// The console binary.
    #[arg(long)]
    console: PathBuf,
    /// The `dandelion up` data directory (holds network.json).
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the console starts (the file picker opens there).
    #[arg(long)]
    cwd: PathBuf,
    /// Where the PNGs go.
    #[arg(long)]
    out: PathBuf,
    /// How many files were pushed: the publisher's view is shot once all are placed.
    #[arg(long)]
    files: usize,
    /// The console's own log.
    #[arg(long)]
    log_file: PathBuf,
    /// Folder with DejaVuSansMono.ttf, DejaVuSansMono-Bold.ttf (and DejaVuSans.ttf).
    #[arg(long, default_value = "/usr/share/fonts/truetype/dejavu")]
    fonts: PathBuf,
    #[arg(long, default_value_t = 120)]
    cols: u16,
    #[arg(long, default_value_t = 40)]
    rows: u16,
}

/// The console's terminal, as a vt100 emulator sees it.
struct Term {
    parser: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
}

impl Term {
    fn screen(&self) -> anyhow::Result<vt100::Screen> {
        let parser = self
            .parser
            .lock()
            .map_err(|_| anyhow::anyhow!("the PTY reader panicked"))?;
        Ok(parser.screen().clone())
    }

    fn text(&self) -> anyhow::Result<String> {
        Ok(self.screen()?.contents())
    }

    /// Waits until the screen satisfies `check`; fails with the screen as it was.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        if self.wait_soft(timeout, check)? {
            return Ok(());
        }
        bail!(
            "timed out after {timeout:?} waiting for {what}; the screen:\n{}",
            self.text()?
        )
    }

    fn wait_for(&self, what: &str, needle: &str) -> anyhow::Result<()> {
        self.wait(what, SHORT, |s| s.contains(needle))
    }

    /// Like [`Term::wait`], but only says whether the screen got there.
    fn wait_soft(&self, timeout: Duration, check: impl Fn(&str) -> bool) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if check(&self.text()?) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a frame has been drawn whole: the screen unchanged for a
    /// moment (the console redraws at least once a second, for countdowns).
    fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.screen()?.contents_formatted();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(40));
            let now = self.screen()?.contents_formatted();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(250) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn keys(&mut self, keys: &str) -> anyhow::Result<()> {
        self.writer.write_all(keys.as_bytes())?;
        self.writer.flush()?;
        Ok(())
    }
}

/// Writes PNGs of what the terminal shows.
struct Camera {
    fonts: render::Fonts,
    out: PathBuf,
    taken: Vec<PathBuf>,
}

impl Camera {
    fn shoot(&mut self, term: &Term, name: &str) -> anyhow::Result<()> {
        term.settle()?;
        let path = self.out.join(format!("{name}.png"));
        let missing = render::write_png(&term.screen()?, &self.fonts, &path)?;
        if !missing.is_empty() {
            let codes: Vec<String> = missing
                .iter()
                .map(|c| format!("U+{:04X} {c}", u32::from(*c)))
                .collect();
            eprintln!(
                "screenshot: {name}: no font has {} (drawn as boxes)",
                codes.join(", ")
            );
        }
        eprintln!("screenshot: wrote {}", path.display());
        self.taken.push(path);
        Ok(())
    }
}

/// The number after `label` on the screen, e.g. 5 for "Stored files 5".
fn count_after(screen: &str, label: &str) -> Option<usize> {
    screen.match_indices(label).find_map(|(at, _)| {
        let rest = &screen[at + label.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The upload column of the boxes table has a bar above the lowest: traffic.
fn has_traffic(screen: &str) -> bool {
    screen.contains(['▂', '▃', '▄', '▅', '▆', '▇', '█'])
}

/// Some box's sparkline has `n` samples (one a second since the console started).
fn sparkline_of(screen: &str, n: usize) -> bool {
    let bar = |c: char| ('▁'..='█').contains(&c);
    screen.lines().any(|line| {
        let mut run = 0;
        line.chars().any(|c| {
            run = if bar(c) { run + 1 } else { 0 };
            run >= n
        })
    })
}

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let network = LocalNetwork::load(&args.data_dir)
        .with_context(|| format!("no `dandelion up` network in {}", args.data_dir.display()))?;
    let boxes = network.boxes.len();
    anyhow::ensure!(
        (1..=7).contains(&boxes),
        "{boxes} boxes: tabs 3-9 hold seven at most"
    );
    std::fs::create_dir_all(&args.out)?;
    let fonts = render::Fonts::load(&args.fonts)?;
    let mut camera = Camera {
        fonts,
        out: args.out.clone(),
        taken: Vec::new(),
    };

    let pty = native_pty_system().openpty(PtySize {
        rows: args.rows,
        cols: args.cols,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = CommandBuilder::new(&args.console);
    cmd.arg("--data-dir");
    cmd.arg(&args.data_dir);
    cmd.arg("--log-file");
    cmd.arg(&args.log_file);
    cmd.cwd(&args.cwd);
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("DANDELION_ADMIN_TOKEN");
    cmd.env_remove("DANDELION_ADMIN_TOKEN_FILE");
    cmd.env_remove("DANDELION_THEME");
    cmd.env_remove("NO_COLOR");
    let mut child = pty.slave.spawn_command(cmd)?;
    drop(pty.slave);
    let rows = std::num::NonZero::new(args.rows).context("--rows 0")?;
    let cols = std::num::NonZero::new(args.cols).context("--cols 0")?;
    let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
    let mut reader = pty.master.try_clone_reader()?;
    std::thread::spawn({
        let parser = parser.clone();
        move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let Ok(mut p) = parser.lock() else { break };
                p.process(&buf[..n]);
            }
        }
    });
    let mut term = Term {
        parser,
        writer: pty.master.take_writer()?,
    };

    let result = shoot_all(&mut term, &mut camera, boxes, args.files);
    // Quit either way; a console that does not go is killed.
    let _ = term.keys("q");
    let deadline = Instant::now() + SHORT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("screenshot: the console did not quit on q; killing it");
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    result?;
    eprintln!(
        "screenshot: {} pictures in {}",
        camera.taken.len(),
        args.out.display()
    );
    Ok(())
}

fn shoot_all(term: &mut Term, cam: &mut Camera, boxes: usize, files: usize) -> anyhow::Result<()> {
    // The entrance (tab 1) with every box live and located.
    term.wait("every box live and located", LONG, |s| {
        s.contains(&format!("Boxes {boxes} "))
            && s.matches(" active ").count() >= boxes
            && s.contains("Taipei")
    })?;

    // The publisher (tab 2) once every pushed file is placed.
    term.keys("2")?;
    term.wait("every pushed file placed", LONG, |s| {
        s.contains(&format!("Files {files} · queued 0 · sending 0"))
            && s.matches(" placed ").count() >= files
    })?;

    // Back on the entrance: its boxes with upload sparklines, once the
    // downloads take.sh runs show up (a picture without them is still right).
    term.keys("1")?;
    term.wait_for("the entrance's boxes", &format!("Boxes {boxes} "))?;
    // One reading per heartbeat (5 s): six take half a minute.
    let lively = |s: &str| has_traffic(s) && sparkline_of(s, 6);
    if !term.wait_soft(Duration::from_secs(40), lively)? {
        eprintln!("screenshot: no upload history on the boxes yet; shooting them as they are");
    }
    cam.shoot(term, "entrance-boxes")?;

    // The help overlay over the boxes (most keys apply there).
    term.keys("?")?;
    term.wait_for("the help overlay", "any key closes")?;
    cam.shoot(term, "help")?;
    term.keys("\x1b")?;
    term.wait("the help closed", SHORT, |s| !s.contains("any key closes"))?;

    // The eviction confirmation, with a reason typed; then cancelled.
    term.keys("e")?;
    term.wait_for("the eviction confirmation", "Evict box-")?;
    term.keys("uplink keeps dropping")?;
    term.wait_for("the reason typed", "Reason: uplink keeps dropping")?;
    cam.shoot(term, "evict-confirm")?;
    term.keys("\x1b")?;
    term.wait("the eviction cancelled", SHORT, |s| {
        !s.contains("Evict box-")
    })?;

    term.keys("\t")?;
    term.wait_for("the geo view", "Where the boxes are")?;
    cam.shoot(term, "entrance-geo")?;

    term.keys("\t")?;
    term.wait("the entrance's events", SHORT, |s| {
        s.contains("LEVEL") && count_after(s, "Events ").is_some_and(|n| n > 0)
    })?;
    cam.shoot(term, "entrance-events")?;

    // The publisher: queue and placements, with a segment that has two copies
    // selected so the placements pane shows both and why.
    term.keys("2")?;
    term.wait_for("the publisher's files", "Queue & placements")?;
    for _ in 0..files {
        if term.text()?.matches("why:").count() >= 2 {
            break;
        }
        term.keys("j")?;
        term.settle()?;
    }
    cam.shoot(term, "publisher-queue")?;

    term.keys("p")?;
    term.wait_for("the file picker", " Push a file ")?;
    term.wait_for("the picker's files", "trailer-1080p.mp4")?;
    cam.shoot(term, "push-picker")?;
    term.keys("\x1b")?;
    term.wait("the picker closed", SHORT, |s| !s.contains(" Push a file "))?;

    term.keys("\t")?;
    term.wait("the publisher's ranking", SHORT, |s| {
        s.contains("Ranking of") && s.contains("SCORE") && s.contains("box-")
    })?;
    cam.shoot(term, "publisher-ranking")?;

    // The box holding the most files (tabs 3 on are the boxes).
    let mut best = (0, 0);
    for i in 0..boxes {
        let key = char::from(b'3' + u8::try_from(i)?);
        term.keys(&key.to_string())?;
        term.wait("a box's stored files", SHORT, |s| {
            s.contains("Stored files") && s.contains("publishers connected")
        })?;
        term.settle()?;
        let n = count_after(&term.text()?, "Stored files ").unwrap_or(0);
        if n > best.1 {
            best = (i, n);
        }
    }
    let key = char::from(b'3' + u8::try_from(best.0)?);
    term.keys(&key.to_string())?;
    term.wait_for("the fullest box", &format!("Stored files {}", best.1))?;
    cam.shoot(term, "box-files")?;
    Ok(())
}
