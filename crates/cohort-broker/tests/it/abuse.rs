//! Bad input against our broker: each bad client gets `-ERR` and/or a closed connection, never
//! a panic, and a well-behaved client on the same broker keeps receiving every message.

use std::time::Duration;

use bytes::Bytes;
use cohort_broker::{Broker, Config};
use futures::StreamExt;

use crate::harness::Raw;

const WAIT: Duration = Duration::from_secs(5);

async fn broker() -> cohort_broker::RunningBroker {
    let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    Broker::bind(config).await.unwrap().spawn()
}

/// A client that publishes and checks that every message comes back, in order.
async fn assert_healthy(
    url: &str,
    sub: &mut async_nats::Subscriber,
    client: &async_nats::Client,
    round: u32,
) {
    for idx in 0..10 {
        client.publish("health", Bytes::from(format!("{round}.{idx}"))).await.unwrap();
    }
    client.flush().await.unwrap();
    for idx in 0..10 {
        let msg = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
        assert_eq!(msg.payload, Bytes::from(format!("{round}.{idx}")), "on {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_do_not_disturb_others() {
    let broker = broker().await;
    let url = broker.url();
    let good = async_nats::connect(&url).await.unwrap();
    let mut sub = good.subscribe("health").await.unwrap();
    crate::harness::settle(&good).await;
    assert_healthy(&url, &mut sub, &good, 0).await;

    let connect = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".to_vec();
    let with_connect = |tail: &[u8]| [connect.as_slice(), tail].concat();
    let mut oversized = b"SUB ".to_vec();
    oversized.extend(std::iter::repeat_n(b'x', 10_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"\x00\x01\x02garbage\r\n".to_vec(),
            "-ERR 'Unknown Protocol Operation'\r\n<EOF>",
        ),
        ("binary noise", vec![0xff; 300], "-ERR 'Unknown Protocol Operation'\r\n<EOF>"),
        (
            "oversized control line",
            with_connect(&oversized),
            "-ERR 'maximum control line exceeded'\r\n<EOF>",
        ),
        (
            "payload shorter than announced",
            with_connect(b"PUB health 10\r\nshort\r\nPING\r\n"),
            "-ERR 'Unknown Protocol Operation'\r\n<EOF>",
        ),
        (
            "payload longer than announced",
            with_connect(b"PUB health 2\r\nlonger\r\n"),
            "-ERR 'Unknown Protocol Operation'\r\n<EOF>",
        ),
        (
            "pub before connect",
            b"PUB health 2\r\nhi\r\n".to_vec(),
            "-ERR 'Authorization Violation'\r\n<EOF>",
        ),
        (
            "sub before connect",
            b"SUB health 1\r\n".to_vec(),
            "-ERR 'Authorization Violation'\r\n<EOF>",
        ),
        (
            "bad connect json",
            b"CONNECT {\"verbose\":\r\n".to_vec(),
            "-ERR 'Invalid CONNECT JSON'\r\n<EOF>",
        ),
        (
            "negative size",
            with_connect(b"PUB health -5\r\n"),
            "-ERR 'Invalid Arguments for PUB'\r\n<EOF>",
        ),
        (
            "headers larger than payload",
            with_connect(b"HPUB health 10 2\r\n"),
            "-ERR 'Invalid Arguments for HPUB'\r\n<EOF>",
        ),
        (
            "invalid subject",
            with_connect(b"SUB a..b 1\r\nPING\r\n"),
            "-ERR 'Invalid Subject'\r\nPONG\r\n",
        ),
        (
            "invalid utf-8",
            with_connect(b"SUB \xc3\x28 1\r\n"),
            "-ERR 'Unknown Protocol Operation'\r\n<EOF>",
        ),
    ];
    for (round, (name, input, expect)) in cases.into_iter().enumerate() {
        let mut raw = Raw::connect(broker.addr()).await;
        raw.send(&input).await;
        let out = raw.read_at_least(expect.len(), WAIT).await;
        assert_eq!(out, expect, "{name}");
        assert_healthy(&url, &mut sub, &good, u32::try_from(round).unwrap() + 1).await;
    }

    // Half a line, then silence: the connection stays until the client goes away; nothing is
    // delivered from it.
    let mut half = Raw::connect(broker.addr()).await;
    half.send(&with_connect(b"PUB health 5\r\nhel")).await;
    drop(half);
    assert_healthy(&url, &mut sub, &good, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_opened_and_dropped() {
    let broker = broker().await;
    let url = broker.url();
    let good = async_nats::connect(&url).await.unwrap();
    let mut sub = good.subscribe("health").await.unwrap();
    crate::harness::settle(&good).await;
    let addr = broker.addr();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        tasks.push(tokio::spawn(async move {
            for idx in 0..250 {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                    continue;
                };
                // Vary how each one dies: at once, mid-line, after CONNECT, after a SUB.
                let bytes: &[u8] = match (worker + idx) % 4 {
                    0 => b"",
                    1 => b"CONN",
                    2 => b"CONNECT {}\r\n",
                    _ => b"CONNECT {\"verbose\":false}\r\nSUB x.> 1\r\nPUB x.y 3\r\nab",
                };
                let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, bytes).await;
                drop(tcp);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_healthy(&url, &mut sub, &good, 0).await;
    // Generous: on a loaded machine thousands of closes take a while to be noticed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counters = broker.counters().snapshot();
        if counters.connections == 1 && counters.subscriptions == 1 {
            assert!(counters.connections_total >= 2000);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "connections not cleaned up: {counters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
