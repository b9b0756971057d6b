//! A real fleet for end-to-end tests: a broker (ours or nats-server) and `cohort daemon`
//! subprocesses, each with its own fact and class files, plus the CLI run as a subprocess.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cohort_test_support::{NatsServer, free_port, wait_for_listener};

use crate::process::{Daemon, cohort, write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Cohort,
    Nats,
}

/// The broker process, stopped by PID on drop.
pub enum Broker {
    Cohort(Daemon),
    Nats(NatsServer),
}

pub struct Node {
    pub name: String,
    pub facts: PathBuf,
    pub daemon: Option<Daemon>,
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub _broker: Broker,
    pub url: String,
    pub nodes: Vec<Node>,
    pub agents_dir: PathBuf,
    pub client_config: PathBuf,
}

/// One node's description: name, fact file (name and text), classes, extra collectives.
pub struct NodeSpec {
    pub name: &'static str,
    pub fact_file: &'static str,
    pub facts: &'static str,
    pub classes: &'static str,
    pub collectives: &'static [&'static str],
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Fleet {
    pub fn start(kind: BrokerKind, specs: &[NodeSpec]) -> Fleet {
        Fleet::start_configured(kind, specs, &|_, _| String::new())
    }

    /// Like [`Fleet::start`], each node's daemon.toml extended with `config(node, dir)`'s text
    /// (`dir` is the fleet's temporary directory).
    pub fn start_configured(
        kind: BrokerKind,
        specs: &[NodeSpec],
        config: &dyn Fn(&str, &Path) -> String,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let (broker, url) = match kind {
            BrokerKind::Cohort => {
                let port = free_port();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let mut command = cohort();
                command.args(["broker", "--listen", &addr.to_string()]);
                let daemon = Daemon::spawn(command);
                assert!(
                    wait_for_listener(addr, Duration::from_secs(10)),
                    "{}",
                    daemon.stderr_text()
                );
                (Broker::Cohort(daemon), format!("nats://{addr}"))
            }
            BrokerKind::Nats => {
                let server = NatsServer::start("");
                let url = server.url();
                (Broker::Nats(server), url)
            }
        };
        let agents_dir = dir.path().join("agents");
        copy_dir(&fixtures().join("agents"), &agents_dir);
        let client_config = write(
            dir.path(),
            "client.toml",
            &format!(
                "brokers = [{url:?}]\nagents_dir = {:?}\ndiscovery_timeout = 2\n\
                 discovery_history = \"discovery.json\"\n",
                agents_dir.display().to_string()
            ),
        );
        let mut fleet =
            Fleet { dir, _broker: broker, url, nodes: Vec::new(), agents_dir, client_config };
        for spec in specs {
            let extra = config(spec.name, fleet.dir.path());
            let agents = fleet.agents_dir.clone();
            fleet.add_node_configured(spec, &agents, &extra);
        }
        fleet.wait_for(specs.len());
        fleet
    }

    /// Adds and starts a node whose external agents are in `agents` instead of the fleet's.
    pub fn add_node_with_agents(&mut self, spec: &NodeSpec, agents: &Path) {
        self.add_node_configured(spec, agents, "");
    }

    pub fn add_node_configured(&mut self, spec: &NodeSpec, agents: &Path, extra: &str) {
        let node_dir = self.dir.path().join(spec.name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let facts = write(&node_dir, spec.fact_file, spec.facts);
        let classes = write(&node_dir, "classes.txt", spec.classes);
        let node = Node { name: spec.name.to_owned(), facts, daemon: None };
        self.nodes.push(node);
        let idx = self.nodes.len() - 1;
        self.start_node(idx, &classes, spec.collectives, agents, extra);
    }

    fn start_node(
        &mut self,
        idx: usize,
        classes: &Path,
        collectives: &[&str],
        agents: &Path,
        extra: &str,
    ) {
        let node = &self.nodes[idx];
        let mut command = cohort();
        command
            .args(["daemon", "--insecure", "--identity", &node.name, "--broker", &self.url])
            .arg("--facts")
            .arg(&node.facts)
            .arg("--classes")
            .arg(classes)
            .arg("--agents-dir")
            .arg(agents)
            .env("NODE_NAME", &node.name)
            .env("COHORT_LOG", "info");
        for collective in collectives {
            command.args(["--collective", collective]);
        }
        // A config file that does not exist would be an error; point at an empty one so the
        // host's /etc/cohort/daemon.toml never leaks into a test.
        let config = write(
            self.dir.path(),
            &format!("{}.toml", node.name),
            &format!("registration_interval = \"1s\"\n{extra}"),
        );
        command.arg("--config").arg(config);
        self.nodes[idx].daemon = Some(Daemon::spawn(command));
    }

    /// Waits until `count` nodes answer discovery.
    pub fn wait_for(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = self.cli(&["find", "--dt", "1"]);
            let found = String::from_utf8_lossy(&output.stdout).lines().count();
            if found >= count {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{}: {}",
                            n.name,
                            n.daemon.as_ref().map(Daemon::stderr_text).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!("only {found} of {count} nodes came up:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the CLI against this fleet.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = cohort();
        command.args(args).arg("-c").arg(&self.client_config);
        command.output().unwrap()
    }

    /// Stops the broker and starts it again on the same address; nodes must reconnect alone.
    pub fn restart_broker(&mut self) {
        let addr: SocketAddr = self.url.trim_start_matches("nats://").parse().unwrap();
        match &mut self._broker {
            Broker::Cohort(daemon) => {
                daemon.signal("TERM");
                assert!(daemon.wait_exit(Duration::from_secs(10)).is_some(), "broker did not stop");
                std::thread::sleep(Duration::from_millis(500));
                let mut command = cohort();
                command.args(["broker", "--listen", &addr.to_string()]);
                *daemon = Daemon::spawn(command);
            }
            Broker::Nats(server) => {
                server.stop();
                std::thread::sleep(Duration::from_millis(500));
                *server = NatsServer::start_on("", addr.port());
            }
        }
        assert!(
            wait_for_listener(addr, Duration::from_secs(10)),
            "broker did not come back on {addr}"
        );
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    pub fn stop_node(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        if let Some(mut daemon) = node.daemon.take() {
            daemon.signal("TERM");
            assert!(
                daemon.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()),
                "{}",
                daemon.stderr_text()
            );
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn lines(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(output).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}
