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

#[cfg(test)]
mod tests {
    use super::decoded_seconds;

    #[test]
    fn the_last_progress_line_counts() {
        let log = "frame=1 time=00:00:01.00 bitrate\nframe=9 time=00:01:02.50 bitrate";
        assert!((decoded_seconds(log) - 62.5).abs() < 1e-9);
        assert!(decoded_seconds("no progress").abs() < 1e-9);
    }
}
