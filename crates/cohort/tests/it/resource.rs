//! The resource layer against the real system, and side by side with Puppet: for each native
//! type the same steps are applied with Debian's `puppet resource` to one fresh object and with
//! `cohort resource` to an identical twin (users `cohort-test-*-p`/`-c`, twin files, twin
//! packages built here, twin init scripts, twin crontabs), and the change events and the
//! resulting system state are compared. Then the seed's `puppetral do` command lines through
//! real daemons, with the node-side rules.
//!
//! These tests create users, install packages and start services, so they run only with
//! `COHORT_SLOW_TESTS=1` (CI, as root, with Puppet installed by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stderr, stdout};
use crate::process::{cohort, write};

/// The system (account files, the dpkg database, rc links) is shared: one test at a time.
static SYSTEM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `Some(guard)` when system tests run here (holding the system for the test's length).
fn enabled(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    let on = std::env::var_os("COHORT_SLOW_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!("skipped {test}: set COHORT_SLOW_TESTS=1 (as root, with Puppet) to run it");
        return None;
    }
    assert!(nix::unistd::geteuid().is_root(), "{test} changes users and packages: run as root");
    Some(SYSTEM.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

fn puppet() -> PathBuf {
    ["/opt/puppetlabs/bin/puppet", "/usr/bin/puppet"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("Puppet is not installed: .ci/run installs Debian's puppet and its type modules")
}

/// The suffixes of the twins: Puppet's, ours.
const TWINS: [&str; 2] = ["twinp", "twinc"];

/// The two tools under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Puppet,
    Cohort,
}

impl Tool {
    fn suffix(self) -> &'static str {
        match self {
            Tool::Puppet => "twinp",
            Tool::Cohort => "twinc",
        }
    }

    fn command(self) -> Command {
        match self {
            Tool::Puppet => {
                let mut command = Command::new(puppet());
                // A clean environment: a broken tool on PATH breaks Puppet's package listing.
                command
                    .env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .env("HOME", "/root")
                    .env("LANG", "C.UTF-8")
                    .args(["resource", "--color=false"]);
                command
            }
            Tool::Cohort => {
                let mut command = cohort();
                command.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").arg("resource");
                command
            }
        }
    }

    /// Runs `resource ARGS` with `{}` in every argument replaced by this tool's suffix.
    fn run(self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|a| a.replace("{}", self.suffix())).collect();
        self.command().args(&args).output().unwrap()
    }
}

/// The change events a run logged, `{}`-normalised: `/User[cohort-test-{}]/ensure: created`.
/// Puppet's refresh and summary lines have no counterpart for a lone resource.
fn logged(tool: Tool, output: &Output) -> Vec<String> {
    let text = format!("{}{}", stdout(output), stderr(output));
    let marker = format!("-{}", tool.suffix());
    text.lines()
        .filter_map(|line| line.strip_prefix("Notice: /").or(line.strip_prefix("Error: /")))
        .filter(|line| !line.contains("Triggered 'refresh'"))
        .map(|line| format!("/{}", line.replace(&marker, "-{}")))
        .collect()
}

/// Applies each step with both tools and checks the events match; returns them for more checks.
fn side_by_side(steps: &[&[&str]]) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for step in steps {
        let puppet = Tool::Puppet.run(step);
        let ours = Tool::Cohort.run(step);
        let (want, got) = (logged(Tool::Puppet, &puppet), logged(Tool::Cohort, &ours));
        assert_eq!(
            got,
            want,
            "step {step:?}\npuppet said:\n{}{}\ncohort said:\n{}{}",
            stdout(&puppet),
            stderr(&puppet),
            stdout(&ours),
            stderr(&ours)
        );
        all.push(got);
    }
    all
}

