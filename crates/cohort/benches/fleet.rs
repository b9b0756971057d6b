//! Fleet round trip: `rpcutil ping` to N simulated nodes, discovery included, exactly as
//! `cohort rpc rpcutil ping` does it (broadcast discovery with the adaptive quiet window, then
//! the request, finishing when every discovered node has answered); plus the memory of one idle
//! `cohort daemon` process.
//!
//! The broker is `cohort broker` (release build) in its own process; the N nodes run in this
//! process (cohort_daemon::sim), each with its own connection and the real node pipeline.
//! Any run where discovery or the call does not account for exactly N nodes is reported as a
//! failure.
//!
//! Run: `cargo bench -p cohort --bench fleet` (`COHORT_BENCH_NODES=100,1000,5000`,
//! `COHORT_BENCH_RUNS=7`). Prints a Markdown table for docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cohort_client::{Call, Client, ClientOptions, DiscoveryOptions, Targets};
use cohort_daemon::sim::Fleet;
use cohort_proto::{AgentName, Collective, Filter};
use cohort_test_support::{free_port, wait_for_listener};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn client(url: &str) -> Client {
    Client::connect(ClientOptions {
        brokers: vec![url.to_owned()],
        caller: "user=bench".into(),
        sender: "bench".into(),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

fn discovery() -> DiscoveryOptions {
    // The CLI's defaults: --dt 2 s, quiet window floor 50 ms.
    DiscoveryOptions {
        collective: Collective::new("cohort").unwrap(),
        timeout: Duration::from_secs(2),
        quiet: Duration::from_millis(50),
        ttl: 60,
    }
}

/// One `cohort rpc rpcutil ping`: discovery, then the call. Returns (discovery, total, ok).
async fn round_trip(client: &Client, n: usize) -> (Duration, Duration, Result<(), String>) {
    let started = Instant::now();
    let discovered = client.discover(&Filter::default(), &discovery(), |_, _| {}).await.unwrap();
    let discovery_time = started.elapsed();
    let targets = Targets::Broadcast { expected: discovered.nodes.clone() };
    let call = Call {
        agent: AgentName::new("rpcutil").unwrap(),
        action: "ping".into(),
        data: serde_json::Map::new(),
        filter: Filter::default(),
        collective: Collective::new("cohort").unwrap(),
        targets,
        timeout: Duration::from_secs(12),
        ttl: 60,
    };
    let result = client.call(call, |_| {}).await.unwrap();
    let total = started.elapsed();
    let check = if discovered.nodes.len() != n {
        Err(format!("discovered {} of {n}", discovered.nodes.len()))
    } else if result.stats.responses != n || result.stats.ok != n {
        Err(format!(
            "{} replies ({} ok) of {n}; missing {:?}",
            result.stats.responses, result.stats.ok, result.stats.no_responses
        ))
    } else {
        Ok(())
    };
    (discovery_time, total, check)
}

async fn wait_for(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = client.discover(&Filter::default(), &discovery(), |_, _| {}).await.unwrap();
        if found.nodes.len() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {} of {n} nodes up", found.nodes.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn main() {
    let sizes: Vec<u32> = std::env::var("COHORT_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000]);
    let runs: usize =
        std::env::var("COHORT_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(7);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!("nats://{addr}");
    let broker = Killed(
        Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["broker", "--listen", &addr.to_string()])
            .env("COHORT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_listener(addr, Duration::from_secs(10)));
    // The nodes get their own runtime; the client gets another on its own thread, as if it
    // were its own process (it is one in real use), so node work cannot starve its timers.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    println!("| nodes | discovery p50 | round trip p50 | p90 | max | runs with exact count |");
    println!("|---|---|---|---|---|---|");
    let mut failures = 0;
    for n in sizes {
        let fleet = runtime.block_on(Fleet::start(&url, n, 7)).unwrap();
        client_runtime.block_on(async {
            let client = client(&url).await;
            wait_for(&client, n as usize).await;
            let mut discovery_times = Vec::new();
            let mut totals = Vec::new();
            let mut exact = 0;
            for _ in 0..runs {
                let (discovery_time, total, check) = round_trip(&client, n as usize).await;
                match check {
                    Ok(()) => exact += 1,
                    Err(err) => {
                        failures += 1;
                        eprintln!("FAILURE at N={n}: {err}");
                    }
                }
                discovery_times.push(discovery_time);
                totals.push(total);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            discovery_times.sort();
            totals.sort();
            println!(
                "| {n} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {exact} / {runs} |",
                percentile(&discovery_times, 0.5).as_secs_f64() * 1000.0,
                percentile(&totals, 0.5).as_secs_f64() * 1000.0,
                percentile(&totals, 0.9).as_secs_f64() * 1000.0,
                totals.last().unwrap().as_secs_f64() * 1000.0,
            );
        });
        runtime.block_on(fleet.stop());
    }
    // One idle daemon as its own process.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, "registration_interval = \"0s\"\n").unwrap();
    let daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["daemon", "--identity", "idle.example.net", "--broker", &url, "--config"])
            .arg(&config)
            .env("COHORT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    client_runtime.block_on(async {
        let client = client(&url).await;
        wait_for(&client, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_kib(daemon.0.id());
        println!("\nIdle `cohort daemon` RSS: {:.1} MiB ({idle} KiB)", idle as f64 / 1024.0);
    });
    drop(daemon);
    drop(broker);
    if failures > 0 {
        eprintln!("{failures} run(s) did not account for every node");
        std::process::exit(1);
    }
}
