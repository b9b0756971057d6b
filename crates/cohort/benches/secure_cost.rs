//! What security costs, per node and per reply, measured so that it does not depend on how many
//! simulated nodes share a CPU: the simulated fleet runs in a child process pinned to core 0,
//! the broker (`cohort broker`, its own process) and the client (this process) on core 1. Each
//! round is one `rpcutil ping` broadcast to every node (no discovery: the client already knows
//! them), so a round is exactly one request per node and one reply per node.
//!
//! Reported for security off, on with signed replies (what a one-shot command asks for), and on
//! with MAC'd replies (what a long-lived client asks for, `ReplyProof::Mac`), in one run: the
//! fleet process's CPU per request per node (receiving, opening and checking the request,
//! running the action, sealing and sending the reply), the client's CPU per reply (receiving,
//! verifying, collecting), the broker's CPU per round, and the wall time of a round
//! (p50/p90/max) with the on/off ratios. CPU comes from `/proc/<pid>/stat` (10 ms ticks), taken
//! over all measured rounds at once, after warm-up rounds (so a MAC client has met its nodes).
//!
//! Run: `cargo bench -p cohort --bench secure_cost`; environment: `COHORT_BENCH_NODES` (1000),
//! `COHORT_BENCH_ROUNDS` (30). On a machine with one core nothing is pinned (and it says so).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cohort_client::{Call, Client, ClientOptions, ClientSecurity, Targets};
use cohort_daemon::sim::{Fleet, FleetSecurity, plan};
use cohort_proto::{AgentName, Collective, Filter};
use cohort_security::{KeyKind, SecretKey};
use cohort_test_support::{BrokerProcess, cpu_ms};

const SEED: u64 = 7;

/// Pins the calling thread (and so every thread and process it starts later) to `core`.
fn pin(core: usize) -> bool {
    let mut set = nix::sched::CpuSet::new();
    set.set(core).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The child: a simulated fleet on core 0 until its stdin closes.
fn fleet_main() {
    let url = std::env::var("COHORT_BENCH_URL").unwrap();
    let nodes = env_number("COHORT_BENCH_NODES", 1000);
    if std::env::var("COHORT_BENCH_PIN").is_ok() {
        pin(0);
    }
    let security = std::env::var("COHORT_BENCH_ISSUER").ok().map(|seed| FleetSecurity {
        issuer: SecretKey::from_seed(KeyKind::Issuer, &seed).unwrap(),
        broker_login: false,
        tls_ca: None,
        allow_all: true,
        audit: None,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let fleet = Fleet::start(&url, nodes, SEED, security.as_ref(), None, None).await.unwrap();
        println!("ready");
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await;
        fleet.stop().await;
    });
}

/// What the client asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Signed,
    Mac,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Signed => "on, signed replies",
            Mode::Mac => "on, MAC'd replies",
        }
    }
}

/// The client's security for a fleet of `issuer`'s nodes (`None`: off).
fn client_security(issuer: Option<&SecretKey>, mode: Mode) -> ClientSecurity {
    let Some(issuer) = issuer else { return ClientSecurity::default() };
    let security = common::client_security(issuer);
    if mode == Mode::Mac { security.with_mac_replies() } else { security }
}

