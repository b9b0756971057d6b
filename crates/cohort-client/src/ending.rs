//! When discovery is over: a pure rule fed the time and the count of nodes heard so far.
//!
//! Discovery cannot know how many nodes will answer, so it decides from evidence:
//! - **the count to expect**: how many nodes the last complete discovery with the same
//!   broker, collective and filter found ([`crate::history`]). While fewer have answered,
//!   silence proves nothing (a stalled fleet, a busy broker, a descheduled client look the same
//!   as a finished one), and discovery holds on to `--dt`. Without a record it holds to `--dt`
//!   too: the first discovery of a filter waits as long as MCollective always did.
//! - **silence**, once the count is reached: discovery ends when no reply arrived for
//!   `--discovery-window`, or for the first reply's round trip if that is longer. Only nodes new
//!   since the record can still come; they get that window to answer.
//! - without the count, past `--dt` (when the caller allows more, as `cohort ping` does) or
//!   when a call takes over, silence is judged by the adaptive window, which grows with the
//!   fleet's observed reply times (the first reply's round trip, four times the largest gap
//!   between replies, half the time so far).
//! - **the broker's probe answer**: silence counts only after the broker has handed the
//!   request to every subscriber (see `Client::discover`), or after [`PROBE_WAIT`].
//! - **the hard bound**: `timeout` ends it whatever the evidence.
//!
//! A timer that fires well after it was due means this process was not running: replies may
//! be waiting unread, so the silence is measured again from the moment it woke.

use std::time::{Duration, Instant};

/// A timer firing this much after it was due means the process was descheduled.
pub(crate) const OVERSLEPT: Duration = Duration::from_millis(10);
/// Longest discovery waits for the broker's answer to its probe.
pub(crate) const PROBE_WAIT: Duration = Duration::from_secs(1);

/// What the rule says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not over: look again at this moment (or when something arrives).
    Wait(Instant),
    /// Over.
    End,
}

/// The discovery-ending rule of one discovery. Pure: every method takes the time.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    sent: Instant,
    /// A count below the expected one holds discovery open until then (`--dt`).
    hold_until: Instant,
    /// Nothing is waited for past this.
    hard: Instant,
    /// The adaptive quiet window.
    window: Duration,
    /// The window without its "half the time so far" term: how long a discovery that hands
    /// over to a call waits (the call keeps listening to discovery, so nothing is lost).
    gap_window: Duration,
    /// The window once the expected count is in: the floor, or the first reply's round trip
    /// if longer. Only nodes new since the last discovery can still come, and a pause seen
    /// on the way (which inflates the other two windows) says nothing about them.
    settled_window: Duration,
    expect: Option<usize>,
    count: usize,
    last_reply: Option<Instant>,
    /// Silence is measured from here: the last reply, the probe's answer, or waking late.
    quiet_from: Instant,
    /// `Some(until)` while the broker's answer to the probe is awaited.
    probe_until: Option<Instant>,
    /// When the caller was last told to look again.
    due: Option<Instant>,
}

impl Ending {
    /// A discovery sent at `sent`: `hold` is `--dt`, `timeout` the hard bound (at least
    /// `hold`), `window` the shortest quiet window, `expect` the count the last complete
    /// discovery found.
    pub(crate) fn new(
        sent: Instant,
        hold: Duration,
        timeout: Duration,
        window: Duration,
        expect: Option<usize>,
    ) -> Ending {
        let hard = sent + timeout.max(hold);
        Ending {
            sent,
            hold_until: sent + hold,
            hard,
            window,
            gap_window: window,
            settled_window: window,
            expect,
            count: 0,
            last_reply: None,
            quiet_from: sent,
            probe_until: Some((sent + PROBE_WAIT).min(hard)),
            due: None,
        }
    }

    /// A discovery that does not wait for a probe answer (the broker was not sent one).
    #[cfg(test)]
    pub(crate) fn without_probe(mut self) -> Ending {
        self.probe_until = None;
        self
    }

    /// A node answered; `count` is how many distinct nodes have now.
    pub(crate) fn heard(&mut self, now: Instant, count: usize) {
        match self.last_reply {
            None => {
                let round_trip = now.saturating_duration_since(self.sent);
                self.gap_window = self.gap_window.max(round_trip);
                self.settled_window = self.settled_window.max(round_trip);
            }
            Some(previous) => {
                self.gap_window =
                    self.gap_window.max(now.saturating_duration_since(previous).saturating_mul(4));
            }
        }
        // A large fleet takes a while to answer; the longer it has taken, the longer a pause
        // can be without meaning it is over.
        self.window =
            self.gap_window.max(now.saturating_duration_since(self.sent) / 2).max(self.window);
        self.last_reply = Some(now);
        self.quiet_from = self.quiet_from.max(now);
        self.count = count;
    }

