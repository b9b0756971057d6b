//! Keys a caller and a node share without ever sending them, for authenticating replies with a
//! MAC instead of a signature ([`cohort_proto::ReplyProof::Mac`]).
//!
//! Checking an Ed25519 signature costs a client ~15 µs per reply even batched, and signing
//! costs the node ~18 µs, on every reply of every call. A caller that calls the same nodes again
//! and again (the scheduler, the provisioner) need not pay that: the caller and each node agree
//! on a key once (Diffie-Hellman on their existing Ed25519 keys, ~32 µs each side), cache it,
//! and from then on the node authenticates its reply with HMAC-SHA256 under that key and the
//! client checks it in about a microsecond.
//!
//! The agreement is X25519's, done on the Edwards form of the same keys (the birational map
//! between the curves makes the two the same computation; using one key pair for both Ed25519
//! signatures and this agreement is the combination libsodium supports and whose joint security
//! has been proven, Thormarker 2021). The shared point is multiplied by the cofactor first, so a
//! key with a small-order component cannot steer it, and the identity is refused. The key is
//! HMAC-SHA256 over the point and both public keys, so it is bound to this exact pair.
//!
//! What a MAC proves is less than a signature: only the two holders can make or check it, so
//! the caller cannot show a reply to a third party as the node's, and whoever steals the
//! caller's key can forge replies to it (but could already command the fleet as it). Requests
//! are always signed; only replies may carry a MAC.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keys::{PublicKey, SecretKey};

type HmacSha256 = Hmac<Sha256>;

const KEY_DOMAIN: &[u8] = b"cohort-reply-key-v1";
const MAC_DOMAIN: &[u8] = b"cohort-reply-mac-v1\n";

/// Pairs remembered at most, ~200 bytes each (the keyed HMAC state); the cache is cleared when
/// full (a client addressing more nodes than this agrees again, at ~32 µs a node).
const CACHE_CAPACITY: usize = 65_536;

/// The compressed Edwards identity: the agreement's result with a small-order peer key.
const IDENTITY: [u8; 32] = {
    let mut bytes = [0; 32];
    bytes[0] = 1;
    bytes
};

/// One party's side of the reply keys it shares with every peer, derived on first use and kept.
pub struct ReplyKeys {
    own: SecretKey,
    cache: Mutex<HashMap<[u8; 32], ReplyKey>>,
}

impl std::fmt::Debug for ReplyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("ReplyKeys").field("own", self.own.public()).finish_non_exhaustive()
    }
}

/// A reply key: HMAC-SHA256 under it authenticates replies between one caller and one node.
/// Kept keyed, with the domain prefix absorbed, so each use costs only the message's hashing.
#[derive(Clone)]
pub struct ReplyKey(HmacSha256);

impl std::fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyKey(..)")
    }
}

impl ReplyKeys {
    /// The reply keys of the holder of `own`.
    pub fn new(own: &SecretKey) -> ReplyKeys {
        ReplyKeys { own: own.clone(), cache: Mutex::new(HashMap::new()) }
    }

    /// This party's public key.
    pub fn public(&self) -> &PublicKey {
        self.own.public()
    }

    /// The key shared with `peer`; `None` when the peer's key is degenerate (small order), with
    /// which no secret can be agreed.
    pub fn with(&self, peer: &PublicKey) -> Option<ReplyKey> {
        let peer_bytes = peer.verifying().to_bytes();
        let cached =
            self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&peer_bytes).cloned();
        if cached.is_some() {
            return cached;
        }
        let point =
            peer.verifying().to_edwards().mul_by_cofactor() * self.own.signing().to_scalar();
        let shared = point.compress().to_bytes();
        if shared == IDENTITY {
            return None;
        }
        let own_bytes = self.own.public().verifying().to_bytes();
        // The two public keys in a fixed order: both sides derive the same key.
        let (low, high) =
            if own_bytes <= peer_bytes { (own_bytes, peer_bytes) } else { (peer_bytes, own_bytes) };
        let mut kdf = HmacSha256::new_from_slice(KEY_DOMAIN).ok()?;
        kdf.update(&shared);
        kdf.update(&low);
        kdf.update(&high);
        let mut mac = HmacSha256::new_from_slice(&kdf.finalize().into_bytes()).ok()?;
        mac.update(MAC_DOMAIN);
        let key = ReplyKey(mac);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(peer_bytes, key.clone());
        Some(key)
    }
}

impl ReplyKey {
    /// The MAC of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `message` (compared in constant time).
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyKind;

    fn key(seed: u8) -> SecretKey {
        SecretKey::generate(KeyKind::Member, [seed; 32])
    }

    #[test]
    fn both_sides_derive_the_same_key_and_no_one_else_does() {
        let (alice, node, other) = (key(1), key(2), key(3));
        let at_alice = ReplyKeys::new(&alice).with(node.public()).unwrap();
        let at_node = ReplyKeys::new(&node).with(alice.public()).unwrap();
        let tag = at_node.sign(b"reply");
        assert!(at_alice.verify(b"reply", &tag));
        assert!(!at_alice.verify(b"replY", &tag));
        assert!(!at_alice.verify(b"reply", &tag[..31]));
        // Another node cannot make the tag alice accepts from `node`, nor does alice's key with
        // another node match.
        let forger = ReplyKeys::new(&other).with(alice.public()).unwrap();
        assert!(!at_alice.verify(b"reply", &forger.sign(b"reply")));
        let alice_other = ReplyKeys::new(&alice).with(other.public()).unwrap();
        assert!(!alice_other.verify(b"reply", &tag));
        // Cached: the same key the second time.
        let keys = ReplyKeys::new(&alice);
        let first = keys.with(node.public()).unwrap().sign(b"x");
        assert_eq!(keys.with(node.public()).unwrap().sign(b"x"), first);
        assert_eq!(keys.cache.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_small_order_key_agrees_nothing() {
        // The Edwards identity as a key: any agreement with it is the identity.
        let degenerate = PublicKey::raw_for_tests(IDENTITY);
        assert!(ReplyKeys::new(&key(1)).with(&degenerate).is_none());
    }
}
