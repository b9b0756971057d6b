//! `cohort boot` as a subprocess in a temporary root, against a real HTTP metadata service the
//! test runs (imds.rs) and a real HTTP server for action scripts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::imds::{Behaviour, Imds};
use crate::process::cohort;

fn boot(root: &Path, imds: &Imds, extra: &[&str]) -> Output {
    let mut command = cohort();
    command.arg("boot").arg("--root").arg(root).args([
        "--metadata-url",
        &imds.url(),
        "--request-timeout",
        "2",
    ]);
    if !extra.contains(&"--timeout") {
        command.args(["--timeout", "5"]);
    }
    command.args(extra);
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn mode(root: &Path, path: &str) -> u32 {
    std::fs::metadata(root.join(path.trim_start_matches('/'))).unwrap().permissions().mode()
        & 0o7777
}

fn status(root: &Path) -> Value {
    let output = cohort().args(["boot", "status", "--json", "--root"]).arg(root).output().unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {}", text(&output)))
}

fn statuses(root: &Path) -> Vec<(String, String)> {
    status(root)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_owned(), a["status"].as_str().unwrap().to_owned()))
        .collect()
}

/// A script that appends its name to $COHORT_BOOT_ROOT/order.log and records its stdin.
const HELLO: &str = "#!/bin/sh\ninput=$(cat)\necho hello >> \"$COHORT_BOOT_ROOT/order.log\"\nprintf '%s' \"$input\" > \"$COHORT_BOOT_ROOT/hello.json\"\necho \"hello ran for $COHORT_BOOT_INSTANCE_ID\"\n";