    /// The count changed without a reply (a forged discovery reply was refuted).
    pub(crate) fn recount(&mut self, count: usize) {
        self.count = count;
    }

    /// The broker answered the probe: it has handed the request to every node.
    pub(crate) fn probe_answered(&mut self, now: Instant) {
        if self.probe_until.take().is_some() {
            self.quiet_from = self.quiet_from.max(now);
        }
    }

    /// Whether the probe answer is still awaited.
    #[cfg(test)]
    pub(crate) fn awaiting_probe(&self) -> bool {
        self.probe_until.is_some()
    }

    /// At least as many nodes answered as the last complete discovery found.
    pub(crate) fn satisfied(&self) -> bool {
        self.expect.is_some_and(|expect| self.count >= expect)
    }

    /// Whether a count short of the expected one still holds discovery open at `now`.
    pub(crate) fn holding(&self, now: Instant) -> bool {
        !self.satisfied() && now < self.hold_until
    }

    /// When a short count stops holding discovery open.
    pub(crate) fn hold_until(&self) -> Instant {
        self.hold_until
    }

    /// The verdict at `now`. With `handover` (a call follows and keeps listening to
    /// discovery), discovery may end after the shorter gap window and before the count is
    /// reached, once at least one node answered.
    pub(crate) fn poll(&mut self, now: Instant, handover: bool) -> Verdict {
        if now >= self.hard {
            return Verdict::End;
        }
        if let Some(due) = self.due
            && now.saturating_duration_since(due) > OVERSLEPT
        {
            // Woken late: what arrived meanwhile may still be unread.
            self.quiet_from = self.quiet_from.max(now);
        }
        if let Some(until) = self.probe_until
            && now >= until
        {
            self.probe_until = None;
        }
        let handover = handover && self.count > 0;
        if !handover && self.holding(now) {
            return self.wait(self.hold_until);
        }
        let window = if self.satisfied() {
            self.settled_window
        } else if handover {
            self.gap_window
        } else {
            self.window
        };
        let mut end = self.quiet_from + window;
        if let Some(until) = self.probe_until {
            end = end.max(until);
        }
        let end = end.min(self.hard);
        if now >= end { Verdict::End } else { self.wait(end) }
    }

    fn wait(&mut self, at: Instant) -> Verdict {
        let at = at.min(self.hard);
        self.due = Some(at);
        Verdict::Wait(at)
    }

    /// The nodes heard.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The count the last complete discovery found, if known.
    pub(crate) fn expected(&self) -> Option<usize> {
        self.expect
    }

