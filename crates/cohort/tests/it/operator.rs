//! Operator experience end to end, against real `cohort daemon`s on our broker: discovery
//! methods (stdin chaining, flatfile, inventory), batches, limits, sub-collectives,
//! fire-and-forget, JSON and JSON lines checked against the documented schemas, replies that
//! arrive twice or from nodes nobody discovered, the small applications, and snapshots of every
//! text format (timings and process details masked).

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stderr, stdout};
use crate::process::{cohort, write};

const NODES: &[NodeSpec] = &[
    NodeSpec {
        name: "app1.example.com",
        fact_file: "facts.yaml",
        facts: "country: uk\nrole: app\nos:\n  family: Debian\n",
        classes: "role::app\n",
        collectives: &["cohort", "eu"],
    },
    NodeSpec {
        name: "app2.example.com",
        fact_file: "facts.yaml",
        facts: "country: us\nrole: app\nos:\n  family: RedHat\n",
        classes: "role::app\n",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "app3.example.com",
        fact_file: "facts.yaml",
        facts: "country: uk\nrole: app\nos:\n  family: Debian\n",
        classes: "role::app\n",
        collectives: &["cohort", "eu"],
    },
    NodeSpec {
        name: "db1.example.com",
        fact_file: "facts.yaml",
        facts: "country: de\nrole: db\nos:\n  family: Debian\n",
        classes: "role::db\nbacula::node\n",
        collectives: &["cohort", "eu"],
    },
    NodeSpec {
        name: "db2.example.com",
        fact_file: "facts.yaml",
        facts: "country: us\nrole: db\nos:\n  family: RedHat\n",
        classes: "role::db\n",
        collectives: &["cohort"],
    },
];

const ALL: [&str; 5] = [
    "app1.example.com",
    "app2.example.com",
    "app3.example.com",
    "db1.example.com",
    "db2.example.com",
];

fn cli_with_stdin(fleet: &Fleet, args: &[&str], input: &[u8]) -> Output {
    let mut child = cohort()
        .args(args)
        .arg("-c")
        .arg(&fleet.client_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}\n{}", stdout(output), stderr(output)))
}

