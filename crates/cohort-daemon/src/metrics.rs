//! The daemon's metrics in Prometheus/OpenMetrics text (`cohort daemon --metrics ADDR`), named
//! like the broker's (`cohort_daemon_…`): requests by agent, action and status, refusals by
//! reason, agent durations, broker reconnections, audit write errors, and, read when scraped,
//! the age of the facts and the replay cache's use.
//!
//! Label values come only from bounded sets: an agent or action this node does not host is
//! counted as `unknown`, so a caller cannot grow the series by inventing names.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn durations() -> Histogram {
    // 1 ms to about 4.4 min, by fours.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// The counters the pipeline and the bus loop feed (cheap to share: each is an `Arc` inside).
#[derive(Debug)]
pub struct NodeMetrics {
    requests: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    /// Times the broker connection came back after being lost.
    pub reconnects: Counter,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics {
            requests: Family::default(),
            refusals: Family::default(),
            durations: Family::new_with_constructor(durations),
            reconnects: Counter::default(),
        }
    }
}

/// Values read when scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// Seconds since the facts last changed.
    pub facts_age: f64,
    /// Request ids in the replay cache, and its capacity (0 when security is off).
    pub replay_ids: u64,
    /// The replay cache's capacity.
    pub replay_capacity: u64,
    /// Audit lines that could not be written.
    pub audit_write_errors: u64,
    /// The daemon's own counters (`rpcutil daemon_stats`): messages, replies, filtered.
    pub messages: u64,
    /// Replies sent.
    pub replies: u64,
    /// Requests not for this node.
    pub filtered: u64,
}

impl NodeMetrics {
    /// One request handled: `agent` and `action` as hosted (else `unknown`), its status code
    /// (`0` OK, as in replies), and how long it took.
    pub fn handled(&self, agent: &str, action: &str, status: &str, seconds: f64) {
        let labels = vec![
            ("agent", agent.to_owned()),
            ("action", action.to_owned()),
            ("status", status.to_owned()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&vec![("agent", agent.to_owned())]).observe(seconds);
    }

    /// One message refused for `reason` (a fixed word: `unsigned`, `expired`, `replayed`…).
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// The text exposition, with `readings` taken now.
    pub fn prometheus_text(&self, readings: Readings) -> String {
        let mut registry = Registry::with_prefix("cohort_daemon");
        registry.register(
            "requests",
            "Requests handled, by agent, action and reply status",
            self.requests.clone(),
        );
        registry.register("refusals", "Messages refused, by reason", self.refusals.clone());
        registry.register(
            "request_duration_seconds",
            "Time from receipt to reply, by agent",
            self.durations.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Times the broker connection came back after a loss",
            self.reconnects.clone(),
        );
        let counter = |value: u64| {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            counter
        };
        let gauge = |value: u64| {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            gauge
        };
        registry.register("messages", "Messages received", counter(readings.messages));
        registry.register("replies", "Replies sent", counter(readings.replies));
        registry.register("filtered", "Requests for other nodes", counter(readings.filtered));
        registry.register(
            "audit_write_errors",
            "Audit lines that could not be written",
            counter(readings.audit_write_errors),
        );
        let facts_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        facts_age.set(readings.facts_age);
        registry.register("facts_age_seconds", "Seconds since the facts last changed", facts_age);
        registry.register(
            "replay_cache_ids",
            "Request ids held by the replay cache",
            gauge(readings.replay_ids),
        );
        registry.register(
            "replay_cache_capacity",
            "Request ids the replay cache can hold",
            gauge(readings.replay_capacity),
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
    fn series_and_readings_render() {
        let metrics = NodeMetrics::default();
        metrics.handled("rpcutil", "ping", "0", 0.002);
        metrics.handled("rpcutil", "ping", "0", 0.003);
        metrics.refused("replayed");
        metrics.reconnects.inc();
        let text = metrics.prometheus_text(Readings {
            facts_age: 2.5,
            replay_ids: 7,
            replay_capacity: 100,
            ..Readings::default()
        });
        for line in [
            "cohort_daemon_requests_total{agent=\"rpcutil\",action=\"ping\",status=\"0\"} 2",
            "cohort_daemon_refusals_total{reason=\"replayed\"} 1",
            "cohort_daemon_broker_reconnects_total 1",
            "cohort_daemon_request_duration_seconds_count{agent=\"rpcutil\"} 2",
            "cohort_daemon_facts_age_seconds 2.5",
            "cohort_daemon_replay_cache_ids 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
