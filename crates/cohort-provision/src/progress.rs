//! One node's way through the pipeline, as a state machine fed the time: which step is next,
//! how many times it failed, when it may be tried again, and the facts that must survive a
//! restart of the provisioner (the master chosen, whether the certificate was signed or a
//! signing may have been sent). Stored as JSON in [`crate::store`] after every change, so a
//! restarted provisioner resumes each node at the step it reached.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RetryConfig;

/// Most events kept per node; older ones are dropped (the first one, `noticed`, stays).
pub const HISTORY_LIMIT: usize = 64;

/// Where a node stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Noticed, not started yet (or sent back by `retry`).
    Queued,
    /// A step is being worked on (also what a crashed provisioner leaves behind: resumed).
    Working,
    /// The current step failed; it is tried again at `until_ms`.
    Waiting {
        /// Unix milliseconds.
        until_ms: i64,
    },
    /// Every step done.
    Done,
    /// Given up; the node was unlocked and people told.
    Failed {
        /// The last failure.
        reason: String,
    },
}

impl State {
    /// `queued`, `working`, `waiting`, `done`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Working => "working",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
            State::Failed { .. } => "failed",
        }
    }
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It failed.
    Failed,
    /// It was not needed.
    Skipped,
    /// Something worth recording (noticed, master chosen, resumed).
    Info,
}

/// One line of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The step, or `lock`, `master`, `noticed`.
    pub step: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened.
    pub message: String,
    /// How long it took.
    #[serde(default)]
    pub duration_ms: u64,
}

/// One node's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The node.
    pub node: String,
    /// Where it stands.
    #[serde(flatten)]
    pub state: State,
    /// Index of the next step in the pipeline.
    pub step: usize,
    /// Failed attempts of that step.
    pub attempts: u32,
    /// The master chosen.
    pub master: Option<String>,
    /// Its address as written into the node's hosts file.
    pub master_address: Option<String>,
    /// The node already had a certificate: the certificate steps are skipped.
    pub has_certificate: Option<bool>,
    /// A `sign` was sent (it may have happened even if no reply came): check before signing.
    pub sign_sent: bool,
    /// The certificate was signed: never again.
    pub signed: bool,
    /// Notify targets already told (a retried notify step tells only the others).
    #[serde(default)]
    pub notified: Vec<String>,
    /// When it was noticed.
    pub noticed_ms: i64,
    /// Last change.
    pub updated_ms: i64,
    /// What happened, oldest first.
    pub history: Vec<Event>,
}

/// The wait before attempt `failures + 1`: `backoff` doubled per earlier failure, capped, then
/// scaled by `jitter` (0.5..=1.0 in use, 1.0 in tests) so nodes that failed together do not
/// retry together.
pub fn backoff(retry: &RetryConfig, failures: u32, jitter: f64) -> Duration {
    let doubled = retry
        .backoff
        .checked_mul(1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX))
        .unwrap_or(retry.max_backoff);
    doubled.min(retry.max_backoff).mul_f64(jitter.clamp(0.0, 1.0))
}

impl Progress {
    /// A node just noticed.
    pub fn new(node: &str, now_ms: i64) -> Progress {
        let mut progress = Progress {
            node: node.to_owned(),
            state: State::Queued,
            step: 0,
            attempts: 0,
            master: None,
            master_address: None,
            has_certificate: None,
            sign_sent: false,
            signed: false,
            notified: Vec::new(),
            noticed_ms: now_ms,
            updated_ms: now_ms,
            history: Vec::new(),
        };
        progress.log(now_ms, "noticed", Outcome::Info, "noticed".to_owned(), 0);
        progress
    }

    /// Whether work on it may start now: queued, a crashed provisioner's `working`, or a wait
    /// that is over.
    pub fn is_due(&self, now_ms: i64) -> bool {
        match self.state {
            State::Queued | State::Working => true,
            State::Waiting { until_ms } => until_ms <= now_ms,
            State::Done | State::Failed { .. } => false,
        }
    }

    /// Whether it is finished, one way or the other.
    pub fn is_settled(&self) -> bool {
        matches!(self.state, State::Done | State::Failed { .. })
    }

    /// Records an event (bounded history).
    pub fn log(
        &mut self,
        at_ms: i64,
        step: &str,
        outcome: Outcome,
        message: String,
        duration_ms: u64,
    ) {
        if self.history.len() >= HISTORY_LIMIT {
            self.history.remove(1.min(self.history.len() - 1));
        }
        self.history.push(Event { at_ms, step: step.to_owned(), outcome, message, duration_ms });
        self.updated_ms = self.updated_ms.max(at_ms);
    }

    /// Work starts (or resumes).
    pub fn begin(&mut self, now_ms: i64) {
        if self.state == State::Working {
            self.log(
                now_ms,
                "resume",
                Outcome::Info,
                format!("resumed at step {}", self.step + 1),
                0,
            );
        }
        self.state = State::Working;
        self.updated_ms = now_ms;
    }

    /// The current step (named `step`) succeeded or was not needed; `total` steps in all.
    pub fn advance(
        &mut self,
        step: &str,
        outcome: Outcome,
        message: String,
        duration_ms: u64,
        total: usize,
        now_ms: i64,
    ) {
        self.log(now_ms, step, outcome, message, duration_ms);
        self.step += 1;
        self.attempts = 0;
        self.state = if self.step >= total { State::Done } else { State::Working };
    }

