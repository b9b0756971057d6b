//! Discovery is exact under stress: a 1,000-node simulated fleet in its own process, on our
//! broker and on nats-server, while two processes burn both CPUs and the fleet's process is
//! stopped (SIGSTOP) for 100-300 ms at a random moment during discovery, then continued.
//! `find`, `ping` and `rpc` each run 50 times per broker, and every run must find exactly the
//! fleet. The first run of each has no record and holds to `--dt`; the others end on the
//! recorded count (docs/discovery.md).
//!
//! Slow (a few minutes): runs with `COHORT_SLOW_TESTS=1`, which CI sets. To measure another
//! client build against the same fleet (the note of issue 12 measured main with it), point
//! `COHORT_STRESS_CLIENT` at its binary; an older client gets no history setting. Runs per
//! command: `COHORT_STRESS_RUNS` (default 50).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cohort_test_support::{NatsServer, free_port, wait_for_listener};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

use crate::fleet::BrokerKind;
use crate::process::{Daemon, cohort, slow_tests, write};

const NODES: usize = 1_000;

/// A process that burns one CPU until dropped (stopped by its PID).
struct Hog(Child);

impl Hog {
    fn start() -> Hog {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Hog(child)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops and continues the fleet by PID; continues it on drop whatever happened.
struct Pausable(Pid);

impl Pausable {
    fn pause(&self, how_long: Duration) {
        kill(self.0, Signal::SIGSTOP).unwrap();
        std::thread::sleep(how_long);
        kill(self.0, Signal::SIGCONT).unwrap();
    }
}

impl Drop for Pausable {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn client_binary() -> PathBuf {
    std::env::var_os("COHORT_STRESS_CLIENT")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cohort")), PathBuf::from)
}

fn client(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(client_binary());
    command
        .args(args)
        .arg("-c")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Nodes one command's output names.
fn found(command: &str, output: &Output) -> Result<usize, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    match command {
        "find" => Ok(stdout.lines().filter(|l| !l.trim().is_empty()).count()),
        "ping" => Ok(stdout.lines().filter(|l| l.contains(" time=")).count()),
        _ => {
            let document: serde_json::Value =
                serde_json::from_str(&stdout).map_err(|e| format!("not JSON ({e}): {stdout}"))?;
            let stats = &document["stats"];
            let silent = stats["no_responses"].as_array().map_or(0, Vec::len);
            let responses = stats["responses"].as_u64().unwrap_or(0);
            if silent > 0 {
                return Err(format!("{silent} discovered nodes did not answer"));
            }
            Ok(usize::try_from(responses).unwrap_or(0))
        }
    }
}

fn args(command: &str) -> Vec<&str> {
    match command {
        "find" => vec!["find"],
        "ping" => vec!["ping"],
        _ => vec!["rpc", "rpcutil", "ping", "-j"],
    }
}

/// Runs each command `runs` times with a pause of the fleet during its discovery; returns
/// the runs that were not exact.
fn stressed_runs(fleet: &Pausable, config: &Path, runs: usize) -> Vec<String> {
    let mut rng = rand::thread_rng();
    let mut failures = Vec::new();
    for command in ["find", "ping", "rpc"] {
        for run in 0..runs {
            let started = Instant::now();
            let child = client(config, &args(command)).spawn().unwrap();
            // The client starts, connects and sends within tens of milliseconds; the fleet
            // answers over the next few hundred.
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..=150)));
            fleet.pause(Duration::from_millis(rng.gen_range(100..=300)));
            let output = child.wait_with_output().unwrap();
            let took = started.elapsed();
            match found(command, &output) {
                Ok(NODES) => {}
                Ok(count) => failures.push(format!(
                    "{command} run {run}: {count} of {NODES} in {took:?}; stderr: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Err(err) => failures.push(format!("{command} run {run}: {err}")),
            }
        }
    }
    failures
}

fn start_broker(kind: BrokerKind) -> (Box<dyn std::any::Any>, String) {
    match kind {
        BrokerKind::Cohort => {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = cohort();
            command.args(["broker", "--listen", &addr.to_string()]);
            let broker = Daemon::spawn(command);
            assert!(wait_for_listener(addr, Duration::from_secs(10)), "{}", broker.stderr_text());
            (Box::new(broker), format!("nats://{addr}"))
        }
        BrokerKind::Nats => {
            let server = NatsServer::start("");
            let url = server.url();
            (Box::new(server), url)
        }
    }
}

/// The fleet, started and fully subscribed (checked without touching the history).
fn start_fleet(url: &str, dir: &Path) -> Daemon {
    let mut command = cohort();
    command.args(["simulate", "--broker", url, "--nodes", &NODES.to_string()]);
    let fleet = Daemon::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !fleet.stderr_text().contains("ready:") {
        assert!(Instant::now() < deadline, "fleet not ready: {}", fleet.stderr_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let probe =
        write(dir, "probe.toml", &format!("brokers = [{url:?}]\ndiscovery_history = false\n"));
    loop {
        let output = cohort().args(["find", "--dt", "5", "-c"]).arg(&probe).output().unwrap();
        if found("find", &output) == Ok(NODES) {
            return fleet;
        }
        assert!(Instant::now() < deadline, "the fleet never answered whole");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn discovery_is_exact_under_cpu_load_and_a_stopped_fleet() {
    if !slow_tests("run the discovery stress test") {
        return;
    }
    let runs: usize =
        std::env::var("COHORT_STRESS_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(50);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for kind in [BrokerKind::Cohort, BrokerKind::Nats] {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, url) = start_broker(kind);
        let fleet = start_fleet(&url, dir.path());
        let history = if std::env::var_os("COHORT_STRESS_CLIENT").is_some() {
            String::new()
        } else {
            format!(
                "discovery_history = {:?}\n",
                dir.path().join("history.json").display().to_string()
            )
        };
        let config = write(dir.path(), "client.toml", &format!("brokers = [{url:?}]\n{history}"));
        let pausable = Pausable(Pid::from_raw(i32::try_from(fleet.child.id()).unwrap()));
        let hogs = [Hog::start(), Hog::start()];
        let started = Instant::now();
        let failed = stressed_runs(&pausable, &config, runs);
        drop(hogs);
        report.push(format!(
            "{kind:?}: {} of {} runs exact in {:.0?}",
            3 * runs - failed.len(),
            3 * runs,
            started.elapsed()
        ));
        failures.extend(failed.into_iter().map(|f| format!("{kind:?} {f}")));
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}\n{}", report.join("\n"), failures.join("\n"));
}
