//! The provisioner (`cohort provision run`) against real daemons standing in for new nodes and
//! Puppet masters. Their `puppet` and `puppetserver` are stand-in scripts that keep a CA per
//! master address in files (a node's CSR goes to the CA of the address its hosts file gives
//! `puppet`, so the `set_puppet_host` step is what routes it), log every signing and run, and
//! fail on demand. A webhook receiver and an SMTP sink started here collect the notifications.
//!
//! Proven: every node is signed exactly once, runs the bootstrap and production environments,
//! is notified once by mail and by webhook, and leaves the provisionable set; the master is
//! chosen by the first agreeing criterion; a stale certificate is cleaned before signing; a
//! node started while the provisioner runs is noticed; a failing node is retried, failed,
//! unlocked and notified; a node found already disabled at its `disable` step (as when the
//! reply to that step is lost) is done and notified; a provisioner killed mid-node resumes
//! without signing again; two provisioners never do a node twice; a master that went away is
//! replaced by the next by criteria. Slow (about a minute): runs with `COHORT_SLOW_TESTS=1`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stdout};
use crate::process::{Daemon, cohort, executable, slow_tests, write};

/// The stand-ins, in the fleet directory: `puppet` (its last argument is the node's directory)
/// and `puppetserver` (its last argument is the CA directory).
fn standins(dir: &Path) {
    let log = dir.display();
    executable(
        &dir.join("puppet"),
        &format!(
            r#"#!/bin/sh
for last; do :; done
node=$(basename "$last")
ip=$(awk '$2 == "puppet" {{ print $1 }}' "$last/hosts" | tail -1)
ca="{log}/ca-$ip"
case "$1 $2" in
  "ssl submit_request")
    [ -d "$ca" ] || {{ echo "Error: no CA at $ip"; exit 1; }}
    touch "$ca/requests/$node"; echo "Submitted certificate request for '$node' to $ip"; exit 0 ;;
  "agent --daemonize")
    touch "$last/daemonizing"
    while [ -f "$last/hold-daemonize" ]; do sleep 0.1; done
    echo started > "$last/daemon"; exit 0 ;;
esac
env=production
while [ $# -gt 0 ]; do [ "$1" = "--environment" ] && env=$2; shift; done
if [ ! -f "$last/ssl/cert.pem" ]; then
  [ -f "$ca/signed/$node" ] || {{ echo "Error: no certificate for $node at $ip"; exit 1; }}
  mkdir -p "$last/ssl" && cp "$ca/signed/$node" "$last/ssl/cert.pem"
fi
touch "$last/started-$env"
[ -f "$last/slow-$env" ] && sleep "$(cat "$last/slow-$env")"
echo "$node $env $ip" >> {log}/runs.log
if [ -f "$last/fail" ]; then
  printf 'Notice: Applied catalog\nResources:\n          Changed: 1\n           Failed: 2\n            Total: 9\n'; exit 6
fi
touch "$last/ran-$env"
printf 'Notice: Applied catalog\nResources:\n          Changed: 3\n           Failed: 0\n'; exit 2
"#
        ),
    );
    executable(
        &dir.join("puppetserver"),
        &format!(
            r#"#!/bin/sh
action=$2
for last; do :; done
ca=$last
name=""
prev=""
for arg; do [ "$prev" = "--certname" ] && name=$arg; prev=$arg; done
list() {{ first=1; for f in "$ca/$1"/*; do [ -e "$f" ] || continue; [ $first = 1 ] || printf ','; first=0; printf '{{"name":"%s"}}' "$(basename "$f")"; done; }}
case "$action" in
  list) printf '{{"requested":['; list requests; printf '],"signed":['; list signed; printf '],"revoked":['; list revoked; printf ']}}\n' ;;
  sign) [ -f "$ca/requests/$name" ] || {{ echo "Error: no CSR for $name"; exit 1; }}
        mv "$ca/requests/$name" "$ca/signed/$name"; echo "$name $(basename "$ca")" >> {log}/signed.log; echo "Successfully signed certificate request for $name" ;;
  clean) rm -f "$ca/requests/$name" "$ca/signed/$name"; echo "$name $(basename "$ca")" >> {log}/cleaned.log; echo "Cleaned files related to $name" ;;
  revoke) mv "$ca/signed/$name" "$ca/revoked/$name" ;;
  *) exit 1 ;;
esac
"#
        ),
    );
}

fn ca_dir(dir: &Path, ip: &str) -> PathBuf {
    let ca = dir.join(format!("ca-{ip}"));
    for sub in ["requests", "signed", "revoked"] {
        std::fs::create_dir_all(ca.join(sub)).unwrap();
    }
    ca
}

fn node_spec(name: &'static str, facts: &'static str) -> NodeSpec {
    NodeSpec { name, fact_file: "facts.yaml", facts, classes: "", collectives: &["cohort"] }
}

/// `[provision]` and `[puppet]` of a new node whose files are in `<dir>/<node>`.
fn new_node(node: &str, dir: &Path) -> String {
    let home = dir.join(node);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("hosts"), "127.0.0.1\tlocalhost\n10.9.9.9 puppet puppetdb # old\n")
        .unwrap();
    format!(
        "[puppet]\ncommand = {puppet:?}\nextra_args = [{home:?}]\n\
         [provision]\nenabled = true\nstate_dir = {state:?}\nhosts_file = {hosts:?}\ncertificate = {cert:?}\n",
        puppet = dir.join("puppet").display().to_string(),
        home = home.display().to_string(),
        state = home.join("provision").display().to_string(),
        hosts = home.join("hosts").display().to_string(),
        cert = home.join("ssl/cert.pem").display().to_string(),
    )
}

/// `[puppetca]` of a master whose CA is `<dir>/ca-<ip>`.
fn master(ip: &str, dir: &Path) -> String {
    let ca = ca_dir(dir, ip);
    format!(
        "[puppetca]\nenabled = true\ncommand = {:?}\nextra_args = [{:?}]\n",
        dir.join("puppetserver").display().to_string(),
        ca.display().to_string()
    )
}

/// Collected notifications.
#[derive(Default)]
struct Inbox {
    webhooks: Vec<Value>,
    mails: Vec<String>,
}

/// A webhook receiver and an SMTP sink on loopback, for the test's life.
fn receivers(inbox: Arc<Mutex<Inbox>>) -> (u16, u16) {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = (web.local_addr().unwrap().port(), smtp.local_addr().unwrap().port());
    let hooks = inbox.clone();
    std::thread::spawn(move || {
        for stream in web.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(json) = serde_json::from_slice(&body) {
                hooks.lock().unwrap().webhooks.push(json);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    std::thread::spawn(move || {
        for stream in smtp.incoming().flatten() {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let _ = out.write_all(b"220 sink ESMTP\r\n");
                let mut data: Option<String> = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(body) = data.as_mut() {
                        if line == ".\r\n" {
                            inbox.lock().unwrap().mails.push(data.take().unwrap_or_default());
                            let _ = out.write_all(b"250 queued\r\n");
                        } else {
                            body.push_str(&line);
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = out.write_all(reply);
                }
            });
        }
    });
    ports
}

fn provisioner_config(dir: &Path, name: &str, ports: (u16, u16), extra: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "store = {store:?}\nconcurrency = 4\nsweep_interval = \"2s\"\n{extra}\n\
             [master]\ncriteria = [\"region\", \"country\"]\n\
             [retry]\nattempts = 2\nbackoff = \"300ms\"\n\
             [notify]\ntargets = [\"http://127.0.0.1:{web}/hook\", \"mailto:ops@example.com\"]\n\
             [notify.smtp]\nserver = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\nfrom = \"cohort@example.com\"\n",
            store = dir.join(format!("{name}.redb")).display().to_string(),
            web = ports.0,
            smtp = ports.1,
        ),
    )
}

fn provisioner(fleet: &Fleet, config: &Path) -> Daemon {
    let mut command = cohort();
    command
        .args(["provision", "run", "--provision-config"])
        .arg(config)
        .arg("-c")
        .arg(&fleet.client_config)
        .env("COHORT_LOG", "info");
    Daemon::spawn(command)
}

fn status(fleet: &Fleet, config: &Path) -> BTreeMap<String, Value> {
    let output =
        fleet.cli(&["provision", "status", "-j", "--provision-config", config.to_str().unwrap()]);
    let nodes: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap_or_default();
    nodes.into_iter().map(|n| (n["node"].as_str().unwrap_or("").to_owned(), n)).collect()
}

/// Waits until every one of `nodes` is settled (done or failed) in the provisioner's status.
fn wait_settled(
    fleet: &Fleet,
    config: &Path,
    nodes: &[&str],
    daemon: &Daemon,
    within: Duration,
) -> BTreeMap<String, Value> {
    let (settled, now) = poll_settled(fleet, config, nodes, within);
    assert!(settled, "not settled: {now:#?}\n{}", daemon.stderr_text());
    now
}

/// The status once every one of `nodes` is settled, or at the deadline; and which it was.
fn poll_settled(
    fleet: &Fleet,
    config: &Path,
    nodes: &[&str],
    within: Duration,
) -> (bool, BTreeMap<String, Value>) {
    let deadline = Instant::now() + within;
    loop {
        let now = status(fleet, config);
        let settled = nodes.iter().all(|n| {
            now.get(*n).is_some_and(|p| matches!(p["state"].as_str(), Some("done" | "failed")))
        });
        if settled || Instant::now() >= deadline {
            return (settled, now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (60 s at most) until `path` exists: the stand-ins leave such marks as they go.
fn wait_for_mark(path: &Path, provisioner: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared: {}",
            path.display(),
            provisioner.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn count(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn new_nodes_go_from_bare_to_production() {
    if !slow_tests("run the provisioner test") {
        return;
    }
    let probe = tempfile::tempdir().unwrap();
    standins(probe.path());
    let specs = [
        node_spec("m-eu", "region: eu\ncountry: ie\nipaddress: 127.0.0.11\n"),
        node_spec("m-us", "region: us\ncountry: de\nipaddress: 127.0.0.12\n"),
        node_spec("n1", "region: eu\ncountry: de\nipaddress: 10.0.0.1\n"),
        node_spec("n2", "region: eu\nipaddress: 10.0.0.2\n"),
        node_spec("n3", "region: us\nipaddress: 10.0.0.3\n"),
        node_spec("n4", "region: eu\nipaddress: 10.0.0.4\n"),
    ];
    let mut fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        standins(dir);
        match node {
            "m-eu" => master("127.0.0.11", dir),
            "m-us" => master("127.0.0.12", dir),
            other => new_node(other, dir),
        }
    });
    let dir = fleet.dir.path().to_owned();
    // A stale certificate for n4 on the EU master: cleaned before n4 is signed.
    std::fs::write(dir.join("ca-127.0.0.11/signed/n4"), "stale").unwrap();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let ports = receivers(inbox.clone());
    let metrics_port = cohort_test_support::free_port();
    let config =
        provisioner_config(&dir, "p1", ports, &format!("metrics = \"127.0.0.1:{metrics_port}\""));
    let daemon = provisioner(&fleet, &config);
    let mut nodes = vec!["n1", "n2", "n3", "n4"];
    wait_settled(&fleet, &config, &nodes, &daemon, Duration::from_secs(60));
    // A node that starts while the provisioner runs is noticed from its announcement.
    let extra = new_node("n5", &dir);
    let agents = fleet.agents_dir.clone();
    let started = Instant::now();
    let started_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    fleet.add_node_configured(
        &node_spec("n5", "region: us\nipaddress: 10.0.0.5\n"),
        &agents,
        &extra,
    );
    nodes.push("n5");
    let done = wait_settled(&fleet, &config, &nodes, &daemon, Duration::from_secs(60));
    // Reported, not asserted (timings are never asserted): noticed from its announcement.
    let noticed_ms = done["n5"]["noticed_ms"].as_i64().unwrap_or(0) - started_ms;
    eprintln!(
        "n5 noticed {noticed_ms} ms and provisioned {:?} after its daemon was started",
        started.elapsed()
    );
    let noticed_by: Vec<&str> = done["n5"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(noticed_by.first(), Some(&"noticed"), "{noticed_by:?}");

    for node in &nodes {
        assert_eq!(
            done[*node]["state"],
            "done",
            "{node}: {:#?}\n{}",
            done[*node],
            daemon.stderr_text()
        );
    }
    let signed = lines_of(&dir.join("signed.log"));
    for node in &nodes {
        assert_eq!(count(&signed, &format!("{node} ")), 1, "{node} signed once: {signed:?}");
    }
    let expected_master = |node: &str| if matches!(node, "n3" | "n5") { "m-us" } else { "m-eu" };
    for node in &nodes {
        assert_eq!(done[*node]["master"], expected_master(node), "{node}");
        let home = dir.join(node);
        assert!(
            home.join("ran-bootstrap").exists() && home.join("ran-production").exists(),
            "{node} ran both environments"
        );
        assert_eq!(
            std::fs::read_to_string(home.join("daemon")).unwrap_or_default(),
            "started\n",
            "{node} daemonized"
        );
    }
    // n1 agrees with m-eu on region and with m-us on country: the first criterion wins.
    assert_eq!(done["n1"]["master"], "m-eu");
    // Only the `puppet` name moved in the hosts file.
    assert_eq!(
        std::fs::read_to_string(dir.join("n3/hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n10.9.9.9\tpuppetdb # old\n127.0.0.12\tpuppet\n"
    );
    let cleaned = lines_of(&dir.join("cleaned.log"));
    assert!(cleaned.contains(&"n4 ca-127.0.0.11".to_owned()), "stale n4 cleaned: {cleaned:?}");
    assert!(signed.contains(&"n4 ca-127.0.0.11".to_owned()));
    {
        let inbox = inbox.lock().unwrap();
        let hooked: Vec<&str> =
            inbox.webhooks.iter().filter_map(|h| h["message"].as_str()).collect();
        for node in &nodes {
            let line = format!("Provisioned {node} against {}", expected_master(node));
            assert_eq!(
                hooked.iter().filter(|m| **m == line).count(),
                1,
                "webhook for {node}: {hooked:?}"
            );
            assert_eq!(
                inbox.mails.iter().filter(|m| m.contains(&line)).count(),
                1,
                "one mail for {node}"
            );
        }
        assert!(inbox.mails.iter().all(|m| m.contains("Subject: New Node")));
    }
    // Nobody is provisionable any more: the fact turned and the agent went away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let disabled = fleet.cli(&["find", "-F", "provision_disabled=true", "--dt", "2"]);
        let mut found: Vec<String> = stdout(&disabled).lines().map(str::to_owned).collect();
        found.sort();
        if found == nodes {
            break;
        }
        assert!(Instant::now() < deadline, "provision_disabled=true on {found:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = fleet.cli(&["find", "-A", "provision", "--dt", "1"]);
        if stdout(&left).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still offering provision: {}", stdout(&left));
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = reqwest_get(metrics_port);
    assert!(metrics.contains("cohort_provision_nodes{state=\"done\"} 5"), "{metrics}");
    assert!(metrics.contains("cohort_provision_provisioned_total 5"), "{metrics}");
    assert!(
        metrics.contains("cohort_provision_step_seconds_count{step=\"sign_certificate\"} 5"),
        "{metrics}"
    );
    let log = daemon.stderr_text();
    assert!(log.contains("n1: master m-eu / 127.0.0.11: region == \"eu\""), "{log}");
    assert!(log.contains("n3: run_puppet ok in"), "one line per step: {log}");

    // The EU master goes away: the next EU node gets the master that agrees on the next
    // criterion (country), not a random one.
    fleet.stop_node("m-eu");
    let extra = new_node("n6", &dir);
    fleet.add_node_configured(
        &node_spec("n6", "region: eu\ncountry: de\nipaddress: 10.0.0.6\n"),
        &agents,
        &extra,
    );
    let done = wait_settled(&fleet, &config, &["n6"], &daemon, Duration::from_secs(60));
    assert_eq!(
        (done["n6"]["state"].as_str(), done["n6"]["master"].as_str()),
        (Some("done"), Some("m-us")),
        "{:#?}",
        done["n6"]
    );
    let history: Vec<&str> = done["n6"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(history.iter().any(|m| m.contains("country == \"de\"")), "{history:?}");
}

/// A GET of /metrics with a plain socket (the test needs no HTTP client).
fn reqwest_get(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn failures_restarts_and_rival_provisioners() {
    if !slow_tests("run the provisioner fault test") {
        return;
    }
    let specs = [
        node_spec("fm", "region: eu\nipaddress: 127.0.0.21\n"),
        node_spec("f1", "region: eu\nipaddress: 10.1.0.1\n"),
        node_spec("k1", "region: eu\nipaddress: 10.1.0.2\n"),
    ];
    let mut fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        standins(dir);
        let home = dir.join(node);
        std::fs::create_dir_all(&home).unwrap();
        match node {
            "fm" => master("127.0.0.21", dir),
            "f1" => {
                std::fs::write(home.join("fail"), "").unwrap();
                new_node(node, dir)
            }
            _ => {
                // k1's bootstrap run takes a while: the provisioner is killed during it.
                std::fs::write(home.join("slow-bootstrap"), "3").unwrap();
                new_node(node, dir)
            }
        }
    });
    let dir = fleet.dir.path().to_owned();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let ports = receivers(inbox.clone());
    let config = provisioner_config(&dir, "p1", ports, "");
    let mut first = provisioner(&fleet, &config);
    // Kill it (SIGKILL) once k1 is signed and in its bootstrap run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines_of(&dir.join("signed.log")).iter().any(|l| l.starts_with("k1 ")) {
        assert!(Instant::now() < deadline, "k1 never signed: {}", first.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5));
    let again = provisioner(&fleet, &config);
    let done = wait_settled(&fleet, &config, &["f1", "k1"], &again, Duration::from_secs(90));
    assert_eq!(done["k1"]["state"], "done", "{:#?}\n{}", done["k1"], again.stderr_text());
    let signed = lines_of(&dir.join("signed.log"));
    assert_eq!(count(&signed, "k1 "), 1, "resumed without signing again: {signed:?}");
    // The restarted provisioner is the same lease holder (its name is kept in the store).
    assert!(!again.stderr_text().contains("k1: left alone"), "{}", again.stderr_text());
    assert!(again.stderr_text().contains("k1: bootstrap_puppet ok"), "{}", again.stderr_text());

    // f1's runs fail: two attempts, then failed, unlocked and notified.
    assert_eq!(done["f1"]["state"], "failed");
    let reason = done["f1"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with(
            "bootstrap_puppet failed 2 times: Puppet failed due to 2 failed resource(s)"
        ),
        "{reason}"
    );
    let asked = fleet.cli(&["rpc", "provision", "status", "-I", "f1", "-j"]);
    let replies: Value = serde_json::from_str(&stdout(&asked)).unwrap();
    assert_eq!(
        replies["replies"][0]["data"]["locked"], false,
        "a failed node is unlocked: {replies}"
    );
    assert_eq!(replies["replies"][0]["data"]["disabled"], false);
    let hooked: Vec<String> = inbox
        .lock()
        .unwrap()
        .webhooks
        .iter()
        .filter_map(|h| h["subject"].as_str().map(str::to_owned))
        .collect();
    assert!(hooked.contains(&"Provisioning failed: f1".to_owned()), "{hooked:?}");

    // `retry` sends it through again; fixed, it is provisioned.
    std::fs::remove_file(dir.join("f1/fail")).unwrap();
    let retried =
        fleet.cli(&["provision", "retry", "f1", "--provision-config", config.to_str().unwrap()]);
    assert!(retried.status.success(), "{}", crate::fleet::stderr(&retried));
    let done = wait_settled(&fleet, &config, &["f1"], &again, Duration::from_secs(60));
    assert_eq!(done["f1"]["state"], "done", "{:#?}", done["f1"]);

    // d1 is disabled by hand while its Puppet daemon starts (the stand-in holds there until
    // the test lets it go): what the provisioner sees when the reply to its own `disable` is
    // lost with the broker after the node acted. Found already disabled at that step, it is
    // done and notified, not dropped from the record.
    let extra = new_node("d1", &dir);
    std::fs::write(dir.join("d1/hold-daemonize"), "").unwrap();
    let agents = fleet.agents_dir.clone();
    fleet.add_node_configured(
        &node_spec("d1", "region: eu\nipaddress: 10.1.0.3\n"),
        &agents,
        &extra,
    );
    wait_for_mark(&dir.join("d1/daemonizing"), &again);
    let disabled = fleet.cli(&["rpc", "provision", "disable", "-I", "d1", "-j"]);
    let replies: Value = serde_json::from_str(&stdout(&disabled)).unwrap();
    assert_eq!(replies["replies"][0]["statuscode"], 0, "{replies}");
    std::fs::remove_file(dir.join("d1/hold-daemonize")).unwrap();
    let done = wait_settled(&fleet, &config, &["d1"], &again, Duration::from_secs(60));
    assert_eq!(done["d1"]["state"], "done", "{:#?}\n{}", done["d1"], again.stderr_text());
    let steps: Vec<(&str, &str)> = done["d1"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["step"].as_str()?, e["message"].as_str()?)))
        .collect();
    assert!(
        steps.iter().any(|(step, message)| *step == "disable"
            && message.starts_with("no longer provisionable already: ")),
        "{steps:?}"
    );
    // `done` comes after `notify`, which the receiver answered only once it had the hook.
    let hooked = inbox.lock().unwrap().webhooks.clone();
    assert!(hooked.iter().any(|h| h["message"] == "Provisioned d1 against fm"), "{hooked:?}");
    drop(again);

    // Two provisioners, each with its own store, on four new nodes: each node done once.
    let rivals = ["r1", "r2", "r3", "r4"];
    let a = provisioner(&fleet, &config);
    let b_config = provisioner_config(&dir, "p2", ports, "");
    let b = provisioner(&fleet, &b_config);
    let agents = fleet.agents_dir.clone();
    for name in rivals {
        let extra = new_node(name, &dir);
        let spec = NodeSpec {
            name,
            fact_file: "facts.yaml",
            facts: "region: eu\nipaddress: 10.2.0.1\n",
            classes: "",
            collectives: &["cohort"],
        };
        fleet.add_node_configured(&spec, &agents, &extra);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = lines_of(&dir.join("runs.log"));
        if rivals.iter().all(|n| count(&runs, &format!("{n} production")) > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rivals not done: {runs:?}\n{}\n{}",
            a.stderr_text(),
            b.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let runs = lines_of(&dir.join("runs.log"));
    let signed = lines_of(&dir.join("signed.log"));
    for name in rivals {
        assert_eq!(count(&runs, &format!("{name} production")), 1, "{name} run once: {runs:?}");
        assert_eq!(count(&signed, &format!("{name} ")), 1, "{name} signed once");
    }
    let (one, two) = (status(&fleet, &config), status(&fleet, &b_config));
    for name in rivals {
        let by = [&one, &two]
            .iter()
            .filter(|s| s.get(name).is_some_and(|p| p["state"] == "done"))
            .count();
        assert_eq!(by, 1, "{name} done by exactly one provisioner");
    }
}

/// `puppetserver` as the test found it (already listening on 8140) or as it started it; a
/// server it started is stopped (its process group, by the PID it spawned) at the end.
struct PuppetServer {
    started: Option<std::process::Child>,
    log: Option<tempfile::NamedTempFile>,
}

impl PuppetServer {
    fn listening() -> bool {
        std::net::TcpStream::connect_timeout(
            &"127.0.0.1:8140".parse().unwrap(),
            Duration::from_millis(300),
        )
        .is_ok()
    }

    /// JRuby starts in 50 s on an idle machine and took over four minutes on a loaded 2-core
    /// CI machine, so the wait is long; it ends early, with the server's own log, if the
    /// server exits.
    fn ensure(ca_config: &Path) -> PuppetServer {
        let mut server = PuppetServer { started: None, log: None };
        if !Self::listening() {
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = std::process::Command::new("puppetserver")
                .arg("foreground")
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .process_group(0)
                .spawn()
                .expect("puppetserver starts");
            server.started = Some(child);
            server.log = Some(log);
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = std::process::Command::new("puppetserver")
                .args(["ca", "list", "--all", "--format", "json", "--config"])
                .arg(ca_config)
                .output()
                .unwrap();
            if list.status.success() {
                break;
            }
            let exited = server.started.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "puppetserver did not come up (exit: {exited:?}): {}\nits log ends:\n{}",
                String::from_utf8_lossy(&list.stderr),
                server.log_tail()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        server
    }

    fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return "(a server the test did not start)".to_owned();
        };
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PuppetServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.started {
            let pid = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

use std::os::unix::process::CommandExt;

fn ca(ca_config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("puppetserver")
        .arg("ca")
        .args(args)
        .arg("--config")
        .arg(ca_config)
        .output()
        .unwrap()
}

/// End to end with Debian's real `puppetserver` as CA and master and real `puppet` agents, each
/// node with its own certname, ssldir, vardir and confdir: every certificate signed exactly
/// once (the CA's own inventory counts), a stale one cleaned first, both environments applied
/// (files their manifests write), notifications sent, nodes no longer provisionable.
#[test]
fn real_puppet_from_bare_to_production() {
    if !slow_tests("run the real Puppet provisioning test") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real Puppet provisioning test needs root (puppetserver's CA)"
    );
    let host = String::from_utf8(
        std::process::Command::new("hostname").arg("-f").output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let run = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("pv{run}-n{i}")).collect();
    let leaked: Vec<&'static str> =
        names.iter().map(|n| &*Box::leak(n.clone().into_boxed_str())).collect();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_owned();
    std::fs::set_permissions(&out_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    // The two environments, on the server.
    let environments = Path::new("/etc/puppet/code/environments");
    for env in ["bootstrap", "production"] {
        let manifests = environments.join(format!("cohortprov_{env}/manifests"));
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(
            manifests.join("site.pp"),
            format!("file {{ \"{}/${{trusted['certname']}}.{env}\": ensure => file, content => \"{env}\\n\" }}\n", out_dir.display()),
        )
        .unwrap();
    }
    let ca_config = out_dir.join("ca-puppet.conf");
    std::fs::write(&ca_config, format!("[main]\nserver = {host}\n")).unwrap();
    let _server = PuppetServer::ensure(&ca_config);
    // A stale certificate for the second node, left by an earlier server of that name.
    let stale = ca(&ca_config, &["generate", "--certname", leaked[1]]);
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));

    let mut specs = vec![node_spec("pvmaster", "ipaddress: 127.0.0.1\n")];
    for name in &leaked {
        specs.push(node_spec(name, "ipaddress: 127.0.0.2\n"));
    }
    let fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        if node == "pvmaster" {
            return format!(
                "[puppetca]\nenabled = true\nextra_args = [\"--config\", {:?}]\ntimeout = \"120s\"\n",
                ca_config.display().to_string()
            );
        }
        let home = dir.join(node);
        for sub in ["conf", "var", "ssl"] {
            std::fs::create_dir_all(home.join(sub)).unwrap();
        }
        std::fs::write(
            home.join("conf/puppet.conf"),
            "[agent]\nenvironment = cohortprov_production\nreport = false\n",
        )
        .unwrap();
        std::fs::write(home.join("hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        let arg = |p: &str| format!("{:?}", home.join(p).display().to_string());
        format!(
            "[puppet]\ncommand = \"/usr/bin/puppet\"\nextra_args = [\"--confdir\", {}, \"--vardir\", {}, \"--ssldir\", {}, \"--certname\", {node:?}, \"--server\", {host:?}]\n\
             [provision]\nenabled = true\nstate_dir = {}\nhosts_file = {}\ncertificate = {:?}\n",
            arg("conf"),
            arg("var"),
            arg("ssl"),
            arg("provision"),
            arg("hosts"),
            home.join(format!("ssl/certs/{node}.pem")).display().to_string(),
        )
    });
    let dir = fleet.dir.path().to_owned();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let ports = receivers(inbox.clone());
    let config = provisioner_config(
        &dir,
        "real",
        ports,
        "bootstrap_environment = \"cohortprov_bootstrap\"\n\
         steps = [\"set_puppet_host\", \"clean_cert\", \"request_certificate\", \"sign_certificate\", \"bootstrap_puppet\", \"run_puppet\", \"disable\", \"notify\"]",
    );
    let daemon = provisioner(&fleet, &config);
    let (_, done) = poll_settled(&fleet, &config, &leaked, Duration::from_secs(300));

    let inventory =
        std::fs::read_to_string("/etc/puppet/puppetserver/ca/inventory.txt").unwrap_or_default();
    let issued =
        |name: &str| inventory.lines().filter(|l| l.ends_with(&format!("/CN={name}"))).count();
    let listing: Value =
        serde_json::from_slice(&ca(&ca_config, &["list", "--all", "--format", "json"]).stdout)
            .unwrap();
    let signed: Vec<&str> =
        listing["signed"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    let mut failures = Vec::new();
    for name in &leaked {
        if done.get(*name).is_none_or(|p| p["state"] != "done") {
            failures.push(format!("{name}: {:#}", done.get(*name).cloned().unwrap_or_default()));
        }
    }
    // Tidy the CA before asserting, so a failure leaves nothing behind.
    for name in &leaked {
        let _ = ca(&ca_config, &["clean", "--certname", name]);
        // `generate` left the stale certificate's key pair in the server's own ssldir.
        for kind in ["certs", "private_keys", "public_keys"] {
            let _ = std::fs::remove_file(format!("/var/lib/puppet/ssl/{kind}/{name}.pem"));
        }
    }
    for env in ["bootstrap", "production"] {
        let _ = std::fs::remove_dir_all(environments.join(format!("cohortprov_{env}")));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", daemon.stderr_text());
    for name in &leaked {
        assert!(signed.contains(name), "{name} signed: {signed:?}");
        let expected = if *name == leaked[1] { 2 } else { 1 };
        assert_eq!(issued(name), expected, "{name}: certificates issued (the stale one included)");
        for env in ["bootstrap", "production"] {
            assert!(out_dir.join(format!("{name}.{env}")).exists(), "{name} applied {env}");
        }
        assert!(dir.join(name).join("provision/disabled").exists());
    }
    let log = daemon.stderr_text();
    assert!(
        log.contains(&format!("{}: clean_cert ok", leaked[1]))
            && log.contains("cleaned on pvmaster"),
        "{log}"
    );
    let inbox = inbox.lock().unwrap();
    for name in &leaked {
        let line = format!("Provisioned {name} against pvmaster");
        assert_eq!(
            inbox.webhooks.iter().filter(|h| h["message"] == line.as_str()).count(),
            1,
            "{name}"
        );
        assert_eq!(inbox.mails.iter().filter(|m| m.contains(&line)).count(), 1, "{name}");
    }
}

/// A provisioner stopped (SIGSTOP) longer than the lease, under two CPU hogs: another takes the
/// node when the lease runs out and finishes it; the first, resumed, finds the node no longer
/// its own and leaves it. The node is signed once and runs production once.
#[test]
fn a_stopped_provisioner_loses_the_node_to_another() {
    if !slow_tests("run the provisioner lease test") {
        return;
    }
    let _hogs = Hogs::start(2);
    let specs =
        [node_spec("sm", "ipaddress: 127.0.0.31\n"), node_spec("s1", "ipaddress: 10.3.0.1\n")];
    let fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, dir| {
        standins(dir);
        if node == "sm" {
            return master("127.0.0.31", dir);
        }
        let home = dir.join(node);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("slow-bootstrap"), "2").unwrap();
        new_node(node, dir)
    });
    let dir = fleet.dir.path().to_owned();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let ports = receivers(inbox);
    let a_config = provisioner_config(&dir, "pa", ports, "lock_ttl = \"10s\"");
    let a = provisioner(&fleet, &a_config);
    // Stopped in the middle of s1's bootstrap run (signed, certificate fetched).
    wait_for_mark(&dir.join("s1/started-bootstrap"), &a);
    a.signal("STOP");
    let b_config = provisioner_config(&dir, "pb", ports, "lock_ttl = \"10s\"");
    let b = provisioner(&fleet, &b_config);
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&lines_of(&dir.join("runs.log")), "s1 production") == 0 {
        assert!(Instant::now() < deadline, "b never finished s1: {}", b.stderr_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = wait_settled(&fleet, &b_config, &["s1"], &b, Duration::from_secs(30));
    assert_eq!(done["s1"]["state"], "done", "{:#?}", done["s1"]);
    a.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.stderr_text().contains("s1: left alone") {
        assert!(Instant::now() < deadline, "a did not leave s1: {}", a.stderr_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = lines_of(&dir.join("runs.log"));
    assert_eq!(count(&lines_of(&dir.join("signed.log")), "s1 "), 1, "signed once");
    assert_eq!(count(&runs, "s1 production"), 1, "production once: {runs:?}");
    assert!(!status(&fleet, &a_config).contains_key("s1"), "a forgot s1");
}

/// Busy loops burning CPU for a test's life, stopped by their PIDs.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(count: usize) -> Hogs {
        Hogs(
            (0..count)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

fn keys(dir: &Path, args: &[&str]) {
    let output = cohort().arg("keys").arg("--dir").arg(dir).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "cohort keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn secure_broker(keys_dir: &Path, addr: std::net::SocketAddr) -> Daemon {
    let mut command = cohort();
    command
        .args(["broker", "--listen", &addr.to_string(), "--keys"])
        .arg(keys_dir)
        .arg("--tls-cert")
        .arg(keys_dir.join("broker.pem"))
        .arg("--tls-key")
        .arg(keys_dir.join("broker.key"));
    let broker = Daemon::spawn(command);
    assert!(
        cohort_test_support::wait_for_listener(addr, Duration::from_secs(10)),
        "{}",
        broker.stderr_text()
    );
    broker
}

/// Secure, as in production: TLS, a broker admitting only issued keys with role permissions,
/// signed requests, the provision and puppetca agents allowed by policy only to the
/// provisioner's credential. The broker is restarted while a node's bootstrap run is in
/// flight: the provisioner and the daemons reconnect and the node is finished, signed once.
#[test]
fn secure_provisioning_survives_a_broker_restart() {
    if !slow_tests("run the secure provisioning test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys_dir = d.join("keys");
    keys(&keys_dir, &["init"]);
    keys(&keys_dir, &["issue", "--role", "provisioner", "--name", "prov1", "--valid", "1d"]);
    keys(&keys_dir, &["issue", "--role", "client", "--name", "alice", "--valid", "1d"]);
    for node in ["sec-m", "sec1", "sec2"] {
        keys(&keys_dir, &["issue", "--role", "node", "--name", node, "--valid", "1d"]);
    }
    keys(&keys_dir, &["tls", "--host", "127.0.0.1"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cohort_test_support::free_port()));
    let mut broker = secure_broker(&keys_dir, addr);
    let url = format!("tls://{addr}");
    let policies = d.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for agent in ["provision", "puppetca"] {
        write(
            &policies,
            &format!("{agent}.policy"),
            "policy default deny\nallow\tprovisioner=prov1\t*\t*\t*\n",
        );
    }
    standins(d);
    let path = |p: PathBuf| p.display().to_string();
    let mut daemons = Vec::new();
    for (node, facts) in [
        ("sec-m", "ipaddress: 127.0.0.41\n"),
        ("sec1", "ipaddress: 10.4.0.1\n"),
        ("sec2", "ipaddress: 10.4.0.2\n"),
    ] {
        let extra = if node == "sec-m" {
            master("127.0.0.41", d)
        } else {
            let text = new_node(node, d);
            if node == "sec2" {
                std::fs::write(d.join(node).join("slow-bootstrap"), "3").unwrap();
            }
            text
        };
        let facts_file = write(d, &format!("{node}.facts.yaml"), facts);
        let config = write(
            d,
            &format!("{node}.toml"),
            &format!(
                "registration_interval = \"1s\"\n[security]\nissuers = [{issuer:?}]\nkey = {key:?}\ncredential = {cred:?}\n\
                 policies = {policies:?}\ntls_ca = {ca:?}\n{extra}",
                issuer = path(keys_dir.join("issuer.pub")),
                key = path(keys_dir.join(format!("node.{node}.seed"))),
                cred = path(keys_dir.join(format!("node.{node}.cred"))),
                policies = path(policies.clone()),
                ca = path(keys_dir.join("ca.pem")),
            ),
        );
        let mut command = cohort();
        command
            .args(["daemon", "--identity", node, "--broker", &url, "--facts"])
            .arg(facts_file)
            .arg("--config")
            .arg(config)
            .env("COHORT_LOG", "info");
        daemons.push(Daemon::spawn(command));
    }
    let client = |name: &str, role: &str| {
        write(
            d,
            &format!("{name}.client.toml"),
            &format!(
                "brokers = [{url:?}]\nkey = \"keys/{role}.{name}.seed\"\ncredential = \"keys/{role}.{name}.cred\"\n\
                 issuers = [\"keys/issuer.pub\"]\ntls_ca = \"keys/ca.pem\"\ndiscovery_timeout = 2\n\
                 discovery_history = \"{name}.discovery.json\"\n"
            ),
        )
    };
    let prov_client = client("prov1", "provisioner");
    let alice = client("alice", "client");
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let ports = receivers(inbox);
    let config = provisioner_config(d, "secure", ports, "");
    let mut command = cohort();
    command
        .args(["provision", "run", "--provision-config"])
        .arg(&config)
        .arg("-c")
        .arg(&prov_client)
        .env("COHORT_LOG", "info");
    let provisioner = Daemon::spawn(command);
    let status = |config: &Path| -> BTreeMap<String, Value> {
        let output = cohort()
            .args(["provision", "status", "-j", "--provision-config"])
            .arg(config)
            .arg("-c")
            .arg(&prov_client)
            .output()
            .unwrap();
        let nodes: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
        nodes.into_iter().map(|n| (n["node"].as_str().unwrap_or("").to_owned(), n)).collect()
    };
    // sec2's bootstrap run is in flight when the broker restarts.
    wait_for_mark(&d.join("sec2/started-bootstrap"), &provisioner);
    broker.signal("TERM");
    assert!(broker.wait_exit(Duration::from_secs(10)).is_some());
    broker = secure_broker(&keys_dir, addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let now = status(&config);
        if ["sec1", "sec2"].iter().all(|n| now.get(*n).is_some_and(|p| p["state"] == "done")) {
            break now;
        }
        assert!(Instant::now() < deadline, "not done: {now:#?}\n{}", provisioner.stderr_text());
        std::thread::sleep(Duration::from_millis(300));
    };
    let signed = lines_of(&d.join("signed.log"));
    for node in ["sec1", "sec2"] {
        assert_eq!(count(&signed, &format!("{node} ")), 1, "{node} signed once: {signed:?}");
        assert_eq!(done[node]["master"], "sec-m");
    }
    // An ordinary client credential is refused by the policy: it cannot lock a node.
    let refused = cohort()
        .args(["rpc", "provision", "lock", "owner=alice", "ttl=60", "-I", "sec1", "-j", "-c"])
        .arg(&alice)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(!text.contains("\"statuscode\":0"), "alice must not lock: {text}");
    drop(broker);
}
