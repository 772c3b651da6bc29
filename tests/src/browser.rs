//! hls.js in headless Chromium as a viewer in stream tests: Debian's
//! `chromium` driven by `playwright-core` from npm (`tests/browser/`, no
//! browser download), which `.ci/run` installs. A browser player retries a
//! failed fragment and reports stalls, which ffmpeg does not.

use std::path::PathBuf;
use std::process::Command;

/// `tests/browser`, where `play.mjs` and its `node_modules` are.
fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Panics, saying how to get them, where node, Chromium or the npm packages
/// are missing.
pub fn require_hls_js() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "this test needs Chromium at {chromium} (apt-get install chromium; .ci/run does it)"
    );
    assert!(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs node (apt-get install nodejs npm; .ci/run does it)"
    );
    assert!(
        dir().join("node_modules/playwright-core").is_dir()
            && dir().join("node_modules/hls.js").is_dir(),
        "this test needs hls.js and playwright-core: (cd {} && npm ci); .ci/run does it",
        dir().display()
    );
}

/// Applies the player's arguments to `c` (`node`, perhaps run on a test LAN's
/// host): plays `url` for `seconds`, then prints one JSON line ([`Watched`]).
pub fn hls_js<'a>(c: &'a mut Command, url: &str, seconds: u32) -> &'a mut Command {
    c.arg(dir().join("play.mjs"))
        .arg(url)
        .arg(seconds.to_string())
        .current_dir(dir())
}

/// Waits up to `within` for the player started with [`hls_js`] to end, and
/// reads what it saw from its stdout file `out` (its stderr file `err` is
/// shown when it failed).
///
/// # Panics
///
/// If it does not end in time, ends with a failure, or printed no report.
pub fn finished(
    player: &mut crate::process::Running,
    out: &std::path::Path,
    err: &std::path::Path,
    within: std::time::Duration,
) -> Watched {
    let status = crate::wait_for("hls.js to finish", within, || {
        player.child().try_wait().ok().flatten()
    });
    let said = std::fs::read_to_string(out).unwrap_or_default();
    let err = std::fs::read_to_string(err).unwrap_or_default();
    assert!(status.success(), "the browser player failed: {said}{err}");
    Watched::parse(&said).unwrap_or_else(|| panic!("no report from hls.js: {said}{err}"))
}

/// What the browser's viewer saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// Seconds of the stream that played.
    pub played: f64,
    /// Times playback waited half a second or more for data after it had
    /// started: what a viewer notices.
    pub stalls: u64,
    /// Seconds spent waiting after it had started, short waits included.
    pub stalled: f64,
    /// Every wait after it had started, however short.
    pub waits: u64,
    /// Fragments loaded.
    pub loaded: u64,
    /// Network errors hls.js reported (it retries them).
    pub errors: Vec<String>,
    /// The error that stopped playback, if one did.
    pub fatal: Option<String>,
    /// Fragments loaded per origin (`scheme://host:port`) of the URL hls.js
    /// asked for: the publisher's when it was redirected, a box's when a
    /// content-steering pathway sent it there directly.
    pub origins: std::collections::BTreeMap<String, u64>,
    /// Each time fragments started coming from another origin: `"12.3s
    /// http://…"`.
    pub switches: Vec<String>,
}

impl Watched {
    /// Reads the player's output line; `None` if there is none to read.
    pub fn parse(stdout: &str) -> Option<Watched> {
        let line = stdout.lines().rev().find(|l| l.starts_with('{'))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Watched {
            played: v["played"].as_f64()?,
            stalls: v["stalls"].as_u64()?,
            stalled: v["stalled"].as_f64()?,
            waits: v["waits"].as_u64()?,
            loaded: v["loaded"].as_u64()?,
            errors: v["errors"]
                .as_array()?
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
            fatal: v["fatal"].as_str().map(str::to_owned),
            origins: v["origins"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            switches: v["switches"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Watched;

    #[test]
    fn the_players_line_is_read() {
        let w = Watched::parse(
            "noise\n{\"played\":9.5,\"stalls\":1,\"stalled\":0.7,\"waits\":2,\"loaded\":12,\"errors\":[\"fragLoadError x\"],\"fatal\":null,\"origins\":{\"http://b:1\":12},\"switches\":[\"0.4s http://b:1\"]}\n",
        )
        .unwrap();
        assert_eq!(w.origins.get("http://b:1"), Some(&12));
        assert_eq!(w.switches, ["0.4s http://b:1"]);
        assert_eq!(w.stalls, 1);
        assert_eq!(w.errors, vec!["fragLoadError x".to_owned()]);
        assert_eq!(w.fatal, None);
        assert!(Watched::parse("no json").is_none());
    }
}
