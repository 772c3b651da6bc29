//! The conventional `process_*` metrics (those of Prometheus's own client
//! libraries and node exporters' dashboards), read from `/proc/self` on each
//! scrape: resident memory above all, which is how an operator watches the
//! box's 10 MiB goal on a device.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self/stat` says that the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Reads the fields of `/proc/self/stat` (proc(5)) after the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

#[derive(Debug)]
pub struct ProcessCollector {
    /// When the metrics were set up, a few milliseconds after the process
    /// started: close enough for `process_start_time_seconds`' use (restarts).
    started: f64,
    page_size: u64,
    ticks_per_second: u64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            page_size: rustix::param::page_size() as u64,
            ticks_per_second: rustix::param::clock_ticks_per_second().max(1),
        }
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A /proc that cannot be read (not Linux, a sandbox) leaves the
        // metrics out rather than report zeros.
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            let cpu = ConstCounter::new(stat.cpu_ticks as f64 / self.ticks_per_second as f64);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                (stat.resident_pages * self.page_size) as f64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                stat.virtual_bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Threads of the process",
                stat.threads as f64,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                fds.count() as f64,
            )?;
        }
        if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The most file descriptors the process may open",
                max as f64,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            self.started,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 2055 0 0 0 \
                    150 50 0 0 20 0 7 0 123456 104857600 2450 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                cpu_ticks: 200,
                threads: 7,
                virtual_bytes: 104_857_600,
                resident_pages: 2450,
            })
        );
    }

    #[test]
    fn a_truncated_or_garbled_line_is_none() {
        assert_eq!(parse_stat("4242 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parentheses at all"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&text).unwrap();
        assert!(stat.resident_pages > 0 && stat.threads >= 1, "{stat:?}");
    }
}
