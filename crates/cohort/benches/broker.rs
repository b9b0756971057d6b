//! Broker benchmark: our broker (`cohort broker`, release build) against the real nats-server,
//! same workloads, same machine, same run. Both run as subprocesses; the clients live here.
//!
//! Workloads (issue 2):
//! - fan-out: 1 publisher, 1,000 subscriber connections on one subject, 10,000 messages of
//!   128 bytes; time until every subscriber has every message;
//! - scatter/gather: one request to 1,000 responders on one subject, all 1,000 replies collected
//!   on the requester's inbox, 100 times;
//! - memory: broker RSS growth with 10,000 idle connections, per connection;
//! - teardown: broker CPU spent when 10,000 subscribers of one subject (an agent's broadcast
//!   subject in a 10,000-node fleet) disconnect at once.
//!
//! Run: `cargo bench -p cohort --bench broker` (`COHORT_BENCH_RUNS=N` repeats, default 3).
//! Prints a Markdown table for docs/PERFORMANCE.md on stdout. Timings are medians of the runs.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_test_support::{BrokerProcess, cpu_ms, rss_kib};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUBSCRIBERS: usize = 1000;
const MESSAGES: usize = 10_000;
const PAYLOAD: usize = 128;
const RESPONDERS: usize = 1000;
const ROUNDS: usize = 100;
const IDLE: usize = 10_000;
const TEARDOWN: usize = 10_000;

fn start(kind: &str) -> (BrokerProcess, SocketAddr) {
    let broker = BrokerProcess::start(
        kind,
        std::path::Path::new(env!("CARGO_BIN_EXE_cohort")),
        "",
        "max_connections: 100000",
    );
    let addr = broker.addr();
    (broker, addr)
}

/// A raw subscriber that only counts bytes: every delivered frame has the same length, so the
/// client costs almost nothing and the broker is what is measured.
async fn raw_subscriber(addr: SocketAddr, subject: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let hello =
        format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {subject} 1\r\nPING\r\n");
    stream.write_all(hello.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("PONG\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "broker closed the subscriber");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

async fn fan_out(addr: SocketAddr) -> Duration {
    let subject = "bench.fanout";
    let frame = format!("MSG {subject} 1 {PAYLOAD}\r\n").len() + PAYLOAD + 2;
    let want = (frame * MESSAGES) as u64;
    let done = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut stream = raw_subscriber(addr, subject).await;
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while got < want {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "subscriber cut off after {got} of {want} bytes");
                got += n as u64;
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let publisher = async_nats::connect(format!("nats://{addr}")).await.unwrap();
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let started = Instant::now();
    for _ in 0..MESSAGES {
        publisher.publish(subject, payload.clone()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), SUBSCRIBERS as u64);
    started.elapsed()
}

async fn scatter_gather(addr: SocketAddr) -> Duration {
    let url = format!("nats://{addr}");
    let mut responders = Vec::new();
    for idx in 0..RESPONDERS {
        let client = async_nats::connect(&url).await.unwrap();
        let mut requests = client.subscribe("bench.scatter").await.unwrap();
        client.flush().await.unwrap();
        responders.push(tokio::spawn(async move {
            let reply = Bytes::from(format!("{{\"node\":\"node{idx}\",\"pong\":true}}"));
            while let Some(request) = requests.next().await {
                if let Some(inbox) = request.reply {
                    client.publish(inbox, reply.clone()).await.unwrap();
                }
            }
        }));
    }
    let requester = async_nats::connect(&url).await.unwrap();
    let inbox = requester.new_inbox();
    let mut replies = requester.subscribe(format!("{inbox}.*")).await.unwrap();
    requester.flush().await.unwrap();
    let started = Instant::now();
    for round in 0..ROUNDS {
        requester
            .publish_with_reply(
                "bench.scatter",
                format!("{inbox}.{round}"),
                Bytes::from_static(b"ping"),
            )
            .await
            .unwrap();
        requester.flush().await.unwrap();
        for got in 0..RESPONDERS {
            let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: only {got} of {RESPONDERS} replies"))
                .unwrap();
            assert!(reply.subject.ends_with(&format!(".{round}")));
        }
    }
    let elapsed = started.elapsed();
    for responder in responders {
        responder.abort();
    }
    elapsed
}

async fn idle_memory(addr: SocketAddr, pid: u32) -> (u64, f64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    // Every connection has been served once it answered its PING.
    for stream in &mut idle {
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        while !String::from_utf8_lossy(&seen).contains("PONG\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    (after, (after.saturating_sub(before)) as f64 * 1024.0 / IDLE as f64)
}

/// Broker CPU (ms) from the moment `TEARDOWN` subscribers of one subject all close until the
/// broker has been idle for half a second.
async fn teardown(addr: SocketAddr, pid: u32) -> f64 {
    let mut subscribers = Vec::with_capacity(TEARDOWN);
    for _ in 0..TEARDOWN {
        subscribers.push(raw_subscriber(addr, "cohort.broadcast.agent.rpcutil").await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = pid.to_string();
    let before = cpu_ms(&pid);
    drop(subscribers);
    let mut last = before;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_ms(&pid);
        if now == last || Instant::now() > deadline {
            return now - before;
        }
        last = now;
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let runs: usize =
        std::env::var("COHORT_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut results = Vec::new();
    for kind in ["nats-server", "cohort"] {
        let mut fan = Vec::new();
        let mut scatter = Vec::new();
        for _ in 0..runs {
            let (server, addr) = start(kind);
            fan.push(runtime.block_on(fan_out(addr)));
            drop(server);
            let (server, addr) = start(kind);
            scatter.push(runtime.block_on(scatter_gather(addr)));
            drop(server);
        }
        let (server, addr) = start(kind);
        let (rss, per_conn) = runtime.block_on(idle_memory(addr, server.pid()));
        drop(server);
        let (server, addr) = start(kind);
        let gone = runtime.block_on(teardown(addr, server.pid()));
        drop(server);
        eprintln!(
            "{kind}: fan-out {fan:?}, scatter/gather {scatter:?}, idle {per_conn:.0} B/conn, teardown {gone:.0} ms CPU"
        );
        results.push((kind, median(fan), median(scatter), rss, per_conn, gone));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    println!(
        "Machine: {} cores, {cpu}; median of {runs} runs.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| broker | fan-out 1x{SUBSCRIBERS}, {MESSAGES} x {PAYLOAD} B | scatter/gather {RESPONDERS} x {ROUNDS} | RSS with {IDLE} idle conns | per idle conn | CPU when {TEARDOWN} subscribers of one subject leave |"
    );
    println!("|---|---|---|---|---|---|");
    for (kind, fan, scatter, rss, per_conn, gone) in &results {
        println!(
            "| {kind} | {:.0} ms | {:.0} ms ({:.1} ms/round) | {:.1} MiB | {:.1} KiB | {gone:.0} ms |",
            fan.as_secs_f64() * 1000.0,
            scatter.as_secs_f64() * 1000.0,
            scatter.as_secs_f64() * 1000.0 / ROUNDS as f64,
            *rss as f64 / 1024.0,
            per_conn / 1024.0
        );
    }
    let (nats, ours) = (&results[0], &results[1]);
    println!(
        "\nRatios cohort/nats-server: fan-out {:.2}x, scatter/gather {:.2}x, idle memory {:.2}x",
        ours.1.as_secs_f64() / nats.1.as_secs_f64(),
        ours.2.as_secs_f64() / nats.2.as_secs_f64(),
        ours.4 / nats.4
    );
}
