//! The Puppet scheduler daemon (`cohort puppet schedule`) against real daemons whose `puppet` is
//! a stand-in script recording each run's start and end in a shared log: every node runs once
//! per interval, never more than `concurrency` at once (measured from the log), two schedulers
//! with one lease do not double the runs, the survivor takes over when the holder is killed, and
//! a node that leaves mid-cycle is skipped and one that joins is scheduled in the next cycle.
//!
//! Slow (about half a minute): runs with `COHORT_SLOW_TESTS=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fleet::{BrokerKind, Fleet, NodeSpec};
use crate::process::{Daemon, cohort, write};

fn spec(name: &'static str) -> NodeSpec {
    NodeSpec {
        name,
        fact_file: "facts.yaml",
        facts: "role: sched\n",
        classes: "",
        collectives: &["cohort"],
    }
}

/// The stand-in `puppet`, each run lasting `secs`: its last argument is the node's state
/// directory.
fn standin(dir: &Path, secs: f64) -> std::path::PathBuf {
    let log = dir.join("runs.log");
    let script = format!(
        "#!/bin/sh\nfor last; do :; done\nnode=$(basename \"$last\")\nmkdir -p \"$last\"\necho $$ > \"$last/agent_catalog_run.lock\"\necho \"$node start $(date +%s.%N)\" >> {log}\nsleep {secs}\necho \"$node end $(date +%s.%N)\" >> {log}\nprintf 'time:\\n  last_run: %s\\nresources:\\n  total: 1\\n' \"$(date +%s)\" > \"$last/last_run_summary.yaml\"\nrm -f \"$last/agent_catalog_run.lock\"\n",
        log = log.display(),
        secs = secs
    );
    let path = dir.join("puppet-standin");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn node_config(node: &str, dir: &Path) -> String {
    let state = dir.join("state").join(node);
    let at = |name: &str| format!("{:?}", state.join(name).display().to_string());
    format!(
        "[puppet]\ncommand = {command:?}\nextra_args = [{state:?}]\nsplay = false\n\
         agent_disabled_lockfile = {}\nagent_catalog_run_lockfile = {}\nlastrunfile = {}\n\
         lastrunreport = {}\npidfile = {}\nresourcefile = {}\n",
        at("agent_disabled.lock"),
        at("agent_catalog_run.lock"),
        at("last_run_summary.yaml"),
        at("last_run_report.yaml"),
        at("agent.pid"),
        at("resources.txt"),
        command = dir.join("puppet-standin").display().to_string(),
        state = state.display().to_string(),
    )
}

fn runs(log: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [node, what, time] = parts[..] else { continue };
        let time: f64 = time.parse().unwrap();
        if what == "start" {
            open.insert(node.to_owned(), time);
        } else if let Some(start) = open.remove(node) {
            out.push((node.to_owned(), start, time));
        }
    }
    out
}

fn overlap(runs: &[(String, f64, f64)]) -> i32 {
    let mut edges: Vec<(f64, i32)> =
        runs.iter().flat_map(|(_, s, e)| [(*s, 1), (*e, -1)]).collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most
}

fn count(runs: &[(String, f64, f64)], node: &str) -> usize {
    runs.iter().filter(|(n, _, _)| n == node).count()
}

fn scheduler(fleet: &Fleet, config: &Path) -> Daemon {
    let mut command = cohort();
    command
        .args(["puppet", "schedule", "--scheduler-config"])
        .arg(config)
        .arg("-c")
        .arg(&fleet.client_config);
    Daemon::spawn(command)
}

