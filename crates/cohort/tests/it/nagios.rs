//! The Nagios aggregation end to end: 47 nodes running the real pipeline and the built-in nrpe
//! agent (in this process, each with its own broker connection, NRPE configuration, Puppet state
//! directory and facts), the embedded broker, real plugins from monitoring-plugins-basic, and
//! `cohort nagios` / `cohort nrpe` run as the subprocesses Nagios and people would run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cohort_daemon::NodeState;
use cohort_daemon::facts::FactSource;
use cohort_daemon::nrpe::NrpeSettings;
use cohort_daemon::run::{AgentSettings, RunOptions, Signal, load_agents};
use cohort_proto::{Collective, Identity};
use serde_json::{Map, Value};

use crate::process::cohort;

const NODES: usize = 47;

fn name(idx: usize) -> String {
    format!("node{idx:02}.example.net")
}

struct Fleet {
    url: String,
    stops: Vec<tokio::sync::mpsc::Sender<Signal>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn age(path: &Path, seconds: u64) {
    write(path, "stamp\n");
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds)).unwrap();
}

impl Fleet {
    fn start() -> Fleet {
        let plugins = cohort_test_support::nagios_plugins_dir();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = runtime.block_on(async {
            let config = cohort_broker::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..cohort_broker::Config::default()
            };
            cohort_broker::Broker::bind(config).await.unwrap().spawn()
        });
        let url = broker.url();
        runtime.spawn(async move {
            // Keep the broker for the life of the runtime.
            std::future::pending::<()>().await;
            drop(broker);
        });
        let mut stops = Vec::new();
        for idx in 0..NODES {
            let home = dir.path().join(name(idx));
            let state = match idx {
                7 => 2,
                10 | 20 => 1,
                _ => 0,
            };
            let nrpe_d = home.join("nrpe.d");
            let checks = format!(
                "command[check_state]={p}/check_dummy {state} \"node {idx} says {state}\"\n\
                 command[check_age]={p}/check_file_age -w 600 -c 1200 -f {stamp}\n\
                 command[check_load]={p}/check_load -w 1000,1000,1000 -c 2000,2000,2000\n\
                 command[check_seven]=echo odd; exit 7\n\
                 command[check_hang]=/bin/sleep 30\n\
                 command[check_missing]={p}/check_does_not_exist\n",
                p = plugins.display(),
                stamp = home.join("stamp").display(),
            );
            let nrpe_config = if idx % 2 == 0 {
                // NRPE's own layout: the main file defines check_state too; nrpe.d, read
                // later, wins.
                write(
                    &home.join("nrpe.cfg"),
                    &format!(
                        "command[check_state]=/bin/false\ninclude_dir={}/\n",
                        nrpe_d.display()
                    ),
                );
                write(&nrpe_d.join("10-checks.cfg"), &checks);
                home.join("nrpe.cfg")
            } else {
                // The original collective's layout: one file per check under nrpe.d, no nrpe.cfg
                // and no NRPE daemon.
                for line in checks.lines() {
                    let name = line.split(['[', ']']).nth(1).unwrap();
                    write(&nrpe_d.join(format!("{name}.cfg")), &format!("{line}\n"));
                }
                nrpe_d.clone()
            };
            age(
                &home.join("stamp"),
                match idx {
                    3 => 900,
                    4 => 2000,
                    _ => 10,
                },
            );
            let puppet = home.join("puppet-state");
            std::fs::create_dir_all(&puppet).unwrap();
            if idx % 10 == 5 {
                // Puppet 0.25-2.7: an empty puppetdlock means disabled.
                write(&puppet.join("puppetdlock"), "");
            } else if idx % 5 == 0 {
                write(
                    &puppet.join("agent_disabled.lock"),
                    r#"{"disabled_message":"upgrade in progress"}"#,
                );
            }
            let facts_file = home.join("facts.yaml");
            write(&facts_file, &format!("country: {}\n", if idx % 3 == 0 { "us" } else { "uk" }));
            let classes = home.join("classes.txt");
            write(&classes, if idx % 4 == 0 { "bacula::node\nbase\n" } else { "base\n" });
            let mut source = FactSource::new(Map::new(), vec![facts_file], Some(classes))
                .with_puppet(vec![puppet]);
            source.refresh().unwrap();
            let settings = AgentSettings {
                nrpe: NrpeSettings {
                    config: vec![nrpe_config],
                    // Generous: 47 real plugins start at once on a loaded 2-core CI machine.
                    timeout: Duration::from_secs(5),
                    ..NrpeSettings::default()
                },
                ..AgentSettings::default()
            };
            let (agents, errors) = load_agents(None, 1 << 20, &settings);
            assert!(errors.is_empty());
            let state = Arc::new(NodeState::new(
                Identity::new(name(idx)).unwrap(),
                vec![Collective::new("cohort").unwrap()],
                source.current().clone(),
                agents,
                None,
                Map::new(),
                Duration::from_secs(30),
            ));
            let options = RunOptions {
                registration_interval: Duration::ZERO,
                max_concurrent_actions: 8,
                facts_refresh: Duration::from_millis(200),
                agents_dir: None,
                max_agent_output: 1 << 20,
                shutdown_grace: Duration::from_secs(2),
                agent_settings: settings,
                policies: None,
                trust: None,
            };
            let (stop, signals) = tokio::sync::mpsc::channel(1);
            let url = url.clone();
            runtime.spawn(async move {
                let client = async_nats::connect(&url).await.unwrap();
                cohort_daemon::run::run(state, client, options, Some(source), signals)
                    .await
                    .unwrap();
            });
            stops.push(stop);
        }
        let fleet = Fleet { url, stops, runtime, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = fleet.cli(&["find"]);
            if String::from_utf8_lossy(&found.stdout).lines().count() == NODES {
                break;
            }
            assert!(Instant::now() < deadline, "fleet did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        fleet
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        cohort().args(args).args(["--broker", &self.url]).output().unwrap()
    }

    fn stop(&self, idx: usize) {
        let stop = self.stops[idx].clone();
        self.runtime.block_on(async move { stop.send(Signal::Shutdown).await.unwrap() });
    }
}

fn plugin(fleet: &Fleet, args: &[&str]) -> (Vec<String>, u8) {
    let mut full = vec!["nagios"];
    full.extend_from_slice(args);
    let output = fleet.cli(&full);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.len() <= 8192);
    (
        text.lines().map(str::to_owned).collect(),
        u8::try_from(output.status.code().unwrap()).unwrap(),
    )
}

