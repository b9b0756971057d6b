//! The fleet simulator benchmark: N simulated nodes (cohort_daemon::sim: each its own broker
//! connection, identity and facts, the real node pipeline) against our broker and against
//! nats-server, each broker in its own process, the client on its own runtime thread.
//!
//! Scenarios, each as `cohort rpc` does it (discovery with the adaptive window, then the
//! request, finishing when every discovered node has answered):
//! - `ping`: `rpcutil ping` to every node;
//! - `filtered`: `-F parity=even`, half the fleet;
//! - `discovery`: discovery alone;
//! - `blob64k`: every node replies with 64 KiB;
//! - `10clients`: ten `ping` round trips at once from ten clients (wall time of all ten);
//! - `resource`: `resource apply` of a file every node already has as asked (in sync: each
//!   node reads it, hashes it, compares, and reports no change);
//! - `puppet_status`: the `puppet` agent's `status` (each node reads its Puppet lock, pid and
//!   summary files).
//!
//! Each scenario first runs once unmeasured: that run, like a user's first command with a
//! filter, has no discovery history and holds to `--dt`; the measured runs expect its count.
//!
//! Any run that does not account for exactly the expected nodes is a failure: printed, counted,
//! and the benchmark exits non-zero. Then the memory of one `cohort daemon`, idle and after
//! 10,000 requests, and the broker's RSS per connection with the largest fleet.
//!
//! Security: with `on`, every simulated node has its own key and node credential, refuses
//! unsigned requests and signs its replies, and the client signs requests and verifies every
//! reply (the broker stays open: this measures the cost of signing and verifying).
//!
//! Run: `cargo bench -p cohort --bench fleet`; environment: `COHORT_BENCH_NODES` (default
//! `100,1000,5000,10000`), `COHORT_BENCH_RUNS` (5), `COHORT_BENCH_BROKERS` (`cohort,nats`),
//! `COHORT_BENCH_SCENARIOS` (all), `COHORT_BENCH_SECURITY` (`on`; `off,on` compares),
//! `COHORT_BENCH_MEMORY` (`1`; `0` skips the daemon memory run).
//!
//! Broker `nats-cluster` is three nats-server members joined by routes, the nodes spread evenly
//! over them (the client on one): with `nats` in the same run it prints the cluster's p50 over
//! the single server's, and after the scenarios it kills a member (SIGKILL)
//! `COHORT_BENCH_FAILOVERS` times (20), measuring from the kill until a ping to every node by
//! name is answered by all (attempts of at most 1.5 s, the resolution; p50/p90/max; the
//! member is restarted after each).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cohort_client::history::History;
use cohort_client::{Call, Client, ClientOptions, ClientSecurity, DiscoveryOptions, Targets};
use cohort_daemon::resource::ResourceSettings;
use cohort_daemon::run::AgentSettings;
use cohort_daemon::sim::{Fleet, FleetSecurity};
use cohort_proto::{AgentName, Collective, Filter};
use cohort_resource::policy::ResourceConfig;
use cohort_security::{KeyKind, SecretKey};
use cohort_test_support::{BrokerProcess, NatsServer, cluster_member, cpu_ms, free_port, rss_kib};

/// One request can make every node answer at once: 10,000 x 64 KiB is 640 MiB for one client
/// to read, more than the default 64 MiB a broker queues for one connection before calling it
/// a slow consumer. docs/scaling.md: size max_pending to the largest burst.
const NATS_LIMITS: &str = "max_connections: 100000\nmax_pending: 1073741824\n";

/// The broker of a run: one process, or (`nats-cluster`) three nats-server members joined by
/// routes on loopback, the nodes spread evenly over them.
enum Brokers {
    One(BrokerProcess),
    Cluster { members: Vec<Option<NatsServer>>, configs: Vec<String>, ports: Vec<u16> },
}

impl Brokers {
    fn pids(&self) -> Vec<u32> {
        match self {
            Brokers::One(broker) => vec![broker.pid()],
            Brokers::Cluster { members, .. } => {
                members.iter().flatten().map(NatsServer::pid).collect()
            }
        }
    }