#[test]
fn scheduler_spreads_runs_shares_a_lease_and_follows_the_fleet() {
    if std::env::var_os("COHORT_SLOW_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 to run the scheduler test");
        return;
    }
    let probe = tempfile::tempdir().unwrap();
    let specs = [spec("sa1.example.com"), spec("sa2.example.com"), spec("sa3.example.com")];
    let mut fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        standin(dir, 0.5);
        node_config(node, dir)
    });
    let dir = fleet.dir.path().to_owned();
    let log = dir.join("runs.log");
    let metrics_port = cohort_test_support::free_port();
    let config = write(
        &dir,
        "scheduler.toml",
        &format!(
            "interval = \"6s\"\nconcurrency = 1\nlease = \"test\"\nlease_ttl = \"3s\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n[filter]\nfact = [\"role=sched\"]\n"
        ),
    );
    let second = write(
        &dir,
        "scheduler2.toml",
        "interval = \"6s\"\nconcurrency = 1\nlease = \"test\"\nlease_ttl = \"3s\"\n[filter]\nfact = [\"role=sched\"]\n",
    );
    let started = Instant::now();
    let mut a = scheduler(&fleet, &config);
    let mut b = scheduler(&fleet, &second);
    // Mid-cycle, a node leaves; a cycle in, a node joins.
    std::thread::sleep(Duration::from_secs(5));
    fleet.stop_node("sa3.example.com");
    std::thread::sleep(Duration::from_secs(1));
    let agents = fleet.agents_dir.clone();
    fleet.add_node_configured(
        &spec("sa4.example.com"),
        &agents,
        &node_config("sa4.example.com", &dir),
    );
    std::thread::sleep(Duration::from_secs(12));
    let before_kill = runs(&log);
    let elapsed = started.elapsed().as_secs_f64();
    // Two schedulers, one lease: each node at most once per 6 s cycle (plus one in progress).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cycles = (elapsed / 6.0).ceil() as usize;
    for node in ["sa1.example.com", "sa2.example.com"] {
        let n = count(&before_kill, node);
        assert!(
            n >= 1 && n <= cycles,
            "{node} ran {n} times in {elapsed:.1} s: {before_kill:?}\nA: {}\nB: {}",
            a.stderr_text(),
            b.stderr_text()
        );
    }
    assert_eq!(overlap(&before_kill), 1, "concurrency 1 exceeded or nothing ran: {before_kill:?}");
    assert!(
        count(&before_kill, "sa4.example.com") >= 1,
        "the new node was never scheduled: {before_kill:?}\n{}",
        a.stderr_text()
    );
    let logs = format!("{}{}", a.stderr_text(), b.stderr_text());
    assert!(
        logs.contains("sa3.example.com skipped: SkipGone") || logs.contains("new cycle: 3 nodes"),
        "{logs}"
    );
    let holders: Vec<&Daemon> =
        [&a, &b].into_iter().filter(|d| d.stderr_text().contains("holding the lease")).collect();
    assert_eq!(holders.len(), 1, "A: {}\nB: {}", a.stderr_text(), b.stderr_text());
    // Metrics from the first scheduler (holder or not).
    let metrics = http_get(metrics_port);
    assert!(metrics.contains("cohort_puppet_scheduler_lease_holder"), "{metrics}");
    // Kill the holder by PID: the other takes over and runs go on.
    let a_holds = a.stderr_text().contains("holding the lease");
    let (holder, survivor) = if a_holds { (&mut a, &mut b) } else { (&mut b, &mut a) };
    holder.signal("KILL");
    let count_before = before_kill.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&log).len() < count_before + 3 {
        assert!(
            Instant::now() < deadline,
            "no runs after the holder died:\n{}",
            survivor.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(survivor.stderr_text().contains("holding the lease"), "{}", survivor.stderr_text());
    assert!(overlap(&runs(&log)) <= 1);
    drop(probe);
}

pub(crate) fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// `runall --rerun` starts a new iteration after the interval, and `runonce` refuses a node
/// that is applying a catalog.
#[test]
fn runall_reruns_and_runonce_refuses_a_node_applying() {
    if std::env::var_os("COHORT_SLOW_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 to run the runall rerun test");
        return;
    }
    let specs = [spec("sb1.example.com"), spec("sb2.example.com")];
    let fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        standin(dir, 1.5);
        node_config(node, dir)
    });
    let log = fleet.dir.path().join("runs.log");
    // Started, seen applying, then refused.
    let first = fleet.cli(&["puppet", "runonce", "--force", "-I", "sb1.example.com"]);
    assert!(
        crate::fleet::stdout(&first).contains("Started a Puppet run"),
        "{}",
        crate::fleet::stdout(&first)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = fleet.cli(&["puppet", "status", "-I", "sb1.example.com"]);
        if crate::fleet::stdout(&status).contains("Currently applying a catalog") {
            break;
        }
        assert!(Instant::now() < deadline, "never seen applying");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = fleet.cli(&["puppet", "runonce", "--force", "-I", "sb1.example.com"]);
    let said = crate::fleet::stdout(&second);
    assert!(said.contains("Puppet is currently applying a catalog, cannot run now"), "{said}");
    assert_eq!(second.status.code(), Some(2));
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&log).unwrap();
    // Two iterations of runall with --rerun 4, then killed by PID (however slow the machine).
    let mut child = cohort()
        .args(["puppet", "runall", "1", "--rerun", "4", "-c"])
        .arg(&fleet.client_config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let done_line = "Iteration complete. Initiated a Puppet run on 2 nodes.";
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while text.matches(done_line).count() < 2 && Instant::now() < deadline {
        if let Ok(line) = seen.recv_timeout(Duration::from_millis(250)) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let iterations = text.matches(done_line).count();
    assert!(iterations >= 2, "{text}");
    let done = runs(&log);
    assert!(
        count(&done, "sb1.example.com") >= 2 && count(&done, "sb2.example.com") >= 2,
        "{done:?}"
    );
    assert_eq!(overlap(&done), 1, "runall 1 let two run at once: {done:?}");
}