fn full_user_data(pin: &str) -> String {
    format!(
        r#"facts:
  role: web
  tier: 2
actions:
  - type: getactions
    url: "{{URL}}/actions?sig=abc"
  - type: shell
    command: echo shell >> "$COHORT_BOOT_ROOT/order.log"
  - type: write_file
    path: /etc/app/app.conf
    content: "listen = 8080\n"
    mode: "0640"
  - type: hello
    greeting: bonjour
  - type: cohort
    brokers: [nats://broker1.example.net:4222, nats://broker2.example.net:4222]
    collectives: [cohort, eu]
    security:
      issuers: [/etc/cohort/keys/issuer.pub]
      key: /etc/cohort/keys/node.seed
      credential: /etc/cohort/keys/node.cred
      tls_ca: /etc/cohort/keys/ca.pem
# pin for hello: {pin}
"#
    )
}

fn serve_actions(imds: &Imds, pinned: bool) -> String {
    let pin = hex::encode(Sha256::digest(HELLO.as_bytes()));
    let list =
        if pinned { format!("# scripts\nhello sha256:{pin}\n") } else { "hello\n".to_owned() };
    imds.change(|b| {
        b.files.insert("list.txt".into(), list.into_bytes());
        b.files.insert("hello".into(), HELLO.as_bytes().to_vec());
    });
    pin
}

#[test]
fn full_boot_then_once_per_instance() {
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    let pin = serve_actions(&imds, true);
    let user_data = full_user_data(&pin).replace("{URL}", &imds.url());
    imds.change(|b| b.user_data = Some(user_data.into_bytes()));

    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));

    // Caches, refreshed and private.
    assert_eq!(mode(root.path(), "/var/lib/cohort/boot/user-data.raw"), 0o600);
    assert_eq!(mode(root.path(), "/var/lib/cohort/boot/meta-data.json"), 0o600);
    let cached: Value =
        serde_json::from_str(&read(root.path(), "/var/lib/cohort/boot/meta-data.json")).unwrap();
    assert_eq!(cached["placement"]["availability-zone"], "eu-west-1b");
    assert!(cached["iam"].get("security-credentials").is_none());

    // Facts: user facts, then the flattened metadata.
    let facts = read(root.path(), "/etc/facts.txt");
    for line in [
        "role=web\n",
        "tier=2\n",
        "ec2_instance_id=i-0123456789abcdef0\n",
        "ec2_ami_id=ami-0abcdef1234567890\n",
        "ec2_placement_availability_zone=eu-west-1b\n",
        "ec2_placement_region=eu-west-1\n",
        "ec2_public_keys_0_openssh_key=ssh-ed25519 AAAAC3Nza ops@example\n",
    ] {
        assert!(facts.contains(line), "{line:?} not in\n{facts}");
    }
    assert!(facts.starts_with("role=web\ntier=2\n"), "{facts}");
    assert!(!facts.contains("do-not-leak"));

    // MOTD.
    let motd = read(root.path(), "/etc/motd");
    for needle in [
        "i-0123456789abcdef0",
        "ami-0abcdef1234567890",
        "m6i.large",
        "eu-west-1b",
        "ec2-203-0-113-12",
        "ip-10-0-0-12",
        "provisioned",
    ] {
        assert!(motd.contains(needle), "{needle} not in MOTD:\n{motd}");
    }

    // Actions ran in order, with what they were given.
    assert_eq!(read(root.path(), "/order.log"), "shell\nhello\n");
    assert_eq!(read(root.path(), "/etc/app/app.conf"), "listen = 8080\n");
    assert_eq!(mode(root.path(), "/etc/app/app.conf"), 0o640);
    let hello_input: Value = serde_json::from_str(&read(root.path(), "/hello.json")).unwrap();
    assert_eq!(hello_input["greeting"], "bonjour");
    assert_eq!(mode(root.path(), "/etc/cohort/boot/actions/hello"), 0o755);
    let daemon = read(root.path(), "/etc/cohort/daemon.toml");
    assert!(
        daemon.contains(
            "brokers = [\"nats://broker1.example.net:4222\", \"nats://broker2.example.net:4222\"]"
        ),
        "{daemon}"
    );
    assert!(
        daemon.contains("collectives = [\"cohort\", \"eu\"]")
            && daemon.contains("facts = [\"/etc/facts.txt\"]"),
        "{daemon}"
    );
    // What boot wrote is a configuration the daemon accepts, security included.
    let config = cohort_daemon::Config::from_toml(&daemon).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config.security.key.as_deref(),
        Some(std::path::Path::new("/etc/cohort/keys/node.seed"))
    );
    assert_eq!(
        statuses(root.path()),
        [
            ("00-getactions", "ok"),
            ("01-shell", "ok"),
            ("02-write_file", "ok"),
            ("03-hello", "ok"),
            ("04-cohort", "ok")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let record = status(root.path());
    assert_eq!(record["ok"], true);
    assert!(
        record["actions"][3]["output_tail"]
            .as_str()
            .unwrap()
            .contains("hello ran for i-0123456789abcdef0")
    );

    // IMDSv2 throughout: a token first, every metadata GET with it, credentials never asked for;
    // the action list and script came with their query string.
    let log = imds.log();
    assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("PUT", "/latest/api/token"));
    assert!(log.iter().filter(|l| l.path.starts_with("/2021-03-23/")).all(|l| l.token.is_some()));
    assert!(log.iter().any(|l| l.path == "/2021-03-23/meta-data/public-keys/0/openssh-key"));
    assert!(
        !log.iter().any(|l| l.path.contains("security-credentials/")),
        "credentials were fetched"
    );
    assert!(
        log.iter().any(|l| l.path == "/actions/list.txt" && l.query.as_deref() == Some("sig=abc"))
    );

    // A reboot: metadata refreshed, actions skipped.
    imds.change(|b| b.files.clear());
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(root.path(), "/order.log"), "shell\nhello\n");
    assert!(statuses(root.path()).iter().all(|(_, s)| s == "skipped"));

    // --force runs them again (getactions fails now: the server has no list any more).
    let output = boot(root.path(), &imds, &["--force"]);
    assert!(!output.status.success());
    assert_eq!(statuses(root.path())[0].1, "failed");
    assert_eq!(statuses(root.path())[1].1, "not_run");

    // A new instance from the same image runs everything.
    serve_actions(&imds, true);
    imds.change(|b| b.instance_id = "i-0fedcba9876543210".into());
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(root.path(), "/order.log"), "shell\nhello\nshell\nhello\n");
    assert!(read(root.path(), "/etc/facts.txt").contains("ec2_instance_id=i-0fedcba9876543210\n"));
    assert!(read(root.path(), "/etc/motd").contains("i-0fedcba9876543210"));
}

#[test]
fn failing_action_stops_the_run_unless_told_to_continue() {
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    let user_data = "actions:\n  - type: shell\n    command: echo one >> \"$COHORT_BOOT_ROOT/order.log\"\n  - type: shell\n    command: echo broken; exit 3\n  - type: shell\n    command: echo three >> \"$COHORT_BOOT_ROOT/order.log\"\n";
    imds.change(|b| b.user_data = Some(user_data.as_bytes().to_vec()));
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(read(root.path(), "/order.log"), "one\n");
    let record = status(root.path());
    assert_eq!(record["ok"], false);
    assert_eq!(record["actions"][1]["status"], "failed");
    assert_eq!(record["actions"][1]["error"], "exited with status 3: broken");
    assert_eq!(record["actions"][2]["status"], "not_run");
    assert!(read(root.path(), "/etc/motd").contains("FAILED: action 01-shell"));
    let plain = cohort().args(["boot", "status", "--root"]).arg(root.path()).output().unwrap();
    assert_eq!(plain.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&plain.stdout).contains("01-shell"), "{}", text(&plain));

    // Next boot: the successful first action is not repeated, the failed one is tried again.
    let continuing = user_data.replace("exit 3\n", "exit 3\n    on_error: continue\n");
    imds.change(|b| b.user_data = Some(continuing.into_bytes()));
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(read(root.path(), "/order.log"), "one\nthree\n");
    let states: Vec<String> = statuses(root.path()).into_iter().map(|(_, s)| s).collect();
    assert_eq!(states, ["skipped", "failed", "ok"]);
}

