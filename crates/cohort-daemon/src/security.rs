//! A secure node's state: whom it trusts, how it signs, which request ids it has seen, and the
//! authorization policies in force. The trust (issuers and revocation list) and the policies
//! are replaced on SIGHUP; the replay cache survives reloads.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cohort_security::{Authorizer, ReplayCache, ReplayError, ReplyKeys, Signer, Trust};

/// Request ids remembered at most; see [`ReplayCache`].
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Everything a node needs to verify requests, authorize them and sign replies.
#[derive(Debug)]
pub struct NodeSecurity {
    trust: RwLock<Arc<Trust>>,
    /// The node's key and credential.
    pub signer: Signer,
    /// The keys shared with callers that ask for MAC'd replies, agreed on first use.
    pub reply_keys: ReplyKeys,
    authorizer: RwLock<Arc<Authorizer>>,
    replay: Mutex<ReplayCache>,
}

impl NodeSecurity {
    /// A node that trusts `trust`, signs as `signer` and authorizes with `authorizer`.
    pub fn new(
        trust: Trust,
        signer: Signer,
        authorizer: Authorizer,
        replay_capacity: usize,
    ) -> NodeSecurity {
        NodeSecurity {
            trust: RwLock::new(Arc::new(trust)),
            reply_keys: ReplyKeys::new(signer.key()),
            signer,
            authorizer: RwLock::new(Arc::new(authorizer)),
            replay: Mutex::new(ReplayCache::new(replay_capacity)),
        }
    }

    /// Request ids in the replay cache now, and how many it can hold.
    pub fn replay_use(&self) -> (u64, u64) {
        let replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        (count(replay.len()), count(replay.capacity()))
    }

    /// Trusted issuers and revocations in force.
    pub fn trust(&self) -> Arc<Trust> {
        self.trust.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the trust (after the revocation list changed).
    pub fn set_trust(&self, trust: Trust) {
        *self.trust.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(trust);
    }

    /// The policies in force.
    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the policies (after the policy files were re-read).
    pub fn set_authorizer(&self, authorizer: Authorizer) {
        *self.authorizer.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(authorizer);
    }

    /// Admits a request id once within its window; see [`ReplayCache::admit`].
    pub fn admit(
        &self,
        id: &str,
        caller: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), ReplayError> {
        let mut replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        replay.admit(id, caller, expires_ms, now_ms)
    }
}
