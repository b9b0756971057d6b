//! Ed25519 keys in the nkeys text encoding.
//!
//! One key per identity serves twice: it signs Cohort messages and, being an nkeys *user* key,
//! authenticates the same identity to the broker (our broker and nats-server both take nkeys).
//! The organisation issuer is an nkeys *operator* key, so the two kinds cannot be confused: a
//! seed starting `SU` is a member, `SO` an issuer. Generation takes its random bytes as an
//! argument; the caller owns the randomness.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Which kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The organisation issuer: signs credentials and revocation lists (nkeys operator, `O…`).
    Issuer,
    /// A client, node or provisioner (nkeys user, `U…`).
    Member,
}

impl KeyKind {
    fn nkeys(self) -> nkeys::KeyPairType {
        match self {
            KeyKind::Issuer => nkeys::KeyPairType::Operator,
            KeyKind::Member => nkeys::KeyPairType::User,
        }
    }

    fn public_prefix(self) -> char {
        match self {
            KeyKind::Issuer => 'O',
            KeyKind::Member => 'U',
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Issuer => "issuer",
            KeyKind::Member => "member",
        })
    }
}

/// A key that does not decode, or is of the wrong kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not an nkeys seed or public key at all.
    #[error("not a valid {kind} key: {reason}")]
    Invalid {
        /// Kind expected.
        kind: KeyKind,
        /// What the decoder said.
        reason: String,
    },
    /// A valid key of another kind (an issuer seed where a member key belongs, or the reverse).
    #[error("expected an {expected} key (public keys start with {prefix}), found another kind")]
    WrongKind {
        /// Kind expected.
        expected: KeyKind,
        /// Public-key prefix expected.
        prefix: char,
    },
}

/// A private key.
#[derive(Clone)]
pub struct SecretKey {
    kind: KeyKind,
    signing: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the seed, even in debug output.
        f.debug_struct("SecretKey").field("public", &self.public.text).finish()
    }
}

impl SecretKey {
    /// A new key from 32 random bytes.
    pub fn generate(kind: KeyKind, random: [u8; 32]) -> SecretKey {
        SecretKey::from_raw(kind, random)
    }

    fn from_raw(kind: KeyKind, raw: [u8; 32]) -> SecretKey {
        let signing = SigningKey::from_bytes(&raw);
        let verifying = signing.verifying_key();
        // new_from_raw only fails for key types without a prefix; ours both have one.
        let text = nkeys::KeyPair::new_from_raw(kind.nkeys(), raw)
            .map(|pair| pair.public_key())
            .unwrap_or_default();
        SecretKey { kind, signing, public: PublicKey { kind, verifying, text } }
    }

    /// Decodes an nkeys seed (`SO…` for an issuer, `SU…` for a member).
    pub fn from_seed(kind: KeyKind, seed: &str) -> Result<SecretKey, KeyError> {
        let invalid =
            |err: nkeys::error::Error| KeyError::Invalid { kind, reason: err.to_string() };
        let pair = nkeys::KeyPair::from_seed(seed.trim()).map_err(invalid)?;
        if pair.key_pair_type() != kind.nkeys() {
            return Err(KeyError::WrongKind { expected: kind, prefix: kind.public_prefix() });
        }
        let (_, raw) = nkeys::decode_seed(seed.trim()).map_err(invalid)?;
        Ok(SecretKey::from_raw(kind, raw))
    }

    /// The seed in nkeys text form, for writing to a key file.
    pub fn seed(&self) -> String {
        nkeys::KeyPair::new_from_raw(self.kind.nkeys(), self.signing.to_bytes())
            .ok()
            .and_then(|pair| pair.seed().ok())
            .unwrap_or_default()
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn signing(&self) -> &SigningKey {
        &self.signing
    }
}

/// A public key, decoded once so that verifying does not decompress it again.
#[derive(Clone)]
pub struct PublicKey {
    kind: KeyKind,
    verifying: VerifyingKey,
    text: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.text == other.text
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// Decodes an nkeys public key of the given kind (`O…` issuer, `U…` member).
    pub fn parse(kind: KeyKind, text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        if !text.starts_with(kind.public_prefix()) {
            return Err(KeyError::WrongKind { expected: kind, prefix: kind.public_prefix() });
        }
        let (_, raw) = nkeys::from_public_key(text)
            .map_err(|err| KeyError::Invalid { kind, reason: err.to_string() })?;
        let verifying = VerifyingKey::from_bytes(&raw)
            .map_err(|err| KeyError::Invalid { kind, reason: err.to_string() })?;
        Ok(PublicKey { kind, verifying, text: text.to_owned() })
    }

    /// The nkeys text form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    pub(crate) fn verifying(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// A member key from raw bytes, for tests that need keys no seed produces.
    #[cfg(test)]
    pub(crate) fn raw_for_tests(raw: [u8; 32]) -> PublicKey {
        let verifying = VerifyingKey::from_bytes(&raw).unwrap_or_else(|err| panic!("{err}"));
        PublicKey { kind: KeyKind::Member, verifying, text: format!("U-raw-{raw:02x?}") }
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.verifying.verify(message, &signature).is_ok()
    }
}

/// Whether every `(message, signature, key)` checks, tried as one Ed25519 batch (about half the
/// cost of checking each alone). `false` for fewer than two (one is as cheap checked alone) and
/// when any fails: the caller then checks each alone, which also finds the bad ones.
pub(crate) fn all_verify(items: &[(&[u8], Signature, &PublicKey)]) -> bool {
    if items.len() < 2 {
        return false;
    }
    let messages: Vec<&[u8]> = items.iter().map(|(message, _, _)| *message).collect();
    let signatures: Vec<Signature> = items.iter().map(|(_, signature, _)| *signature).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, _, key)| key.verifying).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_match_nkeys() {
        let key = SecretKey::generate(KeyKind::Member, [7; 32]);
        let pair = nkeys::KeyPair::from_seed(&key.seed()).unwrap();
        assert_eq!(pair.public_key(), key.public().as_str());
        let again = SecretKey::from_seed(KeyKind::Member, &key.seed()).unwrap();
        assert_eq!(again.public(), key.public());
        let issuer = SecretKey::generate(KeyKind::Issuer, [9; 32]);
        assert!(issuer.public().as_str().starts_with('O'));
        assert!(issuer.seed().starts_with("SO"));
        let pair = nkeys::KeyPair::from_seed(&issuer.seed()).unwrap();
        assert_eq!(pair.public_key(), issuer.public().as_str());
    }

    #[test]
    fn kinds_are_not_interchangeable() {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let member = SecretKey::generate(KeyKind::Member, [2; 32]);
        assert!(matches!(
            SecretKey::from_seed(KeyKind::Member, &issuer.seed()),
            Err(KeyError::WrongKind { .. })
        ));
        assert!(matches!(
            PublicKey::parse(KeyKind::Issuer, member.public().as_str()),
            Err(KeyError::WrongKind { .. })
        ));
        assert!(matches!(
            SecretKey::from_seed(KeyKind::Member, "SUnonsense"),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_bytes_and_key() {
        let key = SecretKey::generate(KeyKind::Member, [3; 32]);
        let other = SecretKey::generate(KeyKind::Member, [4; 32]);
        let signature = key.sign(b"hello");
        let public = PublicKey::parse(KeyKind::Member, key.public().as_str()).unwrap();
        assert!(public.verify(b"hello", &signature));
        assert!(!public.verify(b"hellO", &signature));
        assert!(!other.public().verify(b"hello", &signature));
        assert!(!public.verify(b"hello", &signature[..63]));
    }
}
