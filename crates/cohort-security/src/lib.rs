//! Cohort's security core: who may ask a node to act, and how a node and a client prove who
//! they are to each other (../../docs/security.md describes the model).
//!
//! - [`keys`]: Ed25519 keys in the nkeys encoding (one key per identity, also its broker login);
//! - [`credential`]: an organisation issuer's signed statement binding a name, a role and a key
//!   for a validity period; revocation lists; [`Trust`] that verifies both;
//! - [`sealed`]: the signed envelope around every request and reply;
//! - [`replay`]: the cache that accepts each request id once within its TTL window;
//! - [`reply_keys`]: keys a caller and a node agree without sending them, so replies can be
//!   authenticated with a MAC instead of a signature;
//! - [`policy`]: per-agent authorization (MCollective's actionpolicy with its bugs fixed);
//! - [`roles`]: broker permissions by role.
//!
//! Pure: no I/O, no clock, no randomness of its own. Times and random bytes are arguments, and
//! reading key and policy files is the `cohort-keystore` crate's business.

pub mod credential;
pub mod keys;
pub mod policy;
pub mod replay;
pub mod reply_keys;
pub mod roles;
pub mod sealed;

pub use credential::{Claims, Credential, CredentialError, RevocationList, Role, Trust, Verified};
pub use keys::{KeyError, KeyKind, PublicKey, SecretKey};
pub use policy::{Authorizer, Decision, Groups, Policy, PolicyError, Verdict};
pub use replay::{ReplayCache, ReplayError};
pub use reply_keys::{ReplyKey, ReplyKeys};
pub use roles::{RoleGrants, grants};
pub use sealed::{
    OpenError, Opened, Signer, Unsealed, is_sealed, open, open_many, open_unsealed, peek, unseal,
};
