//! What security costs per message: sealing (sign), opening one envelope (verify, credential
//! cached), opening a batch of 256 replies the way the client does (batch verification), with
//! the credentials known and met for the first time; and the MAC'd replies of long-lived
//! clients: agreeing a reply key (once per pair), sealing and opening with it.
//!
//! Run: `cargo bench -p cohort-security --bench crypto`.

#![allow(clippy::unwrap_used, missing_docs)]

use cohort_security::{
    Credential, KeyKind, ReplyKeys, Role, SecretKey, Signer, Trust, open, open_many, open_unsealed,
    unseal,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const REPLY: &str = r#"{"protocol":"io.cohort.rpc","version":1,"request_id":"0123456789abcdef0123456789abcdef","sender":"web0001.uk.example.net","agent":"rpcutil","action":"ping","time":1795850000000,"status":0,"status_message":"OK","data":{"pong":1795850000}}"#;

fn signer(issuer: &SecretKey, idx: u8) -> Signer {
    let key = SecretKey::generate(KeyKind::Member, [idx; 32]);
    let name = format!("web{idx:04}.example.net");
    let credential =
        Credential::issue(issuer, &name, Role::Node, key.public(), format!("s{idx}"), 0, i64::MAX)
            .unwrap();
    Signer::new(key, credential).unwrap()
}

fn crypto(c: &mut Criterion) {
    let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
    let trust = Trust::new(vec![issuer.public().clone()]);
    let one = signer(&issuer, 2);
    let sealed = one.seal(REPLY);
    let mut group = c.benchmark_group("security");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw Ed25519 sign", |b| b.iter(|| one.key().sign(REPLY.as_bytes())));
    let raw = one.key().sign(REPLY.as_bytes());
    let public = one.key().public().clone();
    group.bench_function("raw Ed25519 verify", |b| {
        b.iter(|| assert!(public.verify(REPLY.as_bytes(), &raw)))
    });
    group.bench_function("seal (sign) one reply", |b| b.iter(|| one.seal(REPLY)));
    group.bench_function("open (verify) one reply", |b| {
        b.iter(|| open(&sealed, &trust, 10).unwrap())
    });
    let many: Vec<Vec<u8>> = (0..=255u8).map(|idx| signer(&issuer, idx).seal(REPLY)).collect();
    let items: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    group.throughput(Throughput::Elements(items.len() as u64));
    group.bench_function("open_many 256 replies from 256 nodes", |b| {
        b.iter(|| assert!(open_many(&items, &trust, 10).iter().all(Result::is_ok)))
    });
    group.bench_function("open_many 256 replies from 256 nodes met for the first time", |b| {
        b.iter_batched(
            || Trust::new(vec![issuer.public().clone()]),
            |fresh| assert!(open_many(&items, &fresh, 10).iter().all(Result::is_ok)),
            BatchSize::SmallInput,
        )
    });

    group.throughput(Throughput::Elements(1));
    let client = SecretKey::generate(KeyKind::Member, [200; 32]);
    let at_client = ReplyKeys::new(&client);
    group.bench_function("agree a reply key (first contact, one side)", |b| {
        b.iter_batched(
            || ReplyKeys::new(&client),
            |fresh| fresh.with(one.key().public()).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let key = ReplyKeys::new(one.key()).with(client.public()).unwrap();
    group.bench_function("seal_mac one reply", |b| b.iter(|| one.seal_mac(REPLY, &key)));
    let maced = one.seal_mac(REPLY, &key);
    group.bench_function("open one MAC'd reply (key agreed)", |b| {
        b.iter(|| {
            let opened = open_unsealed(vec![unseal(&maced)], &trust, 10, Some(&at_client));
            assert!(opened[0].is_ok());
        })
    });
    group.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
