//! Puppet run management against real Puppet 7: each daemon's node has its own Puppet
//! confdir, vardir, rundir and SSL directory (a CA and certificate made here with openssl) and a
//! cached catalog, so `puppet agent --onetime --use_cached_catalog` really runs, serverless, and
//! writes its real lock, summary and report files. The catalog's exec records when each run
//! starts and ends in a shared log, from which the test measures concurrency itself.
//!
//! Runs only with `COHORT_SLOW_TESTS=1` (CI, as root, with Puppet installed by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stderr, stdout};

const PUPPET: &str = "/usr/bin/puppet";

fn enabled() -> bool {
    let on = std::env::var_os("COHORT_SLOW_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 (with Puppet) to run the Puppet tests");
    }
    assert!(
        !on || Path::new(PUPPET).is_file(),
        "Puppet is not installed: .ci/run installs Debian's puppet"
    );
    on
}

const NAMES: [&str; 10] = [
    "pa01.example.com",
    "pa02.example.com",
    "pa03.example.com",
    "pa04.example.com",
    "pa05.example.com",
    "pa06.example.com",
    "pa07.example.com",
    "pa08.example.com",
    "pa09.example.com",
    "pa10.example.com",
];

fn specs() -> Vec<NodeSpec> {
    NAMES
        .iter()
        .map(|name| NodeSpec {
            name,
            fact_file: "facts.yaml",
            facts: "role: puppet\n",
            classes: "",
            collectives: &["cohort"],
        })
        .collect()
}

