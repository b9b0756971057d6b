//! The collective end to end: a broker, three `cohort daemon` processes with their own fact
//! and class files, and the CLI, run once on our broker and once on nats-server.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, lines, stderr, stdout};

const NODES: &[NodeSpec] = &[
    NodeSpec {
        name: "web1.example.com",
        fact_file: "facts.yaml",
        facts: "country: uk\nrole: web\nos:\n  family: Debian\n  release:\n    major: \"12\"\ncpus: 4\n",
        classes: "role::web\nprofile::base\n",
        collectives: &["cohort", "eu"],
    },
    NodeSpec {
        name: "web2.example.com",
        fact_file: "facts.json",
        facts: r#"{"country": "us", "role": "web", "os": {"family": "RedHat", "release": {"major": "9"}}, "cpus": 8}"#,
        classes: "role::web\nprofile::base\n",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "db1.example.com",
        fact_file: "facts.txt",
        facts: "country=de\nrole=db\ncpus=16\nos.release.major=8\n",
        classes: "role::db\nprofile::base\nbacula::node\n",
        collectives: &["cohort", "eu"],
    },
];

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_cohort_broker {
            $( #[test] fn $name() { super::$name(crate::fleet::BrokerKind::Cohort); } )*
        }
        mod on_nats_server {
            $( #[test] fn $name() { super::$name(crate::fleet::BrokerKind::Nats); } )*
        }
    };
}

both!(collective_end_to_end);

#[track_caller]
fn find(fleet: &Fleet, filter: &[&str], expect: &[&str]) {
    let mut args = vec!["find"];
    args.extend_from_slice(filter);
    let output = fleet.cli(&args);
    let mut want: Vec<String> = expect.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(lines(&output), want, "find {filter:?}: {}", stderr(&output));
    assert_eq!(
        output.status.code(),
        Some(if expect.is_empty() { 1 } else { 0 }),
        "find {filter:?}"
    );
}

fn rpc_json(fleet: &Fleet, args: &[&str]) -> (Value, Option<i32>) {
    let mut full = vec!["rpc"];
    full.extend_from_slice(args);
    full.push("-j");
    let output = fleet.cli(&full);
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap_or_else(|err| {
        panic!(
            "rpc {args:?} printed invalid JSON ({err}): {}\n{}",
            stdout(&output),
            stderr(&output)
        )
    });
    (json, output.status.code())
}