#[test]
fn checksums_are_enforced() {
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    let wrong = "0".repeat(64);
    imds.change(|b| {
        b.files.insert("list.txt".into(), format!("hello sha256:{wrong}\n").into_bytes());
        b.files.insert("hello".into(), HELLO.as_bytes().to_vec());
        b.user_data = Some(
            format!("actions:\n  - type: getactions\n    url: {}/actions\n", imds.url())
                .into_bytes(),
        );
    });
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    let record = status(root.path());
    assert!(
        record["actions"][0]["error"].as_str().unwrap().contains("sha256 mismatch"),
        "{record}"
    );
    assert!(
        !root.path().join("etc/cohort/boot/actions/hello").exists(),
        "a mismatching script was installed"
    );

    // Unpinned entries are refused with --require-checksums, accepted without.
    serve_actions(&imds, false);
    let output = boot(root.path(), &imds, &["--require-checksums"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        status(root.path())["actions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("--require-checksums")
    );
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn invalid_user_data_runs_nothing_and_names_the_line() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/facts.txt"), "previous=facts\n").unwrap();
    let imds = Imds::start(Behaviour::default());
    let bad = "facts:\n  role: web\nactions:\n  - type: shell\n    command: touch \"$COHORT_BOOT_ROOT/ran\"\n  - command: forgot the type\n";
    imds.change(|b| b.user_data = Some(bad.as_bytes().to_vec()));
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 6") && stderr.contains("missing field `type`"), "{stderr}");
    assert!(!root.path().join("ran").exists(), "an action ran despite invalid user data");
    assert_eq!(read(root.path(), "/etc/facts.txt"), "previous=facts\n", "facts were rewritten");
    assert!(status(root.path())["error"].as_str().unwrap().contains("no action was run"));
}

#[test]
fn gzip_user_data_and_original_format() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    let original = "---\n:facts:\n  :role: webserver\n:actions:\n- :type: :shell\n  :command: echo legacy >> \"$COHORT_BOOT_ROOT/order.log\"\n";
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(original.as_bytes()).unwrap();
    let compressed = encoder.finish().unwrap();
    imds.change(|b| b.user_data = Some(compressed));
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(read(root.path(), "/etc/facts.txt").starts_with("role=webserver\n"));
    assert_eq!(read(root.path(), "/order.log"), "legacy\n");
}

#[test]
fn the_original_documentations_user_data_with_a_list_file_url() {
    // ec2-boot-init's documented example, as written there but for the host and the file the
    // shell action writes (kept under the test's root).
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    imds.change(|b| {
        b.files.insert("path/to/actions/list.txt".into(), b"hello\n".to_vec());
        b.files.insert("path/to/actions/hello".into(), HELLO.as_bytes().to_vec());
    });
    let user_data = format!(
        "---\n:facts:\n  role: webserver\n:actions:\n- :url: {}/actions/path/to/actions/list.txt\n  :type: :getactions\n- :type: :shell\n  :command: date > \"$COHORT_BOOT_ROOT/test\"\n",
        imds.url()
    );
    imds.change(|b| b.user_data = Some(user_data.into_bytes()));
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
    // The list was the file the URL names, and its script came from beside it.
    assert_eq!(read(root.path(), "/etc/cohort/boot/actions/hello"), HELLO);
    let date = read(root.path(), "/test");
    assert!(date.trim().len() > 10 && date.chars().any(|c| c.is_ascii_digit()), "{date:?}");
    assert!(read(root.path(), "/etc/facts.txt").starts_with("role=webserver\n"));
}

#[test]
fn nocloud_seed() {
    let root = tempfile::tempdir().unwrap();
    let seed = root.path().join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: iid-local01\nlocal-hostname: db1\n")
        .unwrap();
    std::fs::write(seed.join("user-data"), "facts:\n  role: db\nactions:\n  - type: shell\n    command: echo seeded >> \"$COHORT_BOOT_ROOT/order.log\"\n").unwrap();
    let output = cohort()
        .arg("boot")
        .arg("--root")
        .arg(root.path())
        .args(["--timeout", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let facts = read(root.path(), "/etc/facts.txt");
    assert!(
        facts.contains("role=db\n")
            && facts.contains("ec2_instance_id=iid-local01\n")
            && facts.contains("ec2_local_hostname=db1\n"),
        "{facts}"
    );
    assert_eq!(read(root.path(), "/order.log"), "seeded\n");
    assert!(status(root.path())["datasource"].as_str().unwrap().starts_with("nocloud"));
}

#[test]
fn token_expiry_retries_and_slow_answers() {
    let root = tempfile::tempdir().unwrap();
    // Tokens live 150 ms and every answer takes 40 ms: the crawl outlives several tokens.
    // The first three requests fail with 503.
    let imds = Imds::start(Behaviour {
        token_ttl: Duration::from_millis(150),
        delay: Duration::from_millis(40),
        fail_first: 3,
        user_data: Some(b"facts:\n  role: cache\n".to_vec()),
        ..Behaviour::default()
    });
    let output = boot(root.path(), &imds, &["--timeout", "30"]);
    assert!(output.status.success(), "{}", text(&output));
    let log = imds.log();
    let puts = log.iter().filter(|l| l.method == "PUT").count();
    assert!(puts >= 3, "tokens were not refreshed after expiry ({puts} PUTs)");
    assert!(read(root.path(), "/etc/facts.txt").contains("ec2_instance_type=m6i.large\n"));
}

#[test]
fn api_version_negotiation() {
    let root = tempfile::tempdir().unwrap();
    let imds =
        Imds::start(Behaviour { versions: vec!["2009-04-04".into()], ..Behaviour::default() });
    let output = boot(root.path(), &imds, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(imds.log().iter().any(|l| l.path == "/2009-04-04/meta-data/ami-id"));
    assert!(status(root.path())["datasource"].as_str().unwrap().contains("2009-04-04"));
}

#[test]
fn disabled_endpoint_is_not_bypassed() {
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour { disabled: true, ..Behaviour::default() });
    let started = Instant::now();
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5), "a 403 must not be retried");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HTTP 403") && stderr.contains("not falling back to IMDSv1"),
        "{stderr}"
    );
    assert!(imds.log().iter().all(|l| l.method == "PUT"), "metadata was read without a token");
    assert!(read(root.path(), "/etc/motd").contains("has not been set up"));
}

