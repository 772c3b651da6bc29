//! Prometheus metrics every daemon exposes on `/metrics`, plus a registry each
//! role adds its own to.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::process_metrics::ProcessCollector;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The content type of [`Metrics::render`]'s text: prometheus-client writes
/// OpenMetrics (`# EOF`, `_total` counters under a TYPE without it), which
/// Prometheus asks for by name.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`prometheus_text`]: what everything else reads
/// (`curl`, `promtool check metrics`, older scrapers).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does);
/// anything else gets the Prometheus text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's `HELP`
/// and `TYPE` name its `_total` samples, `unknown` is `untyped`, and the
/// `UNIT` and `EOF` lines, which that format lacks, go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until its TYPE says whether the name needs `_total`.
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, text)| text);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

/// A latency histogram in seconds, from half a millisecond to about eight
/// seconds, each bucket twice the last: wide enough for a loopback reply and
/// for a saturated store alike. `Default`, so a role's metrics derive it.
#[derive(Debug, Clone)]
pub struct Latency(pub Histogram);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new(exponential_buckets(0.0005, 2.0, 15)))
    }
}

impl Latency {
    pub fn observe_since(&self, since: std::time::Instant) {
        self.0.observe(since.elapsed().as_secs_f64());
    }
}

/// The metrics registry and the counters shared by all roles.
#[derive(Debug)]
pub struct Metrics {
    // A std Mutex: only `/metrics` scrapes and start-up registration lock it.
    registry: Mutex<Registry>,
    /// `process_*`, under their conventional names without the prefix.
    process: Registry,
    /// Refused handshakes and messages, by stable reason code.
    pub refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dandelion");
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "refused",
            "Handshakes and messages refused, by reason",
            refused.clone(),
        );
        // Present at 0 from the start, so the family exists for rate() and
        // alerts before the first refusal: the reasons any peer of any role
        // can cause, malformed messages; the rest appear when first counted.
        let from_start = dandelion_core::protocol::ProtocolError::REASON_CODES
            .into_iter()
            .chain(["too_large", "too_many_errors"]);
        for reason in from_start {
            refused
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .inc_by(0);
        }
        // A gauge, not OpenMetrics' `info` type, which Prometheus's text
        // parser and `promtool check metrics` do not know.
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: its version (always 1)",
            build,
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector::default()));
        Metrics {
            registry: Mutex::new(registry),
            process,
            refused,
        }
    }

    /// Adds a role's own metric.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &registry);
        let _ = encode_registry(&mut text, &self.process);
        let _ = encode_eof(&mut text);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_only_lines_go() {
        let open = "# HELP dandelion_heartbeats Heartbeats received.\n\
                    # TYPE dandelion_heartbeats counter\n\
                    dandelion_heartbeats_total 3\n\
                    # HELP dandelion_boxes Boxes known.\n\
                    # TYPE dandelion_boxes gauge\n\
                    # UNIT dandelion_boxes boxes\n\
                    dandelion_boxes{state=\"active\"} 2\n\
                    # EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP dandelion_heartbeats_total Heartbeats received.\n\
             # TYPE dandelion_heartbeats_total counter\n\
             dandelion_heartbeats_total 3\n\
             # HELP dandelion_boxes Boxes known.\n\
             # TYPE dandelion_boxes gauge\n\
             dandelion_boxes{state=\"active\"} 2\n"
        );
    }

    #[test]
    fn prometheus_asks_for_openmetrics_and_others_do_not() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