fn senders(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = doc["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sender"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Checks `value` against the JSON schema `docs/schema/<name>` (the line schema refers to the
/// document schema's definitions, so both are registered under their `$id`s).
fn conforms(name: &str, value: &Value) {
    let read = |file: &str| -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema").join(file);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let document = read("rpc.schema.json");
    let id = document["$id"].as_str().unwrap().to_owned();
    let registry =
        jsonschema::Registry::new().add(id.as_str(), document).unwrap().prepare().unwrap();
    let validator = jsonschema::options().with_registry(&registry).build(&read(name)).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

/// Compares `text` (timings and process details masked) with the snapshot
/// `tests/it/snapshots/<name>.txt`; `COHORT_BLESS=1` rewrites it.
fn snapshot(name: &str, text: &str) {
    let masks = [
        (r"\d+\.\d+ ?ms", "<ms> ms"),
        (r"time=<ms> ms", "time=<ms>"),
        (r"\|[^|\n]*\|", "|<graph>|"),
        (r"(max|min|avg): \d+\.\d+", "$1: <ms>"),
        (
            r"(Process ID|Start Time|Version|Total Messages|Messages Passed Filters|Messages Filtered|Replies Sent): .*",
            "$1: <masked>",
        ),
        (r"(Config File): .*", "$1: <masked>"),
    ];
    let mut masked = text.to_owned();
    for (pattern, replacement) in masks {
        masked = regex::Regex::new(pattern).unwrap().replace_all(&masked, replacement).into_owned();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("COHORT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &masked).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {} (COHORT_BLESS=1 writes it)", path.display()));
    assert_eq!(masked, expected, "snapshot {name} differs (COHORT_BLESS=1 rewrites it)");
}

#[test]
fn discovery_methods_shaping_and_output() {
    let mut fleet = Fleet::start(BrokerKind::Cohort, NODES);

    // -j is one valid JSON document that matches its schema; --jsonl is one object per line.
    let output = fleet.cli(&["rpc", "rpcutil", "ping", "-C", "role::app", "-j"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let doc = json(&output);
    conforms("rpc.schema.json", &doc);
    assert_eq!(senders(&doc), ALL[..3]);
    let output = fleet.cli(&["rpc", "rpcutil", "get_fact", "fact=country", "--jsonl"]);
    let lines: Vec<Value> =
        stdout(&output).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), ALL.len() + 1, "{}", stdout(&output));
    for line in &lines {
        conforms("rpc-line.schema.json", line);
    }
    assert!(lines[..ALL.len()].iter().all(|l| l["type"] == "reply"));
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["stats"]["responses"], ALL.len());
    assert_eq!(summary["summaries"][0]["counts"].as_array().unwrap().len(), 3, "{summary}");

    // Chaining through stdin: the -j document, the JSON lines, or plain names.
    let first = fleet.cli(&["rpc", "rpcutil", "ping", "-F", "country=uk", "-j"]);
    let chained = cli_with_stdin(&fleet, &["rpc", "rpcutil", "ping", "-j"], &first.stdout);
    assert!(chained.status.success(), "{}", stderr(&chained));
    assert_eq!(senders(&json(&chained)), ["app1.example.com", "app3.example.com"]);
    let chained = cli_with_stdin(&fleet, &["find"], b"db2.example.com\n# comment\n\n");
    assert_eq!(stdout(&chained), "db2.example.com\n");
    let chained = cli_with_stdin(&fleet, &["rpc", "rpcutil", "ping", "-j"], &output.stdout);
    assert_eq!(senders(&json(&chained)).len(), ALL.len());
    // A filter names the nodes: standard input is then not read unless asked for...
    let filtered = cli_with_stdin(
        &fleet,
        &["rpc", "rpcutil", "ping", "-F", "role=db", "-j"],
        b"db1.example.com\n",
    );
    assert_eq!(senders(&json(&filtered)), ["db1.example.com", "db2.example.com"]);
    // ...and asked for, a node list cannot be filtered by facts.
    let refused = cli_with_stdin(
        &fleet,
        &["rpc", "rpcutil", "ping", "-F", "role=db", "--dm", "stdin"],
        b"db1.example.com\n",
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("stdin discovery method") && stderr(&refused).contains("fact"),
        "{}",
        stderr(&refused)
    );

    // Flat file: comments and blank lines skipped; identity filters apply, others are refused.
    let list = write(
        fleet.dir.path(),
        "nodes.txt",
        "# two of them\napp2.example.com\n\ndb1.example.com\nghost.example.com\n",
    );
    let list_arg = list.display().to_string();
    let output = fleet.cli(&["rpc", "rpcutil", "ping", "--nodes", &list_arg, "-j"]);
    let doc = json(&output);
    assert_eq!(senders(&doc), ["app2.example.com", "db1.example.com"]);
    assert_eq!(doc["stats"]["no_responses"], serde_json::json!(["ghost.example.com"]));
    assert_eq!(output.status.code(), Some(2));
    let output = fleet.cli(&["find", "--dm", "flatfile", "--do", &list_arg, "-I", "/^app/"]);
    assert_eq!(stdout(&output), "app2.example.com\n");
    let output = fleet.cli(&["find", "--nodes", &list_arg, "-C", "role::db"]);
    assert!(stderr(&output).contains("flatfile discovery method"), "{}", stderr(&output));

    // Inventory: exported from the live fleet, then filtered locally with every kind.
    let inventory = fleet.dir.path().join("inventory.yaml");
    let inventory_arg = inventory.display().to_string();
    let output = fleet.cli(&["inventory", "--export", &inventory_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = fleet.cli(&[
        "find",
        "--dm",
        "inventory",
        "--do",
        &inventory_arg,
        "-S",
        "os.family=Debian and role::db",
    ]);
    assert_eq!(stdout(&output), "db1.example.com\n");
    let output = fleet.cli(&[
        "rpc",
        "rpcutil",
        "ping",
        "--dm",
        "inventory",
        "--do",
        &inventory_arg,
        "-F",
        "country=us",
        "-j",
    ]);
    assert_eq!(senders(&json(&output)), ["app2.example.com", "db2.example.com"]);
    let output = fleet.cli(&["find", "--dm", "inventory", "--do", &inventory_arg, "-T", "eu"]);
    assert_eq!(stdout(&output).lines().count(), 3, "{}", stdout(&output));

    // Sub-collectives over the network.
    let output = fleet.cli(&["rpc", "rpcutil", "ping", "-T", "eu", "-j"]);
    assert_eq!(
        senders(&json(&output)),
        ["app1.example.com", "app3.example.com", "db1.example.com"]
    );

    // Limits: the same seed picks the same nodes; first means identity order.
    let pick = |extra: &[&str]| {
        let mut args = vec!["rpc", "rpcutil", "ping", "-j"];
        args.extend_from_slice(extra);
        senders(&json(&fleet.cli(&args)))
    };
    let seeded = pick(&["--limit-nodes", "2", "--limit-seed", "42"]);
    assert_eq!(seeded.len(), 2);
    assert_eq!(pick(&["--limit-nodes", "2", "--limit-seed", "42"]), seeded);
    assert_eq!(pick(&["--limit-nodes", "40%", "--limit-method", "first"]), ALL[..2]);
    assert_eq!(pick(&["-1", "--limit-method", "first"]), ALL[..1]);

    // Fire and forget: the node acts (its `passed` counter moves) but sends nothing back (its
    // `replies` counter does not). Each daemon_stats call counts itself as passed but not yet
    // replied, so the gap between the two is 1 plus the requests that asked for no reply.
    let gap = |fleet: &Fleet| -> u64 {
        let doc =
            json(&fleet.cli(&["rpc", "rpcutil", "daemon_stats", "-j", "-I", "db2.example.com"]));
        let data = &doc["replies"][0]["data"];
        data["passed"].as_u64().unwrap() - data["replies"].as_u64().unwrap()
    };
    assert_eq!(gap(&fleet), 1);
    let output = fleet.cli(&["rpc", "rpcutil", "ping", "--nr", "-I", "db2.example.com"]);
    assert!(stdout(&output).starts_with("Request sent with id: "), "{}", stdout(&output));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gap(&fleet) < 2 {
        assert!(Instant::now() < deadline, "the fire-and-forget request never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Batches: each waits for its replies, the sleep is respected, and a node that is down in
    // the middle batch ([app1 app2] [app3 db1] [db2]) is reported without losing anything else.
    fleet.stop_node("app3.example.com");
    let everyone = write(fleet.dir.path(), "everyone.txt", &ALL.join("\n"));
    let started = Instant::now();
    let output = fleet.cli(&[
        "rpc",
        "rpcutil",
        "ping",
        "--batch",
        "2",
        "--batch-sleep",
        "0.5",
        "-j",
        "--nodes",
        &everyone.display().to_string(),
    ]);
    let elapsed = started.elapsed();
    let doc = json(&output);
    conforms("rpc.schema.json", &doc);
    assert_eq!(
        senders(&doc),
        ["app1.example.com", "app2.example.com", "db1.example.com", "db2.example.com"]
    );
    assert_eq!(doc["stats"]["no_responses"], serde_json::json!(["app3.example.com"]));
    assert_eq!(doc["stats"]["discovered"], 5, "{doc}");
    assert_eq!(doc["stats"]["responses"], 4, "{doc}");
    // Three batches, two sleeps between them: a lower bound, which load can only lengthen.
    assert!(elapsed >= Duration::from_secs(1), "the batch sleeps were not respected: {elapsed:?}");
}

#[test]
fn duplicates_and_strangers_are_not_counted_twice() {
    let fleet = Fleet::start(BrokerKind::Cohort, &NODES[..2]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A rogue connection listens as a listed node that never answers for itself (so the call
    // waits out its timeout and hears everything), and answers in app1's name and as a node
    // nobody listed (the fleet is insecure: replies are not signed here).
    let (bus, mut heard) = runtime.block_on(async {
        let bus = async_nats::connect(&fleet.url).await.unwrap();
        let heard = bus.subscribe("cohort.node.silent.example.com").await.unwrap();
        bus.flush().await.unwrap();
        (bus, heard)
    });
    let rogue = runtime.spawn(async move {
        use futures::StreamExt;
        while let Some(message) = heard.next().await {
            let Some(reply_to) = message.reply.clone() else { continue };
            let request = cohort_proto::Request::from_bytes(&message.payload).unwrap();
            for sender in ["app1.example.com", "app1.example.com", "stranger.example.com"] {
                let reply = serde_json::json!({
                    "protocol": "io.cohort.rpc", "version": 1, "request_id": request.id,
                    "sender": sender, "agent": "rpcutil", "action": "ping",
                    "time": 0, "status": 0, "status_message": "OK", "data": {"pong": 0},
                });
                bus.publish(reply_to.clone(), reply.to_string().into()).await.unwrap();
            }
            bus.flush().await.unwrap();
        }
    });
    let list = write(
        fleet.dir.path(),
        "listed.txt",
        "app1.example.com\napp2.example.com\nsilent.example.com\n",
    );
    let output = fleet.cli(&[
        "rpc",
        "rpcutil",
        "ping",
        "-j",
        "-t",
        "2",
        "--nodes",
        &list.display().to_string(),
    ]);
    rogue.abort();
    let doc = json(&output);
    assert_eq!(senders(&doc), ["app1.example.com", "app2.example.com"], "{doc}");
    assert_eq!(doc["stats"]["responses"], 2);
    assert_eq!(doc["stats"]["no_responses"], serde_json::json!(["silent.example.com"]));
    assert_eq!(doc["stats"]["unexpected_responses"], serde_json::json!(["stranger.example.com"]));
}

#[test]
fn applications_and_snapshots() {
    let fleet = Fleet::start(BrokerKind::Cohort, NODES);
    let text = |args: &[&str]| {
        let output = fleet.cli(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    snapshot(
        "rpc_get_fact",
        &text(&["rpc", "rpcutil", "get_fact", "fact=country", "--sort", "--np"]),
    );
    snapshot(
        "rpc_verbose",
        &text(&[
            "rpc",
            "rpcutil",
            "get_fact",
            "fact=role",
            "-v",
            "--sort",
            "--np",
            "-C",
            "role::db",
        ]),
    );
    let failed = fleet.cli(&[
        "rpc",
        "rpcutil",
        "get_config_item",
        "item=nope",
        "--display",
        "failed",
        "--sort",
        "--np",
        "-F",
        "country=us",
    ]);
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    snapshot("rpc_display_failed", &stdout(&failed));
    snapshot("facts", &text(&["facts", "os.family"]));
    snapshot("facts_verbose", &text(&["facts", "country", "-v"]));
    // The host's own core facts differ from machine to machine; keep the fact-file ones.
    let inventory = text(&["inventory", "db1.example.com"]);
    let kept: Vec<&str> = inventory
        .lines()
        .filter(|line| {
            !line.contains(" => ")
                || ["country =>", "role =>", "os.family =>"]
                    .iter()
                    .any(|k| line.trim_start().starts_with(k))
        })
        .collect();
    snapshot("inventory_node", &kept.join("\n"));
    snapshot("inventory_collectives", &text(&["inventory", "--list-collectives"]));
    snapshot("find", &text(&["find", "-W", "role::app country=uk"]));
    let described = cohort()
        .args([
            "describe-filter",
            "-W",
            "role::web country=uk",
            "-I",
            "/^db/",
            "-S",
            "os.family=Debian or not legacy",
            "-A",
            "rpcutil",
        ])
        .output()
        .unwrap();
    snapshot("describe_filter", &stdout(&described));
    let refused = cohort().args(["describe-filter", "-S", "(country=uk"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("invalid -S filter"), "{}", stderr(&refused));
    snapshot("plugin_doc_list", &text(&["plugin", "doc"]));
    snapshot("plugin_doc_rpcutil", &text(&["plugin", "doc", "rpcutil"]));
    snapshot("plugin_doc_shell", &text(&["plugin", "doc", "shell"]));
    let ping = text(&["ping", "--graph", "-C", "role::db"]);
    let sorted: Vec<&str> = {
        let mut lines: Vec<&str> = ping.lines().take(2).collect();
        lines.sort();
        lines
    };
    snapshot(
        "ping_graph",
        &format!("{}\n{}", sorted.join("\n"), ping.lines().skip(2).collect::<Vec<_>>().join("\n")),
    );

    let output = fleet.cli(&["inventory", "nobody.example.com"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("nobody.example.com did not answer"), "{}", stderr(&output));

    // Completion scripts and the man page come from the same definition as --help.
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&cohort().args(["completion", shell]).output().unwrap());
        assert!(script.contains("describe-filter") && script.contains("limit-seed"), "{shell}");
    }
    let man = stdout(&cohort().arg("man").output().unwrap());
    assert!(man.starts_with(".ie") && man.contains(".TH cohort 1"), "{man}");
}

#[test]
fn client_configuration_errors_name_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        write(dir.path(), "client.toml", "brokers = [\"nats://127.0.0.1:1\"]\nbrokerz = 1\n");
    let output = cohort().args(["find", "-c"]).arg(&config).output().unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("brokerz") && err.contains(&config.display().to_string()), "{err}");
    let output = cohort()
        .arg("find")
        .env("COHORT_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("COHORT_CONFIG names"), "{}", stderr(&output));
    let half = write(dir.path(), "half.toml", "key = \"client.seed\"\n");
    let output = cohort().args(["find", "-c"]).arg(&half).output().unwrap();
    assert!(stderr(&output).contains("both `key` and `credential`"), "{}", stderr(&output));
    let output = cohort().args(["rpc", "rpcutil", "ping", "--limit-seed", "3"]).output().unwrap();
    assert!(stderr(&output).contains("give --limit-nodes or -1 too"), "{}", stderr(&output));
    let output =
        cohort().args(["rpc", "rpcutil", "ping", "--display", "all", "-j"]).output().unwrap();
    assert!(stderr(&output).contains("cannot be used with"), "{}", stderr(&output));
    let output = cohort().args(["rpc", "rpcutil", "ping", "--batch", "0%"]).output().unwrap();
    assert!(
        stderr(&output).contains("not a positive number of nodes or a percentage"),
        "{}",
        stderr(&output)
    );
}
