//! The Puppet agent on this node: where its files are (asked of `puppet config print` once,
//! unless configured), what they say, and the actions: start a run (or signal the idling
//! daemon), disable with Puppet's own lock format, enable, read the last run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::report::{ReportDetails, Summary, parse_report, type_distribution};
use crate::runonce::{RunDefaults, RunRequest, agent_args};
use crate::state::{Files, Status, status};

/// The `[puppet]` table of daemon.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PuppetConfig {
    /// `puppet`; default `/opt/puppetlabs/bin/puppet` or `/usr/bin/puppet`, whichever exists.
    pub command: Option<PathBuf>,
    /// Given to every `puppet agent` and `puppet config print` (`--confdir`, `--vardir`, …).
    pub extra_args: Vec<String>,
    /// Puppet's settings of the same names; each default is what `puppet config print` says.
    pub agent_disabled_lockfile: Option<PathBuf>,
    /// See `agent_disabled_lockfile`.
    pub agent_catalog_run_lockfile: Option<PathBuf>,
    /// See `agent_disabled_lockfile`.
    pub lastrunfile: Option<PathBuf>,
    /// See `agent_disabled_lockfile`.
    pub lastrunreport: Option<PathBuf>,
    /// See `agent_disabled_lockfile`.
    pub pidfile: Option<PathBuf>,
    /// See `agent_disabled_lockfile`.
    pub resourcefile: Option<PathBuf>,
    /// Splay runs unless the request forces one.
    pub splay: bool,
    /// Longest splay, in seconds.
    pub splaylimit: u64,
    /// An idling agent daemon gets SIGUSR1 instead of a second process.
    pub signal_daemon: bool,
    /// Whether `runonce` may name another server.
    pub allow_server_override: bool,
}

impl Default for PuppetConfig {
    fn default() -> PuppetConfig {
        PuppetConfig {
            command: None,
            extra_args: Vec::new(),
            agent_disabled_lockfile: None,
            agent_catalog_run_lockfile: None,
            lastrunfile: None,
            lastrunreport: None,
            pidfile: None,
            resourcefile: None,
            splay: true,
            splaylimit: 30,
            signal_daemon: true,
            allow_server_override: false,
        }
    }
}

/// Where Puppet keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    /// `agent_disabled_lockfile`.
    pub disabled_lock: PathBuf,
    /// `agent_catalog_run_lockfile`.
    pub run_lock: PathBuf,
    /// `lastrunfile`.
    pub summary: PathBuf,
    /// `lastrunreport`.
    pub report: PathBuf,
    /// `pidfile`.
    pub pidfile: PathBuf,
    /// `resourcefile`.
    pub resources: PathBuf,
}

/// Why an action could not be done; the text is the reply's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A run started (or a daemon signalled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// What was done.
    pub summary: String,
    /// When (seconds since the epoch).
    pub initiated_at: i64,
}

/// The Puppet agent of this node.
#[derive(Debug)]
pub struct PuppetAgent {
    config: PuppetConfig,
    command: Option<PathBuf>,
    paths: OnceCell<Result<Paths, String>>,
}

const SETTINGS: [&str; 6] = [
    "agent_disabled_lockfile",
    "agent_catalog_run_lockfile",
    "lastrunfile",
    "lastrunreport",
    "pidfile",
    "resourcefile",
];

