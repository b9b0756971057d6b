//! The Puppet scheduler's rules (`cohort puppet schedule`, MCollective's puppetcommanderd): its
//! TOML configuration, the plan of one cycle (every node once per interval, at evenly spaced
//! offsets, sorted or shuffled), and whether a node due now is run or skipped. Pure: the caller
//! discovers, asks statuses, starts runs, and hands the clock and the randomness in.

use std::collections::VecDeque;
use std::time::Duration;

use rand::seq::SliceRandom;
use serde::Deserialize;

/// The scheduler's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Every node runs once per interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// At most this many nodes applying at once; 0: no limit.
    pub concurrency: usize,
    /// Shuffle the order each cycle instead of sorting it.
    pub randomize: bool,
    /// A run not seen applying this long after it was started no longer counts as applying.
    #[serde(with = "humantime_serde")]
    pub start_grace: Duration,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9112`).
    pub metrics: Option<String>,
    /// Schedulers with the same lease name on one collective share one lease: one acts.
    pub lease: String,
    /// How long a silent holder keeps the lease.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Which nodes, as `-W -F -C -I -A -S` would give them.
    pub filter: cohort_filter::FilterArgs,
}

impl Default for ScheduleConfig {
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            interval: Duration::from_secs(30 * 60),
            concurrency: 0,
            randomize: false,
            start_grace: Duration::from_secs(120),
            metrics: None,
            lease: "default".into(),
            lease_ttl: Duration::from_secs(15),
            filter: cohort_filter::FilterArgs::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not TOML, or an unknown key or wrong type.
    #[error("{0}")]
    Toml(String),
    /// A value out of range.
    #[error("{key}: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        why: &'static str,
    },
}

impl ScheduleConfig {
    /// Parses and checks a configuration file's text.
    pub fn parse(text: &str) -> Result<ScheduleConfig, ScheduleError> {
        let config: ScheduleConfig =
            toml::from_str(text).map_err(|err| ScheduleError::Toml(err.to_string()))?;
        if config.interval < Duration::from_secs(1) {
            return Err(ScheduleError::Invalid { key: "interval", why: "must be at least 1s" });
        }
        if config.lease_ttl < Duration::from_secs(3) {
            return Err(ScheduleError::Invalid { key: "lease_ttl", why: "must be at least 3s" });
        }
        let ok = !config.lease.is_empty()
            && config.lease.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ScheduleError::Invalid {
                key: "lease",
                why: "letters, digits, '-' and '_' only",
            });
        }
        Ok(config)
    }
}

/// One cycle's plan: each node at its offset from the cycle's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    slots: VecDeque<(Duration, String)>,
    interval: Duration,
}

/// Plans a cycle over `nodes`: the `i`-th of `n` at `i * interval / n`, in sorted order or
/// shuffled with `rng`.
pub fn plan(
    mut nodes: Vec<String>,
    interval: Duration,
    randomize: bool,
    rng: &mut impl rand::Rng,
) -> Cycle {
    nodes.sort();
    nodes.dedup();
    if randomize {
        nodes.shuffle(rng);
    }
    let n = u32::try_from(nodes.len()).unwrap_or(u32::MAX).max(1);
    let slots = nodes
        .into_iter()
        .enumerate()
        .map(|(i, node)| (interval / n * u32::try_from(i).unwrap_or(u32::MAX), node))
        .collect();
    Cycle { slots, interval }
}

impl Cycle {
    /// The nodes whose time has come, `elapsed` into the cycle (taken off the plan).
    pub fn due(&mut self, elapsed: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while self.slots.front().is_some_and(|(at, _)| *at <= elapsed) {
            if let Some((_, node)) = self.slots.pop_front() {
                out.push(node);
            }
        }
        out
    }

    /// Whether the cycle is over `elapsed` into it (every slot taken and the interval gone).
    pub fn is_over(&self, elapsed: Duration) -> bool {
        self.slots.is_empty() && elapsed >= self.interval
    }

    /// Nodes still to come this cycle.
    pub fn remaining(&self) -> usize {
        self.slots.len()
    }
}

/// What to do with a node whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start its run.
    Run,
    /// Its Puppet is disabled.
    SkipDisabled,
    /// It is applying a catalog already.
    SkipApplying,
    /// The fleet is at the concurrency limit.
    SkipBusy,
    /// It did not answer (gone since discovery).
    SkipGone,
}

/// The status facts a decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// Not disabled.
    pub enabled: bool,
    /// Applying now.
    pub applying: bool,
}

/// Whether to run a due node: `state` is its status (`None`: no answer), `applying` how many
/// nodes apply now, `concurrency` the limit (0: none).
pub fn decide(state: Option<NodeState>, applying: usize, concurrency: usize) -> Decision {
    match state {
        None => Decision::SkipGone,
        Some(NodeState { enabled: false, .. }) => Decision::SkipDisabled,
        Some(NodeState { applying: true, .. }) => Decision::SkipApplying,
        Some(_) if concurrency > 0 && applying >= concurrency => Decision::SkipBusy,
        Some(_) => Decision::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn config() {
        let config = ScheduleConfig::parse(
            "interval = \"10m\"\nconcurrency = 5\nrandomize = true\n[filter]\nclass = [\"role::web\"]\n",
        )
        .unwrap();
        assert_eq!(config.interval, 600 * S);
        assert_eq!(config.filter.class, ["role::web"]);
        assert!(
            ScheduleConfig::parse("intervall = \"1m\"")
                .unwrap_err()
                .to_string()
                .contains("intervall")
        );
        assert_eq!(
            ScheduleConfig::parse("interval = \"0s\"").unwrap_err(),
            ScheduleError::Invalid { key: "interval", why: "must be at least 1s" }
        );
        assert!(ScheduleConfig::parse("lease = \"a.b\"").is_err());
    }

    #[test]
    fn evenly_spread_sorted_or_shuffled() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let nodes: Vec<String> = ["c", "a", "b", "d"].iter().map(|s| (*s).to_owned()).collect();
        let mut cycle = plan(nodes.clone(), 40 * S, false, &mut rng);
        assert_eq!(cycle.due(Duration::ZERO), ["a"]);
        assert!(cycle.due(9 * S).is_empty());
        assert_eq!(cycle.due(20 * S), ["b", "c"]);
        assert_eq!(cycle.remaining(), 1);
        assert!(!cycle.is_over(30 * S));
        assert_eq!(cycle.due(30 * S), ["d"]);
        assert!(!cycle.is_over(39 * S));
        assert!(cycle.is_over(40 * S));
        let mut shuffled = plan(nodes, 40 * S, true, &mut rng);
        let mut all = shuffled.due(40 * S);
        assert_eq!(all.len(), 4);
        all.sort();
        assert_eq!(all, ["a", "b", "c", "d"]);
        let mut empty = plan(Vec::new(), 40 * S, false, &mut rng);
        assert!(empty.due(40 * S).is_empty() && empty.is_over(40 * S));
    }

    #[test]
    fn decisions() {
        let ready = Some(NodeState { enabled: true, applying: false });
        assert_eq!(decide(ready, 0, 2), Decision::Run);
        assert_eq!(decide(ready, 2, 2), Decision::SkipBusy);
        assert_eq!(decide(ready, 100, 0), Decision::Run, "0 means no limit");
        assert_eq!(
            decide(Some(NodeState { enabled: false, applying: false }), 0, 2),
            Decision::SkipDisabled
        );
        assert_eq!(
            decide(Some(NodeState { enabled: true, applying: true }), 0, 2),
            Decision::SkipApplying
        );
        assert_eq!(decide(None, 0, 2), Decision::SkipGone);
    }
}