struct Measured {
    walls: Vec<Duration>,
    node_us: f64,
    reply_us: f64,
    broker_ms: f64,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    broker: &BrokerProcess,
    nodes: u32,
    rounds: u32,
    pinned: bool,
    mode: Mode,
) -> Measured {
    let issuer = (mode != Mode::Off).then(|| SecretKey::generate(KeyKind::Issuer, rand::random()));
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env("COHORT_BENCH_ROLE", "fleet")
        .env("COHORT_BENCH_URL", broker.url())
        .env("COHORT_BENCH_NODES", nodes.to_string())
        .env("COHORT_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if pinned {
        command.env("COHORT_BENCH_PIN", "1");
    }
    if let Some(issuer) = &issuer {
        command.env("COHORT_BENCH_ISSUER", issuer.seed());
    }
    let mut child = command.spawn().unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the fleet process did not start");
    let fleet_pid = child.id().to_string();
    let broker_pid = broker.pid().to_string();

    let measured = runtime.block_on(async {
        let client = Client::connect(ClientOptions {
            brokers: vec![broker.url()],
            caller: "user=bench".into(),
            sender: "bench".into(),
            connect_timeout: Duration::from_secs(10),
            security: client_security(issuer.as_ref(), mode),
            history: None,
            lost_grace: cohort_client::DEFAULT_LOST_GRACE,
        })
        .await
        .unwrap();
        let expected: BTreeSet<_> = plan(nodes, SEED).into_iter().map(|(id, _)| id).collect();
        let call = || Call {
            agent: AgentName::new("rpcutil").unwrap(),
            action: "ping".into(),
            data: serde_json::Map::new(),
            filter: Filter::default(),
            collective: Collective::new("cohort").unwrap(),
            targets: Targets::Broadcast { expected: expected.clone() },
            timeout: Duration::from_secs(30),
            ttl: 60,
        };
        // The nodes subscribe as they connect: wait until a round is complete, then warm up.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let result = client.call(call(), |_| {}).await.unwrap();
            if result.stats.ok == expected.len() {
                break;
            }
            assert!(Instant::now() < deadline, "only {} of {nodes} answered", result.stats.ok);
        }
        for _ in 0..3 {
            client.call(call(), |_| {}).await.unwrap();
        }
        let (fleet0, client0, broker0) = (cpu_ms(&fleet_pid), cpu_ms("self"), cpu_ms(&broker_pid));
        let mut walls = Vec::new();
        for round in 0..rounds {
            let started = Instant::now();
            let result = client.call(call(), |_| {}).await.unwrap();
            walls.push(started.elapsed());
            assert_eq!(
                result.stats.ok,
                expected.len(),
                "round {round}: {} of {nodes} answered, {} unverified",
                result.stats.ok,
                result.stats.unverified.len()
            );
        }
        let requests = f64::from(rounds) * f64::from(nodes);
        Measured {
            walls,
            node_us: (cpu_ms(&fleet_pid) - fleet0) * 1000.0 / requests,
            reply_us: (cpu_ms("self") - client0) * 1000.0 / requests,
            broker_ms: (cpu_ms(&broker_pid) - broker0) / f64::from(rounds),
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
    measured
}

fn main() {
    if std::env::var("COHORT_BENCH_ROLE").as_deref() == Ok("fleet") {
        fleet_main();
        return;
    }
    let nodes = env_number("COHORT_BENCH_NODES", 1000);
    let rounds = env_number("COHORT_BENCH_ROUNDS", 30);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Pinned before anything starts: the broker and the client's runtime inherit core 1.
    let pinned = cores >= 2 && pin(1);
    if !pinned {
        eprintln!("not pinned: {cores} core(s) available; fleet, broker and client share them");
    }
    let broker = BrokerProcess::start(
        "cohort",
        std::path::Path::new(env!("CARGO_BIN_EXE_cohort")),
        "max_pending = 1073741824\n",
        "",
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!(
        "{nodes} nodes, {rounds} rounds; fleet on core 0, broker and client on core 1: {pinned}"
    );
    println!(
        "| security | round p50 | p90 | max | node CPU per request | client CPU per reply | broker CPU per round |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut p50 = [0.0; 3];
    for (i, mode) in [Mode::Off, Mode::Signed, Mode::Mac].into_iter().enumerate() {
        let mut m = measure(&runtime, &broker, nodes, rounds, pinned, mode);
        m.walls.sort();
        p50[i] = pct(&m.walls, 0.5);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} µs | {:.1} µs | {:.1} ms |",
            mode.label(),
            p50[i],
            pct(&m.walls, 0.9),
            pct(&m.walls, 1.0),
            m.node_us,
            m.reply_us,
            m.broker_ms
        );
    }
    println!("round p50, on / off: {:.2}x signed, {:.2}x MAC'd", p50[1] / p50[0], p50[2] / p50[0]);
}
