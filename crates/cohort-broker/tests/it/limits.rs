//! Limits of our broker: slow consumers, stale connections, clients that never authenticate,
//! the connection cap, metrics, and graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use cohort_broker::{Broker, Config};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use crate::harness::Raw;

const WAIT: Duration = Duration::from_secs(5);

async fn broker_with(change: impl FnOnce(&mut Config)) -> cohort_broker::RunningBroker {
    let mut config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    change(&mut config);
    Broker::bind(config).await.unwrap().spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_others_keep_up() {
    let broker = broker_with(|config| {
        config.max_payload = 64 * 1024;
        config.max_pending = 8 * 1024 * 1024;
        config.write_deadline = Duration::from_secs(2);
    })
    .await;
    // Subscribes, then never reads: its socket buffers fill, then its queue.
    let mut stuck = Raw::connect(broker.addr()).await;
    stuck.send(b"CONNECT {\"verbose\":false}\r\nSUB flood 1\r\nPING\r\n").await;
    assert_eq!(stuck.read_until("PONG\r\n", WAIT).await, "PONG\r\n");

    let reader = async_nats::connect(broker.url()).await.unwrap();
    let mut sub = reader.subscribe("flood").await.unwrap();
    crate::harness::settle(&reader).await;
    let publisher = async_nats::connect(broker.url()).await.unwrap();
    let payload = Bytes::from(vec![b'x'; 32 * 1024]);
    // 64 MiB in all, far beyond what the stuck client's socket buffers and 8 MiB queue hold.
    // Published in batches the healthy reader confirms, so only the stuck one falls behind
    // however loaded the machine is.
    let (batches, batch) = (20u64, 100u64);
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let receive = tokio::spawn(async move {
        for received in 1..=batches * batch {
            let msg = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
            assert_eq!(msg.payload.len(), 32 * 1024);
            let _ = progress_tx.send(received);
        }
    });
    for round in 1..=batches {
        for _ in 0..batch {
            publisher.publish("flood", payload.clone()).await.unwrap();
        }
        publisher.flush().await.unwrap();
        tokio::time::timeout(WAIT, progress.wait_for(|received| *received >= round * batch))
            .await
            .unwrap()
            .unwrap();
    }
    receive.await.unwrap();
    assert!(broker.counters().snapshot().slow_consumers >= 1);
    // The stuck client was cut off: draining its socket ends in EOF.
    let mut sink = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stuck.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "slow consumer still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_connection_is_dropped_after_unanswered_pings() {
    let broker = broker_with(|config| {
        config.ping_interval = Duration::from_millis(100);
        config.max_pings_out = 2;
    })
    .await;
    let mut silent = Raw::connect(broker.addr()).await;
    silent.send(b"CONNECT {\"verbose\":false}\r\n").await;
    let out = silent.read_until("<EOF>", WAIT).await;
    assert_eq!(out, "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n<EOF>");

    // A client that answers stays.
    let mut lively = Raw::connect(broker.addr()).await;
    lively.send(b"CONNECT {\"verbose\":false}\r\n").await;
    for _ in 0..5 {
        assert_eq!(lively.read_until("PING\r\n", WAIT).await, "PING\r\n");
        lively.send(b"PONG\r\n").await;
    }
    lively.send(b"PING\r\n").await;
    assert!(lively.read_until("PONG\r\n", WAIT).await.ends_with("PONG\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_connects_is_dropped() {
    let broker = broker_with(|config| config.auth_timeout = Duration::from_millis(200)).await;
    let mut mute = Raw::connect(broker.addr()).await;
    assert!(mute.info.starts_with("INFO {"));
    let out = mute.read_until("<EOF>", WAIT).await;
    assert_eq!(out, "-ERR 'Authentication Timeout'\r\n<EOF>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap() {
    let broker = broker_with(|config| config.max_connections = 3).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(broker.addr()).await;
        raw.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
        assert_eq!(raw.read_until("PONG\r\n", WAIT).await, "PONG\r\n");
        kept.push(raw);
    }
    let mut refused = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, refused.read_to_string(&mut out)).await.unwrap().unwrap();
    assert_eq!(out, "-ERR 'maximum connections exceeded'\r\n");
    drop(kept.pop());
    // Once one leaves, a newcomer fits again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut raw = Raw::connect(broker.addr()).await;
        raw.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
        if raw.read_until("PONG\r\n", Duration::from_millis(500)).await == "PONG\r\n" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_prometheus_metrics() {
    let broker = broker_with(|config| config.metrics = Some("127.0.0.1:0".parse().unwrap())).await;
    let client = async_nats::connect(broker.url()).await.unwrap();
    let mut sub = client.subscribe("m").await.unwrap();
    client.publish("m", Bytes::from_static(b"12345")).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
    let counters = broker.counters().snapshot();
    assert_eq!((counters.msgs_in, counters.bytes_in), (1, 5));
    assert_eq!((counters.msgs_out, counters.bytes_out), (1, 5));
    assert_eq!((counters.connections, counters.subscriptions), (1, 1));

    let addr = broker.metrics_addr().unwrap();
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut http,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, http.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "cohort_broker_messages_in_total 1",
        "cohort_broker_bytes_out_total 5",
        "cohort_broker_open_connections 1",
        "cohort_broker_subscriptions 1",
        "cohort_broker_slow_consumers_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_was_queued_then_closes() {
    let broker = broker_with(|_| {}).await;
    let mut raw = Raw::connect(broker.addr()).await;
    raw.send(b"CONNECT {\"verbose\":false}\r\nSUB last 1\r\nPING\r\n").await;
    assert_eq!(raw.read_until("PONG\r\n", WAIT).await, "PONG\r\n");
    // PONG after the PUB proves the broker has routed it before being told to stop.
    let mut publisher = Raw::connect(broker.addr()).await;
    publisher.send(b"CONNECT {\"verbose\":false}\r\nPUB last 3\r\nbye\r\nPING\r\n").await;
    assert_eq!(publisher.read_until("PONG\r\n", WAIT).await, "PONG\r\n");
    let addr = broker.addr();
    broker.shutdown().await;
    let out = raw.read_until("<EOF>", WAIT).await;
    assert_eq!(out, "MSG last 1 3\r\nbye\r\n<EOF>");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting");
}
