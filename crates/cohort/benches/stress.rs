//! Discovery under stress with real daemons: N `cohort daemon` processes (one per node, default
//! 500) on one broker, two processes burning both CPUs, and every daemon stopped (SIGSTOP to
//! their process group) for 100-300 ms at a random moment during each command, then continued.
//! `cohort find`, `cohort ping` and `cohort rpc rpcutil ping -j` each run R times, as a user runs
//! them (subprocesses with a client configuration and a discovery history).
//!
//! Reported per command: runs with the exact count, wall time (p50, p90), and for `rpc` the
//! discovery time and the tail (from the last reply to the end of the call), for `ping` the tail
//! from the last reply to the end of the process.
//!
//! Run: `cargo bench -p cohort --bench stress`; environment: `COHORT_BENCH_DAEMONS` (500),
//! `COHORT_BENCH_RUNS` (20), `COHORT_BENCH_BROKERS` (`cohort`; `cohort,nats`),
//! `COHORT_BENCH_CLIENT` (another client binary to measure on the same fleet; an older one gets
//! no history setting), `COHORT_BENCH_PAUSE` (`1`; `0` measures without stopping the daemons).

#![allow(clippy::unwrap_used, missing_docs)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cohort_test_support::BrokerProcess;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rand::Rng;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Children killed by PID on drop.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cohort"))
}

fn client_binary() -> PathBuf {
    std::env::var_os("COHORT_BENCH_CLIENT").map_or_else(|| binary().to_owned(), PathBuf::from)
}

/// The daemons, all in the first one's process group so one signal stops them all.
fn start_daemons(url: &str, n: usize, dir: &Path) -> (Children, Pid) {
    let config = dir.join("daemon.toml");
    std::fs::write(&config, "registration_interval = \"0s\"\n").unwrap();
    let mut children = Children(Vec::new());
    let mut group = 0;
    for i in 0..n {
        let name = format!("node{i:04}.example.net");
        let facts = dir.join(format!("{name}.yaml"));
        std::fs::write(&facts, format!("parity: {}\n", if i % 2 == 0 { "even" } else { "odd" }))
            .unwrap();
        let child = Command::new(binary())
            .args(["daemon", "--insecure", "--identity", &name, "--broker", url, "--config"])
            .arg(&config)
            .arg("--facts")
            .arg(&facts)
            .env("COHORT_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(group)
            .spawn()
            .unwrap();
        if group == 0 {
            group = i32::try_from(child.id()).unwrap();
        }
        children.0.push(child);
    }
    (children, Pid::from_raw(group))
}

fn client(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(client_binary());
    command
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits until all `n` daemons answer, asking with this build (whatever client is measured).
fn wait_for(config: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let output =
            Command::new(binary()).args(["find", "--dt", "5", "-c"]).arg(config).output().unwrap();
        let found = String::from_utf8_lossy(&output.stdout).lines().count();
        if found == n {
            return;
        }
        assert!(Instant::now() < deadline, "only {found} of {n} daemons answered");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[derive(Default)]
struct Tally {
    exact: usize,
    wall: Vec<f64>,
    discovery: Vec<f64>,
    tail: Vec<f64>,
}

fn pct(values: &mut [f64], p: f64) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let at = ((values.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.0} ms", values[at])
}

fn main() {
    let n: usize = env_or("COHORT_BENCH_DAEMONS", 500);
    let runs: usize = env_or("COHORT_BENCH_RUNS", 20);
    let pause = env_or("COHORT_BENCH_PAUSE", 1) == 1;
    let brokers: Vec<String> = std::env::var("COHORT_BENCH_BROKERS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|| vec!["cohort".into()]);
    println!(
        "| broker | daemons | command | exact | wall p50 | wall p90 | discovery p50 | tail p50 | tail max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut inexact = 0;
    for kind in &brokers {
        let broker = BrokerProcess::start(kind, binary(), "", "max_connections: 100000");
        let url = broker.url();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let (daemons, group) = start_daemons(&url, n, dir.path());
        let probe = dir.path().join("probe.toml");
        std::fs::write(&probe, format!("brokers = [{url:?}]\ndiscovery_history = false\n"))
            .unwrap();
        wait_for(&probe, n);
        eprintln!("{kind}: {n} daemons up in {:.1} s", started.elapsed().as_secs_f64());
        let history = if std::env::var_os("COHORT_BENCH_CLIENT").is_some() {
            String::new()
        } else {
            format!(
                "discovery_history = {:?}\n",
                dir.path().join("history.json").display().to_string()
            )
        };
        let config = dir.path().join("client.toml");
        std::fs::write(&config, format!("brokers = [{url:?}]\n{history}")).unwrap();
        let hogs = Children(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        );
        let mut rng = rand::thread_rng();
        for command in ["find", "ping", "rpc"] {
            let args: &[&str] = match command {
                "find" => &["find"],
                "ping" => &["ping"],
                _ => &["rpc", "rpcutil", "ping", "-j"],
            };
            // The first run records the count (without a history it holds to --dt).
            let _ = client(&config, args).output().unwrap();
            let mut tally = Tally::default();
            for _ in 0..runs {
                let started = Instant::now();
                let child = client(&config, args).spawn().unwrap();
                if pause {
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..=150)));
                    killpg(group, Signal::SIGSTOP).unwrap();
                    std::thread::sleep(Duration::from_millis(rng.gen_range(100..=300)));
                    killpg(group, Signal::SIGCONT).unwrap();
                }
                let output = child.wait_with_output().unwrap();
                let wall = started.elapsed().as_secs_f64() * 1000.0;
                let stdout = String::from_utf8_lossy(&output.stdout);
                let found = match command {
                    "find" => stdout.lines().count(),
                    "ping" => {
                        let times: Vec<f64> = stdout
                            .lines()
                            .filter_map(|l| l.split("time=").nth(1))
                            .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
                            .collect();
                        if let Some(last) = times.iter().copied().reduce(f64::max) {
                            // From the request to the process's end, less the last reply.
                            tally.tail.push((wall - last).max(0.0));
                        }
                        times.len()
                    }
                    _ => {
                        let doc: serde_json::Value =
                            serde_json::from_str(&stdout).unwrap_or_default();
                        let stats = &doc["stats"];
                        let last = doc["replies"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r["time_ms"].as_f64())
                            .reduce(f64::max)
                            .unwrap_or(0.0);
                        let request = stats["request_time_ms"].as_f64().unwrap_or(0.0);
                        tally.discovery.push(stats["discovery_time_ms"].as_f64().unwrap_or(0.0));
                        tally.tail.push((request - last).max(0.0));
                        let silent = stats["no_responses"].as_array().map_or(0, Vec::len);
                        if silent == 0 {
                            stats["responses"].as_u64().unwrap_or(0) as usize
                        } else {
                            0
                        }
                    }
                };
                tally.wall.push(wall);
                if found == n {
                    tally.exact += 1;
                } else {
                    inexact += 1;
                    eprintln!("{kind} {command}: {found} of {n} in {wall:.0} ms");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            println!(
                "| {kind} | {n} | {command} | {} / {runs} | {} | {} | {} | {} | {} |",
                tally.exact,
                pct(&mut tally.wall, 0.5),
                pct(&mut tally.wall, 0.9),
                pct(&mut tally.discovery, 0.5),
                pct(&mut tally.tail, 0.5),
                pct(&mut tally.tail, 1.0),
            );
        }
        drop(hogs);
        drop(daemons);
        drop(broker);
    }
    if inexact > 0 {
        eprintln!("{inexact} run(s) did not find every daemon");
    }
}
