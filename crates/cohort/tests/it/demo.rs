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
        // The seed's headline fleet check, for people and as the Nagios plugin.
        "$ cohort nrpe -W puppet_enabled=1 check_puppet_run\n",
        "check_puppet_run NRPE results",
        "$ cohort nagios -W puppet_enabled=1 check_puppet_run",
        "\ncheck_puppet_run: OK: ",
        " ok=",
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
            if let Some((key, value)) = line.split_once('=')
                && key.starts_with("COHORT_")
            {
                let _ = tx.send((key.to_owned(), value.to_owned()));
            }
        }
    });
    let mut env = std::collections::HashMap::new();
    while env.len() < 2 {
        let (key, value) = rx.recv_timeout(Duration::from_secs(60)).expect("no environment lines");
        env.insert(key, value);
    }
    let url = &env["COHORT_BROKER"];
    let config = std::path::PathBuf::from(&env["COHORT_CONFIG"]);
    assert!(url.starts_with("tls://"), "{url}");
    let output = cohort()
        .args(["ping"])
        .env("COHORT_BROKER", url)
        .env("COHORT_CONFIG", &config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("12 replies max: "), "{text}");
    let audit = std::fs::read_to_string(config.with_file_name("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"caller\":\"client=demo\"") && l.contains("\"verified\":true")),
        "{audit}"
    );
    // The demo is secure: without its credential the broker does not even let a client in.
    let output =
        cohort().args(["ping", "--broker", url]).env("HOME", "/nonexistent").output().unwrap();
    assert!(!output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
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
    assert!(!config.exists(), "the throwaway keys outlived the demo");
}