    /// How long discovery has listened by `now`, at most to its hard bound.
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        now.min(self.hard).saturating_duration_since(self.sent)
    }

    /// How long a silence ends discovery: the full window.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(start: Instant, ms: u64) -> Instant {
        start + MS * u32::try_from(ms).unwrap_or(u32::MAX)
    }

    fn rule(expect: Option<usize>) -> (Instant, Ending) {
        let start = Instant::now();
        (start, Ending::new(start, MS * 2000, MS * 2000, MS * 50, expect).without_probe())
    }

    #[test]
    fn without_a_record_discovery_holds_to_the_discovery_timeout() {
        let (t, mut rule) = rule(None);
        rule.heard(at(t, 5), 1);
        assert_eq!(rule.poll(at(t, 500), false), Verdict::Wait(at(t, 2000)));
        assert_eq!(rule.poll(at(t, 2000), false), Verdict::End);
    }

    #[test]
    fn a_short_count_holds_however_long_the_silence() {
        let (t, mut rule) = rule(Some(3));
        rule.heard(at(t, 5), 1);
        rule.heard(at(t, 6), 2);
        // A fleet paused for a second: silence, but two of three.
        assert_eq!(rule.poll(at(t, 1000), false), Verdict::Wait(at(t, 2000)));
        assert!(rule.holding(at(t, 1999)));
        assert!(!rule.holding(at(t, 2000)));
        assert_eq!(rule.poll(at(t, 2000), false), Verdict::End);
    }

    #[test]
    fn the_expected_count_then_silence_ends_it() {
        let (t, mut rule) = rule(Some(2));
        rule.heard(at(t, 10), 1);
        rule.heard(at(t, 12), 2);
        assert!(rule.satisfied());
        // Window: first reply's round trip (10 ms) < floor (50 ms); gap 2*4 = 8 ms.
        assert_eq!(rule.poll(at(t, 13), false), Verdict::Wait(at(t, 62)));
        assert_eq!(rule.poll(at(t, 62), false), Verdict::End);
    }

    #[test]
    fn nodes_beyond_the_record_get_the_settled_window() {
        let (t, mut rule) = rule(Some(1));
        rule.heard(at(t, 10), 1);
        rule.heard(at(t, 40), 2);
        // The count is in: the floor (50 ms) from the last reply.
        assert_eq!(rule.poll(at(t, 41), false), Verdict::Wait(at(t, 90)));
        rule.heard(at(t, 80), 3);
        assert_eq!(rule.count(), 3);
        assert_eq!(rule.poll(at(t, 81), false), Verdict::Wait(at(t, 130)));
    }

    #[test]
    fn a_pause_on_the_way_does_not_lengthen_the_settled_window() {
        let (t, mut rule) = rule(Some(3));
        rule.heard(at(t, 20), 1);
        // The fleet stopped for 300 ms.
        rule.heard(at(t, 320), 2);
        rule.heard(at(t, 321), 3);
        assert_eq!(rule.window(), MS * 1200);
        // Settled: the first reply's round trip is under the floor, so 50 ms.
        assert_eq!(rule.poll(at(t, 322), false), Verdict::Wait(at(t, 371)));
    }

    #[test]
    fn the_window_grows_with_the_time_so_far_and_the_first_round_trip() {
        let start = Instant::now();
        // Past a 100 ms hold with nothing on record, the adaptive window decides.
        let mut rule = Ending::new(start, MS * 100, MS * 5000, MS * 50, None).without_probe();
        rule.heard(at(start, 80), 1);
        rule.heard(at(start, 300), 2);
        // max(floor 50, first 80, gap 220*4 = 880, elapsed/2 = 150) = 880.
        assert_eq!(rule.window(), MS * 880);
        assert_eq!(rule.poll(at(start, 301), false), Verdict::Wait(at(start, 1180)));
    }

    #[test]
    fn the_timeout_ends_it_whatever_the_count() {
        let start = Instant::now();
        let mut rule = Ending::new(start, MS * 100, MS * 300, MS * 50, Some(10)).without_probe();
        rule.heard(at(start, 5), 1);
        // Past the hold, a short count falls back to the quiet window...
        assert_eq!(rule.poll(at(start, 100), false), Verdict::End);
        rule.heard(at(start, 120), 2);
        assert!(matches!(rule.poll(at(start, 130), false), Verdict::Wait(_)));
        // ...and the hard bound ends it.
        rule.heard(at(start, 290), 3);
        assert_eq!(rule.poll(at(start, 299), false), Verdict::Wait(at(start, 300)));
        assert_eq!(rule.poll(at(start, 300), false), Verdict::End);
    }

    #[test]
    fn silence_counts_only_after_the_probe_answer() {
        let start = Instant::now();
        let mut rule = Ending::new(start, MS * 2000, MS * 2000, MS * 50, Some(1));
        rule.heard(at(start, 5), 1);
        assert!(rule.awaiting_probe());
        assert_eq!(rule.poll(at(start, 100), false), Verdict::Wait(at(start, 1000)));
        rule.probe_answered(at(start, 200));
        assert!(!rule.awaiting_probe());
        assert_eq!(rule.poll(at(start, 201), false), Verdict::Wait(at(start, 250)));
    }

    #[test]
    fn a_probe_never_answered_costs_at_most_the_probe_wait() {
        let start = Instant::now();
        let mut rule = Ending::new(start, MS * 2000, MS * 2000, MS * 50, Some(1));
        rule.heard(at(start, 5), 1);
        assert_eq!(rule.poll(at(start, 1000), false), Verdict::End);
    }

    #[test]
    fn waking_late_measures_the_silence_again() {
        let (t, mut rule) = rule(Some(1));
        rule.heard(at(t, 10), 1);
        assert_eq!(rule.poll(at(t, 11), false), Verdict::Wait(at(t, 60)));
        // The process was stopped and woke 200 ms after it was due.
        assert_eq!(rule.poll(at(t, 260), false), Verdict::Wait(at(t, 310)));
        assert_eq!(rule.poll(at(t, 310), false), Verdict::End);
    }

    #[test]
    fn a_handover_needs_a_node_and_takes_the_gap_window() {
        let (t, mut rule) = rule(Some(3));
        // Nobody yet: a handover would send the call to no one, so the hold applies.
        assert_eq!(rule.poll(at(t, 5), true), Verdict::Wait(at(t, 2000)));
        rule.heard(at(t, 10), 1);
        rule.heard(at(t, 300), 2);
        // Gap window: max(50, 10, 290*4) = 1160; full window would be the same here, but
        // the hold (2 of 3) does not apply to a handover.
        assert_eq!(rule.poll(at(t, 301), true), Verdict::Wait(at(t, 1460)));
        assert_eq!(rule.poll(at(t, 1460), true), Verdict::End);
    }

    #[test]
    fn a_refuted_node_lowers_the_count() {
        let (t, mut rule) = rule(Some(2));
        rule.heard(at(t, 5), 1);
        rule.heard(at(t, 6), 2);
        assert!(rule.satisfied());
        rule.recount(1);
        assert!(!rule.satisfied());
        assert!(rule.holding(at(t, 10)));
    }
}