fn sh(script: &str) -> String {
    let out = Command::new("/bin/sh").arg("-c").arg(script).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same text for both twins once the twin's suffix is masked.
fn twin_text(script: &str) -> (String, String) {
    let get = |s: &str| sh(&script.replace("{}", s)).replace(&format!("-{s}"), "-{}");
    (get("twinp"), get("twinc"))
}

fn assert_twins(what: &str, script: &str) {
    let (puppet, ours) = twin_text(script);
    assert_eq!(ours, puppet, "{what} differs between the Puppet twin and ours ({script})");
}

#[test]
fn user_and_group_side_by_side() {
    let Some(_system) = enabled("user_and_group_side_by_side") else { return };
    for s in TWINS {
        sh(&format!(
            "userdel -r cohort-test-u-{s} 2>/dev/null; groupdel cohort-test-g-{s} 2>/dev/null; true"
        ));
    }
    let events = side_by_side(&[
        &["group", "cohort-test-g-{}", "ensure=present"],
        &[
            "user",
            "cohort-test-u-{}",
            "comment=Foo User",
            "managehome=true",
            "shell=/bin/sh",
            "groups=adm",
        ],
        &["user", "cohort-test-u-{}", "comment=Bar", "groups=cohort-test-g-{}"],
        &["user", "cohort-test-u-{}", "password=$1$xyz$abc", "password_max_age=90"],
        &["user", "cohort-test-u-{}", "comment=Bar", "password=$1$xyz$abc"],
    ]);
    assert_eq!(events[1], ["/User[cohort-test-u-{}]/ensure: created"]);
    assert_eq!(
        events[3],
        [
            "/User[cohort-test-u-{}]/password: changed [redacted] to [redacted]",
            "/User[cohort-test-u-{}]/password_max_age: password_max_age changed 99999 to 90"
        ]
    );
    assert!(events[4].is_empty(), "second run changed something: {:?}", events[4]);
    // The twins' uids differ, so noop is checked on ours alone.
    let uid = sh("id -u cohort-test-u-twinc");
    let noop = Tool::Cohort.run(&["user", "cohort-test-u-{}", "uid=4242", "--noop"]);
    assert_eq!(
        logged(Tool::Cohort, &noop),
        [format!(
            "/User[cohort-test-u-{{}}]/uid: current_value {}, should be 4242 (noop)",
            uid.trim()
        )]
    );
    assert_eq!(sh("id -u cohort-test-u-twinc"), uid);
    assert_twins("passwd entry", "getent passwd cohort-test-u-{} | cut -d: -f5-");
    assert_twins("groups", "id -Gn cohort-test-u-{} | tr ' ' '\\n' | sed 1d | sort");
    assert_twins("shadow fields", "getent shadow cohort-test-u-{} | cut -d: -f2,4-6");
    assert_twins("home", "ls -d /home/cohort-test-u-{}");
    side_by_side(&[
        &["user", "cohort-test-u-{}", "ensure=absent", "managehome=true"],
        &["group", "cohort-test-g-{}", "ensure=absent"],
    ]);
    assert_twins(
        "removed",
        "getent passwd cohort-test-u-{}; getent group cohort-test-g-{}; ls -d /home/cohort-test-u-{} 2>&1 | sed 's/.*cannot access.*/gone/'",
    );
    assert_eq!(sh("getent passwd cohort-test-u-twinc"), "");
}

#[test]
fn file_side_by_side() {
    let Some(_system) = enabled("file_side_by_side") else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    let f = format!("{base}/f-{{}}");
    let d = format!("{base}/d-{{}}");
    let events = side_by_side(&[
        &["file", &f, "content=hello", "mode=0600"],
        &["file", &f, "content=hello", "mode=0600"],
        &["file", &f, "content=bye"],
        &["file", &f, "mode=0644", "backup=.puppet-bak", "content=again"],
        &["file", &f, "owner=nobody", "group=nogroup"],
        &["file", &f, "content=later", "--noop"],
        &["file", &f, "ensure=link", "target=/etc/hosts"],
        &["file", &f, "ensure=absent"],
        &["file", &d, "ensure=directory", "mode=0750"],
        &["file", &d, "ensure=absent", "force=true"],
    ]);
    assert!(events[0][0].ends_with("ensure: defined content as '{sha256}2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'"), "{:?}", events[0]);
    assert!(events[1].is_empty());
    assert_eq!(events[4].len(), 2, "{:?}", events[4]);
    assert!(events[5][0].ends_with("(noop)"));
    assert_eq!(events[9].len(), 1);
    for s in TWINS {
        assert_eq!(std::fs::read_to_string(format!("{base}/f-{s}.puppet-bak")).unwrap(), "bye");
    }
    assert!(!Path::new(&format!("{base}/f-twinc")).exists());
}

#[test]
fn exec_side_by_side_and_posix_refusal() {
    let Some(_system) = enabled("exec_side_by_side_and_posix_refusal") else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    let touch = format!("/usr/bin/touch {base}/made-{{}}");
    let creates = format!("creates={base}/made-{{}}");
    let marker = format!("{base}/ran-{{}}");
    let events = side_by_side(&[
        &["exec", &touch, &creates],
        &["exec", &touch, &creates],
        &["exec", "/bin/false", "returns=0"],
        &["exec", "/bin/echo hi", "unless=/bin/true"],
        &["exec", "/bin/echo hi", "onlyif=/bin/false"],
        &["exec", &format!("/usr/bin/touch {marker}"), "onlyif=/bin/true", "--noop"],
        &["exec", "/bin/sh -c 'echo out; exit 3'", "returns=3"],
    ]);
    assert_eq!(
        events[0],
        [format!("/Exec[/usr/bin/touch {base}/made-{{}}]/returns: executed successfully")]
    );
    assert!(events[1].is_empty());
    assert_eq!(
        events[2],
        [
            "/Exec[/bin/false]/returns: change from 'notrun' to ['0'] failed: '/bin/false' returned 1 instead of one of [0]"
        ]
    );
    assert!(events[3].is_empty() && events[4].is_empty());
    assert!(!Path::new(&marker.replace("{}", "twinc")).exists(), "noop ran the command");
    // The seed's redirect needs a shell: Puppet's posix provider quietly uses one; ours says so.
    let date = format!("{base}/date");
    let line = format!("/bin/date > {date}");
    let refused = Tool::Cohort.run(&["exec", &line, &format!("creates={date}")]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("use provider=shell"), "{}", stderr(&refused));
    assert!(!Path::new(&date).exists());
    let shell = Tool::Cohort.run(&["exec", &line, &format!("creates={date}"), "provider=shell"]);
    assert!(stderr(&shell).contains("executed successfully"), "{}", stderr(&shell));
    let again = Tool::Cohort.run(&["exec", &line, &format!("creates={date}"), "provider=shell"]);
    assert!(logged(Tool::Cohort, &again).is_empty(), "creates did not hold it back");
    // Another user gets that user's groups, not root's.
    let id = Tool::Cohort.run(&["exec", "/usr/bin/id -G", "user=nobody", "logoutput=true"]);
    assert_eq!(
        logged(Tool::Cohort, &id),
        [
            "/Exec[/usr/bin/id -G]/returns: 65534",
            "/Exec[/usr/bin/id -G]/returns: executed successfully"
        ]
    );
}

fn parsed_fixture(dir: &Path, name: &str, text: &str) {
    for s in TWINS {
        std::fs::write(dir.join(format!("{name}-{s}")), text).unwrap();
    }
}

/// Puppet adds a banner and re-renders records; ours keeps every untouched line. Compare what
/// the files say, record by record.
fn records(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("# HEADER"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn parsed_files_side_by_side() {
    let Some(_system) = enabled("parsed_files_side_by_side") else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let hosts = "# hand comment\n127.0.0.1\tlocalhost\n\n::1 localhost ip6-localhost ip6-loopback   # trailing\ngarbage line without ip\n10.0.0.7 web1.example.com web1 www\n10.0.0.9 old\n";
    parsed_fixture(base, "hosts", hosts);
    parsed_fixture(base, "aliases", "# aliases\npostmaster: root\nteam: alice,bob\n");
    parsed_fixture(
        base,
        "fstab",
        "# fstab\nUUID=abc / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data ext4 defaults 0 0\n",
    );
    parsed_fixture(base, "keys", "ssh-rsa AAAAB3 bob\n");
    let t = |name: &str| format!("target={}/{name}-{{}}", base.display());
    let events = side_by_side(&[
        &["host", "web1.example.com", "ip=10.0.0.8", "host_aliases=web1", &t("hosts")],
        &["host", "db1.example.com", "ip=10.0.0.5", "comment=primary db", &t("hosts")],
        &["host", "old", "ensure=absent", &t("hosts")],
        &["host", "db1.example.com", "ip=10.0.0.5", "comment=primary db", &t("hosts")],
        &["mailalias", "foo", "recipient=rip@devco.net", &t("aliases")],
        &["mailalias", "team", "recipient=carol", &t("aliases")],
        &["mount", "/data", "options=noatime", &t("fstab")],
        &["mount", "/mnt/new", "ensure=defined", "device=/dev/sdc1", "fstype=xfs", &t("fstab")],
        &[
            "ssh_authorized_key",
            "alice@laptop",
            "type=ssh-ed25519",
            "key=AAAAC3Nz",
            "options=no-port-forwarding",
            "user=root",
            &t("keys"),
        ],
        &["ssh_authorized_key", "bob", "ensure=absent", "user=root", &t("keys")],
    ]);
    assert_eq!(
        events[0],
        [
            "/Host[web1.example.com]/ip: ip changed '10.0.0.7' to '10.0.0.8'",
            "/Host[web1.example.com]/host_aliases: host_aliases changed web1 www to 'web1'"
        ]
    );
    assert!(events[3].is_empty());
    for name in ["hosts", "aliases", "fstab", "keys"] {
        let theirs = records(&base.join(format!("{name}-twinp")));
        let ours = records(&base.join(format!("{name}-twinc")));
        assert_eq!(ours, theirs, "{name}");
    }
    // Untouched lines are kept byte for byte (Puppet re-renders them and adds a banner).
    let ours = std::fs::read_to_string(base.join("hosts-twinc")).unwrap();
    assert!(ours.starts_with("# hand comment\n127.0.0.1\tlocalhost\n\n::1 localhost ip6-localhost ip6-loopback   # trailing\n"), "{ours}");
}

#[test]
fn cohort_fixes_what_puppet_gets_wrong() {
    let Some(_system) = enabled("cohort_fixes_what_puppet_gets_wrong") else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    // A continuation line makes Puppet skip every mailalias; we read it as part of its entry.
    parsed_fixture(base, "aliases", "team: alice,\n  bob\n");
    let target = format!("target={}/aliases-{{}}", base.display());
    let theirs = Tool::Puppet.run(&["mailalias", "foo", "recipient=x@example.com", &target]);
    assert!(logged(Tool::Puppet, &theirs).is_empty(), "Puppet learnt to read continuations");
    let ours = Tool::Cohort.run(&["mailalias", "foo", "recipient=x@example.com", &target]);
    assert_eq!(logged(Tool::Cohort, &ours), ["/Mailalias[foo]/ensure: created"]);
    let found = Tool::Cohort.run(&["mailalias", "team", &target, "--format", "json"]);
    let report: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(report["state"]["recipient"], serde_json::json!(["alice", "bob"]), "{report}");
    assert_eq!(report["changed"], false);
    // Managing a mount without `pass` does not rewrite its `2` to `0`.
    parsed_fixture(base, "fstab", "/dev/sdb1 /data ext4 defaults 0 2\n");
    let target = format!("target={}/fstab-{{}}", base.display());
    Tool::Puppet.run(&["mount", "/data", "options=noatime", &target]);
    Tool::Cohort.run(&["mount", "/data", "options=noatime", &target]);
    assert_eq!(records(&base.join("fstab-twinp")), ["/dev/sdb1 /data ext4 noatime 0 0"]);
    assert_eq!(records(&base.join("fstab-twinc")), ["/dev/sdb1 /data ext4 noatime 0 2"]);
    // An unforced directory removal: Puppet logs "Not removing directory" and then reports
    // `ensure: removed` although the directory is still there; ours fails and says why.
    let d = format!("{}/d-{{}}", base.display());
    side_by_side(&[&["file", &d, "ensure=directory"]]);
    let theirs = Tool::Puppet.run(&["file", &d, "ensure=absent"]);
    assert!(logged(Tool::Puppet, &theirs).iter().any(|e| e.ends_with("ensure: removed")));
    assert!(base.join("d-twinp").is_dir());
    let ours = Tool::Cohort.run(&["file", &d, "ensure=absent"]);
    assert_eq!(
        logged(Tool::Cohort, &ours),
        [format!(
            "/File[{}/d-{{}}]/ensure: change from 'directory' to 'absent' failed: Could not remove directory {}/d-{{}}: not forced (force => true)",
            base.display(),
            base.display()
        )]
    );
    assert!(base.join("d-twinc").is_dir());
    // A failed change exits non-zero (`puppet resource` exits 0).
    let failed = Tool::Cohort.run(&["exec", "/bin/false", "returns=0"]);
    assert_eq!(failed.status.code(), Some(1));
    // Bad input names the attribute and value, and changes nothing.
    let bad = Tool::Cohort.run(&["user", "cohort-test-bad", "uid=abc"]);
    assert!(stderr(&bad).contains("'uid': \"abc\": should be a whole number"), "{}", stderr(&bad));
    assert_eq!(sh("getent passwd cohort-test-bad"), "");
    let unknown = Tool::Cohort.run(&["user", "cohort-test-bad", "colour=red"]);
    assert!(stderr(&unknown).contains("no parameter named 'colour' for type user"));
}

/// A `.deb` named `name` (version 1.0-1) built with dpkg-deb in `dir`.
fn build_deb(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share").join(name)).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Cohort <t@example.com>\nDescription: test package\n"),
    )
    .unwrap();
    std::fs::write(root.join("usr/share").join(name).join("hello"), "hi\n").unwrap();
    let deb = dir.join(format!("{name}.deb"));
    let built = Command::new("dpkg-deb").arg("--build").arg(&root).arg(&deb).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    deb
}

#[test]
fn package_side_by_side() {
    let Some(_system) = enabled("package_side_by_side") else { return };
    let dir = tempfile::tempdir().unwrap();
    for s in TWINS {
        sh(&format!("dpkg -P cohort-test-pkg-{s} >/dev/null 2>&1; true"));
        build_deb(dir.path(), &format!("cohort-test-pkg-{s}"));
    }
    let source = format!("source={}/cohort-test-pkg-{{}}.deb", dir.path().display());
    let events = side_by_side(&[
        &["package", "cohort-test-pkg-{}", "ensure=present", "provider=dpkg", &source],
        &["package", "cohort-test-pkg-{}", "ensure=present", "provider=dpkg", &source],
        &["package", "cohort-test-pkg-{}", "mark=hold"],
        &["package", "cohort-test-pkg-{}", "mark=none"],
        &["package", "cohort-test-pkg-{}", "ensure=purged"],
    ]);
    assert_eq!(events[0], ["/Package[cohort-test-pkg-{}]/ensure: created"]);
    assert!(events[1].is_empty());
    assert_eq!(events[4], ["/Package[cohort-test-pkg-{}]/ensure: purged"]);
    assert_twins("dpkg status", "dpkg-query -W -f '${Status}' cohort-test-pkg-{} 2>&1");
    let shown = Tool::Cohort.run(&["package", "cohort-test-pkg-twinc"]);
    let theirs = Tool::Puppet.run(&["package", "cohort-test-pkg-twinc"]);
    assert_eq!(stdout(&shown), stdout(&theirs));
}

/// An init script with LSB headers whose daemon is a `sleep` recorded in a pid file.
fn init_script(name: &str, pidfile: &Path) -> String {
    format!(
        "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          {name}\n# Required-Start:\n# Required-Stop:\n# Default-Start:     2 3 4 5\n# Default-Stop:      0 1 6\n# Short-Description: cohort test service\n### END INIT INFO\nPIDFILE={pid}\ncase \"$1\" in\n  start) sleep 600 >/dev/null 2>&1 </dev/null & echo $! > $PIDFILE ;;\n  stop) [ -f $PIDFILE ] && kill $(cat $PIDFILE); rm -f $PIDFILE ;;\n  status) [ -f $PIDFILE ] && kill -0 $(cat $PIDFILE) 2>/dev/null ;;\n  *) exit 3 ;;\nesac\n",
        pid = pidfile.display()
    )
}

struct Services {
    pids: Vec<PathBuf>,
}

impl Drop for Services {
    fn drop(&mut self) {
        // Stop what the test started, by PID, and remove the scripts.
        for pidfile in &self.pids {
            if let Ok(pid) = std::fs::read_to_string(pidfile)
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for s in TWINS {
            sh(&format!(
                "update-rc.d -f cohort-test-svc-{s} remove >/dev/null 2>&1; rm -f /etc/init.d/cohort-test-svc-{s}"
            ));
        }
    }
}

#[test]
fn service_side_by_side() {
    let Some(_system) = enabled("service_side_by_side") else { return };
    if Path::new("/run/systemd/system").is_dir() {
        eprintln!("systemd runs here; the init-script twin test applies to machines without it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut services = Services { pids: Vec::new() };
    for s in TWINS {
        let name = format!("cohort-test-svc-{s}");
        let pid = dir.path().join(format!("{name}.pid"));
        let script = PathBuf::from("/etc/init.d").join(&name);
        std::fs::write(&script, init_script(&name, &pid)).unwrap();
        sh(&format!(
            "chmod 755 {}; update-rc.d -f {name} remove >/dev/null 2>&1",
            script.display()
        ));
        services.pids.push(pid);
    }
    let events = side_by_side(&[
        &["service", "cohort-test-svc-{}", "ensure=running", "enable=true"],
        &["service", "cohort-test-svc-{}", "ensure=running", "enable=true"],
        &["service", "cohort-test-svc-{}", "ensure=stopped"],
        &["service", "cohort-test-svc-{}", "ensure=running", "--noop"],
    ]);
    assert_eq!(
        events[0],
        ["/Service[cohort-test-svc-{}]/ensure: ensure changed 'stopped' to 'running'"]
    );
    assert!(events[1].is_empty());
    assert_eq!(
        events[3],
        [
            "/Service[cohort-test-svc-{}]/ensure: current_value 'stopped', should be 'running' (noop)"
        ]
    );
    assert_twins("rc links", "ls /etc/rc2.d | grep cohort-test-svc-{}");
    let missing = Tool::Cohort.run(&["service", "cohort-test-nosuch", "ensure=running"]);
    assert!(stderr(&missing).contains("Could not find init script for 'cohort-test-nosuch'"));
    drop(services);
}

#[test]
fn cron_side_by_side() {
    let Some(_system) = enabled("cron_side_by_side") else { return };
    for s in TWINS {
        let user = format!("cohort-test-cron-{s}");
        sh(&format!(
            "userdel {user} 2>/dev/null; useradd -M {user}; printf 'MAILTO=ops\\n*/5 * * * * /usr/bin/unmanaged --flag\\n' | crontab -u {user} -"
        ));
    }
    let events = side_by_side(&[
        &[
            "cron",
            "backup",
            "command=/usr/local/bin/backup",
            "hour=2",
            "minute=0",
            "weekday=1",
            "user=cohort-test-cron-{}",
        ],
        &[
            "cron",
            "backup",
            "command=/usr/local/bin/backup",
            "hour=3",
            "minute=0",
            "weekday=1",
            "user=cohort-test-cron-{}",
        ],
        &[
            "cron",
            "backup",
            "command=/usr/local/bin/backup",
            "hour=3",
            "minute=0",
            "weekday=1",
            "user=cohort-test-cron-{}",
        ],
        &["cron", "nightly", "command=/usr/bin/true", "special=daily", "user=cohort-test-cron-{}"],
        &["cron", "backup", "ensure=absent", "user=cohort-test-cron-{}"],
    ]);
    assert_eq!(events[0], ["/Cron[backup]/ensure: created"]);
    assert_eq!(events[1], ["/Cron[backup]/hour: hour changed ['2'] to ['3']"]);
    assert!(events[2].is_empty());
    let jobs = |s: &str| {
        sh(&format!("crontab -l -u cohort-test-cron-{s}"))
            .lines()
            .filter(|l| !l.starts_with("# HEADER"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(jobs("twinc"), jobs("twinp"));
    assert_eq!(
        jobs("twinc"),
        [
            "MAILTO=ops",
            "*/5 * * * * /usr/bin/unmanaged --flag",
            "# Puppet Name: nightly",
            "@daily /usr/bin/true"
        ]
    );
    for s in TWINS {
        sh(&format!("crontab -r -u cohort-test-cron-{s}; userdel cohort-test-cron-{s}"));
    }
}

// --- through the daemons --------------------------------------------------------------------

const NODES: &[NodeSpec] = &[
    NodeSpec {
        name: "ral1.example.com",
        fact_file: "facts.yaml",
        facts: "role: ral\n",
        classes: "",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "ral2.example.com",
        fact_file: "facts.yaml",
        facts: "role: ral\n",
        classes: "",
        collectives: &["cohort"],
    },
    NodeSpec {
        name: "ral3.example.com",
        fact_file: "facts.yaml",
        facts: "role: ral\n",
        classes: "",
        collectives: &["cohort"],
    },
];

/// ral1 manages users, packages, mail aliases and exec (posix default); ral2 only exec and
/// host, with the shell as exec default; ral3 manages only the user named cohort-test-rip, and
/// Puppet manages that one there.
fn node_config(node: &str, dir: &Path) -> String {
    let state = dir.join(format!("{node}-puppet"));
    std::fs::create_dir_all(&state).unwrap();
    let managed = if node == "ral3.example.com" { "user[cohort-test-rip]\n" } else { "" };
    std::fs::write(state.join("resources.txt"), format!("{managed}class[main]\n")).unwrap();
    let puppet_dirs = format!("puppet_state_dirs = [{:?}]\n", state.display().to_string());
    let audit = dir.join(format!("{node}-audit.jsonl"));
    let audit = format!("[security]\naudit_log = {:?}\n", audit.display().to_string());
    let table = match node {
        "ral1.example.com" => {
            "[resource]\nallow_types = [\"user\", \"package\", \"mailalias\", \"exec\", \"notify\"]\n\
             puppet = \"/nonexistent/puppet\"\n"
        }
        "ral2.example.com" => {
            "[resource]\nallow_types = [\"exec\", \"host\", \"notify\"]\nexec_provider = \"shell\"\n"
        }
        _ => {
            "[resource]\nallow_types = [\"user\"]\n[resource.names.user]\nallow = [\"cohort-test-rip\"]\n"
        }
    };
    format!("{puppet_dirs}{audit}{table}")
}

fn rpc_json(fleet: &Fleet, args: &[&str]) -> Value {
    let mut all = vec!["rpc", "-j"];
    all.extend_from_slice(args);
    let out = fleet.cli(&all);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}\n{}", stdout(&out), stderr(&out)))
}

fn by_node(result: &Value) -> std::collections::BTreeMap<String, Value> {
    result["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["sender"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

#[test]
fn seed_command_lines_through_daemons() {
    let Some(_system) = enabled("seed_command_lines_through_daemons") else { return };
    sh(
        "userdel -r cohort-test-rip 2>/dev/null; userdel -r cohort-test-foo 2>/dev/null; useradd -M cohort-test-rip; dpkg -P cohort-test-unix2dos >/dev/null 2>&1; true",
    );
    let fleet = Fleet::start_configured(BrokerKind::Cohort, NODES, &node_config);
    let dir = fleet.dir.path().to_owned();
    let deb = build_deb(&dir, "cohort-test-unix2dos");
    let aliases = write(&dir, "aliases", "# local aliases\npostmaster: root\n");

    // mc-rpc puppetral do type=user name=rip password='$1$xxx'
    let result = rpc_json(
        &fleet,
        &["puppetral", "do", "type=user", "name=cohort-test-rip", "password=$1$xxx"],
    );
    let replies = by_node(&result);
    let ral1 = &replies["ral1.example.com"];
    assert_eq!(ral1["statuscode"], 0, "{ral1}");
    assert_eq!(ral1["data"]["changed"], true);
    assert_eq!(
        ral1["data"]["events"][0],
        "/User[cohort-test-rip]/password: changed [redacted] to [redacted]"
    );
    assert_eq!(ral1["data"]["resource"]["password"], "[redacted]");
    assert!(!result.to_string().contains("$1$xxx"), "the hash leaked into a reply");
    assert_eq!(sh("getent shadow cohort-test-rip | cut -d: -f2"), "$1$xxx\n");
    let ral2 = &replies["ral2.example.com"];
    assert_eq!(ral2["statuscode"], 1);
    assert!(
        ral2["statusmsg"].as_str().unwrap().contains("resource type 'user' is not allowed"),
        "{ral2}"
    );
    let ral3 = &replies["ral3.example.com"];
    assert_eq!(
        ral3["statusmsg"],
        "Puppet is managing the resource 'User[cohort-test-rip]', refusing to create conflicting states"
    );

    // mc-rpc puppetral do type=user name=foo comment="Foo User" managehome=true, with noop first.
    let noop = rpc_json(
        &fleet,
        &[
            "puppetral",
            "do",
            "type=user",
            "name=cohort-test-foo",
            "comment=Foo User",
            "managehome=true",
            "noop=true",
            "-I",
            "ral1.example.com",
        ],
    );
    assert_eq!(noop["replies"][0]["data"]["status"], "noop");
    assert_eq!(sh("getent passwd cohort-test-foo"), "");
    let out = fleet.cli(&[
        "rpc",
        "puppetral",
        "do",
        "type=user",
        "name=cohort-test-foo",
        "comment=Foo User",
        "managehome=true",
    ]);
    let text = stdout(&out);
    assert!(text.contains("/User[cohort-test-foo]/ensure: created"), "{text}");
    assert!(text.contains("Changed = 1"), "{text}");
    assert!(
        text.contains("User[cohort-test-foo] does not match [resource.names.user] allow"),
        "{text}"
    );
    assert!(sh("getent passwd cohort-test-foo").contains("Foo User"));
    assert!(Path::new("/home/cohort-test-foo").is_dir());
    // Again: nothing to do, said as such.
    let again = fleet.cli(&[
        "rpc",
        "resource",
        "apply",
        "type=user",
        "name=cohort-test-foo",
        "comment=Foo User",
        "-I",
        "ral1.example.com",
    ]);
    assert!(stdout(&again).contains("No change = 1"), "{}", stdout(&again));

    // mc-rpc puppetral do type=exec name="/bin/date > /tmp/date" user=root timeout=5 creates="/tmp/date"
    let date = dir.join("date");
    let line = format!("/bin/date > {}", date.display());
    let creates = format!("creates={}", date.display());
    let exec = [
        "puppetral",
        "do",
        "type=exec",
        &format!("name={line}"),
        "user=root",
        "timeout=5",
        &creates,
    ];
    let result = by_node(&rpc_json(&fleet, &exec));
    let posix = &result["ral1.example.com"];
    assert_eq!(posix["statuscode"], 1);
    assert!(posix["statusmsg"].as_str().unwrap().contains("use provider=shell"), "{posix}");
    let shell = &result["ral2.example.com"];
    assert_eq!(shell["statuscode"], 0, "{shell}");
    assert_eq!(shell["data"]["events"][0], format!("/Exec[{line}]/returns: executed successfully"));
    assert!(date.is_file());
    let result = by_node(&rpc_json(&fleet, &exec));
    assert_eq!(
        result["ral2.example.com"]["data"]["changed"], false,
        "creates must hold the second run back"
    );

    // mc-rpc puppetral do type=mailalias name=foo recipient="rip@devco.net" target="/etc/aliases"
    let target = format!("target={}", aliases.display());
    let result = by_node(&rpc_json(
        &fleet,
        &["puppetral", "do", "type=mailalias", "name=foo", "recipient=rip@devco.net", &target],
    ));
    assert_eq!(result["ral1.example.com"]["data"]["events"][0], "/Mailalias[foo]/ensure: created");
    assert_eq!(
        std::fs::read_to_string(&aliases).unwrap(),
        "# local aliases\npostmaster: root\nfoo: rip@devco.net\n"
    );

    // mc-rpc puppetral do type=package name=unix2dos ensure=present (a local .deb: no network)
    let source = format!("source={}", deb.display());
    let result = by_node(&rpc_json(
        &fleet,
        &[
            "puppetral",
            "do",
            "type=package",
            "name=cohort-test-unix2dos",
            "ensure=present",
            "provider=dpkg",
            &source,
        ],
    ));
    assert_eq!(
        result["ral1.example.com"]["data"]["events"][0],
        "/Package[cohort-test-unix2dos]/ensure: created"
    );
    assert_eq!(result["ral1.example.com"]["data"]["resource"]["ensure"], "1.0-1");
    assert!(
        result["ral2.example.com"]["statusmsg"]
            .as_str()
            .unwrap()
            .contains("'package' is not allowed")
    );

    // find and search, with whether Puppet manages the resource.
    let found = by_node(&rpc_json(
        &fleet,
        &["resource", "find", "type=user", "name=cohort-test-rip", "-I", "ral3.example.com"],
    ));
    assert_eq!(found["ral3.example.com"]["data"]["managed"], "true");
    assert_eq!(found["ral3.example.com"]["data"]["resource"]["password"], "[redacted]");
    let listed =
        by_node(&rpc_json(&fleet, &["resource", "search", "type=host", "-I", "ral2.example.com"]));
    assert!(listed["ral2.example.com"]["data"]["count"].as_u64().unwrap() >= 1);
    // Invalid attributes are invalid data (4), naming the attribute.
    let bad = by_node(&rpc_json(
        &fleet,
        &[
            "resource",
            "apply",
            "type=user",
            "name=cohort-test-foo",
            "uid=abc",
            "-I",
            "ral1.example.com",
        ],
    ));
    assert_eq!(bad["ral1.example.com"]["statuscode"], 4);
    assert!(bad["ral1.example.com"]["statusmsg"].as_str().unwrap().contains("'uid'"));

    // A type Cohort does not manage goes to Puppet where it is installed, and is refused by
    // name where it is not.
    let result = by_node(&rpc_json(
        &fleet,
        &["resource", "apply", "type=notify", "name=hello", "message=hi", "-W", "role=ral"],
    ));
    let with_puppet = &result["ral2.example.com"];
    assert_eq!(with_puppet["statuscode"], 0, "{with_puppet}");
    assert_eq!(
        with_puppet["data"]["events"][0],
        "/Notify[hello]/message: defined 'message' as 'hi'"
    );
    let without = &result["ral1.example.com"];
    assert_eq!(without["statuscode"], 1);
    let message = without["statusmsg"].as_str().unwrap();
    assert!(message.starts_with("Could not find type notify"), "{without}");

    // The audit log has the request, the hash redacted.
    let audit = std::fs::read_to_string(dir.join("ral1.example.com-audit.jsonl")).unwrap();
    assert!(audit.contains("cohort-test-rip") && audit.contains("[redacted]"), "{audit}");
    assert!(!audit.contains("$1$xxx"), "the hash reached the audit log");

    sh(
        "userdel -r cohort-test-rip 2>/dev/null; userdel -r cohort-test-foo 2>/dev/null; dpkg -P cohort-test-unix2dos >/dev/null 2>&1; true",
    );
}

/// Needs neither root nor Puppet: the CLI on a hosts file of its own.
#[test]
fn resource_cli_on_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = write(dir.path(), "hosts", "# mine\n10.0.0.7 web1 www\n");
    let target = format!("target={}", hosts.display());
    let run = |args: &[&str]| cohort().arg("resource").args(args).output().unwrap();

    let noop = run(&["host", "db1", "ip=10.0.0.5", &target, "--noop"]);
    assert!(noop.status.success(), "{}", stderr(&noop));
    assert_eq!(
        stderr(&noop),
        "Notice: /Host[db1]/ensure: current_value 'absent', should be 'present' (noop)\n"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), "# mine\n10.0.0.7 web1 www\n");

    let made = run(&["host", "db1", "ip=10.0.0.5", "host_aliases=db", &target]);
    assert_eq!(stderr(&made), "Notice: /Host[db1]/ensure: created\n");
    assert_eq!(
        stdout(&made),
        format!(
            "host {{ 'db1':\n  ensure       => 'present',\n  host_aliases => ['db'],\n  ip           => '10.0.0.5',\n  provider     => 'parsed',\n  target       => '{}',\n}}\n",
            hosts.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "# mine\n10.0.0.7 web1 www\n10.0.0.5\tdb1\tdb\n"
    );

    let json = run(&["host", "web1", "ip=10.0.0.8", &target, "--format", "json"]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["status"], "changed", "{report}");
    assert_eq!(report["lines"][0], "/Host[web1]/ip: ip changed '10.0.0.7' to '10.0.0.8'");
    assert_eq!(report["changed"], true);
    assert_eq!(report["events"][0]["message"], "ip changed '10.0.0.7' to '10.0.0.8'");
    assert_eq!(report["state"]["host_aliases"], serde_json::json!(["www"]));

    let yaml = run(&["host", "web1", "ip=10.0.0.8", &target, "--format", "yaml"]);
    assert!(stderr(&yaml).is_empty(), "in sync, nothing logged: {}", stderr(&yaml));
    assert!(stdout(&yaml).starts_with("host:\n  web1:\n"), "{}", stdout(&yaml));

    let bad = run(&["host", "db2", "ip=10.0.0.300", &target]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("invalid value for host attribute 'ip': \"10.0.0.300\""),
        "{}",
        stderr(&bad)
    );
    let unknown = run(&["nosuchtype", "x", "a=b", "--puppet", "/nonexistent/puppet"]);
    assert!(stderr(&unknown).contains("Could not find type nosuchtype"), "{}", stderr(&unknown));
    let files = run(&["file"]);
    assert!(stderr(&files).contains("Listing all file instances is not supported"));
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "# mine\n10.0.0.8\tweb1\twww\n10.0.0.5\tdb1\tdb\n"
    );
}
