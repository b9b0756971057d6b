//! The replay cache: each request id is accepted once while its TTL window lasts.
//!
//! An id is remembered until the request's own expiry (message time + TTL + clock skew), after
//! which the TTL check refuses the message anyway, so memory is bounded by the request rate
//! times the TTL (itself capped by the node's `max_ttl`). The cache is also capped; when full it
//! refuses new requests rather than forget unexpired ids (forgetting would reopen the replay
//! window). So that one caller cannot fill it and lock everyone else out, each caller may hold
//! at most a tenth of it: a caller flooding the node only has its own requests refused. Time is
//! passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Why a request id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before, within its window.
    #[error("request id {0} was already seen (replay)")]
    Replayed(String),
    /// Too many live ids.
    #[error("replay cache full ({0} live request ids); refusing until some expire")]
    Full(usize),
    /// This caller holds its whole share of the cache.
    #[error(
        "{caller} has {share} live request ids, its share of the replay cache; refusing its requests until some expire"
    )]
    CallerFull {
        /// The caller.
        caller: String,
        /// Ids one caller may hold.
        share: usize,
    },
}

/// Request ids seen recently.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashSet<String>,
    /// Expiry, id, caller: the earliest expiry on top.
    expiries: BinaryHeap<Reverse<(i64, String, String)>>,
    /// Live ids per caller.
    held: HashMap<String, usize>,
    capacity: usize,
    share: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live ids, a tenth of them (at least one) per caller.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: HashSet::new(),
            expiries: BinaryHeap::new(),
            held: HashMap::new(),
            capacity,
            share: (capacity / 10).max(1),
        }
    }

    /// Accepts `id` from `caller` if it has not been seen; it is remembered until `expires_ms`.
    /// `now_ms` is the current time; ids whose expiry has passed are forgotten first.
    pub fn admit(
        &mut self,
        id: &str,
        caller: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), ReplayError> {
        while let Some(Reverse((expiry, _, _))) = self.expiries.peek() {
            if *expiry > now_ms {
                break;
            }
            if let Some(Reverse((_, old, owner))) = self.expiries.pop() {
                self.seen.remove(&old);
                if let Some(count) = self.held.get_mut(&owner) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.held.remove(&owner);
                    }
                }
            }
        }
        if self.seen.contains(id) {
            return Err(ReplayError::Replayed(id.to_owned()));
        }
        if self.held.get(caller).is_some_and(|held| *held >= self.share) {
            return Err(ReplayError::CallerFull { caller: caller.to_owned(), share: self.share });
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full(self.capacity));
        }
        self.seen.insert(id.to_owned());
        *self.held.entry(caller.to_owned()).or_default() += 1;
        self.expiries.push(Reverse((expires_ms, id.to_owned(), caller.to_owned())));
        Ok(())
    }

    /// Live ids.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// How many live ids it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether no id is live.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window() {
        let mut cache = ReplayCache::new(10);
        cache.admit("a", "client=x", 1000, 0).unwrap();
        assert_eq!(cache.admit("a", "client=x", 1000, 500), Err(ReplayError::Replayed("a".into())));
        cache.admit("b", "client=y", 2000, 500).unwrap();
        // After a's expiry it is forgotten (the TTL check refuses it by then anyway).
        cache.admit("a", "client=x", 3000, 1000).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.admit("b", "client=y", 2000, 1999).is_err());
    }

    #[test]
    fn full_cache_refuses_rather_than_forgets() {
        let mut cache = ReplayCache::new(2);
        cache.admit("a", "client=x", 1000, 0).unwrap();
        cache.admit("b", "client=y", 1000, 0).unwrap();
        assert_eq!(cache.admit("c", "client=z", 1000, 0), Err(ReplayError::Full(2)));
        assert!(cache.admit("a", "client=z", 1000, 10).is_err());
        cache.admit("c", "client=z", 3000, 1000).unwrap();
    }

    #[test]
    fn one_caller_fills_only_its_own_share() {
        let mut cache = ReplayCache::new(100);
        for i in 0..10 {
            cache.admit(&format!("flood{i}"), "client=mallory", 60_000, 0).unwrap();
        }
        let refused = cache.admit("flood10", "client=mallory", 60_000, 0);
        assert_eq!(
            refused,
            Err(ReplayError::CallerFull { caller: "client=mallory".into(), share: 10 })
        );
        // Everyone else is still served, and mallory again once its ids expire.
        cache.admit("alice1", "client=alice", 60_000, 1).unwrap();
        cache.admit("flood11", "client=mallory", 120_000, 60_000).unwrap();
        assert_eq!(cache.len(), 1, "expired ids and their callers' counts are forgotten");
    }
}
