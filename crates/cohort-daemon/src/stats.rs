//! Counters of one node's daemon, reported by `rpcutil daemon_stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Message counters; each is only ever incremented.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received.
    pub total: AtomicU64,
    /// Messages that could not be decoded or verified.
    pub invalid: AtomicU64,
    /// Requests older than their TTL (or from the future).
    pub ttl_expired: AtomicU64,
    /// Requests whose filter did not match this node.
    pub filtered: AtomicU64,
    /// Requests whose filter matched.
    pub passed: AtomicU64,
    /// Replies sent.
    pub replies: AtomicU64,
    /// Requests refused as unsigned, forged, from an untrusted or expired credential, or from a
    /// credential whose role may not send requests.
    pub unverified: AtomicU64,
    /// Requests refused because their id was already seen.
    pub replayed: AtomicU64,
    /// Requests denied by policy.
    pub unauthorized: AtomicU64,
    /// Audit lines for refused unverified traffic left out by the rate limit.
    pub audit_suppressed: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
