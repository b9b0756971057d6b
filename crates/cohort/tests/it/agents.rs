//! External agents' processes, end to end: a daemon runs an agent whose grandchild leaves the
//! process group with `setsid`; at the agent's timeout the grandchild dies too (its cgroup is
//! killed), and the node still answers.

use std::time::Duration;

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stderr};
use crate::process::{executable, write};

#[test]
fn a_setsid_grandchild_dies_at_the_agents_timeout() {
    let spec = NodeSpec {
        name: "n1.example.net",
        fact_file: "facts.yaml",
        facts: "role: web\n",
        classes: "",
        collectives: &[],
    };
    let mut fleet = Fleet::start(BrokerKind::Cohort, &[]);
    let agents = fleet.dir.path().join("escape-agents");
    let agent = agents.join("escape");
    std::fs::create_dir_all(&agent).unwrap();
    write(
        &agent,
        "escape.json",
        r#"{"metadata": {"name": "escape", "description": "leaves a process behind", "timeout": 1},
            "actions": [{"action": "leave", "display": "always",
              "input": {"pidfile": {"prompt": "Pid file", "description": "where", "type": "string",
                        "validation": "^/[\\w/.\\-]+$", "maxlength": 300, "optional": false}}}]}"#,
    );
    executable(
        &agent.join("escape"),
        "#!/bin/sh\n\
         pidfile=$(sed -n 's/.*\"pidfile\":\"\\([^\"]*\\)\".*/\\1/p')\n\
         setsid sleep 300 </dev/null >/dev/null 2>&1 &\n\
         echo $! > \"$pidfile\"\n\
         sleep 300\n",
    );
    fleet.add_node_with_agents(&spec, &agents);
    fleet.wait_for(1);

    let pidfile = fleet.dir.path().join("escaped.pid");
    let output = fleet.cli(&[
        "rpc",
        "escape",
        "leave",
        &format!("pidfile={}", pidfile.display()),
        "-j",
        "-t",
        "30",
    ]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let reply = &json["replies"][0];
    assert!(
        reply["statusmsg"].as_str().unwrap_or_default().contains("timed out"),
        "{json}\n{}",
        stderr(&output)
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let mut gone = false;
    for _ in 0..150 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(gone, "the agent's setsid grandchild {pid} outlived its timeout");
}
