//! Parser throughput on a stream of small publishes, the broker's hottest input.

use bytes::BytesMut;
use cohort_nats_proto::Parser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn parse_publishes(c: &mut Criterion) {
    let mut input = Vec::new();
    for idx in 0..1000 {
        input.extend_from_slice(format!("PUB cohort.reply.abc.{idx} 128\r\n").as_bytes());
        input.extend_from_slice(&[b'x'; 128]);
        input.extend_from_slice(b"\r\n");
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 PUB of 128 bytes", |b| {
        b.iter(|| {
            let mut parser = Parser::new(4096, 1 << 20);
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Ok(Some(_)) = parser.parse(&mut buf) {
                n += 1;
            }
            assert_eq!(n, 1000);
        });
    });
    group.finish();
}

criterion_group!(benches, parse_publishes);
criterion_main!(benches);