    /// The current step failed. Returns true when that was the last attempt allowed (the node
    /// is then `failed`), false when it waits for another try.
    pub fn fail(
        &mut self,
        step: &str,
        message: String,
        duration_ms: u64,
        retry: &RetryConfig,
        jitter: f64,
        now_ms: i64,
    ) -> bool {
        self.attempts += 1;
        self.log(now_ms, step, Outcome::Failed, message.clone(), duration_ms);
        if self.attempts >= retry.attempts {
            let times = if self.attempts == 1 {
                "once".to_owned()
            } else {
                format!("{} times", self.attempts)
            };
            self.state = State::Failed { reason: format!("{step} failed {times}: {message}") };
            return true;
        }
        let wait = backoff(retry, self.attempts, jitter);
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        self.state = State::Waiting { until_ms: now_ms.saturating_add(wait_ms) };
        false
    }

    /// The master went away: the node starts over from the first step with a new master.
    /// A signed certificate stays recorded (the new master's CA signs anew if it differs).
    pub fn restart(&mut self, why: String, now_ms: i64) {
        self.log(now_ms, "master", Outcome::Info, why, 0);
        self.step = 0;
        self.attempts = 0;
        self.master = None;
        self.master_address = None;
        self.has_certificate = None;
        self.sign_sent = false;
        self.signed = false;
        self.state = State::Working;
    }

    /// `cohort provision retry`: a failed node tries its failed step again from the start of
    /// its attempts. Refused for a node that is not failed.
    pub fn retry(&mut self, now_ms: i64) -> Result<(), String> {
        match &self.state {
            State::Failed { .. } | State::Waiting { .. } => {
                self.attempts = 0;
                self.state = State::Queued;
                self.log(
                    now_ms,
                    "retry",
                    Outcome::Info,
                    format!("retry asked at step {}", self.step + 1),
                    0,
                );
                Ok(())
            }
            other => Err(format!("{} is {}, not failed", self.node, other.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            attempts: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(25),
        }
    }

    #[test]
    fn steps_advance_to_done() {
        let mut p = Progress::new("n1", 1000);
        assert!(p.is_due(1000));
        p.begin(1000);
        p.advance("set_puppet_host", Outcome::Ok, "ok".into(), 5, 2, 1100);
        assert_eq!((p.step, p.state.clone()), (1, State::Working));
        p.advance("run_puppet", Outcome::Skipped, "skipped".into(), 0, 2, 1200);
        assert_eq!(p.state, State::Done);
        assert!(p.is_settled() && !p.is_due(5000));
        assert_eq!(p.history.len(), 3);
    }

    #[test]
    fn failures_wait_with_doubling_backoff_then_fail() {
        let mut p = Progress::new("n1", 0);
        p.begin(0);
        assert!(!p.fail(
            "run_puppet",
            "Puppet failed due to 2 failed resource(s)".into(),
            0,
            &retry(),
            1.0,
            1_000
        ));
        assert_eq!(p.state, State::Waiting { until_ms: 11_000 });
        assert!(!p.is_due(10_999) && p.is_due(11_000));
        p.begin(11_000);
        assert!(!p.fail("run_puppet", "again".into(), 0, &retry(), 1.0, 12_000));
        assert_eq!(p.state, State::Waiting { until_ms: 32_000 }, "20 s, second wait");
        p.begin(32_000);
        assert!(p.fail("run_puppet", "third".into(), 0, &retry(), 1.0, 33_000));
        assert_eq!(p.state, State::Failed { reason: "run_puppet failed 3 times: third".into() });
        assert!(!p.is_due(i64::MAX));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(backoff(&retry(), 1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(&retry(), 2, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(&retry(), 3, 1.0), Duration::from_secs(25));
        assert_eq!(backoff(&retry(), 200, 1.0), Duration::from_secs(25));
        assert_eq!(backoff(&retry(), 1, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn retry_and_resume() {
        let mut p = Progress::new("n1", 0);
        p.begin(0);
        p.advance("a", Outcome::Ok, String::new(), 0, 3, 1);
        let one = RetryConfig { attempts: 1, ..retry() };
        assert!(p.fail("b", "broken".into(), 0, &one, 1.0, 2));
        assert_eq!(p.state, State::Failed { reason: "b failed once: broken".into() });
        p.retry(3).unwrap();
        assert_eq!((p.state.clone(), p.step, p.attempts), (State::Queued, 1, 0));
        assert_eq!(p.retry(4).unwrap_err(), "n1 is queued, not failed");
        p.begin(5);
        // A provisioner that dies here leaves `working`: the next one resumes the same step.
        assert!(p.is_due(6));
        p.begin(6);
        assert_eq!(p.history.last().map(|e| e.message.as_str()), Some("resumed at step 2"));
    }

    #[test]
    fn a_lost_master_starts_over() {
        let mut p = Progress::new("n1", 0);
        p.master = Some("m1".into());
        p.signed = true;
        p.step = 4;
        p.restart("m1 went away".into(), 10);
        assert_eq!((p.step, p.master.clone(), p.signed), (0, None, false));
    }

    #[test]
    fn history_is_bounded_and_keeps_the_first() {
        let mut p = Progress::new("n1", 0);
        for i in 0..200 {
            p.log(i, "x", Outcome::Info, i.to_string(), 0);
        }
        assert_eq!(p.history.len(), HISTORY_LIMIT);
        assert_eq!(p.history[0].step, "noticed");
        assert_eq!(p.history.last().unwrap().message, "199");
    }

    #[test]
    fn stored_form_round_trips() {
        let mut p = Progress::new("n1", 0);
        p.state = State::Waiting { until_ms: 5 };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"state\":\"waiting\",\"until_ms\":5"), "{text}");
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
    }
}
