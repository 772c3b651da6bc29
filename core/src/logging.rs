//! Log set-up shared by every binary: `tracing` to stderr and, for daemons, to a
//! daily-rotated file in the data directory; lines for people (colour only on
//! a terminal) or one JSON object each for log pipelines.
//!
//! The original told operators to `tail -f dandelion.log`; the rotated files are
//! named `dandelion.YYYY-MM-DD.log` and `dandelion.log` is kept pointing at the
//! current one (use `tail -F` to follow it across midnight).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How log lines are written, on stderr and in the file alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people: time, level, module, message, fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and
    /// the event's fields at the top level), for journald, Loki or
    /// Elasticsearch pipelines that parse rather than grep.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{}` (text or json)",
                other.escape_debug()
            )),
        }
    }
}

/// Whether stderr gets colour codes: only text read by a person on a
/// terminal, and never while `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>). Pipes, files and journald get plain text.
pub fn colour(format: LogFormat, stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    format == LogFormat::Text && stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

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
pub fn init(level: &str, format: LogFormat, file_dir: Option<&Path>) -> Result<LogGuard, LogError> {
    init_with_buffer(level, format, file_dir, DEFAULT_BUFFERED_LINES)
}

/// One output's layer in `format`, colour codes only where `ansi` says.
fn layer<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
    filter: Targets,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
    }
}

/// [`init`] with the file writer's queue holding `buffered_lines` lines (at about
/// 32 bytes a slot, all allocated up front); lines beyond it are dropped rather
/// than block the daemon.
pub fn init_with_buffer(
    level: &str,
    format: LogFormat,
    file_dir: Option<&Path>,
    buffered_lines: usize,
) -> Result<LogGuard, LogError> {
    let filter = parse_filter(level)?;
    let ansi = colour(
        format,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let mut layers = vec![layer(format, ansi, std::io::stderr, filter.clone())];
    let guard = match file_dir {
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
            layers.push(layer(format, false, writer, filter));
            Some(guard)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| LogError::AlreadySet)?;
    Ok(LogGuard { _file: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        assert!(colour(LogFormat::Text, true, None));
        assert!(!colour(LogFormat::Text, false, None), "a pipe or a file");
        assert!(!colour(LogFormat::Text, true, set), "NO_COLOR=1");
        assert!(
            colour(LogFormat::Text, true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset (no-color.org)"
        );
        assert!(!colour(LogFormat::Json, true, None));
    }

    #[test]
    fn formats_parse_by_name_and_refuse_others() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!(
            "JSON".parse::<LogFormat>(),
            Err("unknown log format `JSON` (text or json)".to_owned())
        );
    }

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
