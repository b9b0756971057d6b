//! The client core as operators meet it, against real daemons on our broker: standard input
//! read only when nothing else names the nodes (and never a silent hang), `cohort demo`
//! independent of the environment, calls that target only nodes with the agent, aggregate
//! summaries over every reply that carries data, and one operator table for `-F`, `-W`, `-S`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, fixtures, lines, stderr, stdout};
use crate::process::{cohort, write};

const NODES: &[NodeSpec] = &[
    NodeSpec {
        name: "one.example.com",
        fact_file: "facts.yaml",
        facts: "cpus: 1\ncountry: uk\n",
        classes: "role::app\n",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "two.example.com",
        fact_file: "facts.yaml",
        facts: "cpus: 2\ncountry: us\n",
        classes: "role::app\n",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "four.example.com",
        fact_file: "facts.yaml",
        facts: "cpus: 4\ncountry: uk\n",
        classes: "role::db\n",
        collectives: &["cohort"],
    },
];

fn shell(fleet: &Fleet, script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("COHORT", env!("CARGO_BIN_EXE_cohort"))
        .env("CONFIG", &fleet.client_config)
        .env("NO_COLOR", "1")
        .current_dir(fleet.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts `command` with all three streams piped (standard input open, and silent until
/// written).
fn piped(command: &mut Command) -> std::process::Child {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for `child` up to `limit`; `None` if it is still running then.
fn wait_for(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_string(&mut text).unwrap();
    }
    text
}

#[test]
fn standard_input_is_read_only_when_nothing_else_names_the_nodes() {
    let fleet = Fleet::start(BrokerKind::Cohort, NODES);

    // A `while read` loop: `-I "$h"` names the node, so the loop's input is left alone and
    // the loop runs once per host.
    write(fleet.dir.path(), "hosts", "one.example.com\ntwo.example.com\nfour.example.com\n");
    let output = shell(
        &fleet,
        r#"while read h; do "$COHORT" rpc rpcutil ping -I "$h" -c "$CONFIG" --np; done < hosts"#,
    );
    let text = stdout(&output);
    assert_eq!(
        text.matches("Finished processing 1 / 1 hosts").count(),
        3,
        "{text}{}",
        stderr(&output)
    );

    // Chaining through a real pipe: the second command starts long before the first writes,
    // waits for it, and acts on exactly the nodes the first one heard from.
    let output = shell(
        &fleet,
        r#""$COHORT" rpc rpcutil ping -F country=uk -j -c "$CONFIG" | "$COHORT" rpc rpcutil ping -j -c "$CONFIG""#,
    );
    let doc: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
    let mut senders: Vec<&str> =
        doc["replies"].as_array().unwrap().iter().map(|r| r["sender"].as_str().unwrap()).collect();
    senders.sort_unstable();
    assert_eq!(senders, ["four.example.com", "one.example.com"], "{doc}");

    // An open pipe that never says anything: with a filter, or --dm broadcast, it is not read,
    // and the command ends as soon as the fleet has answered.
    for args in [&["find", "-F", "country=uk"][..], &["find", "--dm", "broadcast"][..]] {
        let mut child = piped(cohort().args(args).arg("-c").arg(&fleet.client_config));
        let silent = child.stdin.take();
        let status = wait_for(&mut child, Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "{args:?} hung on a silent pipe");
        drop(silent);
        let found = read_all(child.stdout.take());
        assert!(found.contains("one.example.com"), "{args:?}: {found}");
    }

    // Nothing else names the nodes: the pipe is the node list. After a second of silence the
    // command says so on stderr, and how not to; it then reads what comes.
    let mut child = piped(cohort().args(["find", "-c"]).arg(&fleet.client_config));
    let mut pipe = child.stdin.take().unwrap();
    assert!(
        wait_for(&mut child, Duration::from_millis(2500)).is_none(),
        "did not wait for the pipe"
    );
    pipe.write_all(b"two.example.com\n").unwrap();
    drop(pipe);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "two.example.com\n");
    let hint = stderr(&output);
    assert!(
        hint.contains("Reading node names from standard input") && hint.contains("--dm broadcast"),
        "{hint}"
    );
}

#[test]
fn the_demo_ignores_the_environment_and_standard_input() {
    let mut child = piped(
        cohort()
            .args(["demo", "--nodes", "8"])
            .env("COHORT_BROKER", "tls://127.0.0.1:1")
            .env("COHORT_CONFIG", "/nonexistent/client.toml"),
    );
    let silent = child.stdin.take();
    let status = wait_for(&mut child, Duration::from_secs(90));
    drop(silent);
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    assert!(status.is_some_and(|s| s.success()), "demo failed or hung:\n{out}\n{err}");
    assert!(out.contains("$ cohort ping") && out.contains("8 replies"), "{out}\n{err}");
}

/// Agents dir with the fleet's `shell` agent and a `state` agent whose `check` action answers
/// status 1 with data on nodes named `warn*`.
fn state_agents(dir: &Path) -> std::path::PathBuf {
    let agents = dir.join("state-agents");
    let state = agents.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(agents.join("shell")).unwrap();
    for file in ["shell", "shell.json"] {
        std::fs::copy(fixtures().join("agents/shell").join(file), agents.join("shell").join(file))
            .unwrap();
    }
    write(
        &state,
        "state.json",
        r#"{
  "metadata": {"name": "state", "description": "A check that warns on some nodes", "author": "Cohort tests", "license": "Apache-2.0", "version": "1.0.0", "url": "https://example.invalid", "timeout": 2},
  "actions": [{
    "action": "check",
    "description": "Report the node's level",
    "display": "always",
    "output": {"level": {"description": "The level", "display_as": "Level"}},
    "aggregate": [{"function": "summary", "args": ["level"]}]
  }]
}"#,
    );
    let script = write(
        &state,
        "state",
        "#!/bin/sh\ncat >/dev/null\ncase \"$NODE_NAME\" in\n\
         warn*) printf '{\"statuscode\":1,\"statusmsg\":\"level is warning\",\"data\":{\"level\":\"warning\"}}\\n' ;;\n\
         *) printf '{\"statuscode\":0,\"statusmsg\":\"OK\",\"data\":{\"level\":\"ok\"}}\\n' ;;\nesac\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    agents
}

#[test]
fn calls_target_nodes_with_the_agent_and_aggregate_every_reply_with_data() {
    let mut fleet = Fleet::start(BrokerKind::Cohort, NODES);
    let agents = state_agents(fleet.dir.path());
    for name in ["warn.example.com", "fine.example.com"] {
        let spec = NodeSpec {
            name,
            fact_file: "facts.yaml",
            facts: "cpus: 8\ncountry: de\n",
            classes: "role::check\n",
            collectives: &["cohort"],
        };
        fleet.add_node_with_agents(&spec, &agents);
    }
    fleet.wait_for(NODES.len() + 2);
    let config = fleet.dir.path().join("client.toml");
    let with_state = write(
        fleet.dir.path(),
        "state-client.toml",
        &format!(
            "{}agents_dir = {:?}\n",
            std::fs::read_to_string(&config).unwrap().replace("agents_dir", "# agents_dir"),
            agents.display().to_string()
        ),
    );
    let run = |args: &[&str]| cohort().args(args).arg("-c").arg(&with_state).output().unwrap();

    // Only the two nodes with `state` are discovered: no false "No response from".
    let output = run(&["rpc", "state", "check", "-j"]);
    let doc: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
    let stats = &doc["stats"];
    assert_eq!(stats["discovered"], 2, "{doc}");
    assert_eq!(stats["responses"], 2, "{doc}");
    assert_eq!(stats["no_responses"].as_array().unwrap().len(), 0, "{doc}");
    // The status-1 reply carries data and is summarized with the status-0 one.
    let summary = &doc["summaries"][0];
    let text = summary.to_string();
    assert!(text.contains("warning") && text.contains("ok"), "{summary}");
    assert_eq!(output.status.code(), Some(2), "one reply failed: {}", stderr(&output));

    let output = run(&["rpc", "state", "check", "--np"]);
    let text = stdout(&output);
    assert!(text.contains("Summary of Level"), "{text}");
    assert!(text.contains("warning = 1") && text.contains("ok = 1"), "{text}");
    assert!(!text.contains("No response from"), "{text}");
    assert!(text.contains("Finished processing 2 / 2 hosts"), "{text}");
}

#[test]
fn operators_mean_the_same_in_every_filter() {
    let fleet = Fleet::start(BrokerKind::Cohort, NODES);
    let find = |flag: &str, expr: &str| {
        let output = fleet.cli(&["find", flag, expr]);
        assert!(output.status.success() || output.stdout.is_empty(), "{}", stderr(&output));
        lines(&output)
    };
    for (op, expected) in [
        ("=>", vec!["four.example.com", "two.example.com"]),
        (">=", vec!["four.example.com", "two.example.com"]),
        ("=<", vec!["one.example.com", "two.example.com"]),
        ("<=", vec!["one.example.com", "two.example.com"]),
        (">", vec!["four.example.com"]),
        ("<", vec!["one.example.com"]),
    ] {
        let expr = format!("cpus{op}2");
        for flag in ["-F", "-W", "-S"] {
            assert_eq!(find(flag, &expr), expected, "{flag} {expr}");
        }
    }
}

#[test]
fn invoked_as_mco_the_client_commands_work_with_the_same_options() {
    let fleet = Fleet::start(BrokerKind::Cohort, NODES);
    let mco = fleet.dir.path().join("mco");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cohort"), &mco).unwrap();
    let run = |args: &[&str]| {
        Command::new(&mco)
            .args(args)
            .arg("-c")
            .arg(&fleet.client_config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = run(&["ping"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).matches(" time=").count(), NODES.len(), "{}", stdout(&output));
    let output = run(&["find", "-F", "country=uk"]);
    assert_eq!(lines(&output), ["four.example.com", "one.example.com"], "{}", stderr(&output));
    let output = run(&["rpc", "rpcutil", "ping", "-W", "role::app", "--np"]);
    assert!(stdout(&output).contains("Finished processing 2 / 2 hosts"), "{}", stdout(&output));
    let output = run(&["facts", "country"]);
    let text = stdout(&output);
    assert!(text.contains("Report for fact: country") && text.contains("found 2 times"), "{text}");
    let output = run(&["inventory", "two.example.com"]);
    assert!(stdout(&output).contains("Inventory for two.example.com:"), "{}", stderr(&output));
    // The node has the nrpe agent but no such command: every node answers UNKNOWN.
    let output = run(&["nrpe", "check_nothing", "--np"]);
    assert!(stdout(&output).contains("check_nothing NRPE results"), "{}", stdout(&output));
    // Messages name the command as it was invoked.
    let output = Command::new(&mco).arg("--help").output().unwrap();
    assert!(stdout(&output).contains("Usage: mco"), "{}", stdout(&output));
}
