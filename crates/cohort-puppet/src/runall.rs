//! The rule of `cohort puppet runall C`: start Puppet on every node in turn, never letting more
//! than C nodes apply a catalog at once, counting runs Puppet started on its own as well. A
//! state machine fed what the nodes report and the time; the caller does the calls. Pure.
//!
//! A node it started is in flight until its status shows a run that completed after the start
//! (its last-run time moved on, or it was seen applying and no longer is), or until `grace`
//! passes without it ever being seen applying (the run did not start: reported, not waited for
//! forever).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One node's status, as the `status` action reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The node.
    pub node: String,
    /// Applying a catalog now.
    pub applying: bool,
    /// When its last run completed (seconds since the epoch; 0: never).
    pub lastrun: i64,
}

/// How a node's scheduled run ended, as far as status can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A run completed after it was started.
    Completed,
    /// Never seen applying and no new run within the grace period.
    NotStarted,
    /// Stopped answering while in flight.
    Vanished,
}

#[derive(Debug, Clone)]
struct InFlight {
    started: Duration,
    lastrun_before: i64,
    seen_applying: bool,
}

/// The schedule of one `runall`.
#[derive(Debug, Clone)]
pub struct Runall {
    concurrency: usize,
    grace: Duration,
    queue: VecDeque<String>,
    in_flight: BTreeMap<String, InFlight>,
    others_applying: usize,
    ended: Vec<(String, Ended)>,
}

impl Runall {
    /// A schedule for `nodes` (in the order given), at most `concurrency` applying at once.
    pub fn new(nodes: Vec<String>, concurrency: usize, grace: Duration) -> Runall {
        Runall {
            concurrency: concurrency.max(1),
            grace,
            queue: nodes.into(),
            in_flight: BTreeMap::new(),
            others_applying: 0,
            ended: Vec::new(),
        }
    }

