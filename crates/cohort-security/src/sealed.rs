//! The signed envelope around a request or reply.
//!
//! ```json
//! {"protocol":"io.cohort.secure","version":1,"message":"<the inner envelope, as a string>",
//!  "signature":"<base64 Ed25519>","credential":{…}}
//! ```
//!
//! The signature covers the exact inner bytes (carried as a string, so nothing is
//! re-serialized before checking), behind a domain prefix. The signer's credential travels
//! with every message, so a node needs nothing but the issuer's public key to check a caller
//! it has never seen.
//!
//! A reply may carry `"mac":"<base64 HMAC-SHA256>"` instead of `signature`, when its request
//! asked for it: the MAC is under the key the node shares with the caller
//! ([`crate::reply_keys`]), so only that caller can check it. Exactly one of the two is present.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialError, Trust, Verified};
use crate::keys::{PublicKey, SecretKey, all_verify};
use crate::reply_keys::{ReplyKey, ReplyKeys};

/// Protocol id of the signed envelope.
pub const SECURE_PROTOCOL: &str = "io.cohort.secure";
/// Its version.
pub const SECURE_VERSION: u32 = 1;
const MESSAGE_DOMAIN: &[u8] = b"cohort-message-v1\n";

#[derive(Serialize)]
struct SealedOut<'a> {
    protocol: &'static str,
    version: u32,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    credential: &'a Credential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedIn {
    protocol: String,
    version: u32,
    message: String,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    credential: Credential,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    protocol: Option<std::borrow::Cow<'a, str>>,
}

/// A signing identity: its key and the credential that vouches for it.
#[derive(Debug, Clone)]
pub struct Signer {
    key: SecretKey,
    credential: Credential,
}

/// Why a key and a credential do not belong together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key {key} does not match the credential for {name} (which names key {expected})")]
pub struct MismatchedKey {
    /// The key's public half.
    pub key: String,
    /// The credential's holder.
    pub name: String,
    /// The key the credential names.
    pub expected: String,
}

impl Signer {
    /// Pairs a key with its credential, checking they belong together.
    pub fn new(key: SecretKey, credential: Credential) -> Result<Signer, MismatchedKey> {
        if key.public().as_str() != credential.claims.key {
            return Err(MismatchedKey {
                key: key.public().as_str().to_owned(),
                name: credential.claims.name.clone(),
                expected: credential.claims.key.clone(),
            });
        }
        Ok(Signer { key, credential })
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// `<role>=<name>` of the credential.
    pub fn caller(&self) -> String {
        self.credential.claims.caller()
    }

    /// Wraps `message` (a JSON envelope) in a signed envelope.
    pub fn seal(&self, message: &str) -> Vec<u8> {
        let mut signed = Vec::with_capacity(MESSAGE_DOMAIN.len() + message.len());
        signed.extend_from_slice(MESSAGE_DOMAIN);
        signed.extend_from_slice(message.as_bytes());
        let sealed = SealedOut {
            protocol: SECURE_PROTOCOL,
            version: SECURE_VERSION,
            message,
            signature: Some(STANDARD.encode(self.key.sign(&signed))),
            mac: None,
            credential: &self.credential,
        };
        serde_json::to_vec(&sealed).unwrap_or_default()
    }

    /// Wraps a reply `message` authenticated with `key`, the key this node shares with the
    /// caller that asked for a MAC ([`crate::reply_keys`]): only that caller can check it.
    pub fn seal_mac(&self, message: &str, key: &ReplyKey) -> Vec<u8> {
        let sealed = SealedOut {
            protocol: SECURE_PROTOCOL,
            version: SECURE_VERSION,
            message,
            signature: None,
            mac: Some(STANDARD.encode(key.sign(message.as_bytes()))),
            credential: &self.credential,
        };
        serde_json::to_vec(&sealed).unwrap_or_default()
    }
}

/// Why a signed envelope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not the signed envelope's shape.
    #[error("malformed signed message: {0}")]
    Malformed(String),
    /// Another version of the signed envelope.
    #[error("unsupported signed-message protocol {protocol:?} version {version}")]
    Protocol {
        /// Found.
        protocol: String,
        /// Found.
        version: u32,
    },
    /// The credential does not verify.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The message was not signed by the credential's key (forged or tampered with).
    #[error("signature of {caller} does not match the message (forged or altered)")]
    Signature {
        /// Who it claims to be from.
        caller: String,
    },
    /// The MAC does not match under the key this reader shares with the credential's holder
    /// (forged, altered, or meant for another caller).
    #[error(
        "MAC of {caller} does not match the message (forged, altered or meant for another caller)"
    )]
    Mac {
        /// Who it claims to be from.
        caller: String,
    },
    /// A MAC where this reader needs a signature: requests, and replies to a reader that did
    /// not ask for MACs, must be signed.
    #[error("{caller} sent a MAC, not a signature, which this reader does not accept")]
    Unsigned {
        /// Who it claims to be from.
        caller: String,
    },
}