/// `name = value` lines of `puppet config print`.
pub fn parse_config_print(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Seconds since the epoch now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The `puppet` executable: `configured`, else the first of the AIO and Debian paths that
/// exists.
pub fn find_puppet(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(path) => Some(path.to_owned()),
        None => ["/opt/puppetlabs/bin/puppet", "/usr/bin/puppet"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    }
}

/// Puppet's environment: nothing inherited from the daemon but `HOME`, a fixed `PATH`, UTF-8.
pub fn clean_env(command: &mut tokio::process::Command) {
    command
        .env_clear()
        .env("PATH", "/opt/puppetlabs/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .env("LANG", "C.UTF-8");
}

impl PuppetConfig {
    /// A configuration whose Puppet files are all in `dir` (a test or benchmark node's own).
    pub fn with_state_dir(command: &Path, dir: &Path) -> PuppetConfig {
        let at = |name: &str| Some(dir.join(name));
        PuppetConfig {
            command: Some(command.to_owned()),
            agent_disabled_lockfile: at("agent_disabled.lock"),
            agent_catalog_run_lockfile: at("agent_catalog_run.lock"),
            lastrunfile: at("last_run_summary.yaml"),
            lastrunreport: at("last_run_report.yaml"),
            pidfile: at("agent.pid"),
            resourcefile: at("resources.txt"),
            ..PuppetConfig::default()
        }
    }
}

impl PuppetAgent {
    /// The agent as `config` describes it.
    pub fn new(config: PuppetConfig) -> PuppetAgent {
        let command = find_puppet(config.command.as_deref());
        PuppetAgent { config, command, paths: OnceCell::new() }
    }

    fn command(&self) -> Result<&Path, Refused> {
        self.command.as_deref().filter(|p| p.is_file()).ok_or_else(|| {
            Refused("Puppet is not installed on this node ([puppet] command)".into())
        })
    }

    /// Puppet's file locations: configured ones, the rest from `puppet config print` (asked once).
    pub async fn paths(&self) -> Result<Paths, Refused> {
        let found = self
            .paths
            .get_or_init(|| async {
                let configured = [
                    &self.config.agent_disabled_lockfile,
                    &self.config.agent_catalog_run_lockfile,
                    &self.config.lastrunfile,
                    &self.config.lastrunreport,
                    &self.config.pidfile,
                    &self.config.resourcefile,
                ];
                let mut printed = BTreeMap::new();
                if configured.iter().any(|p| p.is_none()) {
                    let program = self.command().map_err(|r| r.0)?;
                    let mut command = tokio::process::Command::new(program);
                    clean_env(&mut command);
                    command.args(["config", "print"]).args(SETTINGS).args(["--section", "agent"]);
                    command.args(&self.config.extra_args);
                    let done = config_print(command, Duration::from_secs(60)).await?;
                    printed = parse_config_print(&done);
                }
                let pick = |given: &Option<PathBuf>, name: &str| -> Result<PathBuf, String> {
                    match given {
                        Some(path) => Ok(path.clone()),
                        None => printed.get(name).map(PathBuf::from).ok_or_else(|| {
                            format!("puppet config print did not give {name}; set it in [puppet]")
                        }),
                    }
                };
                Ok(Paths {
                    disabled_lock: pick(configured[0], SETTINGS[0])?,
                    run_lock: pick(configured[1], SETTINGS[1])?,
                    summary: pick(configured[2], SETTINGS[2])?,
                    report: pick(configured[3], SETTINGS[3])?,
                    pidfile: pick(configured[4], SETTINGS[4])?,
                    resources: pick(configured[5], SETTINGS[5])?,
                })
            })
            .await;
        found.clone().map_err(Refused)
    }

    /// What the files say now.
    pub async fn files(&self) -> Result<(Files, Option<Summary>), Refused> {
        let paths = self.paths().await?;
        let summary = read(&paths.summary).and_then(|text| Summary::parse(&text).ok());
        let files = Files {
            disabled_lock: read(&paths.disabled_lock),
            run_lock: read(&paths.run_lock),
            pidfile: read(&paths.pidfile),
            last_run: summary.as_ref().and_then(Summary::last_run),
        };
        Ok((files, summary))
    }

    /// The agent's status.
    pub async fn status(&self) -> Result<Status, Refused> {
        let (files, _) = self.files().await?;
        Ok(status(&files, alive, unix_now()))
    }

    /// Starts a run (or signals the idling daemon), unless disabled or applying.
    pub async fn runonce(&self, request: &RunRequest) -> Result<Started, Refused> {
        let program = self.command()?.to_owned();
        let (files, _) = self.files().await?;
        let current = status(&files, alive, unix_now());
        if !current.enabled {
            return Err(Refused(if current.disable_message.is_empty() {
                "Puppet is disabled".to_owned()
            } else {
                format!("Puppet is disabled: '{}'", current.disable_message)
            }));
        }
        if current.applying {
            return Err(Refused("Puppet is currently applying a catalog, cannot run now".into()));
        }
        if current.idling && self.config.signal_daemon {
            if request.has_options() {
                return Err(Refused(
                    "Cannot specify any custom puppet options when the daemon is running".into(),
                ));
            }
            let pid = files.pidfile.as_deref().and_then(crate::state::pid_in).unwrap_or(0);
            let pid = i32::try_from(pid).map_err(|_| Refused("bad pid file".into()))?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGUSR1,
            )
            .map_err(|err| Refused(format!("Could not signal the Puppet daemon: {err}")))?;
            return Ok(Started {
                summary: "Signalled the running Puppet Daemon".into(),
                initiated_at: unix_now(),
            });
        }
        let defaults = RunDefaults {
            splay: self.config.splay,
            splaylimit: self.config.splaylimit,
            allow_server_override: self.config.allow_server_override,
        };
        let args = agent_args(request, &defaults).map_err(|err| Refused(err.to_string()))?;
        let mut command = tokio::process::Command::new(&program);
        clean_env(&mut command);
        command
            .arg("agent")
            .args(&args)
            .args(&self.config.extra_args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // Detached: the run outlives this call; tokio reaps it when it exits.
        command
            .spawn()
            .map_err(|err| Refused(format!("Could not start {}: {err}", program.display())))?;
        let line = format!("{} agent {}", program.display(), args.join(" "));
        Ok(Started {
            summary: format!("Started a Puppet run using the '{line}' command"),
            initiated_at: unix_now(),
        })
    }

    /// Disables the agent with Puppet's own lock (`puppet agent --enable` removes it).
    pub async fn disable(&self, message: &str) -> Result<String, Refused> {
        let paths = self.paths().await?;
        if paths.disabled_lock.exists() {
            return Err(Refused("Could not disable Puppet: Already disabled".into()));
        }
        let body = serde_json::json!({ "disabled_message": message }).to_string();
        let dir = paths.disabled_lock.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                let temp = tempfile::NamedTempFile::new_in(dir)?;
                std::fs::write(temp.path(), &body)?;
                temp.persist(&paths.disabled_lock).map(drop).map_err(|e| e.error)
            })
            .map_err(|err| Refused(format!("Could not disable Puppet: {err}")))?;
        Ok(format!("Successfully locked the Puppet agent: {message}"))
    }

    /// Enables the agent.
    pub async fn enable(&self) -> Result<String, Refused> {
        let paths = self.paths().await?;
        match std::fs::remove_file(&paths.disabled_lock) {
            Ok(()) => Ok("Successfully enabled the Puppet agent".into()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(Refused("Could not enable Puppet: Already enabled".into()))
            }
            Err(err) => Err(Refused(format!("Could not enable Puppet: {err}"))),
        }
    }

    /// The last run's summary, and its report details (logs and resources by type) when Puppet
    /// kept a report, else the types from `resources.txt`.
    pub async fn last_run(&self) -> Result<(Option<Summary>, ReportDetails), Refused> {
        let paths = self.paths().await?;
        let summary = read(&paths.summary).and_then(|text| Summary::parse(&text).ok());
        let details = match read(&paths.report).map(|text| parse_report(&text)) {
            Some(Ok(details)) => details,
            _ => ReportDetails {
                logs: Vec::new(),
                type_distribution: read(&paths.resources)
                    .map(|text| type_distribution(&text))
                    .unwrap_or_default(),
            },
        };
        Ok((summary, details))
    }
}