    /// CPU of every broker process, in ms.
    fn cpu_ms(&self) -> f64 {
        self.pids().iter().map(|pid| cpu_ms(&pid.to_string())).sum()
    }

    fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(rss_kib).sum()
    }

    /// Kills member `index` (SIGKILL), or restarts it on its port.
    fn member(&mut self, index: usize, up: bool) {
        if let Brokers::Cluster { members, configs, ports } = self {
            members[index] = None;
            if up {
                members[index] = Some(NatsServer::start_on(&configs[index], ports[index]));
            }
        }
    }
}

fn start_broker(kind: &str) -> (Brokers, String) {
    if kind == "nats-cluster" {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let configs: Vec<String> = (0..3)
            .map(|index| format!("{NATS_LIMITS}{}", cluster_member(index, &routes)))
            .collect();
        let members: Vec<Option<NatsServer>> =
            (0..3).map(|index| Some(NatsServer::start_on(&configs[index], ports[index]))).collect();
        let url = ports.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>();
        return (Brokers::Cluster { members, configs, ports }, url.join(","));
    }
    let broker = BrokerProcess::start(
        kind,
        std::path::Path::new(env!("CARGO_BIN_EXE_cohort")),
        "max_pending = 1073741824\n",
        NATS_LIMITS,
    );
    let url = broker.url();
    (Brokers::One(broker), url)
}

/// A client with the CLI's discovery history in `history` (a file per fleet).
async fn client(url: &str, security: &ClientSecurity, history: &std::path::Path) -> Client {
    Client::connect(ClientOptions {
        brokers: url.split(',').map(str::to_owned).collect(),
        caller: "user=bench".into(),
        sender: "bench".into(),
        connect_timeout: Duration::from_secs(10),
        security: security.clone(),
        history: Some(std::sync::Arc::new(History::open(history).0)),
        lost_grace: cohort_client::DEFAULT_LOST_GRACE,
    })
    .await
    .unwrap()
}

/// Fleet and client security for a run: `None` for off.
fn security(on: bool) -> (Option<FleetSecurity>, ClientSecurity) {
    if !on {
        return (None, ClientSecurity::default());
    }
    let issuer = SecretKey::generate(KeyKind::Issuer, rand::random());
    let client = common::client_security(&issuer);
    let fleet =
        FleetSecurity { issuer, broker_login: false, tls_ca: None, allow_all: true, audit: None };
    (Some(fleet), client)
}

fn discovery() -> DiscoveryOptions {
    // The CLI's defaults: --dt 2 s, quiet window floor 50 ms, the count from the history.
    DiscoveryOptions::new(Collective::new("cohort").unwrap(), Duration::from_secs(2))
}

fn parity_even() -> Filter {
    Filter { fact: vec![cohort_filter::parse_fact("parity=even").unwrap()], ..Filter::default() }
}