/// A verified message.
#[derive(Debug)]
pub struct Opened {
    /// The inner envelope, exactly as signed.
    pub message: String,
    /// Who signed it.
    pub signer: Arc<Verified>,
}

/// Whether `bytes` claim to be a signed envelope (cheap: looks at `protocol` only).
pub fn is_sealed(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Head<'_>>(bytes)
        .ok()
        .and_then(|head| head.protocol)
        .is_some_and(|protocol| protocol == SECURE_PROTOCOL)
}

/// A signed envelope whose credential verified, its signature or MAC not yet checked.
struct Staged {
    message: String,
    signer: Arc<Verified>,
    /// Domain prefix + message: the bytes the signature covers.
    signed: Vec<u8>,
    proof: Proof,
}

/// What proves who made a message, as read (`None`: present but not decodable).
enum Proof {
    Signature(Option<ed25519_dalek::Signature>),
    Mac(Option<Vec<u8>>),
}

/// A signed envelope read but not checked: its inner message can be looked at (a node decides
/// from it whether the message concerns it at all, before paying for a signature check), and
/// nothing it says is to be trusted until [`Unsealed::verify`] succeeds.
pub struct Unsealed {
    sealed: SealedIn,
}

impl Unsealed {
    /// The inner message, unverified.
    pub fn message(&self) -> &str {
        &self.sealed.message
    }

    /// Checks the credential and the signature at `now` (Unix seconds), as [`open`] does. A
    /// MAC instead of a signature is refused: this is how requests are checked.
    pub fn verify(self, trust: &Trust, now: i64) -> Result<Opened, OpenError> {
        let signer = trust.verify(&self.sealed.credential, now)?;
        Staged::new(self, signer).finish(false, None)
    }
}

/// Reads a signed envelope without checking it (see [`Unsealed`]).
pub fn unseal(bytes: &[u8]) -> Result<Unsealed, OpenError> {
    let sealed: SealedIn =
        serde_json::from_slice(bytes).map_err(|err| OpenError::Malformed(err.to_string()))?;
    if sealed.protocol != SECURE_PROTOCOL || sealed.version != SECURE_VERSION {
        return Err(OpenError::Protocol { protocol: sealed.protocol, version: sealed.version });
    }
    if sealed.signature.is_some() == sealed.mac.is_some() {
        let reason = "exactly one of `signature` and `mac` must be present";
        return Err(OpenError::Malformed(reason.to_owned()));
    }
    Ok(Unsealed { sealed })
}

impl Staged {
    /// `unsealed`, whose credential verified as `signer`.
    fn new(unsealed: Unsealed, signer: Arc<Verified>) -> Staged {
        let sealed = unsealed.sealed;
        let (proof, signed) = match (&sealed.signature, &sealed.mac) {
            (Some(signature), _) => {
                let signature = STANDARD
                    .decode(signature)
                    .ok()
                    .and_then(|raw| ed25519_dalek::Signature::from_slice(&raw).ok());
                let mut signed = Vec::with_capacity(MESSAGE_DOMAIN.len() + sealed.message.len());
                signed.extend_from_slice(MESSAGE_DOMAIN);
                signed.extend_from_slice(sealed.message.as_bytes());
                (Proof::Signature(signature), signed)
            }
            (None, mac) => {
                (Proof::Mac(mac.as_ref().and_then(|mac| STANDARD.decode(mac).ok())), Vec::new())
            }
        };
        Staged { message: sealed.message, signer, signed, proof }
    }

