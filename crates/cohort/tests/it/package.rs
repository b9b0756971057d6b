//! The Debian package, built by `dist/build-deb` (cargo-deb) from this test run's binary and
//! inspected the way a packager would: its control fields and file list (`dpkg-deb`), lintian,
//! its maintainer scripts (the `cohort` user, the units installed but not enabled), and its
//! contents extracted and used: the binary runs, the man page is the binary's, every unit
//! starts the packaged binary, every example configuration parses with the real loaders. With
//! `COHORT_PACKAGE_INSTALL=1` (CI, as root) it is also installed with `dpkg -i` and purged.
//! This machine has no systemd running, so the units are not started here. Slow: runs with
//! `COHORT_SLOW_TESTS=1`, and needs `cargo deb` (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::slow_tests;

const UNITS: [&str; 5] = [
    "cohort-daemon",
    "cohort-broker",
    "cohort-boot",
    "cohort-provision",
    "cohort-puppet-scheduler",
];
const CONFIGS: [&str; 5] =
    ["daemon.toml", "broker.toml", "client.toml", "provision.toml", "puppet-scheduler.toml"];

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the package from the binary this test run built (profile `dev`, stripped).
fn build(out: &Path) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_cohort"));
    let mut command = Command::new(workspace().join("dist/build-deb"));
    command.args(["--profile", "dev", "--no-build", "--fast", "--strip", "-o"]).arg(out);
    // The script finds the binary under the target directory this test was built into.
    if let Some(target) = binary.parent().and_then(Path::parent) {
        command.env("CARGO_TARGET_DIR", target);
    }
    run(&mut command);
    std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}", out.display()))
}

#[test]
fn the_debian_package_holds_the_binary_units_user_configs_and_man_page() {
    if !slow_tests("build and inspect the Debian package") {
        return;
    }
    let has_cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        has_cargo_deb.is_ok_and(|output| output.status.success()),
        "cargo-deb is needed to build the package: cargo install cargo-deb --locked"
    );
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());

    // Control fields.
    let field = |name: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), "cohort");
    assert_eq!(field("Version").trim(), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    assert_eq!(field("Section").trim(), "admin");

    // The file list.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches('.'))
        .collect();
    let mut wanted = vec![
        "/usr/bin/cohort".to_owned(),
        "/usr/share/man/man1/cohort.1.gz".to_owned(),
        "/usr/lib/sysusers.d/cohort.conf".to_owned(),
        "/usr/share/doc/cohort/copyright".to_owned(),
        "/usr/share/doc/cohort/README.md".to_owned(),
    ];
    wanted.extend(UNITS.iter().map(|unit| format!("/lib/systemd/system/{unit}.service")));
    wanted.extend(CONFIGS.iter().map(|config| format!("/etc/cohort/{config}")));
    for path in &wanted {
        let found = files.iter().any(|file| file == path || *file == format!("/usr{path}"));
        assert!(found, "{path} is not in the package:\n{listing}");
    }

    // Maintainer scripts: the user is created, the units registered but neither enabled nor
    // started (a node needs its keys first), the configurations are conffiles.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");
    for unit in UNITS {
        assert!(postinst.contains(&format!("{unit}.service")), "{unit}: {postinst}");
    }
    assert!(!postinst.contains("deb-systemd-invoke start"), "units must not start: {postinst}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    for config in CONFIGS {
        assert!(conffiles.contains(&format!("/etc/cohort/{config}")), "{conffiles}");
    }

    // lintian: no errors (warnings are printed for the reader).
    if Command::new("lintian").arg("--version").output().is_ok() {
        let output = Command::new("lintian")
            .args(["--fail-on", "error", "--tag-display-limit", "0"])
            .arg(&deb)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        eprintln!("lintian:\n{report}");
        assert!(output.status.success(), "lintian found errors:\n{report}");
    } else {
        eprintln!("lintian is not installed here: only dpkg-deb checked the package");
    }

    // The contents, used.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let version = run(Command::new(root.join("usr/bin/cohort")).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let page =
        run(Command::new("gzip").arg("-dc").arg(root.join("usr/share/man/man1/cohort.1.gz")));
    let own = run(Command::new(root.join("usr/bin/cohort")).arg("man"));
    assert_eq!(page, own, "the packaged man page is not the binary's");
    assert!(page.starts_with(".ie") || page.contains(".TH cohort"), "{}", &page[..200]);
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/cohort.conf")).unwrap();
    assert!(sysusers.lines().any(|line| line.starts_with("u cohort ")), "{sysusers}");
    for unit in UNITS {
        let path = ["lib/systemd/system", "usr/lib/systemd/system"]
            .iter()
            .map(|dir| root.join(dir).join(format!("{unit}.service")))
            .find(|path| path.exists())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text.lines().find_map(|line| line.strip_prefix("ExecStart=")).unwrap();
        assert!(exec.starts_with("/usr/bin/cohort "), "{unit}: {exec}");
        // Whatever it names from /etc/cohort, the package ships.
        for word in exec.split_whitespace().filter(|word| word.starts_with("/etc/cohort/")) {
            assert!(root.join(&word[1..]).exists(), "{unit} names {word}, not in the package");
        }
        if let Some(user) = text.lines().find_map(|line| line.strip_prefix("User=")) {
            assert_eq!(user, "cohort", "{unit}");
        }
    }
    let etc = root.join("etc/cohort");
    let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap();
    cohort_daemon::Config::from_toml(&read("daemon.toml")).unwrap();
    cohort_broker::Config::from_toml(&read("broker.toml")).unwrap();
    cohort_client::config::ClientConfig::from_file(&etc.join("client.toml")).unwrap();
    cohort_provision::ProvisionConfig::parse(&read("provision.toml")).unwrap();
    cohort_puppet::schedule::ScheduleConfig::parse(&read("puppet-scheduler.toml")).unwrap();

    if std::env::var_os("COHORT_PACKAGE_INSTALL").is_some_and(|v| v == "1") {
        install_and_purge(&deb);
    }
}

/// A real `dpkg -i`: the `cohort` user exists afterwards, the binary and configurations are in
/// place; `dpkg --purge` removes them again (the user stays, as Debian policy asks).
fn install_and_purge(deb: &Path) {
    run(Command::new("dpkg").arg("-i").arg(deb));
    let installed = std::panic::catch_unwind(|| {
        let passwd = run(Command::new("getent").args(["passwd", "cohort"]));
        assert!(passwd.contains("/var/lib/cohort"), "{passwd}");
        let version = run(Command::new("/usr/bin/cohort").arg("--version"));
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
        assert!(Path::new("/etc/cohort/daemon.toml").exists());
        let status = run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "cohort"]));
        assert_eq!(status, "install ok installed");
    });
    run(Command::new("dpkg").args(["--purge", "cohort"]));
    if let Err(panic) = installed {
        std::panic::resume_unwind(panic);
    }
    assert!(!Path::new("/usr/bin/cohort").exists(), "purge left /usr/bin/cohort");
    assert!(!Path::new("/etc/cohort/daemon.toml").exists(), "purge left /etc/cohort");
}
