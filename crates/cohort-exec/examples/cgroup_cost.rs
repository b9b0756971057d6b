//! What a cgroup of its own costs a child: `/bin/true` run `N` times (default 200) in its
//! process group alone, then in a cgroup (mkdir, the shell's move, kill; removal is in the
//! background), as mean wall time per run. Needs root and cgroup v2.
//!
//! Run: `cargo run --release -p cohort-exec --example cgroup_cost [N]`.

use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let runs: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let start = Instant::now();
    for _ in 0..runs {
        let command = tokio::process::Command::new("/bin/true");
        if let Err(err) = cohort_exec::run(command, None, Duration::from_secs(5), 1024).await {
            eprintln!("cannot run /bin/true: {err}");
            return;
        }
    }
    let grouped = start.elapsed() / runs;
    let start = Instant::now();
    for _ in 0..runs {
        let Some(cgroup) = cohort_exec::Cgroup::create() else {
            eprintln!("no cgroup v2 directory can be created here (root and cgroup2 needed)");
            return;
        };
        let command = cgroup.command(Path::new("/bin/true"));
        let ran = cohort_exec::run_in(command, Some(cgroup), None, Duration::from_secs(5), 1024);
        if let Err(err) = ran.await {
            eprintln!("cannot run /bin/true in a cgroup: {err}");
            return;
        }
    }
    let confined = start.elapsed() / runs;
    println!("process group: {grouped:?} per run; own cgroup: {confined:?} per run ({runs} runs)");
    // Let the background removals finish before the runtime stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
}
