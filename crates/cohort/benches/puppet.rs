//! `cohort puppet runall` over a simulated fleet with a stand-in `puppet`: every simulated node
//! (the real node pipeline and `puppet` agent) has its own Puppet state directory, and its
//! `puppet` is a small script that takes the catalog-run lock with its pid, works for
//! `COHORT_BENCH_RUN_MS` (default 50), writes a last-run summary and lets go. The benchmark
//! runs the real `cohort puppet runall C` binary against the fleet and reports the time per
//! node beyond the stand-in runs themselves (each slot of C holds N/C runs end to end).
//!
//! Run: `cargo bench -p cohort --bench puppet`; `COHORT_BENCH_NODES` (1000),
//! `COHORT_BENCH_CONCURRENCY` (50), `COHORT_BENCH_RUN_MS` (50).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use cohort_daemon::run::AgentSettings;
use cohort_daemon::sim::Fleet;
use cohort_test_support::BrokerProcess;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let nodes = u32::try_from(env("COHORT_BENCH_NODES", 1000)).unwrap();
    let concurrency = env("COHORT_BENCH_CONCURRENCY", 50);
    let run_ms = env("COHORT_BENCH_RUN_MS", 50);
    let dir = tempfile::tempdir().unwrap();
    let standin = dir.path().join("puppet");
    std::fs::write(
        &standin,
        format!(
            "#!/bin/sh\n# stand-in for `puppet agent --onetime ...`; the last argument is the node's state directory\nfor last; do :; done\nmkdir -p \"$last\"\necho $$ > \"$last/agent_catalog_run.lock\"\nsleep {secs}\nprintf 'version:\\n  config: 1\\nresources:\\n  total: 1\\n  changed: 0\\n  failed: 0\\ntime:\\n  total: {secs}\\n  last_run: %s\\n' \"$(date +%s)\" > \"$last/last_run_summary.yaml\"\nrm -f \"$last/agent_catalog_run.lock\"\n",
            secs = run_ms as f64 / 1000.0
        ),
    )
    .unwrap();
    std::fs::set_permissions(&standin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let state = dir.path().join("state").join("{identity}");
    let agents = AgentSettings {
        puppet: cohort_puppet::PuppetConfig {
            extra_args: vec![state.display().to_string()],
            splay: false,
            ..cohort_puppet::PuppetConfig::with_state_dir(&standin, &state)
        },
        ..AgentSettings::default()
    };
    let broker = BrokerProcess::start(
        "cohort",
        std::path::Path::new(env!("CARGO_BIN_EXE_cohort")),
        "max_pending = 1073741824\n",
        "",
    );
    let url = broker.url();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let _fleet = runtime.block_on(Fleet::start(&url, nodes, 7, None, None, Some(&agents))).unwrap();
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = [{url:?}]\ndiscovery_history = {:?}\n",
            dir.path().join("discovery.json").display().to_string()
        ),
    )
    .unwrap();
    let cohort = env!("CARGO_BIN_EXE_cohort");
    // Wait for the fleet, and give discovery its count.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out =
            std::process::Command::new(cohort).args(["find", "-c"]).arg(&config).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).lines().count() >= nodes as usize {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet did not come up");
        std::thread::sleep(Duration::from_millis(500));
    }
    let started = Instant::now();
    let out = std::process::Command::new(cohort)
        .args(["puppet", "runall", &concurrency.to_string(), "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let wall = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("Initiated a Puppet run on {nodes} nodes.");
    assert!(text.contains(&want), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let ran = std::fs::read_dir(dir.path().join("state")).unwrap().count();
    assert_eq!(ran, nodes as usize, "every node's stand-in ran");
    #[allow(clippy::cast_precision_loss)]
    let runs_per_slot = (f64::from(nodes) / concurrency as f64).ceil();
    #[allow(clippy::cast_precision_loss)]
    let puppet_time = runs_per_slot * run_ms as f64 / 1000.0;
    let overhead = (wall.as_secs_f64() - puppet_time).max(0.0) / f64::from(nodes);
    println!(
        "| nodes | concurrency | stand-in run | runall wall | of which runs (N/C x run) | overhead per node |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {nodes} | {concurrency} | {run_ms} ms | {:.1} s | {puppet_time:.1} s | {:.1} ms |",
        wall.as_secs_f64(),
        overhead * 1000.0
    );
}