/// Runs a short command to its end and returns its stdout, or why not.
async fn config_print(
    command: tokio::process::Command,
    timeout: Duration,
) -> Result<String, String> {
    match cohort_exec::run(command, None, timeout, 1024 * 1024).await {
        Ok(done) if done.status.success() => Ok(String::from_utf8_lossy(&done.stdout).into_owned()),
        Ok(done) => Err(format!(
            "puppet config print {}: {}",
            done.describe_exit(),
            String::from_utf8_lossy(&done.stderr).trim()
        )),
        Err(err) => Err(format!("puppet config print: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_print() {
        let printed = parse_config_print(
            "agent_disabled_lockfile = /var/cache/puppet/state/agent_disabled.lock\nlastrunfile = /var/cache/puppet/public/last_run_summary.yaml\n",
        );
        assert_eq!(printed["lastrunfile"], "/var/cache/puppet/public/last_run_summary.yaml");
    }

    #[tokio::test]
    async fn disable_enable_with_configured_paths() {
        let dir = tempfile::tempdir().unwrap();
        let config = PuppetConfig {
            command: Some(PathBuf::from("/nonexistent/puppet")),
            agent_disabled_lockfile: Some(dir.path().join("state/agent_disabled.lock")),
            agent_catalog_run_lockfile: Some(dir.path().join("state/agent_catalog_run.lock")),
            lastrunfile: Some(dir.path().join("summary.yaml")),
            lastrunreport: Some(dir.path().join("report.yaml")),
            pidfile: Some(dir.path().join("agent.pid")),
            resourcefile: Some(dir.path().join("resources.txt")),
            ..PuppetConfig::default()
        };
        let agent = PuppetAgent::new(config);
        assert_eq!(agent.enable().await.unwrap_err().0, "Could not enable Puppet: Already enabled");
        agent.disable("maintenance").await.unwrap();
        let lock = std::fs::read_to_string(dir.path().join("state/agent_disabled.lock")).unwrap();
        assert_eq!(lock, r#"{"disabled_message":"maintenance"}"#);
        assert!(agent.disable("again").await.unwrap_err().0.contains("Already disabled"));
        let status = agent.status().await.unwrap();
        assert_eq!(status.disable_message, "maintenance");
        assert_eq!(
            agent.runonce(&RunRequest::default()).await.unwrap_err().0,
            "Puppet is not installed on this node ([puppet] command)"
        );
        agent.enable().await.unwrap();
        assert!(agent.status().await.unwrap().enabled);
    }
}
