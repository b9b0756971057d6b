//! A three-member nats-server cluster (routes on loopback) with daemons spread over its
//! members: a member killed (SIGKILL) in the middle of a call leaves the call either complete
//! or naming exactly the nodes whose replies are missing, never silently short; the nodes fail
//! over on their own, and the next call is complete. Slow (about a minute): runs with
//! `COHORT_SLOW_TESTS=1`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cohort_test_support::{NatsServer, free_port};
use serde_json::Value;

use crate::process::{Daemon, cohort, executable, slow_tests, write};

const NODES: usize = 6;

/// Member `index` of the cluster whose client ports and route ports are given.
fn member(index: usize, ports: &[u16], routes: &[u16]) -> NatsServer {
    let others: Vec<String> = routes
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, port)| format!("\"nats-route://127.0.0.1:{port}\""))
        .collect();
    let config = format!(
        "server_name: m{index}\ncluster {{\n  name: cohort\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
        routes[index],
        others.join(", ")
    );
    NatsServer::start_on(&config, ports[index])
}

#[test]
fn a_member_killed_mid_call_is_reported_or_survived_and_the_fleet_fails_over() {
    if !slow_tests() {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 to run the cluster failover test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut members: Vec<Option<NatsServer>> =
        (0..3).map(|index| Some(member(index, &ports, &routes))).collect();
    let urls: Vec<String> = ports.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect();

    // An agent that answers after a second, so a member can die while the call is open.
    let agent = dir.path().join("agents/slow");
    std::fs::create_dir_all(&agent).unwrap();
    write(
        &agent,
        "slow.json",
        r#"{"metadata": {"name": "slow", "description": "answers late", "timeout": 20},
            "actions": [{"action": "wait", "display": "always", "output": {}}]}"#,
    );
    executable(&agent.join("slow"), "#!/bin/sh\ncat >/dev/null\nsleep 1\necho '{\"data\":{}}'\n");

    // Each node lists the members starting at a different one (async-nats also shuffles).
    let names: Vec<String> = (0..NODES).map(|n| format!("n{n}.example.net")).collect();
    let _daemons: Vec<Daemon> = names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let mut command = cohort();
            command.args(["daemon", "--insecure", "--identity", name]);
            for shift in 0..3 {
                command.args(["--broker", &urls[(n + shift) % 3]]);
            }
            command.arg("--agents-dir").arg(dir.path().join("agents"));
            command.env("COHORT_LOG", "info");
            Daemon::spawn(command)
        })
        .collect();
    let client = write(
        dir.path(),
        "client.toml",
        &format!(
            "brokers = {urls:?}\nagents_dir = {:?}\ndiscovery_timeout = 2\ndiscovery_history = false\n",
            dir.path().join("agents").display().to_string()
        ),
    );
    let cli = |args: &[&str]| cohort().args(args).arg("-c").arg(&client).output().unwrap();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let wait_for_all = |why: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = cli(&["find"]);
            let found: BTreeSet<String> =
                String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
            if found == all {
                return;
            }
            assert!(Instant::now() < deadline, "{why}: only {found:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for_all("the fleet never formed");

    for round in 0..4 {
        let victim = round % 3;
        let call = cohort()
            .args(["rpc", "slow", "wait", "-j", "-t", "20", "-c"])
            .arg(&client)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        let port = ports[victim];
        if let Some(mut server) = members[victim].take() {
            server.stop();
        }
        let killed = Instant::now();
        let output = call.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let doc: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("round {round}: {err}: {stderr}"));
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
        // Complete, or every node accounted for: answered, or named as missing.
        assert!(replied.is_disjoint(&missing), "round {round}: {doc}");
        let accounted: BTreeSet<String> = replied.union(&missing).cloned().collect();
        let discovered = doc["stats"]["discovered"].as_u64().unwrap_or(0);
        if output.status.code() == Some(0) {
            assert_eq!(replied, all, "round {round}: exit 0 but short: {doc}\n{stderr}");
        } else {
            assert!(matches!(output.status.code(), Some(2 | 5)), "round {round}: {stderr}");
            assert!(
                accounted == all || usize::try_from(discovered).unwrap_or(0) < NODES,
                "round {round}: nodes neither answered nor named: {doc}\n{stderr}"
            );
            if output.status.code() == Some(5) {
                assert!(stderr.contains("lost the broker"), "round {round}: {stderr}");
            }
        }
        eprintln!(
            "round {round}: exit {:?}, {} replies, missing {missing:?}",
            output.status.code(),
            replied.len()
        );
        // The member comes back; every node is reachable again, and a call is complete.
        members[victim] = Some(member(victim, &ports, &routes));
        assert_eq!(ports[victim], port);
        wait_for_all(&format!("round {round}: the fleet did not come back"));
        eprintln!(
            "round {round}: member m{victim} killed; fleet whole again after {:?}",
            killed.elapsed()
        );
        let output = cli(&["rpc", "slow", "wait", "-j", "-t", "20"]);
        let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(output.status.code(), Some(0), "round {round}: {doc}");
        assert_eq!(doc["replies"].as_array().unwrap().len(), NODES, "round {round}: {doc}");
    }
}
