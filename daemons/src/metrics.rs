//! Prometheus metrics every daemon exposes on `/metrics`, plus a registry each
//! role adds its own to.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::process_metrics::ProcessCollector;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The content type of [`Metrics::render`]'s text: prometheus-client writes
/// OpenMetrics (`# EOF`, `_total` counters under a TYPE without it), which
/// Prometheus parses as the text format 0.0.4 only by luck.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        registry.register(
            "build",
            "The running build: its version (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
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
