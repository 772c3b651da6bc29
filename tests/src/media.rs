//! ffmpeg as the live encoder and as the player in stream tests: the commands
//! and how to read what the player says.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// Panics, saying how to get it, where ffmpeg is not on the PATH.
pub fn require_ffmpeg() {
    assert!(
        Command::new("ffmpeg")
            .arg("-version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "this test needs ffmpeg on the PATH (apt-get install ffmpeg; .ci/run does it)"
    );
}

/// What every ffmpeg of a test is given first: quiet about itself, never
/// reading the terminal.
pub const QUIET: [&str; 3] = ["-nostdin", "-hide_banner", "-y"];

/// `ffmpeg` with [`QUIET`].
pub fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(QUIET);
    c
}

/// Applies the live encoder's arguments to `c` (an [`ffmpeg`], perhaps run on
/// another host): a test picture and tone in real time, cut into one-second
/// segments under `dir/index.m3u8`, six in the playlist, old ones deleted;
/// its log goes to `log`.
pub fn live_encoder<'a>(c: &'a mut Command, dir: &Path, log: &Path) -> &'a mut Command {
    c.args(["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-re", "-f", "lavfi", "-i", "sine"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-c:a", "aac", "-f", "hls", "-hls_time", "1"])
        .args(["-hls_list_size", "6", "-hls_flags", "delete_segments"])
        .arg(dir.join("index.m3u8"))
        .stdout(Stdio::null())
        .stderr(
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display())),
        )
}

/// `dandelion push --watch dir` to the publisher at `origin`, as a live
/// encoder's pusher runs: files kept 60 s, on `replicas` boxes (the
/// publisher's default when `None`); its output goes to `watch.out` and
/// `watch.err` in `logs`.
pub fn push_watch(
    dir: &Path,
    origin: &str,
    token: &str,
    replicas: Option<u32>,
    logs: &Path,
) -> Command {
    let log = |name: &str| {
        let path = logs.join(name);
        File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    let mut c = Command::new(crate::process::binary("dandelion"));
    c.arg("push")
        .arg("--watch")
        .arg(dir)
        .args(["--to", origin, "--token", token.trim(), "--ttl", "60s"])
        .env_remove("DANDELION_CONFIG")
        .stdout(log("watch.out"))
        .stderr(log("watch.err"));
    if let Some(r) = replicas {
        c.args(["--replicas", &r.to_string()]);
    }
    c
}

/// The last `time=HH:MM:SS.ss` ffmpeg printed: how much it decoded.
pub fn decoded_seconds(log: &str) -> f64 {
    log.rsplit("time=")
        .next()
        .filter(|_| log.contains("time="))
        .and_then(|t| {
            let t = t.get(..11)?;
            let mut parts = t.split(':');
            let h: f64 = parts.next()?.parse().ok()?;
            let m: f64 = parts.next()?.parse().ok()?;
            let s: f64 = parts.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .unwrap_or(0.0)
}

/// Waits until the player logging to `log` has decoded `seconds` more of the
/// stream, allowing three times as long plus ten seconds.
///
/// # Panics
///
/// If it has not by then.
pub fn play_on(log: &Path, seconds: f64) {
    let decoded = || decoded_seconds(&std::fs::read_to_string(log).unwrap_or_default());
    let from = decoded();
    crate::wait_for(
        &format!("{seconds} s more of playback"),
        std::time::Duration::from_secs_f64(seconds * 3.0 + 10.0),
        || (decoded() >= from + seconds).then_some(()),
    );
}

/// Each segment or playlist the player gave up on (a stall to a viewer), with
/// the lines ffmpeg wrote just before: which URL it opened and why that failed.
pub fn failures(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    (0..lines.len())
        .filter(|&i| {
            lines[i].contains("Failed to open segment") || lines[i].contains("Failed to reload")
        })
        .map(|i| lines[i.saturating_sub(3)..=i].join("\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decoded_seconds, failures};

    #[test]
    fn each_failed_segment_or_reload_is_one_failure_with_what_came_before() {
        let log = "a\nb\nOpening 'http://x/1.ts'\n[hls] Failed to open segment 1\nc\nFailed to reload playlist 0";
        let found = failures(log);
        assert_eq!(found.len(), 2);
        assert!(found[0].starts_with("a\nb\nOpening"), "{found:?}");
        assert!(
            found[1].ends_with("Failed to reload playlist 0"),
            "{found:?}"
        );
        assert!(failures("time=00:00:01.00").is_empty());
    }

    #[test]
    fn the_last_progress_line_counts() {
        let log = "frame=1 time=00:00:01.00 bitrate\nframe=9 time=00:01:02.50 bitrate";
        assert!((decoded_seconds(log) - 62.5).abs() < 1e-9);
        assert!(decoded_seconds("no progress").abs() < 1e-9);
    }
}
