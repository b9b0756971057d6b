//! Which of several schedulers on one collective acts: each announces itself on the bus every
//! `ttl / 3`; the holder is the lowest id among itself and the peers heard within `ttl`. A
//! scheduler that just started listens for a whole `ttl` before it may act, so it learns of a
//! holder before competing with it; when the holder stops announcing (stopped, crashed, cut
//! off), the next lowest takes over after `ttl`. Pure: fed what was heard and the time.

use std::collections::BTreeMap;
use std::time::Duration;

/// One scheduler's view of the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    me: String,
    ttl: Duration,
    since: Duration,
    peers: BTreeMap<String, Duration>,
}

impl Lease {
    /// The view of scheduler `me`, started at `now`.
    pub fn new(me: &str, ttl: Duration, now: Duration) -> Lease {
        Lease { me: me.to_owned(), ttl, since: now, peers: BTreeMap::new() }
    }

    /// How often to announce.
    pub fn beat(&self) -> Duration {
        self.ttl / 3
    }

    /// Records an announcement from scheduler `id` heard at `now` (our own are ignored).
    pub fn heard(&mut self, id: &str, now: Duration) {
        if id != self.me {
            self.peers.insert(id.to_owned(), now);
        }
    }

    /// The scheduler holding the lease at `now`, as far as this one knows.
    pub fn holder(&self, now: Duration) -> &str {
        self.peers
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) <= self.ttl)
            .map(|(id, _)| id.as_str())
            .chain(std::iter::once(self.me.as_str()))
            .min()
            .unwrap_or(&self.me)
    }

    /// Whether this scheduler may act at `now`.
    pub fn is_mine(&self, now: Duration) -> bool {
        now.saturating_sub(self.since) >= self.ttl && self.holder(now) == self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_newcomer_listens_first() {
        let lease = Lease::new("b", 6 * S, 10 * S);
        assert!(!lease.is_mine(12 * S), "within its first ttl");
        assert!(lease.is_mine(16 * S), "alone after a ttl");
    }

    #[test]
    fn the_lowest_live_id_holds_it() {
        let mut a = Lease::new("a", 6 * S, Duration::ZERO);
        let mut b = Lease::new("b", 6 * S, Duration::ZERO);
        for t in [2, 4, 6, 8] {
            a.heard("b", t * S);
            b.heard("a", t * S);
        }
        assert!(a.is_mine(8 * S));
        assert!(!b.is_mine(8 * S));
        assert_eq!(b.holder(8 * S), "a");
    }

    #[test]
    fn the_holder_going_quiet_hands_over_after_the_ttl() {
        let mut b = Lease::new("b", 6 * S, Duration::ZERO);
        b.heard("a", 10 * S);
        assert!(!b.is_mine(15 * S));
        assert!(!b.is_mine(16 * S), "a was heard exactly a ttl ago");
        assert!(b.is_mine(17 * S), "a silent for longer than the ttl");
        b.heard("a", 18 * S);
        assert!(!b.is_mine(18 * S), "a is back: it holds the lease again");
        b.heard("b", 19 * S);
        assert_eq!(b.holder(19 * S), "a", "our own announcements are not a peer");
        assert_eq!(b.beat(), 2 * S);
    }
}
