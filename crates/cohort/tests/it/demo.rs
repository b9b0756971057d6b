//! `cohort demo` as a newcomer runs it: the tour, and `--serve` for trying commands.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::process::cohort;

#[test]
fn tour_runs_and_exits_zero() {
    let output = cohort().args(["demo", "--nodes", "20"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "$ cohort ping\n",
        "---- ping statistics ----\n20 replies max: ",
        "$ cohort find -F country=uk\n",
        "$ cohort rpc rpcutil get_fact fact=os.name",
        "Summary of Value:",
        "Finished processing ",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from:\n{stdout}");
    }
    assert!(stderr.contains("Fleet of 20 nodes up"), "{stderr}");
}

#[test]
fn serve_keeps_the_fleet_up_for_other_terminals() {
    let mut child = cohort()
        .args(["demo", "--nodes", "12", "--serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("COHORT_BROKER=") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).expect("no COHORT_BROKER line");
    let output = cohort().args(["ping"]).env("COHORT_BROKER", &url).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("12 replies max: "), "{text}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "demo --serve did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}
