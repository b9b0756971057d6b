//! A network partition, made with a network namespace and a veth pair this test creates: a
//! two-member nats-server cluster, member m0 on loopback with 40 daemons and the client, member
//! m1 on the veth's host address with 20 daemons inside the namespace. Taking the veth down cuts
//! those 20 off (no FIN, no RST: packets just stop). A call to all 60 named nodes then answers
//! from the 40 and names exactly the 20 under "No response from"; after the link comes back up,
//! every node answers again without any process being restarted. Needs root and `ip`; slow
//! (about a minute): runs with `COHORT_SLOW_TESTS=1`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use cohort_test_support::{NatsServer, cluster_member, free_port};
use serde_json::Value;

use crate::process::{Daemon, cohort, slow_tests, write};

const MAJORITY: usize = 40;
const MINORITY: usize = 20;

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|err| format!("ip: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)))
    }
}

/// A network namespace joined to this one by a veth pair, host side `host_ip`, namespace side
/// `ns_ip` (a /30 of this test's own). Deleted on drop, which also deletes the pair.
struct Namespace {
    name: String,
    host_link: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let id = std::process::id() % 10_000;
        // A /30 in 10.213.0.0/16 chosen by our PID, so two runs at once do not collide.
        let net = (id % 16_000) * 4;
        let octets = |host: u32| {
            let addr = (10 << 24) | (213 << 16) | (net + host);
            Ipv4Addr::from(addr)
        };
        let namespace = Namespace {
            name: format!("cohort-part-{id}"),
            host_link: format!("cph{id}"),
            host_ip: octets(1),
            ns_ip: octets(2),
        };
        let ns_link = format!("cpn{id}");
        // Left over from a run with our PID that was killed before its clean-up: start afresh.
        let _ = ip(&["link", "del", &namespace.host_link]);
        let _ = ip(&["netns", "del", &namespace.name]);
        ip(&["netns", "add", &namespace.name])?;
        ip(&["link", "add", &namespace.host_link, "type", "veth", "peer", "name", &ns_link])?;
        ip(&["link", "set", &ns_link, "netns", &namespace.name])?;
        ip(&["addr", "add", &format!("{}/30", namespace.host_ip), "dev", &namespace.host_link])?;
        ip(&["link", "set", &namespace.host_link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &namespace.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", namespace.ns_ip), "dev", &ns_link])?;
        inside(&["link", "set", &ns_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Cuts (`false`) or heals (`true`) the link, as a pulled cable would.
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_link, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_partitioned_minority_is_named_and_comes_back_when_the_network_heals() {
    if !slow_tests("run the network partition test") {
        return;
    }
    let namespace = match Namespace::create() {
        Ok(namespace) => namespace,
        Err(err) if !nix::unistd::geteuid().is_root() => {
            // CI runs as root; elsewhere say why this did not run rather than fail on setup.
            eprintln!("skipped: network namespaces need root: {err}");
            return;
        }
        Err(err) => panic!("cannot create the network namespace: {err}"),
    };
    let dir = tempfile::tempdir().unwrap();

    // The cluster: routes on loopback; m1 serves clients on the veth's host address. m1 PINGs
    // every second, so it drops the cut-off connections while the partition lasts and the
    // nodes must really reconnect after it.
    let routes = [free_port(), free_port()];
    let m0 = NatsServer::start(&cluster_member(0, &routes));
    let m1_addr = SocketAddr::from((namespace.host_ip, free_port()));
    let m1_config = format!("ping_interval: \"1s\"\nping_max: 2\n{}", cluster_member(1, &routes));
    let m1 = NatsServer::start_at(&m1_config, m1_addr);

    let spawn = |name: &str, url: &str, inside: bool| {
        let mut command = if inside {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &namespace.name, env!("CARGO_BIN_EXE_cohort")])
                .env("NO_COLOR", "1");
            command
        } else {
            cohort()
        };
        command.args(["daemon", "--insecure", "--identity", name, "--broker", url]);
        command.env("COHORT_LOG", "info");
        Daemon::spawn(command)
    };
    let majority: Vec<String> = (0..MAJORITY).map(|n| format!("a{n:02}.example.net")).collect();
    let minority: Vec<String> = (0..MINORITY).map(|n| format!("b{n:02}.example.net")).collect();
    let mut daemons: Vec<Daemon> = Vec::new();
    for name in &majority {
        daemons.push(spawn(name, &m0.url(), false));
    }
    for name in &minority {
        daemons.push(spawn(name, &format!("nats://{m1_addr}"), true));
    }

    let client = write(
        dir.path(),
        "client.toml",
        &format!("brokers = [{:?}]\ndiscovery_timeout = 2\ndiscovery_history = false\n", m0.url()),
    );
    let all: BTreeSet<String> = majority.iter().chain(&minority).cloned().collect();
    let nodes = write(
        dir.path(),
        "nodes.txt",
        &all.iter().map(|name| format!("{name}\n")).collect::<String>(),
    );
    let find = || {
        let output = cohort().args(["find", "-c"]).arg(&client).output().unwrap();
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect::<BTreeSet<_>>()
    };
    let wait_for_all = |why: &str| {
        let started = Instant::now();
        loop {
            let found = find();
            if found == all {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{why}: {} of {} found; missing {:?}\n--- m1:\n{}",
                found.len(),
                all.len(),
                all.difference(&found).collect::<Vec<_>>(),
                m1.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait_for_all("the fleet never formed");
    let rpc = |json: bool| {
        let mut command = cohort();
        command.args(["rpc", "rpcutil", "ping", "-t", "5", "--nodes"]).arg(&nodes);
        command.arg("-c").arg(&client);
        if json {
            command.arg("-j");
        }
        command.output().unwrap()
    };
    let output = rpc(true);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));

    // The partition.
    namespace.link(false);
    let cut = Instant::now();
    let output = rpc(true);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!("{err}: {}", String::from_utf8_lossy(&output.stderr));
    });
    let replied: BTreeSet<String> = doc["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reply| reply["sender"].as_str().unwrap().to_owned())
        .collect();
    let missing: BTreeSet<String> = doc["stats"]["no_responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(replied, majority.iter().cloned().collect(), "{doc}");
    assert_eq!(missing, minority.iter().cloned().collect(), "{doc}");
    assert_ne!(output.status.code(), Some(0), "a call missing 20 nodes must not succeed");
    // The text output names them, as an operator reads it.
    let output = rpc(false);
    let text = String::from_utf8_lossy(&output.stdout);
    let (_, named) = text.split_once("No response from:").unwrap_or_else(|| panic!("{text}"));
    for name in &minority {
        assert!(named.contains(name.as_str()), "{name} not named: {text}");
    }
    for name in &majority {
        assert!(!named.contains(name.as_str()), "{name} named but answered: {text}");
    }
    // Long enough for m1 to have dropped every cut-off connection (two missed PINGs at 1 s).
    while cut.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
    }

    // Healed: everyone is back, no process restarted.
    namespace.link(true);
    let back = wait_for_all("the partition healed but the minority did not come back");
    eprintln!("partition of {MINORITY} nodes healed; all {} back after {back:?}", all.len());
    let output = rpc(true);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{doc}");
    assert_eq!(doc["replies"].as_array().unwrap().len(), all.len(), "{doc}");
    for daemon in &mut daemons {
        assert!(daemon.child.try_wait().unwrap().is_none(), "{}", daemon.stderr_text());
    }
    // The cut-off nodes noticed and said so, and reconnected on their own.
    let reconnected = daemons[MAJORITY..]
        .iter()
        .filter(|daemon| daemon.stderr_text().contains("reconnected"))
        .count();
    assert_eq!(reconnected, MINORITY, "{}", daemons[MAJORITY].stderr_text());
    drop(daemons);
    drop(namespace);
}