/// One discovery + call, as `cohort rpc` does it; `Ok(elapsed)` only when exactly `expect` nodes
/// were found and answered OK.
async fn round_trip(
    client: &Client,
    filter: Filter,
    agent: &str,
    action: &str,
    data: serde_json::Map<String, serde_json::Value>,
    expect: usize,
    check: Option<(&str, ReplyCheck)>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let call = Call {
        agent: AgentName::new(agent).unwrap(),
        action: action.into(),
        data,
        filter: filter.clone(),
        collective: Collective::new("cohort").unwrap(),
        targets: Targets::Broadcast { expected: std::collections::BTreeSet::new() },
        timeout: Duration::from_secs(20),
        ttl: 60,
    };
    let (discovered, result) = client
        .discover_and_call(&filter, &discovery(), call, |_| {}, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    if discovered.nodes.len() != expect {
        return Err(format!("discovered {} of {expect}", discovered.nodes.len()));
    }
    let elapsed = started.elapsed();
    if result.stats.responses != expect
        || result.stats.ok != expect
        || !result.stats.unexpected.is_empty()
    {
        return Err(format!(
            "{} replies ({} ok, {} unexpected) of {expect}; missing {}",
            result.stats.responses,
            result.stats.ok,
            result.stats.unexpected.len(),
            result.stats.no_responses.len()
        ));
    }
    if let Some((what, check)) = check
        && let Some(bad) = result.replies.iter().find(|r| !check(&r.reply.data))
    {
        return Err(format!("{} {what}", bad.reply.sender));
    }
    Ok(elapsed)
}

/// The simulated fleet's seed: its identities are `plan(n, SEED)`.
const SEED: u64 = 7;

/// `rpcutil ping` to every node of a fleet of `n` by name, waiting `timeout` at most.
fn everyone(n: u32, timeout: Duration) -> Call {
    let expected =
        cohort_daemon::sim::plan(n, SEED).into_iter().map(|(identity, _)| identity).collect();
    Call {
        agent: AgentName::new("rpcutil").unwrap(),
        action: "ping".into(),
        data: serde_json::Map::new(),
        filter: Filter::default(),
        collective: Collective::new("cohort").unwrap(),
        targets: Targets::Broadcast { expected },
        timeout,
        ttl: 60,
    }
}

/// A check of one reply's data.
type ReplyCheck = fn(&serde_json::Map<String, serde_json::Value>) -> bool;

fn blob_ok(data: &serde_json::Map<String, serde_json::Value>) -> bool {
    data.get("blob").and_then(serde_json::Value::as_str).map(str::len) == Some(65536)
}

fn unchanged(data: &serde_json::Map<String, serde_json::Value>) -> bool {
    data.get("changed") == Some(&serde_json::Value::Bool(false))
}

/// The in-sync resource of the `resource` scenario: a file beside the discovery history,
/// written before the fleet starts, that every node is asked to have with the same content and
/// mode.
fn resource_file(history: &std::path::Path) -> std::path::PathBuf {
    history.with_file_name("motd")
}

const MOTD: &str = "Managed by Cohort\n";

fn resource_request(history: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let mut data = serde_json::Map::new();
    data.insert("type".into(), "file".into());
    data.insert("name".into(), resource_file(history).display().to_string().into());
    data.insert("content".into(), MOTD.into());
    data.insert("mode".into(), "0644".into());
    data
}

/// The simulated nodes' agents: `resource` may manage files; each node's Puppet state is in its
/// own directory beside the history (nothing there: every node reports `stopped`).
fn bench_agents(history: &std::path::Path) -> AgentSettings {
    let state = history.with_file_name("puppet").join("{identity}");
    AgentSettings {
        resource: ResourceSettings {
            config: ResourceConfig {
                allow_types: Some(vec!["file".into()]),
                ..ResourceConfig::default()
            },
            puppet_state_dirs: Vec::new(),
        },
        puppet: cohort_puppet::PuppetConfig::with_state_dir(
            std::path::Path::new("/nonexistent/puppet"),
            &state,
        ),
        ..AgentSettings::default()
    }
}

fn stopped(data: &serde_json::Map<String, serde_json::Value>) -> bool {
    data.get("status").and_then(serde_json::Value::as_str) == Some("stopped")
}

async fn scenario(
    name: &str,
    url: &str,
    client: &Client,
    security: &ClientSecurity,
    history: &std::path::Path,
    n: usize,
) -> Result<Duration, String> {
    let empty = serde_json::Map::new;
    match name {
        "ping" => round_trip(client, Filter::default(), "rpcutil", "ping", empty(), n, None).await,
        "filtered" => {
            round_trip(client, parity_even(), "rpcutil", "ping", empty(), n.div_ceil(2), None).await
        }
        "discovery" => {
            let started = Instant::now();
            let found = client
                .discover(&Filter::default(), &discovery(), |_, _| {})
                .await
                .map_err(|e| e.to_string())?;
            if found.nodes.len() == n {
                Ok(started.elapsed())
            } else {
                Err(format!("discovered {} of {n}", found.nodes.len()))
            }
        }
        "blob64k" => {
            let mut data = serde_json::Map::new();
            data.insert("size".into(), serde_json::Value::from(65536));
            let blob = ("sent a blob of the wrong size", blob_ok as ReplyCheck);
            round_trip(client, Filter::default(), "bench", "blob", data, n, Some(blob)).await
        }
        "puppet_status" => {
            let check = ("did not report its Puppet stopped", stopped as ReplyCheck);
            round_trip(client, Filter::default(), "puppet", "status", empty(), n, Some(check)).await
        }
        "resource" => {
            let data = resource_request(history);
            let check = ("changed an in-sync resource", unchanged as ReplyCheck);
            round_trip(client, Filter::default(), "resource", "apply", data, n, Some(check)).await
        }
        "10clients" => {
            let mut clients = Vec::new();
            for _ in 0..10 {
                clients.push(self::client(url, security, history).await);
            }
            let started = Instant::now();
            let runs = clients.iter().map(|c| {
                round_trip(c, Filter::default(), "rpcutil", "ping", serde_json::Map::new(), n, None)
            });
            let results = futures::future::join_all(runs).await;
            for result in results {
                result?;
            }
            Ok(started.elapsed())
        }
        other => Err(format!("no scenario {other}")),
    }
}

async fn wait_for(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let found = client.discover(&Filter::default(), &discovery(), |_, _| {}).await.unwrap();
        if found.nodes.len() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {} of {n} nodes up", found.nodes.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

const SCENARIOS: [&str; 7] =
    ["ping", "filtered", "discovery", "blob64k", "10clients", "resource", "puppet_status"];

fn main() {
    let sizes: Vec<u32> = std::env::var("COHORT_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000, 10000]);
    let runs: usize =
        std::env::var("COHORT_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let brokers: Vec<String> = std::env::var("COHORT_BENCH_BROKERS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|| vec!["cohort".into(), "nats".into()]);
    // The nodes get their own runtime; the client gets another on its own thread, as if it
    // were its own process (it is one in real use), so node work cannot starve its timers.
    let nodes_runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let scenarios: Vec<String> = std::env::var("COHORT_BENCH_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|| SCENARIOS.iter().map(|s| (*s).to_owned()).collect());
    let modes: Vec<bool> = std::env::var("COHORT_BENCH_SECURITY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim() == "on").collect())
        .unwrap_or_else(|| vec![true]);
    let failovers: usize =
        std::env::var("COHORT_BENCH_FAILOVERS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let mut failures = 0;
    let mut p50s: P50s = BTreeMap::new();
    println!(
        "| broker | security | nodes | scenario | p50 | p90 | max | CPU per run (p50) | runs with exact count |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut cpu_p50s: BTreeMap<(u32, &str, String, bool), f64> = BTreeMap::new();
    let mut broker_rss = Vec::new();
    for &secure in &modes {
        let on_off = if secure { "on" } else { "off" };
        for kind in &brokers {
            for &n in &sizes {
                let (fleet_security, client_security) = security(secure);
                let (mut broker, url) = start_broker(kind);
                let idle_rss = broker.rss_kib();
                let started = Instant::now();
                let history = tempfile::tempdir().unwrap();
                let history = history.path().join("discovery.json");
                std::fs::write(resource_file(&history), MOTD).unwrap();
                std::fs::set_permissions(
                    resource_file(&history),
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .unwrap();
                let agents = bench_agents(&history);
                let fleet = nodes_runtime
                    .block_on(Fleet::start(
                        &url,
                        n,
                        SEED,
                        fleet_security.as_ref(),
                        None,
                        Some(&agents),
                    ))
                    .unwrap();
                client_runtime.block_on(async {
                let client = client(&url, &client_security, &history).await;
                wait_for(&client, n as usize).await;
                eprintln!("{kind}: {n} nodes up in {:.1} s", started.elapsed().as_secs_f64());
                if n == *sizes.iter().max().unwrap() && secure == modes[0] {
                    let rss = broker.rss_kib();
                    broker_rss.push((kind.clone(), n, rss, (rss.saturating_sub(idle_rss)) as f64 / f64::from(n)));
                }
                for name in SCENARIOS.iter().copied().filter(|s| scenarios.iter().any(|w| w == s)) {
                    let mut times = Vec::new();
                    let mut cpus = Vec::new();
                    let mut exact = 0;
                    // Warm-up, as a user's first command with a filter: it holds to --dt
                    // and records the count the measured runs then expect.
                    if let Err(err) = scenario(name, &url, &client, &client_security, &history, n as usize).await {
                        failures += 1;
                        eprintln!("FAILURE {kind} security {on_off} N={n} {name} (warm-up): {err}");
                    }
                    for _ in 0..runs {
                        // Everything the run costs: this process (client and simulated nodes)
                        // plus the broker process.
                        let cpu_before = cpu_ms("self") + broker.cpu_ms();
                        let outcome =
                            scenario(name, &url, &client, &client_security, &history, n as usize).await;
                        let cpu = cpu_ms("self") + broker.cpu_ms() - cpu_before;
                        match outcome {
                            Ok(elapsed) => {
                                exact += 1;
                                times.push(elapsed);
                                cpus.push(Duration::from_secs_f64(cpu / 1000.0));
                            }
                            Err(err) => {
                                failures += 1;
                                eprintln!("FAILURE {kind} security {on_off} N={n} {name}: {err}");
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    times.sort();
                    cpus.sort();
                    if times.is_empty() {
                        println!("| {kind} | {on_off} | {n} | {name} | - | - | - | - | 0 / {runs} |");
                        continue;
                    }
                    let p50 = pct(&times, 0.5);
                    let cpu = pct(&cpus, 0.5);
                    p50s.insert((n, name, kind.clone(), secure), p50);
                    cpu_p50s.insert((n, name, kind.clone(), secure), cpu);
                    println!(
                        "| {kind} | {on_off} | {n} | {name} | {p50:.0} ms | {:.0} ms | {:.0} ms | {cpu:.0} ms | {exact} / {runs} |",
                        pct(&times, 0.9),
                        times.last().unwrap().as_secs_f64() * 1000.0
                    );
                }
                if matches!(broker, Brokers::Cluster { .. }) && failovers > 0 {
                    let mut times = Vec::new();
                    let ping = everyone(n, Duration::from_millis(1500));
                    for run in 0..failovers {
                        let victim = run % 3;
                        broker.member(victim, false);
                        let killed = Instant::now();
                        // Until a ping to every node (by name: no discovery, whose --dt
                        // would set the resolution) is answered by all of them; an attempt
                        // ends when all answered (a full round takes about 0.8 s at 10,000
                        // nodes) or after 1.5 s, so the resolution is one attempt.
                        loop {
                            let result = client.call(ping.clone(), |_| {}).await;
                            match result {
                                Ok(result) if result.stats.ok == n as usize => break,
                                _ if killed.elapsed() < Duration::from_secs(120) => {}
                                other => {
                                    failures += 1;
                                    let ok = other.map(|r| r.stats.ok);
                                    eprintln!("FAILURE {kind} failover {run}: {ok:?} of {n}");
                                    break;
                                }
                            }
                        }
                        times.push(killed.elapsed());
                        broker.member(victim, true);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    times.sort();
                    println!(
                        "| {kind} | {on_off} | {n} | failover (member killed until every node answers) | {:.0} ms | {:.0} ms | {:.0} ms | - | {failovers} runs |",
                        pct(&times, 0.5),
                        pct(&times, 0.9),
                        pct(&times, 1.0)
                    );
                }
            });
                nodes_runtime.block_on(fleet.stop());
                drop(broker);
            }
        }
    }
    ratios(&p50s, &modes, &sizes, ("cohort", "nats"), "cohort / nats-server");
    ratios(&p50s, &modes, &sizes, ("nats-cluster", "nats"), "3-member cluster / one nats-server");
    if modes.len() == 2 {
        // The floor: two cores cannot do more than two CPU-seconds per second, so a run that
        // needs C of CPU takes at least C / 2, whatever the scheduling.
        println!(
            "\n| broker | nodes | scenario | security on / off (p50) | CPU per run off → on | floor of on / off on 2 cores |"
        );
        println!("|---|---|---|---|---|---|");
        for kind in &brokers {
            for &n in &sizes {
                for name in SCENARIOS {
                    if let (Some(on), Some(off)) = (
                        p50s.get(&(n, name, kind.clone(), true)),
                        p50s.get(&(n, name, kind.clone(), false)),
                    ) {
                        let key = |secure| (n, name, kind.clone(), secure);
                        let cpu_off = cpu_p50s.get(&key(false)).copied().unwrap_or(0.0);
                        let cpu_on = cpu_p50s.get(&key(true)).copied().unwrap_or(0.0);
                        println!(
                            "| {kind} | {n} | {name} | {:.2}x | {cpu_off:.0} → {cpu_on:.0} ms | {:.2}x |",
                            on / off,
                            cpu_on / 2.0 / off
                        );
                    }
                }
            }
        }
    }
    println!("\n| broker | connections | broker RSS | per connection |");
    println!("|---|---|---|---|");
    for (kind, n, rss, per) in &broker_rss {
        println!("| {kind} | {n} | {:.1} MiB | {:.1} KiB |", *rss as f64 / 1024.0, per);
    }
    if std::env::var("COHORT_BENCH_MEMORY").map_or(true, |v| v != "0") {
        daemon_memory(&client_runtime);
    }
    if failures > 0 {
        eprintln!("{failures} run(s) did not account for every node");
        std::process::exit(1);
    }
}

/// p50 of each run, by nodes, scenario, broker and security.
type P50s = BTreeMap<(u32, &'static str, String, bool), f64>;

/// The table of `p50(a) / p50(b)` for every cell both brokers ran, titled `title`; nothing when
/// the run did not include both.
fn ratios(p50s: &P50s, modes: &[bool], sizes: &[u32], (a, b): (&str, &str), title: &str) {
    let mut rows = Vec::new();
    for &secure in modes {
        for &n in sizes {
            for name in SCENARIOS {
                let key = |kind: &str| (n, name, kind.to_owned(), secure);
                if let (Some(a), Some(b)) = (p50s.get(&key(a)), p50s.get(&key(b))) {
                    let on_off = if secure { "on" } else { "off" };
                    rows.push(format!("| {on_off} | {n} | {name} | {:.2}x |", a / b));
                }
            }
        }
    }
    if !rows.is_empty() {
        println!("\n| security | nodes | scenario | {title} (p50) |");
        println!("|---|---|---|---|");
        for row in rows {
            println!("{row}");
        }
    }
}

/// One `cohort daemon` as its own process: RSS idle, and after 10,000 requests.
fn daemon_memory(runtime: &tokio::runtime::Runtime) {
    let (broker, url) = start_broker("cohort");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, "registration_interval = \"0s\"\n").unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "daemon",
            "--insecure",
            "--identity",
            "idle.example.net",
            "--broker",
            &url,
            "--config",
        ])
        .arg(&config)
        .env("COHORT_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    runtime.block_on(async {
        let client =
            client(&url, &ClientSecurity::default(), &dir.path().join("discovery.json")).await;
        wait_for(&client, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_kib(daemon.id());
        let node: std::collections::BTreeSet<_> =
            [cohort_proto::Identity::new("idle.example.net").unwrap()].into();
        for _ in 0..10_000 {
            let call = Call {
                agent: AgentName::new("rpcutil").unwrap(),
                action: "ping".into(),
                data: serde_json::Map::new(),
                filter: Filter::default(),
                collective: Collective::new("cohort").unwrap(),
                targets: Targets::Direct(node.clone()),
                timeout: Duration::from_secs(5),
                ttl: 60,
            };
            let result = client.call(call, |_| {}).await.unwrap();
            assert_eq!(result.stats.ok, 1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = rss_kib(daemon.id());
        println!("\n| `cohort daemon` | RSS |\n|---|---|");
        println!("| idle | {:.1} MiB |", idle as f64 / 1024.0);
        println!("| after 10,000 requests | {:.1} MiB |", busy as f64 / 1024.0);
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    drop(broker);
}