/// Checks the first line: the headline counts (non-responders included, here as UNKNOWN) and
/// the perfdata, read the way a graphing tool (PNP4Nagios, Graphite) reads it: the original
/// check-mc-nrpe labels in their order with their meanings (`total` = replies), then ours.
#[track_caller]
fn first_line(lines: &[String], check: &str, counts: [usize; 4], noresponse: usize) {
    let mut replies = counts;
    replies[3] -= noresponse;
    first_line_with(lines, check, counts, replies, noresponse);
}

#[track_caller]
fn first_line_with(
    lines: &[String],
    check: &str,
    counts: [usize; 4],
    replies: [usize; 4],
    noresponse: usize,
) {
    let headline = format!(
        "{check}: OK: {} WARNING: {} CRITICAL: {} UNKNOWN: {}|",
        counts[0], counts[1], counts[2], counts[3]
    );
    assert!(lines[0].starts_with(&headline), "{}\nexpected prefix\n{headline}", lines[0]);
    let perf = lines[0].split_once('|').unwrap().1;
    let (items, errors) = cohort_nagios::output::parse_perfdata(perf);
    assert!(errors.is_empty(), "{perf}: {errors:?}");
    let labels: Vec<&str> = items.iter().map(|i| i.label.as_str()).collect();
    assert_eq!(
        labels,
        ["total", "ok", "warn", "crit", "unknown", "checktime", "noresponse", "expected"],
        "{perf}"
    );
    let value = |label: &str| items.iter().find(|i| i.label == label).and_then(|i| i.value);
    let total: usize = replies.iter().sum();
    for (label, expected) in [
        ("total", total),
        ("ok", replies[0]),
        ("warn", replies[1]),
        ("crit", replies[2]),
        ("unknown", replies[3]),
        ("noresponse", noresponse),
        ("expected", total + noresponse),
    ] {
        #[allow(clippy::cast_precision_loss)]
        let want = expected as f64;
        assert_eq!(value(label), Some(want), "{label} in {perf}");
    }
    let checktime = items.iter().find(|i| i.label == "checktime").unwrap();
    assert!(checktime.uom.is_empty() && checktime.value.is_some_and(|v| v > 0.0), "{perf}");
    assert!(
        perf.contains("checktime=")
            && perf
                .split("checktime=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
                .len()
                == 6,
        "{perf}"
    );
}

#[test]
fn nagios_aggregation_end_to_end() {
    let fleet = Fleet::start();

    // States from check_dummy; one CRITICAL wins over the WARNINGs.
    let (lines, code) = plugin(&fleet, &["check_state"]);
    first_line(&lines, "check_state", [44, 2, 1, 0], 0);
    assert_eq!(code, 2);
    assert_eq!(
        lines[1..],
        [
            "CRITICAL:",
            "   node07.example.net",
            "WARNING:",
            "   node10.example.net node20.example.net"
        ]
    );

    // Real ages through check_file_age.
    let (lines, code) = plugin(&fleet, &["check_age"]);
    first_line(&lines, "check_age", [45, 1, 1, 0], 0);
    assert_eq!(code, 2);
    assert!(
        lines.contains(&"   node04.example.net".to_owned())
            && lines.contains(&"   node03.example.net".to_owned()),
        "{lines:?}"
    );

    // Only nodes where Puppet is not disabled (10 of 47 have the lock), by fact, by class.
    let (lines, code) = plugin(&fleet, &["-W", "puppet_enabled=1", "check_load"]);
    first_line(&lines, "check_load", [37, 0, 0, 0], 0);
    assert_eq!((lines.len(), code), (1, 0));
    let (lines, _) = plugin(&fleet, &["-F", "country=us", "check_state"]);
    first_line(&lines, "check_state", [16, 0, 0, 0], 0);
    let (lines, _) = plugin(&fleet, &["-C", "bacula::node", "check_state"]);
    first_line(&lines, "check_state", [11, 1, 0, 0], 0);

    // check-mc-nrpe's own service definition, `check-mc-nrpe --config FILE -W $ARG1$ $ARG2$`
    // with `check_mc_nrpe!puppet_enabled=1 country=us!check_load`: Nagios splits $ARG1$ into
    // words before the check name, and they extend -W. The quoted form means the same.
    let (split, code) =
        plugin(&fleet, &["-W", "puppet_enabled=1", "country=us", "bacula::node", "check_state"]);
    assert_eq!(code, 0, "{split:?}");
    let (quoted, _) =
        plugin(&fleet, &["-W", "puppet_enabled=1 country=us bacula::node", "check_state"]);
    let headline = |lines: &[String]| lines[0].split_once('|').unwrap().0.to_owned();
    assert_eq!(headline(&split), headline(&quoted));
    let (all_us, _) = plugin(&fleet, &["-F", "country=us", "check_state"]);
    assert_ne!(headline(&split), headline(&all_us), "the extra words did not narrow the filter");

    // Exit 7, a hang past the timeout, a missing plugin: UNKNOWN, with the reason in the data.
    let (lines, code) = plugin(&fleet, &["-I", "node01.example.net", "check_seven"]);
    first_line(&lines, "check_seven", [0, 0, 0, 1], 0);
    assert_eq!(code, 3);
    let started = Instant::now();
    let (lines, code) = plugin(&fleet, &["-C", "bacula::node", "check_hang"]);
    first_line(&lines, "check_hang", [0, 0, 0, 12], 0);
    assert_eq!(code, 3);
    assert!(started.elapsed() < Duration::from_secs(15));
    let output = fleet.cli(&[
        "rpc",
        "nrpe",
        "runcommand",
        "command=check_missing",
        "-I",
        "node02.example.net",
        "-j",
    ]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["replies"][0]["data"]["exitcode"], 3);
    assert!(
        json["replies"][0]["data"]["output"].as_str().unwrap().contains("may be missing"),
        "{json}"
    );
    let output = fleet.cli(&[
        "rpc",
        "nrpe",
        "runcommand",
        "command=check_hang",
        "-I",
        "node02.example.net",
        "-j",
    ]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["replies"][0]["data"]["output"], "NRPE: Command timed out after 5 seconds");
    let output = fleet.cli(&[
        "rpc",
        "nrpe",
        "runcommand",
        "command=check_nothing",
        "-I",
        "node02.example.net",
        "-j",
    ]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["replies"][0]["data"]["output"], "NRPE: Command 'check_nothing' not defined");

    // Performance data, parsed, through cohort nrpe -j.
    let output = fleet.cli(&["nrpe", "check_load", "-j", "-I", "node05.example.net"]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["counts"]["ok"], 1);
    let perf = &json["nodes"][0]["perf"];
    assert_eq!(perf[0]["label"], "load1");
    assert_eq!(perf[0]["warn"], "1000.000");
    assert_eq!(output.status.code(), Some(0));

    // The people's view.
    let output = fleet.cli(&["nrpe", "check_state"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("node07.example.net                       status=CRITICAL\n    CRITICAL: node 7 says 2\n"), "{text}");
    assert!(
        text.contains(
            "              OK: 44\n         WARNING: 2\n        CRITICAL: 1\n         UNKNOWN: 0\n"
        ),
        "{text}"
    );
    assert!(text.contains("Finished processing 47 / 47 hosts"), "{text}");
    let output = fleet.cli(&["nrpe", "check_state", "--jsonl", "-F", "country=us"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 17);
    assert_eq!(lines[16]["summary"]["counts"]["ok"], 16);

    // Prometheus textfile.
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("cohort.prom");
    let (_, code) = plugin(&fleet, &["--textfile", textfile.to_str().unwrap(), "check_state"]);
    assert_eq!(code, 2);
    let prom = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        prom.contains("cohort_nrpe_nodes{check=\"check_state\",state=\"warning\"} 2\n"),
        "{prom}"
    );
    assert!(
        prom.contains(
            "cohort_nrpe_node_state{check=\"check_state\",node=\"node07.example.net\"} 2\n"
        ),
        "{prom}"
    );

    // Fewer nodes than expected.
    let (lines, code) = plugin(
        &fleet,
        &[
            "--min-nodes",
            "50",
            "--min-nodes-state",
            "critical",
            "-W",
            "puppet_enabled=1",
            "check_load",
        ],
    );
    assert!(lines[0].contains("(37 nodes, expected at least 50)|"), "{lines:?}");
    assert_eq!(code, 2);

    // Nodes that do not answer: UNKNOWN by default, or as chosen.
    fleet.stop(1);
    fleet.stop(2);
    let ids = ["-I", "node01.example.net", "-I", "node02.example.net", "-I", "node06.example.net"];
    let mut args = ids.to_vec();
    args.extend_from_slice(&["-t", "2", "check_state"]);
    let (lines, code) = plugin(&fleet, &args);
    first_line(&lines, "check_state", [1, 0, 0, 2], 2);
    assert_eq!(code, 3);
    assert_eq!(lines[1..], ["NO RESPONSE:", "   node01.example.net node02.example.net"]);
    let mut args = ids.to_vec();
    args.extend_from_slice(&["-t", "2", "--no-response-state", "ok", "check_state"]);
    let (lines, code) = plugin(&fleet, &args);
    first_line_with(&lines, "check_state", [3, 0, 0, 0], [1, 0, 0, 0], 2);
    assert_eq!(code, 0);

    // A node list instead of discovery: exactly those nodes are checked.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("nodes.txt");
    std::fs::write(
        &list,
        "# monitored
node06.example.net
ghost.example.net
",
    )
    .unwrap();
    let nodes = list.display().to_string();
    let (lines, code) = plugin(&fleet, &["--nodes", &nodes, "-t", "2", "check_state"]);
    first_line(&lines, "check_state", [1, 0, 0, 1], 1);
    assert_eq!(code, 3);
    assert_eq!(lines[1..], ["NO RESPONSE:", "   ghost.example.net"]);
    let (lines, code) = plugin(&fleet, &["--nodes", &nodes, "-F", "country=uk", "check_state"]);
    assert_eq!(code, 3);
    assert!(lines[0].contains("flatfile discovery method"), "{lines:?}");

    // The broker gone: UNKNOWN with the reason, quickly, no stack trace.
    let port = cohort_test_support::free_port();
    let started = Instant::now();
    let output = cohort()
        .args(["nagios", "--broker", &format!("nats://127.0.0.1:{port}"), "check_state"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("check_state: UNKNOWN: cannot connect to"), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The original collective's deployment, with real `cohort daemon` processes: one file per
/// check under `nrpe.d` (no `nrpe.cfg`), `check_puppet_run` on a `state.yaml` whose age makes
/// nodes OK, WARNING and CRITICAL, Puppet's `classes.txt` in its state directory (no classes
/// setting), an old agent's empty `puppetdlock`, and the Nagios service definition's argument
/// shape.
#[test]
fn the_original_deployment_with_real_daemons() {
    use crate::process::Daemon;
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cohort_test_support::free_port()));
    let mut broker = cohort();
    broker.args(["broker", "--listen", &addr.to_string()]);
    let broker = Daemon::spawn(broker);
    assert!(
        cohort_test_support::wait_for_listener(addr, Duration::from_secs(10)),
        "{}",
        broker.stderr_text()
    );
    let url = format!("nats://{addr}");
    let plugins = cohort_test_support::nagios_plugins_dir();
    // name, state.yaml age, classes, puppetdlock
    let nodes = [
        ("fresh.example.net", 60, "pki\n", false),
        ("late.example.net", 6000, "pki\n", false),
        ("stale.example.net", 8000, "pki\n", true),
        ("plain.example.net", 60, "base\n", false),
    ];
    let mut daemons = Vec::new();
    for (node, state_age, classes, locked) in nodes {
        let home = dir.path().join(node);
        let state = home.join("state");
        age(&state.join("state.yaml"), state_age);
        write(&state.join("classes.txt"), classes);
        if locked {
            write(&state.join("puppetdlock"), "");
        }
        write(
            &home.join("nrpe.d/check_puppet_run.cfg"),
            &format!(
                "command[check_puppet_run]={}/check_file_age -f {} -w 5400 -c 7200\n",
                plugins.display(),
                state.join("state.yaml").display()
            ),
        );
        let config = home.join("daemon.toml");
        write(
            &config,
            &format!(
                "registration_interval = \"1s\"\nnrpe_config = [{:?}]\npuppet_state_dirs = [{:?}]\n",
                home.join("nrpe.d").display().to_string(),
                state.display().to_string()
            ),
        );
        let mut command = cohort();
        command
            .args(["daemon", "--insecure", "--identity", node, "--broker", &url, "--config"])
            .arg(&config);
        daemons.push(Daemon::spawn(command));
    }
    let client = dir.path().join("client.toml");
    write(
        &client,
        &format!(
            "brokers = [{url:?}]\ndiscovery_history = {:?}\n",
            dir.path().join("h.json").display().to_string()
        ),
    );
    let cli = |args: &[&str]| cohort().args(args).arg("-c").arg(&client).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&cli(&["find", "--dt", "1"]).stdout).lines().count() < nodes.len()
    {
        assert!(Instant::now() < deadline, "daemons did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let found = |args: &[&str]| {
        let mut names: Vec<String> =
            String::from_utf8_lossy(&cli(args).stdout).lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    // Classes from Puppet's own classes.txt, found without configuration.
    assert_eq!(
        found(&["find", "-W", "pki"]),
        ["fresh.example.net", "late.example.net", "stale.example.net"]
    );
    // The empty puppetdlock disables Puppet there.
    assert_eq!(found(&["find", "-F", "puppet_enabled=0"]), ["stale.example.net"]);

    // Every node: one OK per fresh state.yaml, one WARNING, one CRITICAL.
    let output = cli(&["nagios", "check_puppet_run"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.starts_with("check_puppet_run: OK: 2 WARNING: 1 CRITICAL: 1 UNKNOWN: 0|total=4 ok=2 warn=1 crit=1 unknown=0 checktime="), "{text}");
    assert_eq!(output.status.code(), Some(2), "{text}");
    // check_mc_nrpe!puppet_enabled=1 pki!check_puppet_run, as Nagios splits it.
    let output = cli(&["nagios", "-W", "puppet_enabled=1", "pki", "check_puppet_run"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        text.starts_with("check_puppet_run: OK: 1 WARNING: 1 CRITICAL: 0 UNKNOWN: 0|total=2 "),
        "{text}"
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    // And where each node found the check.
    let output = cli(&["rpc", "nrpe", "list", "-I", "late.example.net", "-j"]);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    let source = &doc["replies"][0]["data"]["sources"]["check_puppet_run"];
    assert!(
        source
            .as_str()
            .is_some_and(|s| s.ends_with("late.example.net/nrpe.d/check_puppet_run.cfg")),
        "{doc}"
    );
    drop(daemons);
}