    /// Whether this is a well-formed signature that a batch can check.
    fn signature(&self) -> Option<ed25519_dalek::Signature> {
        match self.proof {
            Proof::Signature(signature) => signature,
            Proof::Mac(_) => None,
        }
    }

    /// Checks the signature unless `batch_verified` says it already was, or the MAC with the
    /// key shared with the signer, when the reader has `keys`.
    fn finish(self, batch_verified: bool, keys: Option<&ReplyKeys>) -> Result<Opened, OpenError> {
        let caller = || self.signer.caller.clone();
        match &self.proof {
            Proof::Signature(signature) => {
                let good = signature.is_some_and(|signature| {
                    batch_verified || self.signer.key.verify(&self.signed, &signature.to_bytes())
                });
                if !good {
                    return Err(OpenError::Signature { caller: caller() });
                }
            }
            Proof::Mac(tag) => {
                let keys = keys.ok_or_else(|| OpenError::Unsigned { caller: caller() })?;
                let good = tag.as_ref().is_some_and(|tag| {
                    keys.with(&self.signer.key)
                        .is_some_and(|key| key.verify(self.message.as_bytes(), tag))
                });
                if !good {
                    return Err(OpenError::Mac { caller: caller() });
                }
            }
        }
        Ok(Opened { message: self.message, signer: self.signer })
    }
}

/// Checks a signed envelope at `now` (Unix seconds) and returns the inner message and signer.
pub fn open(bytes: &[u8], trust: &Trust, now: i64) -> Result<Opened, OpenError> {
    unseal(bytes)?.verify(trust, now)
}

/// Opens many signed envelopes at once, as [`open`] does each: the signatures whose credentials
/// verified are checked together (Ed25519 batch verification, about twice as fast per message
/// for a few hundred), and only when the batch fails is each checked alone to find the bad ones.
/// The results are in the order of `items`. (Batch verification accepts exactly the signatures
/// single verification accepts, except for non-canonical variants only the key holder can make.)
pub fn open_many(items: &[&[u8]], trust: &Trust, now: i64) -> Vec<Result<Opened, OpenError>> {
    open_unsealed(items.iter().map(|bytes| unseal(bytes)).collect(), trust, now, None)
}

/// [`open_many`] for envelopes already read with [`unseal`] (or refused by it): a reader that
/// had to read them anyway does not parse them twice. With `keys`, replies authenticated with
/// a MAC under the key the reader shares with their sender are accepted too.
pub fn open_unsealed(
    items: Vec<Result<Unsealed, OpenError>>,
    trust: &Trust,
    now: i64,
    keys: Option<&ReplyKeys>,
) -> Vec<Result<Opened, OpenError>> {
    // Credentials first, together: a client hearing from nodes for the first time meets one
    // with every reply.
    let credentials: Vec<&Credential> =
        items.iter().filter_map(|item| Some(&item.as_ref().ok()?.sealed.credential)).collect();
    let mut signers = trust.verify_many(&credentials, now).into_iter();
    let staged: Vec<Result<Staged, OpenError>> = items
        .into_iter()
        .map(|unsealed| {
            let unsealed = unsealed?;
            // One result per credential, in order: the iterator cannot run out.
            let missing = || OpenError::Malformed("credential not checked".to_owned());
            let signer = signers.next().ok_or_else(missing)??;
            Ok(Staged::new(unsealed, signer))
        })
        .collect();
    let candidates: Vec<(&[u8], ed25519_dalek::Signature, &PublicKey)> = staged
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .filter_map(|s| Some((s.signed.as_slice(), s.signature()?, &s.signer.key)))
        .collect();
    let all_good = all_verify(&candidates);
    staged.into_iter().map(|staged| staged?.finish(all_good, keys)).collect()
}