#[test]
fn unreachable_service_fails_within_the_bound() {
    let root = tempfile::tempdir().unwrap();
    // A port nothing listens on: connection refused, every time.
    let port = cohort_test_support::free_port();
    let started = Instant::now();
    let output = cohort()
        .arg("boot")
        .arg("--root")
        .arg(root.path())
        .args([
            "--metadata-url",
            &format!("http://127.0.0.1:{port}"),
            "--timeout",
            "2",
            "--request-timeout",
            "1",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metadata service unavailable") && stderr.contains("gave up after"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn silent_service_fails_within_the_bound() {
    let root = tempfile::tempdir().unwrap();
    // Accepts connections and never answers: every request times out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let output = cohort()
        .arg("boot")
        .arg("--root")
        .arg(root.path())
        .args([
            "--metadata-url",
            &format!("http://{addr}"),
            "--timeout",
            "3",
            "--request-timeout",
            "1",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8),
        "took {elapsed:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gave up after 3s") && stderr.contains("timed out"), "{stderr}");
}

#[test]
fn write_file_owner_must_exist() {
    let root = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    let user_data = "actions:\n  - type: write_file\n    path: /etc/x.conf\n    content: x\n    owner: no-such-user-here\n  - type: write_file\n    path: relative/path\n";
    imds.change(|b| b.user_data = Some(user_data.as_bytes().to_vec()));
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    let record = status(root.path());
    assert!(
        record["actions"][0]["error"].as_str().unwrap().contains("no user \"no-such-user-here\""),
        "{record}"
    );
    assert!(!root.path().join("etc/x.conf").exists());
    let continuing = user_data.replace("no-such-user-here", "root:root");
    imds.change(|b| b.user_data = Some(continuing.into_bytes()));
    let output = boot(root.path(), &imds, &[]);
    assert_eq!(output.status.code(), Some(1));
    let record = status(root.path());
    assert_eq!(record["actions"][0]["status"], "ok", "{record}");
    assert!(
        record["actions"][1]["error"].as_str().unwrap().contains("must be absolute"),
        "{record}"
    );
}

#[test]
fn fetch_and_log_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(Behaviour::default());
    imds.change(|b| {
        b.files.insert("blob".into(), b"payload".to_vec());
        b.fail_first = 2;
    });
    let dest = dir.path().join("out/blob");
    let output = cohort()
        .args(["boot", "fetch", &format!("{}/actions/blob?version=7", imds.url())])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(std::fs::read(&dest).unwrap(), b"payload");
    assert!(imds.log().iter().any(|l| l.query.as_deref() == Some("version=7")));
    let output = cohort()
        .args(["boot", "fetch", &format!("{}/actions/missing", imds.url())])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not found (404)"));
    let output =
        cohort().args(["boot", "log", "it's", "$(not run)", ";", "done"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("it's $(not run) ; done"));
}
