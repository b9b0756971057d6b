//! Subject names on the bus, shaped like Choria's (proven at 50,000 nodes):
//!
//! - `C.broadcast.agent.<agent>`: broadcast requests for an agent in collective `C`;
//! - `C.node.<identity>`: requests addressed to one node;
//! - `C.reply.<caller-hash>.<request-id>`: replies, under a prefix only the caller reads;
//! - `C.registration`: periodic node registration.
//!
//! Dots inside an identity would add subject tokens; they are kept (identities are FQDNs) and
//! the node subscribes to exactly its own subject, so `C.node.web1.example.com` reaches only
//! the node of that name.

use sha2::{Digest, Sha256};

use crate::ids::{AgentName, Collective, Identity, RequestId};

/// `C.broadcast.agent.<agent>`.
pub fn broadcast_subject(collective: &Collective, agent: &AgentName) -> String {
    format!("{collective}.broadcast.agent.{agent}")
}

/// `C.node.<identity>`.
pub fn node_subject(collective: &Collective, identity: &Identity) -> String {
    format!("{collective}.node.{identity}")
}

/// `C.reply.<caller-hash>.<request-id>`.
pub fn reply_subject(collective: &Collective, caller: &str, request: &RequestId) -> String {
    format!("{collective}.reply.{}.{request}", caller_hash(caller))
}

/// `C.registration`.
pub fn registration_subject(collective: &Collective) -> String {
    format!("{collective}.registration")
}

/// The first 16 hex digits of SHA-256 of the caller id: a stable subject token that hides the
/// caller's name and contains no characters special to subjects.
pub fn caller_hash(caller: &str) -> String {
    let digest = Sha256::digest(caller.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let collective = Collective::new("cohort").unwrap();
        let agent = AgentName::new("rpcutil").unwrap();
        let node = Identity::new("web1.example.com").unwrap();
        let id = RequestId::from_random([1; 16]);
        assert_eq!(broadcast_subject(&collective, &agent), "cohort.broadcast.agent.rpcutil");
        assert_eq!(node_subject(&collective, &node), "cohort.node.web1.example.com");
        assert_eq!(registration_subject(&collective), "cohort.registration");
        let reply = reply_subject(&collective, "user=alice", &id);
        assert_eq!(reply, format!("cohort.reply.{}.{id}", caller_hash("user=alice")));
        assert_eq!(caller_hash("user=alice").len(), 16);
        assert_ne!(caller_hash("user=alice"), caller_hash("user=bob"));
    }
}
