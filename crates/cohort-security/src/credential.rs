//! Credentials: an issuer's signed statement binding a name, a role and a public key for a
//! validity period; revocation lists; and the trust that checks both.
//!
//! The signed bytes are the claims serialized by this crate, behind a domain prefix, so a
//! credential signature can never pass for a message signature or the reverse. Verification
//! results are cached by signature (a fleet sees the same few callers over and over), but the
//! validity period and the revocation list are checked on every use.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, KeyKind, PublicKey, SecretKey, all_verify};

const CREDENTIAL_DOMAIN: &[u8] = b"cohort-credential-v1\n";
const REVOCATION_DOMAIN: &[u8] = b"cohort-revocations-v1\n";
/// Verified credentials remembered; past this the cache starts over. A client verifies every
/// node's credential on each call, so this must exceed the largest fleet it addresses (a
/// smaller cache was cleared every call at 10,000 nodes, re-verifying every credential). About
/// 500 bytes an entry: 32 MiB when full.
const CACHE_CAPACITY: usize = 65_536;

/// What a credential allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An operator or tool sending requests.
    Client,
    /// A server running `cohort daemon`.
    Node,
    /// The provisioner: sends requests and listens to registrations.
    Provisioner,
}

impl Role {
    /// The role's name as written in credentials and caller ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Node => "node",
            Role::Provisioner => "provisioner",
        }
    }

    /// Whether holders may send requests to nodes.
    pub fn may_request(self) -> bool {
        matches!(self, Role::Client | Role::Provisioner)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "client" => Ok(Role::Client),
            "node" => Ok(Role::Node),
            "provisioner" => Ok(Role::Provisioner),
            other => Err(format!("unknown role {other:?} (expected client, node or provisioner)")),
        }
    }
}

/// What the issuer vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version, 1.
    pub version: u32,
    /// Unique id of this credential, used by revocation lists.
    pub serial: String,
    /// The holder's name: a node's identity, a user's login.
    pub name: String,
    /// What the holder is.
    pub role: Role,
    /// The holder's public key (nkeys user key, `U…`).
    pub key: String,
    /// The issuer's public key (nkeys operator key, `O…`).
    pub issuer: String,
    /// Valid from, Unix seconds.
    pub not_before: i64,
    /// Valid until, Unix seconds.
    pub not_after: i64,
}

impl Claims {
    /// Whether `now` (Unix seconds) is inside the validity period.
    pub fn check_period(&self, now: i64) -> Result<(), CredentialError> {
        if now < self.not_before {
            let name = self.name.clone();
            return Err(CredentialError::NotYetValid { name, not_before: self.not_before });
        }
        if now > self.not_after {
            let name = self.name.clone();
            return Err(CredentialError::Expired { name, not_after: self.not_after });
        }
        Ok(())
    }

    /// The caller id requests from this holder carry: `<role>=<name>`.
    pub fn caller(&self) -> String {
        format!("{}={}", self.role, self.name)
    }
}

/// Claims plus the issuer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The statement.
    pub claims: Claims,
    /// Issuer's Ed25519 signature of the claims, base64.
    pub signature: String,
}

/// Why a credential, revocation list or name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not signed by any issuer this node or client trusts.
    #[error("credential for {name} was issued by {issuer}, which is not a trusted issuer")]
    UnknownIssuer {
        /// Holder.
        name: String,
        /// Issuer named in it.
        issuer: String,
    },
    /// The signature does not match the claims.
    #[error("credential for {name} has an invalid issuer signature")]
    BadSignature {
        /// Holder.
        name: String,
    },
    /// Before its validity period.
    #[error("credential for {name} is not valid before {not_before} (Unix time)")]
    NotYetValid {
        /// Holder.
        name: String,
        /// Start of validity.
        not_before: i64,
    },
    /// After its validity period.
    #[error("credential for {name} expired at {not_after} (Unix time)")]
    Expired {
        /// Holder.
        name: String,
        /// End of validity.
        not_after: i64,
    },
    /// On a revocation list.
    #[error("credential {serial} for {name} has been revoked")]
    Revoked {
        /// Holder.
        name: String,
        /// Its serial.
        serial: String,
    },
    /// A key inside does not decode.
    #[error("credential for {name}: {source}")]
    Key {
        /// Holder.
        name: String,
        /// The key problem.
        source: KeyError,
    },
    /// Unsupported format version.
    #[error("credential for {name} has unsupported version {version}")]
    Version {
        /// Holder.
        name: String,
        /// Version found.
        version: u32,
    },
    /// A name that cannot be a caller or node name.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A revocation list that does not verify.
    #[error("revocation list signed by {issuer} does not verify against a trusted issuer")]
    Revocations {
        /// Issuer named in it.
        issuer: String,
    },
}

