//! The provisioner's metrics in Prometheus/OpenMetrics text: nodes by state, step durations,
//! step failures, nodes provisioned and failed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A state label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `queued`, `working`, `waiting`, `done`, `failed`.
    pub state: String,
}

/// A step label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    /// The step's name.
    pub step: String,
}

fn step_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

/// The metrics (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub struct ProvisionMetrics {
    /// Nodes by state.
    pub nodes: Family<StateLabel, Gauge>,
    /// Seconds each step took.
    pub step_seconds: Family<StepLabel, Histogram, fn() -> Histogram>,
    /// Failed step attempts.
    pub step_failures: Family<StepLabel, Counter>,
    /// Nodes provisioned.
    pub provisioned: Counter,
    /// Nodes given up on.
    pub failed: Counter,
}

impl Default for ProvisionMetrics {
    fn default() -> ProvisionMetrics {
        ProvisionMetrics {
            nodes: Family::default(),
            step_seconds: Family::new_with_constructor(step_histogram),
            step_failures: Family::default(),
            provisioned: Counter::default(),
            failed: Counter::default(),
        }
    }
}

impl ProvisionMetrics {
    /// Sets the node counts by state.
    pub fn set_states(&self, counts: &[(&str, usize)]) {
        for (state, count) in counts {
            self.nodes
                .get_or_create(&StateLabel { state: (*state).to_owned() })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition.
    pub fn prometheus_text(&self) -> String {
        let mut registry = Registry::with_prefix("cohort_provision");
        registry.register("nodes", "Nodes known, by state", self.nodes.clone());
        registry.register("step_seconds", "Time each step took", self.step_seconds.clone());
        registry.register("step_failures", "Failed step attempts", self.step_failures.clone());
        registry.register("provisioned", "Nodes provisioned", self.provisioned.clone());
        registry.register("failed", "Nodes given up on", self.failed.clone());
        let mut text = String::new();
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_follow_the_prefix() {
        let metrics = ProvisionMetrics::default();
        metrics.set_states(&[("done", 3)]);
        metrics.step_seconds.get_or_create(&StepLabel { step: "run_puppet".into() }).observe(1.5);
        metrics.provisioned.inc();
        let text = metrics.prometheus_text();
        assert!(text.contains("cohort_provision_nodes{state=\"done\"} 3"), "{text}");
        assert!(
            text.contains("cohort_provision_step_seconds_count{step=\"run_puppet\"} 1"),
            "{text}"
        );
        assert!(text.contains("cohort_provision_provisioned_total 1"), "{text}");
    }
}