fn sh(script: &str) {
    let out = Command::new("/bin/sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A catalog whose exec logs `<node> start <time>` and `<node> end <time>` around a sleep (or
/// fails, for `failing`).
fn catalog(node: &str, log: &Path, failing: bool) -> String {
    let command = if failing {
        "/bin/false".to_owned()
    } else {
        format!(
            "echo \"{node} start $(date +%s.%N)\" >> {log}; sleep 2; echo \"{node} end $(date +%s.%N)\" >> {log}",
            log = log.display()
        )
    };
    serde_json::json!({
        "tags": ["settings"], "name": node, "version": 1700000000, "code_id": null,
        "catalog_uuid": "827a74c8-cf98-44da-9ff7-18c5e4bee41e", "catalog_format": 1,
        "environment": "production",
        "resources": [
            {"type": "Stage", "title": "main", "tags": ["stage"], "exported": false, "parameters": {"name": "main"}},
            {"type": "Class", "title": "Settings", "tags": ["class", "settings"], "exported": false},
            {"type": "Class", "title": "Main", "tags": ["class"], "exported": false, "parameters": {"name": "main"}},
            {"type": "Exec", "title": "work", "tags": ["exec", "class"], "exported": false,
             "parameters": {"command": command, "provider": "shell"}}
        ],
        "edges": [
            {"source": "Stage[main]", "target": "Class[Settings]"},
            {"source": "Stage[main]", "target": "Class[Main]"},
            {"source": "Class[Main]", "target": "Exec[work]"}
        ],
        "classes": ["settings"]
    })
    .to_string()
}

/// Puppet's directories for `node` under `base`, with a CA, a certificate and the catalog.
fn puppet_home(base: &Path, node: &str, log: &Path, failing: bool) -> (PathBuf, Vec<String>) {
    let home = base.join(format!("{node}-puppet"));
    let ssl = home.join("ssl");
    std::fs::create_dir_all(ssl.join("certs")).unwrap();
    std::fs::create_dir_all(ssl.join("private_keys")).unwrap();
    std::fs::create_dir_all(home.join("var/client_data/catalog")).unwrap();
    std::fs::create_dir_all(home.join("conf")).unwrap();
    std::fs::write(
        home.join(format!("var/client_data/catalog/{node}.json")),
        catalog(node, log, failing),
    )
    .unwrap();
    sh(&format!(
        "cd {ssl} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out certs/ca.pem -days 2 -subj '/CN=Cohort test CA' 2>/dev/null \
         && openssl req -newkey rsa:2048 -nodes -keyout private_keys/{node}.pem -out node.csr -subj '/CN={node}' 2>/dev/null \
         && openssl x509 -req -in node.csr -CA certs/ca.pem -CAkey ca.key -CAcreateserial -out certs/{node}.pem -days 2 2>/dev/null",
        ssl = ssl.display()
    ));
    let args = agent_args(&home, node);
    (home, args)
}

/// Everything `puppet agent` needs to run serverless from the cached catalog in `home`.
fn agent_args(home: &Path, node: &str) -> Vec<String> {
    let dir = |name: &str| home.join(name).display().to_string();
    let mut args: Vec<String> = Vec::new();
    for (flag, sub) in [
        ("--confdir", "conf"),
        ("--vardir", "var"),
        ("--rundir", "run"),
        ("--logdir", "log"),
        ("--publicdir", "public"),
        ("--ssldir", "ssl"),
    ] {
        args.extend([flag.to_owned(), dir(sub)]);
    }
    args.extend([
        "--certname".to_owned(),
        node.to_owned(),
        "--certificate_revocation=false".to_owned(),
    ]);
    for (flag, value) in [("--server", "127.0.0.1"), ("--masterport", "1"), ("--report_port", "1")]
    {
        args.extend([flag.to_owned(), value.to_owned()]);
    }
    args.push("--use_cached_catalog".into());
    args
}

fn node_config(node: &str, base: &Path) -> String {
    let log = base.join("runs.log");
    let failing = node == "pa10.example.com";
    let (home, args) = puppet_home(base, node, &log, failing);
    format!(
        "puppet_state_dirs = [{state:?}]\n[puppet]\ncommand = \"{PUPPET}\"\nsplay = false\nextra_args = {args}\n",
        state = home.join("var/state").display().to_string(),
        args = serde_json::to_string(&args).unwrap()
    )
}

/// Runs `puppet` as the node's own Puppet would be run by hand.
fn puppet_cli(base: &Path, node: &str, args: &[&str]) -> std::process::Output {
    let extra = agent_args(&base.join(format!("{node}-puppet")), node);
    Command::new(PUPPET)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

/// (node, start, end) of every run in the log.
fn runs(log: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [node, what, time] = parts[..] else { continue };
        let time: f64 = time.parse().unwrap();
        match what {
            "start" => {
                open.insert(node.to_owned(), time);
            }
            _ => {
                let start = open.remove(node).expect("an end without a start");
                out.push((node.to_owned(), start, time));
            }
        }
    }
    out
}

fn max_overlap(runs: &[(String, f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> =
        runs.iter().flat_map(|(_, s, e)| [(*s, 1), (*e, -1)]).collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn puppet_management_against_real_puppet() {
    if !enabled() {
        return;
    }
    let specs = specs();
    let fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &node_config);
    let base = fleet.dir.path().to_owned();
    let log = base.join("runs.log");

    // Status before any run.
    let status = fleet.cli(&["puppet", "status", "-I", "pa01.example.com"]);
    assert!(
        stdout(&status).contains("Currently stopped; last completed run never"),
        "{}",
        stdout(&status)
    );

    // Disable with Cohort: Puppet itself refuses to run, naming our message.
    let disabled =
        fleet.cli(&["puppet", "disable", "maintenance window", "-I", "pa03.example.com"]);
    assert!(
        stdout(&disabled).contains("Successfully locked the Puppet agent: maintenance window"),
        "{}",
        stdout(&disabled)
    );
    let refused = puppet_cli(
        &base,
        "pa03.example.com",
        &[
            "agent",
            "--onetime",
            "--no-daemonize",
            "--use_cached_catalog",
            "--color=false",
            "--verbose",
        ],
    );
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(said.contains("administratively disabled (Reason: 'maintenance window')"), "{said}");
    let runonce = fleet.cli(&["puppet", "runonce", "-I", "pa03.example.com"]);
    assert!(
        stdout(&runonce).contains("Puppet is disabled: 'maintenance window'"),
        "{}",
        stdout(&runonce)
    );
    // Enabled with Puppet, disabled again with Puppet: Cohort reads Puppet's own lock.
    puppet_cli(&base, "pa03.example.com", &["agent", "--enable"]);
    let status = fleet.cli(&["puppet", "status", "-I", "pa03.example.com"]);
    assert!(stdout(&status).contains("Currently stopped"), "{}", stdout(&status));
    puppet_cli(&base, "pa03.example.com", &["agent", "--disable", "disabled by hand"]);
    let status = fleet.cli(&["rpc", "puppet", "status", "-I", "pa03.example.com", "-j"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["replies"][0]["data"]["disable_message"], "disabled by hand", "{status}");

    // One run, and what Puppet wrote about it.
    let runonce = fleet.cli(&["puppet", "runonce", "--force", "-I", "pa01.example.com"]);
    assert!(
        stdout(&runonce)
            .contains("Started a Puppet run using the '/usr/bin/puppet agent --onetime"),
        "{}",
        stdout(&runonce)
    );
    wait_until("pa01's run", Duration::from_secs(60), || {
        runs(&log).len() == 1 && {
            let out = fleet.cli(&["rpc", "puppet", "status", "-I", "pa01.example.com", "-j"]);
            !stdout(&out).contains("\"lastrun\":0")
        }
    });
    let summary = fleet.cli(&[
        "rpc",
        "puppet",
        "last_run_summary",
        "logs=true",
        "-I",
        "pa01.example.com",
        "-j",
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&summary.stdout).unwrap();
    let data = &summary["replies"][0]["data"];
    assert_eq!(data["config_version"], "1700000000", "{data}");
    assert_eq!(data["changed_resources"], 1);
    assert_eq!(data["type_distribution"]["Exec"], 1, "{data}");
    assert!(data["total_time"].as_f64().unwrap() > 1.0);
    assert!(
        data["logs"].as_array().unwrap().iter().any(|l| l["message"] == "executed successfully"),
        "{data}"
    );
    std::fs::remove_file(&log).unwrap();

    // runall 2 over the fleet: never more than 2 applying, every enabled node once, pa03 skipped.
    let runall = fleet.cli(&["puppet", "runall", "2", "--start-grace", "60"]);
    let text = stdout(&runall);
    assert!(
        text.contains("Iteration complete. Initiated a Puppet run on 9 nodes."),
        "{text}\n{}",
        stderr(&runall)
    );
    assert!(
        stderr(&runall).contains("nodes applying the catalog; waiting for less than 2"),
        "{}",
        stderr(&runall)
    );
    assert!(
        text.contains("pa03.example.com skipped: Puppet is disabled: 'disabled by hand'"),
        "{text}"
    );
    assert_eq!(text.matches("pa03.example.com").count(), 1, "{text}");
    let done = runs(&log);
    let mut ran: Vec<&str> = done.iter().map(|(n, _, _)| n.as_str()).collect();
    ran.sort();
    let want: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| *n != "pa03.example.com" && *n != "pa10.example.com")
        .collect();
    assert_eq!(
        ran, want,
        "every enabled node ran exactly once (pa10's catalog fails before logging)"
    );
    assert!(max_overlap(&done) <= 2, "more than 2 applying at once: {done:?}");
    assert!(max_overlap(&done) == 2, "runall never used its 2 slots: {done:?}");

    // The failing node's run is reported with its failure counts.
    let summary = fleet.cli(&["puppet", "summary"]);
    assert!(
        stdout(&summary)
            .contains("pa10.example.com                         last run had 1 failed resource(s)"),
        "{}",
        stdout(&summary)
    );
    let count = fleet.cli(&["puppet", "count"]);
    assert!(stdout(&count).contains("Nodes currently disabled: 1"), "{}", stdout(&count));

    // An idling agent daemon is signalled (SIGUSR1) instead of getting a second process.
    let home = base.join("pa02.example.com-puppet");
    let mut daemon = Command::new(PUPPET)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .args(["agent", "--no-daemonize", "--runinterval", "3600", "--color=false"])
        .args(agent_args(&home, "pa02.example.com"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let idle = || {
        let out = fleet.cli(&["rpc", "puppet", "status", "-I", "pa02.example.com", "-j"]);
        let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        out["replies"][0]["data"]["idling"] == true
    };
    let pa02_runs = || runs(&log).iter().filter(|(n, _, _)| n == "pa02.example.com").count();
    wait_until("the daemon's first run", Duration::from_secs(60), || pa02_runs() == 2 && idle());
    let refused = fleet.cli(&["puppet", "runonce", "--noop", "-I", "pa02.example.com"]);
    let said = stdout(&refused);
    assert!(
        said.contains("Cannot specify any custom puppet options when the daemon is running"),
        "{said}"
    );
    let signalled = fleet.cli(&["puppet", "runonce", "-I", "pa02.example.com"]);
    assert!(
        stdout(&signalled).contains("Signalled the running Puppet Daemon"),
        "{}",
        stdout(&signalled)
    );
    wait_until("the signalled run", Duration::from_secs(60), || pa02_runs() == 3);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
