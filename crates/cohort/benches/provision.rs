//! `cohort provision run` over a simulated fleet of new nodes: every simulated node runs the
//! real node pipeline and `provision` agent with its own state directory and hosts file, and
//! its `puppet` is a stand-in that takes `COHORT_BENCH_STEP_MS` (default 100) per call; one
//! master, a real `cohort daemon`, runs the `puppetca` agent over a stand-in `puppetserver` that
//! takes as long per call and keeps its CA in files. The benchmark runs the real provisioner
//! until every node is done and reports the wall time and the provisioner's own CPU per node.
//!
//! Run: `cargo bench -p cohort --bench provision`; `COHORT_BENCH_NODES` (1000),
//! `COHORT_BENCH_CONCURRENCY` (50), `COHORT_BENCH_STEP_MS` (100).

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use cohort_daemon::run::AgentSettings;
use cohort_daemon::sim::Fleet;
use cohort_test_support::BrokerProcess;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn main() {
    let nodes = u32::try_from(env("COHORT_BENCH_NODES", 1000)).unwrap();
    let concurrency = env("COHORT_BENCH_CONCURRENCY", 50);
    let step_ms = env("COHORT_BENCH_STEP_MS", 100);
    let secs = step_ms as f64 / 1000.0;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = d.join("ca");
    for sub in ["requests", "signed", "revoked"] {
        std::fs::create_dir_all(ca.join(sub)).unwrap();
    }
    executable(
        &d.join("puppet"),
        &format!(
            "#!/bin/sh\nsleep {secs}\nfor last; do :; done\nnode=$(basename \"$last\")\n\
             [ \"$1 $2\" = \"ssl submit_request\" ] && touch {ca}/requests/$node\nexit 0\n",
            ca = ca.display()
        ),
    );
    executable(
        &d.join("puppetserver"),
        &format!(
            "#!/bin/sh\nsleep {secs}\nca={ca}\naction=$2\nname=\"\"\nprev=\"\"\n\
             for arg; do [ \"$prev\" = \"--certname\" ] && name=$arg; prev=$arg; done\n\
             list() {{ ls \"$ca/$1\" | sed 's/.*/{{\"name\":\"&\"}}/' | paste -sd, -; }}\n\
             case \"$action\" in\n\
               list) printf '{{\"requested\":[%s],\"signed\":[%s],\"revoked\":[]}}\\n' \"$(list requests)\" \"$(list signed)\" ;;\n\
               sign) mv \"$ca/requests/$name\" \"$ca/signed/$name\" ;;\n\
               clean) rm -f \"$ca/requests/$name\" \"$ca/signed/$name\" ;;\n\
             esac\n",
            ca = ca.display()
        ),
    );
    let home = d.join("nodes").join("{identity}");
    let agents = AgentSettings {
        puppet: cohort_puppet::PuppetConfig {
            command: Some(d.join("puppet")),
            extra_args: vec![home.display().to_string()],
            ..cohort_puppet::PuppetConfig::default()
        },
        provision: cohort_provision::node::NodeSettings {
            enabled: true,
            state_dir: home.join("provision"),
            hosts_file: home.join("hosts"),
            certificate: Some(home.join("cert.pem")),
            ..cohort_provision::node::NodeSettings::default()
        },
        ..AgentSettings::default()
    };
    let broker = BrokerProcess::start(
        "cohort",
        Path::new(env!("CARGO_BIN_EXE_cohort")),
        "max_pending = 1073741824\n",
        "",
    );
    let url = broker.url();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let _fleet =
        runtime.block_on(Fleet::start(&url, nodes, 11, None, None, Some(&agents))).unwrap();
    let cohort = env!("CARGO_BIN_EXE_cohort");
    std::fs::write(d.join("master.yaml"), "ipaddress: 127.0.0.1\n").unwrap();
    std::fs::write(
        d.join("master.toml"),
        format!(
            "max_concurrent_actions = 64\n[puppetca]\nenabled = true\ncommand = {:?}\n",
            d.join("puppetserver").display().to_string()
        ),
    )
    .unwrap();
    let mut master = std::process::Command::new(cohort)
        .args(["daemon", "--insecure", "--identity", "bench-master", "--broker", &url, "--facts"])
        .arg(d.join("master.yaml"))
        .arg("--config")
        .arg(d.join("master.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let config = d.join("client.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = [{url:?}]\ndiscovery_history = {:?}\n",
            d.join("discovery.json").display().to_string()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out =
            std::process::Command::new(cohort).args(["find", "-c"]).arg(&config).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).lines().count() > nodes as usize {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet did not come up");
        std::thread::sleep(Duration::from_millis(500));
    }
    let provision = d.join("provision.toml");
    std::fs::write(
        &provision,
        format!(
            "store = {:?}\nconcurrency = {concurrency}\nsweep_interval = \"5s\"\n\
             steps = [\"set_puppet_host\", \"clean_cert\", \"request_certificate\", \"sign_certificate\", \"bootstrap_puppet\", \"run_puppet\", \"disable\"]\n\
             [target]\nfilter = {{}}\n",
            d.join("provision.redb").display().to_string()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut provisioner = std::process::Command::new(cohort)
        .args(["provision", "run", "--provision-config"])
        .arg(&provision)
        .arg("-c")
        .arg(&config)
        .stderr(std::fs::File::create(d.join("provision.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1200);
    let wall = loop {
        let signed = std::fs::read_dir(ca.join("signed")).map(|d| d.count()).unwrap_or(0);
        let disabled = std::fs::read_dir(d.join("nodes"))
            .map(|entries| {
                entries.flatten().filter(|e| e.path().join("provision/disabled").exists()).count()
            })
            .unwrap_or(0);
        if signed == nodes as usize && disabled == nodes as usize {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "not done: {signed} signed, {disabled} disabled");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cpu = cpu_seconds(provisioner.id());
    let _ = provisioner.kill();
    let _ = provisioner.wait();
    let _ = master.kill();
    let _ = master.wait();
    println!(
        "| new nodes | concurrency | stand-in call | wall until all done | nodes per minute | provisioner CPU per node |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {nodes} | {concurrency} | {step_ms} ms | {:.1} s | {:.0} | {:.2} ms |",
        wall.as_secs_f64(),
        f64::from(nodes) / wall.as_secs_f64() * 60.0,
        cpu / f64::from(nodes) * 1000.0
    );
}
