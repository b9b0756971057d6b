//! What the fleet benchmarks share: the client side of a secure simulated fleet.

use cohort_client::ClientSecurity;
use cohort_security::{Credential, KeyKind, Role, SecretKey, Signer, Trust};

/// A client `issuer` vouches for (`client=bench`, a fresh key, valid for ever) that trusts the
/// nodes `issuer` vouches for, over plain TCP.
pub(crate) fn client_security(issuer: &SecretKey) -> ClientSecurity {
    let key = SecretKey::generate(KeyKind::Member, rand::random());
    let credential =
        Credential::issue(issuer, "bench", Role::Client, key.public(), "bench".into(), 0, i64::MAX)
            .unwrap();
    ClientSecurity {
        signer: Some(Signer::new(key, credential).unwrap()),
        trust: Some(std::sync::Arc::new(Trust::new(vec![issuer.public().clone()]))),
        tls_ca: None,
        reply_keys: None,
    }
}