/// The inner message of a signed envelope, checking nothing: for nodes running `--insecure`,
/// which serve signing clients without being able to verify them.
pub fn peek(bytes: &[u8]) -> Result<String, OpenError> {
    let sealed: SealedIn =
        serde_json::from_slice(bytes).map_err(|err| OpenError::Malformed(err.to_string()))?;
    Ok(sealed.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Role;
    use crate::keys::KeyKind;

    fn setup() -> (Trust, Signer, SecretKey) {
        let org = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let key = SecretKey::generate(KeyKind::Member, [2; 32]);
        let credential =
            Credential::issue(&org, "alice", Role::Client, key.public(), "s1".into(), 0, 1000)
                .unwrap();
        (Trust::new(vec![org.public().clone()]), Signer::new(key, credential).unwrap(), org)
    }

    /// The golden signed request: fixed keys and times make it byte-for-byte reproducible
    /// (Ed25519 signatures are deterministic). A change here is a wire-format change.
    #[test]
    fn golden_signed_request() {
        let org = SecretKey::generate(KeyKind::Issuer, [11; 32]);
        let key = SecretKey::generate(KeyKind::Member, [12; 32]);
        let credential = Credential::issue(
            &org,
            "alice",
            Role::Client,
            key.public(),
            "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90".into(),
            1_795_840_000,
            1_827_376_000,
        )
        .unwrap();
        let signer = Signer::new(key, credential).unwrap();
        let path = format!("{}/test_data/signed_request.json", env!("CARGO_MANIFEST_DIR"));
        let golden = std::fs::read_to_string(&path).unwrap();
        let golden: serde_json::Value = serde_json::from_str(&golden).unwrap();
        let inner = golden["message"].as_str().unwrap();
        let sealed: serde_json::Value = serde_json::from_slice(&signer.seal(inner)).unwrap();
        if std::env::var_os("COHORT_BLESS").is_some() {
            // Deliberate wire change: rewrite the golden file, then review the diff.
            let text = serde_json::to_string_pretty(&sealed).unwrap();
            std::fs::write(&path, format!("{text}\n")).unwrap();
            return;
        }
        assert_eq!(sealed, golden, "the signed envelope changed (COHORT_BLESS=1 rewrites it)");
        let trust = Trust::new(vec![org.public().clone()]);
        let opened = open(&serde_json::to_vec(&golden).unwrap(), &trust, 1_795_850_000).unwrap();
        assert_eq!(opened.signer.caller, "client=alice");
        assert!(cohort_proto::Request::from_bytes(opened.message.as_bytes()).is_ok());
    }

    #[test]
    fn batches_find_the_bad_ones() {
        let (trust, signer, _) = setup();
        let good: Vec<Vec<u8>> = (0..5).map(|i| signer.seal(&format!("{{\"n\":{i}}}"))).collect();
        let tampered =
            String::from_utf8(good[2].clone()).unwrap().replace("\\\"n\\\":2", "\\\"n\\\":9");
        assert_ne!(tampered.as_bytes(), good[2].as_slice());
        let mut items: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        let all = open_many(&items, &trust, 10);
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(all[3].as_ref().unwrap().message, "{\"n\":3}");
        items[2] = tampered.as_bytes();
        items.push(b"junk");
        let mixed = open_many(&items, &trust, 10);
        assert!(matches!(mixed[2], Err(OpenError::Signature { .. })));
        assert!(matches!(mixed[5], Err(OpenError::Malformed(_))));
        assert_eq!(mixed.iter().filter(|r| r.is_ok()).count(), 4);
        assert!(open_many(&[], &trust, 10).is_empty());
    }

    #[test]
    fn round_trip() {
        let (trust, signer, _) = setup();
        let sealed = signer.seal(r#"{"protocol":"io.cohort.rpc","x":"é\""}"#);
        assert!(is_sealed(&sealed));
        assert!(!is_sealed(br#"{"protocol":"io.cohort.rpc"}"#));
        assert!(!is_sealed(b"garbage"));
        let opened = open(&sealed, &trust, 10).unwrap();
        assert_eq!(opened.message, r#"{"protocol":"io.cohort.rpc","x":"é\""}"#);
        assert_eq!(opened.signer.caller, "client=alice");
    }

    #[test]
    fn tampering_and_forgery_are_refused() {
        let (trust, signer, org) = setup();
        let sealed = String::from_utf8(signer.seal(r#"{"a":1}"#)).unwrap();
        let tampered = sealed.replace(r#"{\"a\":1}"#, r#"{\"a\":2}"#);
        assert_ne!(tampered, sealed);
        assert!(matches!(open(tampered.as_bytes(), &trust, 10), Err(OpenError::Signature { .. })));
        // Someone else's key presenting alice's credential.
        let mallory = SecretKey::generate(KeyKind::Member, [3; 32]);
        let forged = Signer { key: mallory, credential: signer.credential().clone() };
        assert!(matches!(
            open(&forged.seal(r#"{"a":1}"#), &trust, 10),
            Err(OpenError::Signature { .. })
        ));
        // Mismatched pairs are refused up front.
        let mallory = SecretKey::generate(KeyKind::Member, [3; 32]);
        assert!(Signer::new(mallory, signer.credential().clone()).is_err());
        // Expired credential.
        assert!(matches!(open(sealed.as_bytes(), &trust, 2000), Err(OpenError::Credential(_))));
        // A credential from an untrusted issuer.
        let stranger =
            Trust::new(vec![SecretKey::generate(KeyKind::Issuer, [4; 32]).public().clone()]);
        assert!(matches!(open(sealed.as_bytes(), &stranger, 10), Err(OpenError::Credential(_))));
        drop(org);
        assert!(matches!(open(b"{}", &trust, 10), Err(OpenError::Malformed(_))));
    }

    #[test]
    fn mac_replies_open_only_for_the_caller_they_are_for() {
        let (trust, alice, org) = setup();
        let node_key = SecretKey::generate(KeyKind::Member, [5; 32]);
        let node_credential =
            Credential::issue(&org, "n1", Role::Node, node_key.public(), "s2".into(), 0, 1000)
                .unwrap();
        let node = Signer::new(node_key.clone(), node_credential).unwrap();
        let at_node = ReplyKeys::new(&node_key);
        let at_alice = ReplyKeys::new(alice.key());
        let key = at_node.with(alice.key().public()).unwrap();
        let sealed = node.seal_mac(r#"{"reply":1}"#, &key);
        let text = String::from_utf8(sealed.clone()).unwrap();
        let fields: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert!(fields.get("mac").is_some() && fields.get("signature").is_none(), "{text}");
        let open_with = |bytes: &[u8], keys: Option<&ReplyKeys>| {
            open_unsealed(vec![unseal(bytes)], &trust, 10, keys).remove(0)
        };
        let opened = open_with(&sealed, Some(&at_alice)).unwrap();
        assert_eq!(opened.message, r#"{"reply":1}"#);
        assert_eq!(opened.signer.caller, "node=n1");
        // Mixed with signed replies in one batch, each checked its own way.
        let signed = node.seal(r#"{"reply":2}"#);
        let both = open_unsealed(
            vec![unseal(&signed), unseal(&sealed), unseal(&signed)],
            &trust,
            10,
            Some(&at_alice),
        );
        assert!(both.iter().all(Result::is_ok));
        // Another caller's keys, no keys (a node reading a request), altered: refused.
        let bob = ReplyKeys::new(&SecretKey::generate(KeyKind::Member, [6; 32]));
        assert!(matches!(open_with(&sealed, Some(&bob)), Err(OpenError::Mac { .. })));
        assert!(matches!(open_with(&sealed, None), Err(OpenError::Unsigned { .. })));
        assert!(matches!(
            unseal(&sealed).unwrap().verify(&trust, 10),
            Err(OpenError::Unsigned { .. })
        ));
        let altered = text.replace(r#"\"reply\":1"#, r#"\"reply\":7"#);
        assert_ne!(altered, text);
        assert!(matches!(
            open_with(altered.as_bytes(), Some(&at_alice)),
            Err(OpenError::Mac { .. })
        ));
        // Another node presenting n1's credential with a MAC under its own key.
        let mallory = SecretKey::generate(KeyKind::Member, [7; 32]);
        let forged_key = ReplyKeys::new(&mallory).with(alice.key().public()).unwrap();
        let forged = node.seal_mac(r#"{"reply":1}"#, &forged_key);
        assert!(matches!(open_with(&forged, Some(&at_alice)), Err(OpenError::Mac { .. })));
        // Both proofs, or neither: not an envelope.
        let mut value: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        value["mac"] = serde_json::Value::String("AAAA".into());
        let doubled = serde_json::to_vec(&value).unwrap();
        assert!(matches!(open_with(&doubled, Some(&at_alice)), Err(OpenError::Malformed(_))));
        value.as_object_mut().unwrap().remove("mac");
        value.as_object_mut().unwrap().remove("signature");
        let bare = serde_json::to_vec(&value).unwrap();
        assert!(matches!(open_with(&bare, Some(&at_alice)), Err(OpenError::Malformed(_))));
    }
}
