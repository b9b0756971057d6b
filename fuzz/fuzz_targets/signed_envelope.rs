//! Fuzz target for what a node does first with bytes from the bus: probe for the signed
//! envelope, open it against a trust, and decode the inner request; and what a client does with a
//! reply that may carry a MAC. Arbitrary bytes must never panic, and nothing that was not signed
//! (or MAC'd) by the trusted issuer's member may open.
//!
//! Run: `cargo fuzz run signed_envelope --sanitizer none`.

#![no_main]

use std::sync::OnceLock;

use cohort_proto::Request;
use cohort_security::{Credential, KeyKind, ReplyKeys, Role, SecretKey, Signer, Trust};
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (Trust, Signer, ReplyKeys) {
    static FIXTURE: OnceLock<(Trust, Signer, ReplyKeys)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let key = SecretKey::generate(KeyKind::Member, [2; 32]);
        let credential =
            Credential::issue(&issuer, "alice", Role::Client, key.public(), "s".into(), 0, 100)
                .expect("valid fixture");
        let signer = Signer::new(key, credential).expect("matching fixture");
        let client = ReplyKeys::new(&SecretKey::generate(KeyKind::Member, [3; 32]));
        (Trust::new(vec![issuer.public().clone()]), signer, client)
    })
}

fuzz_target!(|data: &[u8]| {
    let (trust, signer, client) = fixture();
    let _ = cohort_security::is_sealed(data);
    let _ = cohort_security::peek(data);
    let _ = Request::from_bytes(data);
    if let Ok(opened) = cohort_security::open(data, trust, 50) {
        // Only a message the fixture's key signed can open; it must then be exactly that.
        let resealed = signer.seal(&opened.message);
        assert!(cohort_security::open(&resealed, trust, 50).is_ok());
        let _ = Request::from_bytes(opened.message.as_bytes());
    }
    // Signing arbitrary text and opening it round-trips.
    if let Ok(text) = std::str::from_utf8(data) {
        let sealed = signer.seal(text);
        let opened = cohort_security::open(&sealed, trust, 50).expect("own seal opens");
        assert_eq!(opened.message, text);
        let key = client.with(signer.key().public()).expect("a real key agrees");
        let maced = signer.seal_mac(text, &key);
        let opened = cohort_security::open_unsealed(
            vec![cohort_security::unseal(&maced)],
            trust,
            50,
            Some(client),
        );
        assert!(matches!(&opened[..], [Ok(o)] if o.message == text), "own MAC opens");
    }
    // As a client reads a reply: a signature or a MAC under the client's key.
    let read = cohort_security::open_unsealed(
        vec![cohort_security::unseal(data)],
        trust,
        50,
        Some(client),
    );
    if let [Ok(opened)] = &read[..] {
        let _ = cohort_proto::Reply::from_bytes(opened.message.as_bytes());
    }
});
