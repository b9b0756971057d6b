//! External agents run as real processes: replies, the output cap, the timeout (with the whole
//! process group killed), and directories that must not load.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cohort_proto::{Collective, RequestId};

use super::*;
use crate::facts::Facts;
use crate::stats::Stats;

fn agent_dir(root: &Path, name: &str, script: &str, timeout: f64) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        format!(r#"{{"metadata": {{"name": "{name}", "description": "t", "timeout": {timeout}}}, "actions": [{{"action": "go"}}]}}"#),
    )
    .unwrap();
    let exe = dir.join(name);
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn context() -> Context {
    Context {
        identity: cohort_proto::Identity::new("n1").unwrap(),
        collectives: vec![Collective::new("cohort").unwrap()],
        facts: Arc::new(Facts::default()),
        agents: Vec::new(),
        stats: Arc::new(Stats::default()),
        started: std::time::SystemTime::now(),
        config_file: None,
        config_items: Arc::new(Map::new()),
    }
}

async fn call(dir: &Path, max_output: usize, timeout: Duration) -> Outcome {
    let agent = load(dir, max_output).unwrap();
    let request = ActionRequest {
        id: RequestId::from_random([1; 16]),
        agent: agent.ddl.metadata.name.clone(),
        action: "go".into(),
        data: Map::new(),
        caller: "user=t".into(),
        sender: "ops".into(),
        collective: Collective::new("cohort").unwrap(),
        timeout,
    };
    agent.call(&context(), request).await
}

#[tokio::test]
async fn reply_and_request_document() {
    let root = tempfile::tempdir().unwrap();
    // The agent echoes back the request it was given, so the test sees exactly what it gets.
    let dir = agent_dir(
        root.path(),
        "echo",
        "#!/bin/sh\nreq=$(cat)\nprintf '{\"statuscode\":0,\"data\":{\"request\":%s,\"action\":\"%s\"}}' \"$req\" \"$COHORT_ACTION\"\n",
        5.0,
    );
    let outcome = call(&dir, 1 << 20, Duration::from_secs(5)).await;
    assert_eq!(outcome.status, StatusCode::Ok, "{}", outcome.message);
    assert_eq!(outcome.message, "OK");
    assert_eq!(outcome.data["action"], "go");
    let request = &outcome.data["request"];
    assert_eq!(request["protocol"], AGENT_PROTOCOL);
    assert_eq!(request["caller"], "user=t");
    assert_eq!(request["timeout"], 5.0);
}

#[tokio::test]
async fn output_cap() {
    let root = tempfile::tempdir().unwrap();
    let dir =
        agent_dir(root.path(), "chatty", "#!/bin/sh\ncat >/dev/null\nyes aaaaaaaaaaaaaaaa\n", 5.0);
    let started = std::time::Instant::now();
    let outcome = call(&dir, 4096, Duration::from_secs(5)).await;
    assert_eq!(outcome.status, StatusCode::UnknownError);
    assert!(outcome.message.contains("exceeds 4096 bytes"), "{}", outcome.message);
    assert!(started.elapsed() < Duration::from_secs(3), "the agent was not stopped at the cap");
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let root = tempfile::tempdir().unwrap();
    let pidfile = root.path().join("child.pid");
    let script =
        format!("#!/bin/sh\ncat >/dev/null\nsleep 300 &\necho $! > {}\nwait\n", pidfile.display());
    let dir = agent_dir(root.path(), "sleepy", &script, 0.5);
    let outcome = call(&dir, 1 << 20, Duration::from_millis(500)).await;
    assert_eq!(outcome.status, StatusCode::UnknownError);
    assert!(outcome.message.contains("timed out"), "{}", outcome.message);
    let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "grandchild {child} survived: {stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn failures_are_status_five() {
    let root = tempfile::tempdir().unwrap();
    for (name, script, expect) in [
        (
            "crashes",
            "#!/bin/sh\necho oops >&2\nexit 7\n",
            "exited with status 7 without a reply: oops",
        ),
        ("killed", "#!/bin/sh\nkill -9 $$\n", "killed by signal 9"),
        ("notjson", "#!/bin/sh\necho hello\n", "not JSON"),
        ("badcode", "#!/bin/sh\necho '{\"statuscode\": 9}'\n", "invalid statuscode"),
        ("baddata", "#!/bin/sh\necho '{\"data\": [1]}'\n", "data is not a JSON object"),
        ("lies", "#!/bin/sh\necho '{\"statuscode\": 0}'\nexit 1\n", "after replying OK"),
    ] {
        let dir = agent_dir(root.path(), name, script, 5.0);
        let outcome = call(&dir, 1 << 20, Duration::from_secs(5)).await;
        assert_eq!(outcome.status, StatusCode::UnknownError, "{name}");
        assert!(outcome.message.contains(expect), "{name}: {}", outcome.message);
    }
}

#[test]
fn bad_directories_do_not_load_and_do_not_stop_the_others() {
    let root = tempfile::tempdir().unwrap();
    agent_dir(root.path(), "good", "#!/bin/sh\necho '{}'\n", 5.0);
    let mismatch = agent_dir(root.path(), "named", "#!/bin/sh\n", 5.0);
    std::fs::write(
        mismatch.join("named.json"),
        r#"{"metadata": {"name": "other", "description": "", "timeout": 1}}"#,
    )
    .unwrap();
    let not_exec = agent_dir(root.path(), "noexec", "#!/bin/sh\n", 5.0);
    std::fs::set_permissions(not_exec.join("noexec"), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let broken = agent_dir(root.path(), "broken", "#!/bin/sh\n", 5.0);
    std::fs::write(broken.join("broken.json"), "{").unwrap();
    std::fs::create_dir_all(root.path().join("empty")).unwrap();
    let (agents, errors) = scan(root.path(), 1 << 20);
    let names: Vec<&str> = agents.iter().map(|a| a.ddl.metadata.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("names agent \"other\"")), "{messages:#?}");
    assert!(
        messages.iter().any(|m| m.contains("noexec") && m.contains("not an executable")),
        "{messages:#?}"
    );
    assert!(messages.iter().any(|m| m.contains("broken.json")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("empty")), "{messages:#?}");
}