    /// Takes in the nodes' statuses at `now` (time since the schedule began).
    pub fn observe(&mut self, statuses: &[Observation], now: Duration) {
        let mut others = 0;
        for seen in statuses {
            let Some(flight) = self.in_flight.get_mut(&seen.node) else {
                others += usize::from(seen.applying);
                continue;
            };
            if seen.applying {
                flight.seen_applying = true;
                continue;
            }
            if flight.seen_applying || seen.lastrun > flight.lastrun_before {
                self.in_flight.remove(&seen.node);
                self.ended.push((seen.node.clone(), Ended::Completed));
            }
        }
        self.others_applying = others;
        let grace = self.grace;
        let late: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, f)| !f.seen_applying && now.saturating_sub(f.started) > grace)
            .map(|(node, _)| node.clone())
            .collect();
        for node in late {
            self.in_flight.remove(&node);
            self.ended.push((node, Ended::NotStarted));
        }
    }

    /// Nodes applying now, as far as the schedule knows: its own in flight and others seen.
    pub fn applying(&self) -> usize {
        self.in_flight.len() + self.others_applying
    }

    /// The nodes to start now (taken off the queue; call [`Runall::started`] for each).
    pub fn to_start(&mut self) -> Vec<String> {
        let free = self.concurrency.saturating_sub(self.applying());
        let take = free.min(self.queue.len());
        self.queue.drain(..take).collect()
    }

    /// Records that `node`'s run was started at `now`, its last run then at `lastrun`.
    pub fn started(&mut self, node: &str, lastrun: i64, now: Duration) {
        self.in_flight.insert(
            node.to_owned(),
            InFlight { started: now, lastrun_before: lastrun, seen_applying: false },
        );
    }

    /// Records that `node` did not answer a status request: it is neither waited for (a node
    /// that dies mid-run must not hold its slot forever) nor started.
    pub fn vanished(&mut self, node: &str) {
        let queued = self.queue.iter().position(|n| n == node);
        if let Some(at) = queued {
            self.queue.remove(at);
        }
        if self.in_flight.remove(node).is_some() || queued.is_some() {
            self.ended.push((node.to_owned(), Ended::Vanished));
        }
    }

    /// Records that starting `node` failed (it is not waited for).
    pub fn not_started(&mut self, node: &str) {
        self.ended.push((node.to_owned(), Ended::NotStarted));
    }

    /// Nodes still to start.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Whether every node was started and its run ended.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// How each node's run ended, in order of ending.
    pub fn ended(&self) -> &[(String, Ended)] {
        &self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn seen(node: &str, applying: bool, lastrun: i64) -> Observation {
        Observation { node: node.into(), applying, lastrun }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn starts_up_to_concurrency_then_waits() {
        let mut runall = Runall::new(nodes(5), 2, 60 * S);
        assert_eq!(runall.to_start(), ["n1", "n2"]);
        runall.started("n1", 100, S);
        runall.started("n2", 100, S);
        assert!(runall.to_start().is_empty(), "two in flight");
        runall.observe(&[seen("n1", true, 100), seen("n2", true, 100)], 2 * S);
        assert!(runall.to_start().is_empty());
        // n1 finished: one slot.
        runall.observe(&[seen("n1", false, 200), seen("n2", true, 100)], 3 * S);
        assert_eq!(runall.to_start(), ["n3"]);
    }

    #[test]
    fn runs_puppet_started_on_its_own_count_too() {
        let mut runall = Runall::new(nodes(3), 2, 60 * S);
        runall.observe(&[seen("other1", true, 0), seen("other2", true, 0)], S);
        assert!(runall.to_start().is_empty(), "two others applying");
        assert_eq!(runall.applying(), 2);
        runall.observe(&[seen("other1", false, 0), seen("other2", true, 0)], 2 * S);
        assert_eq!(runall.to_start(), ["n1"]);
    }

    #[test]
    fn a_run_too_quick_to_be_seen_counts_by_its_last_run_time() {
        let mut runall = Runall::new(nodes(1), 1, 60 * S);
        assert_eq!(runall.to_start(), ["n1"]);
        runall.started("n1", 100, S);
        runall.observe(&[seen("n1", false, 100)], 2 * S);
        assert!(!runall.is_done(), "not started yet");
        runall.observe(&[seen("n1", false, 150)], 3 * S);
        assert!(runall.is_done());
        assert_eq!(runall.ended(), [("n1".to_owned(), Ended::Completed)]);
    }

    #[test]
    fn a_run_that_never_starts_ends_after_the_grace() {
        let mut runall = Runall::new(nodes(2), 1, 10 * S);
        assert_eq!(runall.to_start(), ["n1"]);
        runall.started("n1", 100, S);
        runall.observe(&[seen("n1", false, 100)], 10 * S);
        assert!(runall.to_start().is_empty(), "still within grace");
        runall.observe(&[], 12 * S);
        assert_eq!(runall.ended(), [("n1".to_owned(), Ended::NotStarted)]);
        assert_eq!(runall.to_start(), ["n2"]);
    }

    #[test]
    fn a_long_run_seen_applying_is_waited_for_past_the_grace() {
        let mut runall = Runall::new(nodes(1), 1, 5 * S);
        runall.to_start();
        runall.started("n1", 100, S);
        runall.observe(&[seen("n1", true, 100)], 2 * S);
        runall.observe(&[seen("n1", true, 100)], 60 * S);
        assert!(!runall.is_done());
        runall.observe(&[seen("n1", false, 100)], 61 * S);
        assert!(runall.is_done());
    }

    #[test]
    fn a_node_that_stops_answering_frees_its_slot() {
        let mut runall = Runall::new(nodes(3), 1, 5 * S);
        assert_eq!(runall.to_start(), ["n1"]);
        runall.started("n1", 100, S);
        runall.observe(&[seen("n1", true, 100)], 2 * S);
        runall.vanished("n1");
        runall.vanished("n2");
        runall.vanished("n9");
        let vanished = [("n1".to_owned(), Ended::Vanished), ("n2".to_owned(), Ended::Vanished)];
        assert_eq!(runall.ended(), vanished);
        assert_eq!(runall.to_start(), ["n3"]);
    }

    #[test]
    fn a_failed_start_is_recorded_and_frees_its_slot() {
        let mut runall = Runall::new(nodes(2), 1, 5 * S);
        assert_eq!(runall.to_start(), ["n1"]);
        runall.not_started("n1");
        assert_eq!(runall.to_start(), ["n2"]);
        assert_eq!(runall.waiting(), 0);
    }
}