fn statuses(json: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = json["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["sender"].as_str().unwrap().to_owned(), r["statuscode"].as_u64().unwrap()))
        .collect();
    out.sort();
    out
}

/// One fleet per broker, many checks: starting daemons is the slow part.
fn collective_end_to_end(kind: BrokerKind) {
    let mut fleet = Fleet::start(kind, NODES);
    let all = ["web1.example.com", "web2.example.com", "db1.example.com"];

    // Every node registers on cohort.registration (every second in these tests).
    let registered = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures::StreamExt;
        let client = async_nats::connect(&fleet.url).await.unwrap();
        let mut registrations = client.subscribe("cohort.registration").await.unwrap();
        let mut seen = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < 3 {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, registrations.next()).await
            else {
                break;
            };
            let registration = cohort_proto::Registration::from_bytes(&message.payload).unwrap();
            seen.insert(registration.identity.to_string(), registration);
        }
        seen
    });
    assert_eq!(
        registered.keys().map(String::as_str).collect::<Vec<_>>(),
        ["db1.example.com", "web1.example.com", "web2.example.com"]
    );
    let db1 = &registered["db1.example.com"];
    assert_eq!(db1.classes, ["role::db", "profile::base", "bacula::node"]);
    assert_eq!(db1.facts["country"], "de");
    assert!(db1.agents.iter().any(|a| a.as_str() == "shell"));
    assert_eq!(db1.collectives.iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["cohort", "eu"]);

    // ping: every node, with times, then the statistics.
    let output = fleet.cli(&["ping"]);
    let text = stdout(&output);
    for node in all {
        assert!(text.lines().any(|l| l.starts_with(node) && l.contains("time=")), "{text}");
    }
    assert!(text.contains("---- ping statistics ----\n3 replies max: "), "{text}");

    // Every filter kind.
    find(&fleet, &[], &all);
    find(&fleet, &["-F", "country=uk"], &["web1.example.com"]);
    find(&fleet, &["-F", "country!=uk"], &["web2.example.com", "db1.example.com"]);
    find(&fleet, &["-F", "cpus>=8"], &["web2.example.com", "db1.example.com"]);
    find(&fleet, &["-F", "cpus<5"], &["web1.example.com"]);
    find(&fleet, &["-F", "os.release.major>=10"], &["web1.example.com"]);
    find(&fleet, &["-F", "country=~^(u|d)"], &all);
    find(&fleet, &["-F", "role=/^w/"], &["web1.example.com", "web2.example.com"]);
    find(&fleet, &["-C", "role::web"], &["web1.example.com", "web2.example.com"]);
    find(&fleet, &["-C", "/^bacula/"], &["db1.example.com"]);
    find(
        &fleet,
        &["-C", "role::web", "-C", "profile::base"],
        &["web1.example.com", "web2.example.com"],
    );
    find(&fleet, &["-I", "db1.example.com"], &["db1.example.com"]);
    find(
        &fleet,
        &["-I", "db1.example.com", "-I", "web2.example.com"],
        &["db1.example.com", "web2.example.com"],
    );
    find(
        &fleet,
        &["-I", "/^web/", "-I", "web1.example.com"],
        &["web1.example.com", "web2.example.com"],
    );
    find(&fleet, &["-A", "shell"], &all);
    find(&fleet, &["-A", "nrpe"], &all);
    find(&fleet, &["-A", "puppetd"], &[]);
    find(&fleet, &["-W", "role::web country=us"], &["web2.example.com"]);
    find(
        &fleet,
        &["-S", "role::db or (country=uk and cpus>2)"],
        &["db1.example.com", "web1.example.com"],
    );
    find(&fleet, &["-S", "not role::web"], &["db1.example.com"]);
    find(&fleet, &["-S", "role::web and country!=uk"], &["web2.example.com"]);
    find(&fleet, &["-T", "eu"], &["web1.example.com", "db1.example.com"]);
    find(&fleet, &["-F", "country=fr"], &[]);

    // A filter that does not parse is refused before anything is sent.
    let output = fleet.cli(&["find", "-S", "country=uk role::web"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("invalid -S filter"), "{}", stderr(&output));

    // rpc with an external agent written in shell: converted, validated, summarized.
    let output = fleet.cli(&["rpc", "shell", "echo", "message=hello there", "-C", "role::web"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(
        text.contains("web1.example.com\n   Echo: hello there\n   Node: web1.example.com"),
        "{text}"
    );
    assert!(text.contains("Summary of Echo:\n\n   hello there = 2"), "{text}");
    assert!(text.contains("Finished processing 2 / 2 hosts in "), "{text}");

    // Client-side validation stops bad input before it is sent.
    let output = fleet.cli(&["rpc", "shell", "echo", "message=NOT LOWER"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("value should match ^[a-z ]+$"), "{}", stderr(&output));
    let output = fleet.cli(&["rpc", "shell", "nope"]);
    assert!(
        stderr(&output)
            .contains("Attempted to call action nope for shell but it's not declared in the DDL")
    );

    // Node-side status codes: a client without the DDL sends anything, and the nodes judge it.
    let no_ddl = fleet.dir.path().join("no-ddl.toml");
    std::fs::write(&no_ddl, format!("brokers = [{:?}]\n", fleet.url)).unwrap();
    let node_side = |args: &[&str]| {
        let mut full = vec!["rpc"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-I", "web1.example.com", "-j", "-c"]);
        let output = crate::process::cohort().args(&full).arg(&no_ddl).output().unwrap();
        let json: Value = serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
        (
            json["replies"][0]["statuscode"].as_u64().unwrap(),
            json["replies"][0]["statusmsg"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(node_side(&["shell", "echo", "message=fine"]).0, 0);
    let (code, message) = node_side(&["shell", "abort"]);
    assert_eq!((code, message.as_str()), (1, "refused to do it"));
    assert_eq!(node_side(&["shell", "nope"]).0, 2);
    assert_eq!(node_side(&["shell", "echo"]).0, 3);
    let (code, message) = node_side(&["shell", "echo", "message=BAD"]);
    assert_eq!(code, 4, "{message}");
    assert!(message.contains("should match"), "{message}");
    let (code, message) = node_side(&["shell", "crash"]);
    assert_eq!(code, 5);
    assert!(
        message.contains("exited with status 3") && message.contains("something broke"),
        "{message}"
    );
    let (code, message) = node_side(&["shell", "garbage"]);
    assert_eq!(code, 5);
    assert!(message.contains("not JSON"), "{message}");

    // A hanging agent is killed at its DDL timeout (2 s) with its whole process group; the
    // daemon keeps serving.
    let pidfile = fleet.dir.path().join("sleeper.pid");
    let started = Instant::now();
    let (json, code) = rpc_json(
        &fleet,
        &["shell", "hang", &format!("pidfile={}", pidfile.display()), "-I", "db1.example.com"],
    );
    assert_eq!(code, Some(2));
    assert_eq!(statuses(&json), [("db1.example.com".to_owned(), 5)]);
    assert!(json["replies"][0]["statusmsg"].as_str().unwrap().contains("timed out"), "{json}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let sleeper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{sleeper}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "sleeper {sleeper} survived its agent: {stat}"
    );
    let (json, _) = rpc_json(&fleet, &["rpcutil", "ping", "-I", "db1.example.com"]);
    assert_eq!(statuses(&json), [("db1.example.com".to_owned(), 0)]);

    // Exit codes 3 (discovered, nobody answered in time) and 4 (no discovery, no answer).
    let pidfile2 = fleet.dir.path().join("sleeper2.pid");
    let output = fleet.cli(&[
        "rpc",
        "shell",
        "hang",
        &format!("pidfile={}", pidfile2.display()),
        "-C",
        "role::db",
        "-t",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    assert!(stdout(&output).contains("Finished processing 0 / 1 hosts"), "{}", stdout(&output));
    let output = fleet.cli(&["rpc", "rpcutil", "ping", "-I", "ghost.example.com", "-t", "1"]);
    assert_eq!(output.status.code(), Some(4), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("No response from:\n\n    ghost.example.com"),
        "{}",
        stdout(&output)
    );

    // rpcutil through the CLI, JSON output parsed.
    let (json, code) = rpc_json(&fleet, &["rpcutil", "get_fact", "fact=os.release.major"]);
    assert_eq!(code, Some(0));
    assert_eq!(json["stats"]["responses"], 3);
    assert_eq!(json["stats"]["no_responses"], serde_json::json!([]));
    let summary = &json["summaries"][0];
    assert_eq!(summary["function"], "summary");
    let (json, _) = rpc_json(&fleet, &["rpcutil", "inventory", "-I", "db1.example.com"]);
    assert_eq!(
        json["replies"][0]["data"]["classes"],
        serde_json::json!(["role::db", "profile::base", "bacula::node"])
    );
    assert_eq!(json["replies"][0]["data"]["facts"]["cpus"], "16");

    // Fact files are re-read on change, without a restart.
    std::fs::write(&fleet.node("web1.example.com").facts, "country: fr\nrole: web\ncpus: 4\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = fleet.cli(&["find", "-F", "country=fr"]);
        if lines(&output) == ["web1.example.com"] {
            break;
        }
        assert!(Instant::now() < deadline, "fact change not picked up");
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGHUP rescans agents: a new agent directory becomes callable.
    let new_agent = fleet.agents_dir.join("hello");
    std::fs::create_dir_all(&new_agent).unwrap();
    std::fs::write(
        new_agent.join("hello.json"),
        r#"{"metadata": {"name": "hello", "description": "says hello", "timeout": 2},
            "actions": [{"action": "greet", "display": "always", "output": {"greeting": {"display_as": "Greeting"}}}]}"#,
    )
    .unwrap();
    let script = new_agent.join("hello");
    std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\necho '{\"data\":{\"greeting\":\"hi\"}}'\n")
        .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for node in &fleet.nodes {
        node.daemon.as_ref().unwrap().signal("HUP");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = fleet.cli(&["find", "-A", "hello"]);
        if lines(&output).len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "agents not rescanned on SIGHUP");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (json, code) = rpc_json(&fleet, &["hello", "greet"]);
    assert_eq!(code, Some(0));
    assert_eq!(json["replies"][0]["data"]["greeting"], "hi");

    // A node stopped before a request is listed under "No response from:".
    // Discovery is done with -I literal names, so the stopped node is expected.
    fleet.stop_node("web2.example.com");
    let output = fleet.cli(&[
        "rpc",
        "rpcutil",
        "ping",
        "-I",
        "web1.example.com",
        "-I",
        "web2.example.com",
        "-t",
        "2",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("Finished processing 1 / 2 hosts"), "{text}");
    assert!(text.contains("No response from:\n\n    web2.example.com"), "{text}");
    let (json, _) = rpc_json(
        &fleet,
        &["rpcutil", "ping", "-I", "web1.example.com", "-I", "web2.example.com", "-t", "2"],
    );
    assert_eq!(json["stats"]["no_responses"], serde_json::json!(["web2.example.com"]));
    find(&fleet, &[], &["web1.example.com", "db1.example.com"]);

    // The broker goes away and comes back: the nodes reconnect and answer again, unattended.
    fleet.restart_broker();
    fleet.wait_for(2);
    find(&fleet, &["-F", "country=de"], &["db1.example.com"]);
    // Each node said in its log which broker it lost and that it got it back.
    for node in fleet.nodes.iter().filter(|node| node.daemon.is_some()) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = node.daemon.as_ref().unwrap().stderr_text();
            if log.contains(&format!("lost the broker at {}", fleet.url))
                && log.contains("reconnected to the broker at")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
