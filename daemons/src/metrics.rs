//! Prometheus metrics every daemon exposes on `/metrics`, plus a registry each
//! role adds its own to.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The metrics registry and the counters shared by all roles.
#[derive(Debug)]
pub struct Metrics {
    // A std Mutex: only `/metrics` scrapes and start-up registration lock it.
    registry: Mutex<Registry>,
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
        Metrics {
            registry: Mutex::new(registry),
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
