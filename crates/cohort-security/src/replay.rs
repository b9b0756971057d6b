//! The replay cache: each request id is accepted once while its TTL window lasts.
//!
//! An id is remembered until the request's own expiry (message time + TTL + clock skew), after
//! which the TTL check refuses the message anyway, so memory is bounded by the request rate
//! times the TTL. The cache is also capped; when full it refuses new requests rather than
//! forget unexpired ids (forgetting would reopen the replay window). Time is passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

/// Why a request id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before, within its window.
    #[error("request id {0} was already seen (replay)")]
    Replayed(String),
    /// Too many live ids.
    #[error("replay cache full ({0} live request ids); refusing until some expire")]
    Full(usize),
}

/// Request ids seen recently.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashSet<String>,
    expiries: BinaryHeap<Reverse<(i64, String)>>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live ids.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache { seen: HashSet::new(), expiries: BinaryHeap::new(), capacity }
    }

    /// Accepts `id` if it has not been seen; it is remembered until `expires_ms`. `now_ms` is
    /// the current time; ids whose expiry has passed are forgotten first.
    pub fn admit(&mut self, id: &str, expires_ms: i64, now_ms: i64) -> Result<(), ReplayError> {
        while let Some(Reverse((expiry, _))) = self.expiries.peek() {
            if *expiry > now_ms {
                break;
            }
            if let Some(Reverse((_, old))) = self.expiries.pop() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains(id) {
            return Err(ReplayError::Replayed(id.to_owned()));
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full(self.capacity));
        }
        self.seen.insert(id.to_owned());
        self.expiries.push(Reverse((expires_ms, id.to_owned())));
        Ok(())
    }

    /// Live ids.
    pub fn len(&self) -> usize {
        self.seen.len()
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
        cache.admit("a", 1000, 0).unwrap();
        assert_eq!(cache.admit("a", 1000, 500), Err(ReplayError::Replayed("a".into())));
        cache.admit("b", 2000, 500).unwrap();
        // After a's expiry it is forgotten (the TTL check refuses it by then anyway).
        cache.admit("a", 3000, 1000).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.admit("b", 2000, 1999).is_err());
    }

    #[test]
    fn full_cache_refuses_rather_than_forgets() {
        let mut cache = ReplayCache::new(2);
        cache.admit("a", 1000, 0).unwrap();
        cache.admit("b", 1000, 0).unwrap();
        assert_eq!(cache.admit("c", 1000, 0), Err(ReplayError::Full(2)));
        assert!(cache.admit("a", 1000, 10).is_err());
        cache.admit("c", 3000, 1000).unwrap();
    }
}
