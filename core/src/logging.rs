//! Log set-up shared by every binary: `tracing` to stderr and, for daemons, to a
//! daily-rotated file in the data directory.
//!
//! The original told operators to `tail -f dandelion.log`; the rotated files are
//! named `dandelion.YYYY-MM-DD.log` and `dandelion.log` is kept pointing at the
//! current one (use `tail -F` to follow it across midnight).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Rotated log files kept.
pub const KEEP_LOG_FILES: usize = 14;

/// Keeps the file writer's background thread alive; hold it in `main` until exit
/// or the last lines are lost.
#[derive(Debug)]
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "invalid log level `{level}`: {reason} (try info, debug, or dandelion_core=debug,info)"
    )]
    Level { level: String, reason: String },
    #[error("cannot open the log file in {dir}: {reason}")]
    File { dir: String, reason: String },
    #[error("logging was already set up")]
    AlreadySet,
}

/// Parses a level or directive list such as `info` or `dandelion_core=debug,warn`.
///
/// `Targets` alone would read a bare word like `loud` as a module name and log
/// everything from it; a bare word here must be a level.
pub fn parse_filter(level: &str) -> Result<Targets, LogError> {
    let fail = |reason: String| LogError::Level {
        level: level.escape_debug().to_string(),
        reason,
    };
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') {
            directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .map_err(|_| fail(format!("`{}` is not a level", directive.escape_debug())))?;
        }
    }
    level.parse::<Targets>().map_err(|e| fail(e.to_string()))
}

/// Lines the file writer's queue holds by default (tracing-appender's own
/// default): about 4 MiB, allocated and touched in full when logging starts.
pub const DEFAULT_BUFFERED_LINES: usize =
    tracing_appender::non_blocking::DEFAULT_BUFFERED_LINES_LIMIT;

/// Installs the global subscriber: stderr always, and `dandelion.log` in `file_dir`
/// when given.
pub fn init(level: &str, file_dir: Option<&Path>) -> Result<LogGuard, LogError> {
    init_with_buffer(level, file_dir, DEFAULT_BUFFERED_LINES)
}

/// [`init`] with the file writer's queue holding `buffered_lines` lines (at about
/// 32 bytes a slot, all allocated up front); lines beyond it are dropped rather
/// than block the daemon.
pub fn init_with_buffer(
    level: &str,
    file_dir: Option<&Path>,
    buffered_lines: usize,
) -> Result<LogGuard, LogError> {
    let filter = parse_filter(level)?;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter.clone());
    let (file_layer, guard) = match file_dir {
        Some(dir) => {
            // New log files are 0600 by the daemon's umask; older ones are
            // narrowed: they name box addresses and viewers.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with("dandelion") && name.contains(".log") {
                        crate::secrets::narrow(&entry.path(), 0o600);
                    }
                }
            }
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("dandelion")
                .filename_suffix("log")
                .max_log_files(KEEP_LOG_FILES)
                .latest_symlink("dandelion.log")
                .build(dir)
                .map_err(|e| LogError::File {
                    dir: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(buffered_lines.max(1))
                .finish(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(filter);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|_| LogError::AlreadySet)?;
    Ok(LogGuard { _file: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        parse_filter("info").unwrap();
        parse_filter("dandelion_core=debug,warn").unwrap();
        let err = parse_filter("loud").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid log level `loud`: `loud` is not a level (try info, debug, or dandelion_core=debug,info)"
        );
    }
}