fn signed_bytes<T: Serialize>(domain: &[u8], claims: &T) -> Vec<u8> {
    let mut bytes = domain.to_vec();
    // Plain structs of strings and integers always serialize.
    bytes.extend(serde_json::to_vec(claims).unwrap_or_default());
    bytes
}

/// Checks that `name` can be a caller or node name: the characters of a host name plus `_`
/// and `@`, 1-253 long.
pub fn check_name(name: &str) -> Result<(), CredentialError> {
    let bad = |reason: &str| CredentialError::Name { name: name.to_owned(), reason: reason.into() };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')) {
        return Err(bad("only letters, digits, '.', '-', '_' and '@' are allowed"));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(bad("dots must separate non-empty labels"));
    }
    Ok(())
}

impl Credential {
    /// Issues a credential. `serial` should be random (16 bytes, hex).
    pub fn issue(
        issuer: &SecretKey,
        name: &str,
        role: Role,
        key: &PublicKey,
        serial: String,
        not_before: i64,
        not_after: i64,
    ) -> Result<Credential, CredentialError> {
        check_name(name)?;
        let claims = Claims {
            version: 1,
            serial,
            name: name.to_owned(),
            role,
            key: key.as_str().to_owned(),
            issuer: issuer.public().as_str().to_owned(),
            not_before,
            not_after,
        };
        let signature = STANDARD.encode(issuer.sign(&signed_bytes(CREDENTIAL_DOMAIN, &claims)));
        Ok(Credential { claims, signature })
    }

    /// As JSON text (what credential files hold).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A credential that verified: who the holder is, with their key decoded.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The claims.
    pub claims: Claims,
    /// The holder's key.
    pub key: PublicKey,
    /// `<role>=<name>`.
    pub caller: String,
}

/// A signed list of revoked credential serials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// The statement.
    pub claims: RevokedClaims,
    /// Issuer's signature of the claims, base64.
    pub signature: String,
}

/// The revoked serials and who says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedClaims {
    /// Issuer public key.
    pub issuer: String,
    /// When the list was made, Unix seconds.
    pub time: i64,
    /// Revoked serials.
    pub serials: Vec<String>,
}

impl RevocationList {
    /// Signs a list.
    pub fn sign(issuer: &SecretKey, time: i64, mut serials: Vec<String>) -> RevocationList {
        serials.sort();
        serials.dedup();
        let claims = RevokedClaims { issuer: issuer.public().as_str().to_owned(), time, serials };
        let signature = STANDARD.encode(issuer.sign(&signed_bytes(REVOCATION_DOMAIN, &claims)));
        RevocationList { claims, signature }
    }
}

/// The issuers a node or client trusts, what they revoked, and a cache of verified
/// credentials. Shared by all tasks of a process.
#[derive(Debug)]
pub struct Trust {
    issuers: Vec<PublicKey>,
    revoked: HashSet<String>,
    cache: Mutex<HashMap<String, Arc<Verified>>>,
}

impl Trust {
    /// Trusts these issuers.
    pub fn new(issuers: Vec<PublicKey>) -> Trust {
        Trust { issuers, revoked: HashSet::new(), cache: Mutex::new(HashMap::new()) }
    }

    /// The trusted issuers.
    pub fn issuers(&self) -> &[PublicKey] {
        &self.issuers
    }

