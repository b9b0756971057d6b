//! The resource layer on one node: `find` and an in-sync `apply` of a `user` (root, as it is)
//! and a `file` (content and mode as they are), in process through `cohort_resource`, as the
//! `resource` agent runs them; then the same as whole commands, `cohort resource` against
//! `puppet resource` (when Puppet is installed), process start included.
//!
//! Run: `cargo bench -p cohort --bench resource`; `COHORT_BENCH_RUNS` (default 200 in process,
//! a tenth of that, at least 3, per command).

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use cohort_resource::Resources;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "| {what} | {:.3} ms | {:.3} ms | {} |",
        pct(&times, 0.5),
        pct(&times, 0.95),
        times.len()
    );
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, serde_json::Value> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect()
}

fn main() {
    let runs: usize =
        std::env::var("COHORT_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("motd");
    let path = file.display().to_string();
    std::fs::write(&file, "Managed by Cohort").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Resources::default();
    let root_comment = runtime
        .block_on(engine.find("user", "root"))
        .unwrap()
        .attributes
        .get("comment")
        .map(cohort_resource::Value::flat)
        .unwrap_or_default();
    let user = attrs(&[("comment", &root_comment), ("shell", "/bin/bash")]);
    let content = attrs(&[("content", "Managed by Cohort"), ("mode", "0644")]);

    println!("| in process | p50 | p95 | runs |");
    println!("|---|---|---|---|");
    let time = |what: &str, run: &dyn Fn()| {
        run();
        let times = (0..runs)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed()
            })
            .collect();
        report(what, times);
    };
    time("find user root", &|| {
        runtime.block_on(engine.find("user", "root")).unwrap();
    });
    time("apply user root (in sync)", &|| {
        let report = runtime.block_on(engine.apply("user", "root", &user, false)).unwrap();
        assert!(!report.changed && !report.failed, "{report:?}");
    });
    time("find file", &|| {
        runtime.block_on(engine.find("file", &path)).unwrap();
    });
    time("apply file (in sync)", &|| {
        let report = runtime.block_on(engine.apply("file", &path, &content, false)).unwrap();
        assert!(!report.changed && !report.failed, "{report:?}");
    });

    let commands = (runs / 10).max(3);
    println!();
    println!("| whole command | p50 | p95 | runs |");
    println!("|---|---|---|---|");
    let cohort = env!("CARGO_BIN_EXE_cohort");
    let puppet = ["/opt/puppetlabs/bin/puppet", "/usr/bin/puppet"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file());
    let mut tools = vec![("cohort resource", cohort, vec!["resource"])];
    if let Some(puppet) = puppet {
        tools.push(("puppet resource", puppet, vec!["resource"]));
    } else {
        eprintln!("puppet is not installed: only cohort's commands are timed");
    }
    for (name, program, prefix) in &tools {
        for args in [vec!["user", "root"], vec!["file", path.as_str(), "content=Managed by Cohort"]]
        {
            let times = (0..commands)
                .map(|_| {
                    let started = Instant::now();
                    let out = Command::new(program)
                        .args(prefix)
                        .args(&args)
                        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    started.elapsed()
                })
                .collect();
            report(&format!("{name} {}", args[..2].join(" ")), times);
        }
    }
}
