//! The scheduler's counters, in Prometheus/OpenMetrics text: runs started, runs that could not
//! be started, nodes skipped by reason, runs in flight, nodes in the cycle, and whether this
//! scheduler holds the lease.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::schedule::Decision;

/// The counters (cheap to clone: each is shared).
#[derive(Debug, Clone, Default)]
pub struct ScheduleMetrics {
    /// Runs started.
    pub runs_started: Counter,
    /// Runs a node refused or did not answer to start.
    pub start_failures: Counter,
    /// Due nodes skipped because their Puppet is disabled.
    pub skipped_disabled: Counter,
    /// Due nodes skipped because they were applying already.
    pub skipped_applying: Counter,
    /// Due nodes skipped because the fleet was at the concurrency limit.
    pub skipped_busy: Counter,
    /// Due nodes that did not answer.
    pub skipped_gone: Counter,
    /// Runs started and not yet seen to end.
    pub in_flight: Gauge,
    /// Nodes in the current cycle.
    pub nodes: Gauge,
    /// 1 while this scheduler holds the lease.
    pub holder: Gauge,
}

impl ScheduleMetrics {
    /// Counts one decision.
    pub fn record(&self, decision: Decision) {
        match decision {
            Decision::Run => self.runs_started.inc(),
            Decision::SkipDisabled => self.skipped_disabled.inc(),
            Decision::SkipApplying => self.skipped_applying.inc(),
            Decision::SkipBusy => self.skipped_busy.inc(),
            Decision::SkipGone => self.skipped_gone.inc(),
        };
    }

    /// The text exposition.
    pub fn prometheus_text(&self) -> String {
        let mut registry = Registry::with_prefix("cohort_puppet_scheduler");
        registry.register("runs_started", "Puppet runs started", self.runs_started.clone());
        registry.register(
            "start_failures",
            "Runs that could not be started",
            self.start_failures.clone(),
        );
        registry.register(
            "skipped_disabled",
            "Due nodes skipped: Puppet disabled",
            self.skipped_disabled.clone(),
        );
        registry.register(
            "skipped_applying",
            "Due nodes skipped: applying already",
            self.skipped_applying.clone(),
        );
        registry.register(
            "skipped_busy",
            "Due nodes skipped: concurrency limit",
            self.skipped_busy.clone(),
        );
        registry.register(
            "skipped_gone",
            "Due nodes skipped: no answer",
            self.skipped_gone.clone(),
        );
        registry.register("in_flight", "Runs started and not yet ended", self.in_flight.clone());
        registry.register("nodes", "Nodes in the current cycle", self.nodes.clone());
        registry.register(
            "lease_holder",
            "1 while this scheduler holds the lease",
            self.holder.clone(),
        );
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_decision() {
        let metrics = ScheduleMetrics::default();
        metrics.record(Decision::Run);
        metrics.record(Decision::SkipBusy);
        metrics.record(Decision::SkipBusy);
        metrics.holder.set(1);
        let text = metrics.prometheus_text();
        assert!(text.contains("cohort_puppet_scheduler_runs_started_total 1"), "{text}");
        assert!(text.contains("cohort_puppet_scheduler_skipped_busy_total 2"), "{text}");
        assert!(text.contains("cohort_puppet_scheduler_lease_holder 1"), "{text}");
    }
}