    /// Adds a revocation list after checking it was signed by a trusted issuer.
    pub fn revoke(&mut self, list: &RevocationList) -> Result<(), CredentialError> {
        let refused = || CredentialError::Revocations { issuer: list.claims.issuer.clone() };
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| issuer.as_str() == list.claims.issuer)
            .ok_or_else(refused)?;
        let signature = STANDARD.decode(&list.signature).map_err(|_| refused())?;
        if !issuer.verify(&signed_bytes(REVOCATION_DOMAIN, &list.claims), &signature) {
            return Err(refused());
        }
        self.revoked.extend(list.claims.serials.iter().cloned());
        Ok(())
    }

    /// Verifies `credential` at `now` (Unix seconds): a trusted issuer's valid signature,
    /// within its validity period, not revoked.
    pub fn verify(
        &self,
        credential: &Credential,
        now: i64,
    ) -> Result<Arc<Verified>, CredentialError> {
        let verified = match self.cached(credential) {
            Some(verified) => verified,
            None => {
                let staged = self.stage(credential)?;
                let verified = staged.finish(false)?;
                self.remember(credential, &verified);
                verified
            }
        };
        self.in_force(verified, now)
    }

    /// [`Trust::verify`] for many credentials at once: those not seen before are checked
    /// together (Ed25519 batch verification, about half the cost each), and only when the batch
    /// fails is each checked alone to find the bad ones. The results are in the order given.
    /// A client hearing from a fleet for the first time meets a credential with every reply.
    pub fn verify_many(
        &self,
        credentials: &[&Credential],
        now: i64,
    ) -> Vec<Result<Arc<Verified>, CredentialError>> {
        let looked_up: Vec<Result<Result<Arc<Verified>, Staged>, CredentialError>> = credentials
            .iter()
            .map(|credential| match self.cached(credential) {
                Some(verified) => Ok(Ok(verified)),
                None => self.stage(credential).map(Err),
            })
            .collect();
        let unseen: Vec<(&[u8], ed25519_dalek::Signature, &PublicKey)> = looked_up
            .iter()
            .filter_map(|item| item.as_ref().ok()?.as_ref().err())
            .map(|s| (s.signed.as_slice(), s.signature, &s.issuer))
            .collect();
        let all_good = all_verify(&unseen);
        credentials
            .iter()
            .zip(looked_up)
            .map(|(credential, item)| {
                let verified = match item? {
                    Ok(verified) => verified,
                    Err(staged) => {
                        let verified = staged.finish(all_good)?;
                        self.remember(credential, &verified);
                        verified
                    }
                };
                self.in_force(verified, now)
            })
            .collect()
    }

    fn cached(&self, credential: &Credential) -> Option<Arc<Verified>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&credential.signature)
            .filter(|hit| hit.claims == credential.claims)
            .cloned()
    }

    fn remember(&self, credential: &Credential, verified: &Arc<Verified>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(credential.signature.clone(), verified.clone());
    }

    /// Checks what may change after the signature was verified: the validity period at `now`,
    /// and revocation.
    fn in_force(
        &self,
        verified: Arc<Verified>,
        now: i64,
    ) -> Result<Arc<Verified>, CredentialError> {
        let claims = &verified.claims;
        claims.check_period(now)?;
        if self.revoked.contains(&claims.serial) {
            let name = claims.name.clone();
            return Err(CredentialError::Revoked { name, serial: claims.serial.clone() });
        }
        Ok(verified)
    }

    /// Everything about `credential` but its issuer's signature, which is left to check.
    fn stage(&self, credential: &Credential) -> Result<Staged, CredentialError> {
        let claims = &credential.claims;
        let name = claims.name.clone();
        if claims.version != 1 {
            return Err(CredentialError::Version { name, version: claims.version });
        }
        check_name(&claims.name)?;
        let issuer =
            self.issuers.iter().find(|issuer| issuer.as_str() == claims.issuer).ok_or_else(
                || CredentialError::UnknownIssuer {
                    name: name.clone(),
                    issuer: claims.issuer.clone(),
                },
            )?;
        let signature = STANDARD
            .decode(&credential.signature)
            .ok()
            .and_then(|raw| ed25519_dalek::Signature::from_slice(&raw).ok())
            .ok_or_else(|| CredentialError::BadSignature { name: name.clone() })?;
        let key = PublicKey::parse(KeyKind::Member, &claims.key)
            .map_err(|source| CredentialError::Key { name: name.clone(), source })?;
        Ok(Staged {
            signed: signed_bytes(CREDENTIAL_DOMAIN, claims),
            signature,
            issuer: issuer.clone(),
            verified: Verified { caller: claims.caller(), claims: claims.clone(), key },
        })
    }
}

/// A credential whose every part but the issuer's signature checked out.
struct Staged {
    signed: Vec<u8>,
    signature: ed25519_dalek::Signature,
    issuer: PublicKey,
    verified: Verified,
}

impl Staged {
    /// Checks the signature unless `batch_verified` says it already was.
    fn finish(self, batch_verified: bool) -> Result<Arc<Verified>, CredentialError> {
        if !batch_verified && !self.issuer.verify(&self.signed, &self.signature.to_bytes()) {
            return Err(CredentialError::BadSignature { name: self.verified.claims.name });
        }
        Ok(Arc::new(self.verified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(seed: u8) -> SecretKey {
        SecretKey::generate(KeyKind::Issuer, [seed; 32])
    }

    fn member(seed: u8) -> SecretKey {
        SecretKey::generate(KeyKind::Member, [seed; 32])
    }

    fn issue(issuer: &SecretKey, name: &str, serial: &str) -> Credential {
        Credential::issue(issuer, name, Role::Client, member(5).public(), serial.into(), 100, 200)
            .unwrap()
    }

    #[test]
    fn valid_credential_verifies_and_names_the_caller() {
        let org = issuer(1);
        let trust = Trust::new(vec![org.public().clone()]);
        let credential = issue(&org, "alice", "s1");
        let verified = trust.verify(&credential, 150).unwrap();
        assert_eq!(verified.caller, "client=alice");
        assert_eq!(verified.key, *member(5).public());
        // Second time from the cache, same answer.
        assert_eq!(trust.verify(&credential, 150).unwrap().caller, "client=alice");
    }

    #[test]
    fn many_at_once_give_what_one_at_a_time_gives() {
        let org = issuer(1);
        let other = issuer(2);
        let mut trust = Trust::new(vec![org.public().clone()]);
        trust.revoke(&RevocationList::sign(&org, 150, vec!["gone".into()])).unwrap();
        let seen = issue(&org, "seen", "s0");
        trust.verify(&seen, 150).unwrap();
        let fresh: Vec<Credential> =
            (1..=4).map(|i| issue(&org, &format!("node{i}"), &format!("s{i}"))).collect();
        let mut forged = issue(&other, "forged", "s5");
        forged.claims.issuer = org.public().as_str().to_owned();
        let mut promoted = fresh[0].clone();
        promoted.claims.role = Role::Provisioner;
        let gone = issue(&org, "gone", "gone");
        let foreign = issue(&other, "foreign", "s6");
        let mut all: Vec<&Credential> = vec![&seen, &forged, &promoted, &gone, &foreign];
        all.extend(fresh.iter());
        let expected: Vec<String> = all
            .iter()
            .map(|c| {
                format!(
                    "{:?}",
                    Trust::new(vec![org.public().clone()]).verify(c, 150).map(|v| v.caller.clone())
                )
            })
            .collect();
        let got = trust.verify_many(&all, 150);
        assert_eq!(got.len(), all.len());
        assert!(matches!(got[1], Err(CredentialError::BadSignature { .. })));
        assert!(matches!(got[2], Err(CredentialError::BadSignature { .. })));
        assert!(matches!(got[3], Err(CredentialError::Revoked { .. })));
        assert!(matches!(got[4], Err(CredentialError::UnknownIssuer { .. })));
        assert!(got[5..].iter().all(Result::is_ok));
        // Same answers as one by one (revocation aside, which the fresh trust lacks).
        for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
            if i != 3 {
                assert_eq!(&format!("{:?}", got.as_ref().map(|v| v.caller.clone())), expected);
            }
        }
        // The good ones are cached now, the forged ones are not.
        assert!(trust.cached(&fresh[3]).is_some() && trust.cached(&forged).is_none());
        // All good: one batch, all accepted; none: nothing to do.
        let good: Vec<Credential> =
            (7..=9).map(|i| issue(&org, &format!("node{i}"), &format!("s{i}"))).collect();
        let refs: Vec<&Credential> = good.iter().collect();
        assert!(trust.verify_many(&refs, 150).iter().all(Result::is_ok));
        assert!(trust.verify_many(&[], 150).is_empty());
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let org = issuer(1);
        let other = issuer(2);
        let mut trust = Trust::new(vec![org.public().clone()]);
        let good = issue(&org, "alice", "s1");
        assert!(matches!(trust.verify(&good, 99), Err(CredentialError::NotYetValid { .. })));
        assert!(matches!(trust.verify(&good, 201), Err(CredentialError::Expired { .. })));
        let foreign = issue(&other, "alice", "s2");
        assert!(matches!(trust.verify(&foreign, 150), Err(CredentialError::UnknownIssuer { .. })));
        // Claims claiming our issuer but signed by another.
        let mut forged = foreign.clone();
        forged.claims.issuer = org.public().as_str().to_owned();
        assert!(matches!(trust.verify(&forged, 150), Err(CredentialError::BadSignature { .. })));
        // A verified credential edited afterwards (the cache must not vouch for the edit).
        trust.verify(&good, 150).unwrap();
        let mut promoted = good.clone();
        promoted.claims.role = Role::Provisioner;
        assert!(matches!(trust.verify(&promoted, 150), Err(CredentialError::BadSignature { .. })));
        let mut extended = good.clone();
        extended.claims.not_after = 10_000;
        assert!(trust.verify(&extended, 5_000).is_err());
        // Revocation applies to cached credentials too.
        let foreign_list = RevocationList::sign(&other, 150, vec!["s1".into()]);
        assert!(trust.revoke(&foreign_list).is_err());
        trust.revoke(&RevocationList::sign(&org, 150, vec!["s1".into()])).unwrap();
        assert!(matches!(trust.verify(&good, 150), Err(CredentialError::Revoked { .. })));
        let mut tampered = RevocationList::sign(&org, 150, vec!["s9".into()]);
        tampered.claims.serials.clear();
        assert!(trust.revoke(&tampered).is_err());
    }

    #[test]
    fn names_are_checked() {
        let org = issuer(1);
        for bad in ["", "a b", "a..b", ".a", "x/y", "a=b"] {
            let err =
                Credential::issue(&org, bad, Role::Node, member(1).public(), "s".into(), 0, 1);
            assert!(matches!(err, Err(CredentialError::Name { .. })), "{bad:?}");
        }
        check_name("web1.example.com").unwrap();
        check_name("alice@example.com").unwrap();
    }
}
