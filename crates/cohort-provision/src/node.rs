//! The node's side of provisioning, what the built-in `provision` agent runs: the lease
//! ([`crate::lease`]) in a lock file, the `puppet` entry of the hosts file
//! ([`crate::hosts`]), the certificate check and request, the Puppet runs judged by
//! `--detailed-exitcodes` (0 and 2 succeed) with their failure counts, starting the Puppet
//! daemon, and `disable`, after which the node is no longer provisionable: its
//! `provision_disabled` fact turns `true` and the agent deactivates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::lease::{self, Locking};

/// `[provision]` in `daemon.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Whether this node offers the `provision` agent at all (new nodes; off by default).
    pub enabled: bool,
    /// Where the lock and the disable mark are kept.
    pub state_dir: PathBuf,
    /// The hosts file whose `puppet` entry is set.
    pub hosts_file: PathBuf,
    /// The node's Puppet certificate; default: what `puppet config print hostcert` says.
    pub certificate: Option<PathBuf>,
    /// Longest lock a provisioner may ask for.
    #[serde(with = "humantime_serde")]
    pub max_lock: Duration,
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        NodeSettings {
            enabled: false,
            state_dir: PathBuf::from("/var/lib/cohort/provision"),
            hosts_file: PathBuf::from("/etc/hosts"),
            certificate: None,
            max_lock: Duration::from_secs(24 * 3600),
        }
    }
}

/// How Puppet is run: the daemon's `[puppet]` command and arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PuppetCommand {
    /// The `puppet` executable.
    pub command: Option<PathBuf>,
    /// Given to every invocation (`--confdir`, `--vardir`, `--ssldir`, `--certname`, …).
    pub extra_args: Vec<String>,
}

impl PuppetCommand {
    fn program(&self) -> Result<PathBuf, String> {
        cohort_puppet::host::find_puppet(self.command.as_deref())
            .filter(|p| p.is_file())
            .ok_or_else(|| "Puppet is not installed on this node ([puppet] command)".to_owned())
    }

    fn command(&self, args: &[&str]) -> Result<tokio::process::Command, String> {
        let mut command = tokio::process::Command::new(self.program()?);
        cohort_puppet::host::clean_env(&mut command);
        command.args(args).args(&self.extra_args);
        Ok(command)
    }
}

/// The facts `[provision]` adds: `provision_disabled` (`true`/`false`), only when the agent is
/// enabled in the configuration.
pub fn facts(settings: &NodeSettings) -> Map<String, Value> {
    let mut facts = Map::new();
    if settings.enabled {
        facts.insert(
            "provision_disabled".into(),
            Value::from(if is_disabled(settings) { "true" } else { "false" }),
        );
    }
    facts
}

/// Files whose change should refresh the facts.
pub fn watched(settings: &NodeSettings) -> Vec<PathBuf> {
    if settings.enabled { vec![settings.state_dir.join("disabled")] } else { Vec::new() }
}

/// Whether provisioning was disabled on this node.
pub fn is_disabled(settings: &NodeSettings) -> bool {
    settings.state_dir.join("disabled").exists()
}

/// Most output of a Puppet run kept in a reply.
const OUTPUT_CAP: usize = 16 * 1024;

/// A step's failure on the node: a message for the reply, and outputs worth keeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// What went wrong.
    pub message: String,
    /// Outputs (Puppet's exit code and counts).
    pub data: Map<String, Value>,
}

fn refused(message: impl Into<String>) -> Refused {
    Refused { message: message.into(), data: Map::new() }
}

/// The node side.
#[derive(Debug, Clone)]
pub struct ProvisionNode {
    settings: NodeSettings,
    puppet: PuppetCommand,
}

/// Writes `text` to `path` through a temporary file in the same directory, keeping the mode of
/// the file it replaces.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(temp.path(), meta.permissions())?;
    }
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// The last `cap` bytes of `bytes`, as text, starting at a line.
fn tail(bytes: &[u8], cap: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= cap {
        return text.into_owned();
    }
    let mut start = text.len() - cap;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let rest = &text[start..];
    rest.find('\n').map_or(rest, |at| &rest[at + 1..]).to_owned()
}

/// Failed resources in Puppet's `--summarize` output (`Resources:` … `Failed: N`), and the
/// failure events when resources are not listed.
pub fn failed_resources(output: &str) -> u64 {
    let mut section = "";
    let mut failed = 0;
    for line in output.lines() {
        let trimmed = line.trim();
        if !line.starts_with(' ') && trimmed.ends_with(':') {
            section = trimmed;
            continue;
        }
        if let Some(count) =
            trimmed.strip_prefix("Failed:").and_then(|n| n.trim().parse::<u64>().ok())
            && (section == "Resources:" || (section == "Events:" && failed == 0))
        {
            failed = count;
        }
    }
    failed
}

impl ProvisionNode {
    /// The node side with `settings`, running `puppet`.
    pub fn new(settings: NodeSettings, puppet: PuppetCommand) -> ProvisionNode {
        ProvisionNode { settings, puppet }
    }

    /// The settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    fn lock_path(&self) -> PathBuf {
        self.settings.state_dir.join("lock")
    }

    fn current_lock(&self) -> Option<lease::Lock> {
        lease::read(std::fs::read_to_string(self.lock_path()).ok().as_deref())
    }

    fn ensure_state_dir(&self) -> Result<(), Refused> {
        std::fs::create_dir_all(&self.settings.state_dir).map_err(|err| {
            refused(format!("cannot create {}: {err}", self.settings.state_dir.display()))
        })
    }

    /// Takes or renews the lease for `owner` for `ttl`.
    pub fn lock(
        &self,
        owner: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<Map<String, Value>, Refused> {
        if is_disabled(&self.settings) {
            // The mark tells the provisioner the node is finished, not merely refusing.
            return Err(Refused {
                message: "provisioning is disabled on this node".to_owned(),
                data: object(json!({"disabled": true})),
            });
        }
        let ttl = ttl.min(self.settings.max_lock);
        self.ensure_state_dir()?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        match lease::lock(self.current_lock(), owner, ttl_ms, now_ms) {
            Locking::Held(held) => Err(Refused {
                message: format!(
                    "locked by {} for {} s more",
                    held.owner,
                    (held.expires_ms - now_ms).max(0) / 1000
                ),
                data: lock_data(Some(&held)),
            }),
            Locking::Granted(lock) => {
                let text = serde_json::to_string(&lock).unwrap_or_default();
                replace_file(&self.lock_path(), &text).map_err(|err| {
                    refused(format!("cannot write {}: {err}", self.lock_path().display()))
                })?;
                Ok(lock_data(Some(&lock)))
            }
        }
    }

    /// Releases the lease (refused if another provisioner holds it).
    pub fn unlock(&self, owner: &str, now_ms: i64) -> Result<Map<String, Value>, Refused> {
        let current = self.current_lock();
        if let Err(held) = lease::may_unlock(current.as_ref(), owner, now_ms) {
            return Err(Refused {
                message: format!("locked by {}, not by {owner}", held.owner),
                data: lock_data(Some(&held)),
            });
        }
        match std::fs::remove_file(self.lock_path()) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(refused(format!(
                    "cannot remove {}: {err}",
                    self.lock_path().display()
                )));
            }
        }
        Ok(lock_data(None))
    }

    /// The lease, whether provisioning is disabled, whether the node has a certificate.
    pub async fn status(&self, now_ms: i64) -> Map<String, Value> {
        let mut data = lock_data(lease::in_force(self.current_lock(), now_ms).as_ref());
        data.insert("disabled".into(), Value::Bool(is_disabled(&self.settings)));
        if let Ok(has) = self.has_cert().await {
            data.insert("has_cert".into(), Value::Bool(has));
        }
        data
    }

    /// Points `puppet` at `address` in the hosts file.
    pub fn set_puppet_host(&self, address: &str) -> Result<Map<String, Value>, Refused> {
        if !crate::hosts::is_address(address) {
            return Err(refused(format!("{address:?} is not an IP address")));
        }
        let path = &self.settings.hosts_file;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(refused(format!(
                    "Could not add hosts entry: cannot read {}: {err}",
                    path.display()
                )));
            }
        };
        let changed = match crate::hosts::point_puppet_at(&text, address) {
            Some(new) => {
                replace_file(path, &new).map_err(|err| {
                    refused(format!(
                        "Could not add hosts entry: cannot write {}: {err}",
                        path.display()
                    ))
                })?;
                true
            }
            None => false,
        };
        Ok(object(json!({"changed": changed, "hosts_file": path.display().to_string()})))
    }

    async fn certificate_path(&self) -> Result<PathBuf, Refused> {
        if let Some(path) = &self.settings.certificate {
            return Ok(path.clone());
        }
        let command = self
            .puppet
            .command(&["config", "print", "hostcert", "--section", "agent"])
            .map_err(refused)?;
        let done = cohort_exec::run(command, None, Duration::from_secs(60), 64 * 1024)
            .await
            .map_err(|err| refused(format!("puppet config print: {err}")))?;
        let text = String::from_utf8_lossy(&done.stdout).trim().to_owned();
        if !done.status.success() || text.is_empty() {
            return Err(refused(format!("puppet config print hostcert {}", done.describe_exit())));
        }
        Ok(PathBuf::from(text))
    }

    /// Whether the node has its certificate.
    pub async fn has_cert(&self) -> Result<bool, Refused> {
        Ok(self.certificate_path().await?.is_file())
    }

    /// Has the node make a key and send its CSR (`puppet ssl submit_request`).
    pub async fn request_certificate(
        &self,
        timeout: Duration,
    ) -> Result<Map<String, Value>, Refused> {
        let command =
            self.puppet.command(&["ssl", "submit_request", "--color=false"]).map_err(refused)?;
        let (code, output) = self.run(command, timeout).await?;
        let data = object(json!({"exitcode": code, "output": output}));
        // A CSR sent before (a retried or resumed step) is as good as a new one.
        if code == 0 || output.contains("already has a requested certificate") {
            Ok(data)
        } else {
            let last = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
            Err(Refused {
                message: format!("puppet ssl submit_request exited {code}: {last}"),
                data,
            })
        }
    }

    async fn run(
        &self,
        command: tokio::process::Command,
        timeout: Duration,
    ) -> Result<(i32, String), Refused> {
        let done = cohort_exec::run(command, None, timeout, 8 * 1024 * 1024)
            .await
            .map_err(|err| refused(format!("puppet: {err}")))?;
        let mut bytes = done.stdout.clone();
        bytes.extend_from_slice(&done.stderr);
        let code = done.status.code().unwrap_or(-1);
        Ok((code, tail(&bytes, OUTPUT_CAP)))
    }

    /// One Puppet run (`--test --detailed-exitcodes`), in `environment` if given: 0 (no
    /// change) and 2 (changes) succeed; anything else fails with the failed resources counted.
    pub async fn run_puppet(
        &self,
        environment: Option<&str>,
        timeout: Duration,
    ) -> Result<Map<String, Value>, Refused> {
        let mut args = vec![
            "agent",
            "--test",
            "--color=false",
            "--summarize",
            "--detailed-exitcodes",
            "--waitforcert",
            "0",
            "--no-splay",
        ];
        if let Some(environment) = environment {
            args.extend(["--environment", environment]);
        }
        let command = self.puppet.command(&args).map_err(refused)?;
        let (code, output) = self.run(command, timeout).await?;
        let failed = failed_resources(&output);
        let data = object(json!({"exitcode": code, "failed_resources": failed, "output": output}));
        match code {
            0 | 2 => Ok(data),
            _ if failed > 0 => Err(Refused {
                message: format!("Puppet failed due to {failed} failed resource(s) (exit {code})"),
                data,
            }),
            _ => {
                let last = output
                    .lines()
                    .rev()
                    .find(|l| l.contains("Error"))
                    .or_else(|| output.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                Err(Refused { message: format!("Puppet returned {code}: {last}"), data })
            }
        }
    }

    /// Starts the Puppet agent daemon (it detaches; its own pid file tracks it).
    pub async fn daemonize_puppet(&self, timeout: Duration) -> Result<Map<String, Value>, Refused> {
        let command =
            self.puppet.command(&["agent", "--daemonize", "--color=false"]).map_err(refused)?;
        let done = cohort_exec::run_detaching(command, timeout, OUTPUT_CAP)
            .await
            .map_err(|err| refused(format!("puppet agent --daemonize: {err}")))?;
        let output = String::from_utf8_lossy(&done.stdout).into_owned();
        let code = done.status.code().unwrap_or(-1);
        let data = object(json!({"exitcode": code, "output": output}));
        if code == 0 {
            Ok(data)
        } else {
            Err(Refused {
                message: format!("puppet agent --daemonize {}", done.describe_exit()),
                data,
            })
        }
    }

    /// Leaves the provisionable set: the disable mark, and the lease released.
    pub fn disable(&self, now_ms: i64) -> Result<Map<String, Value>, Refused> {
        self.ensure_state_dir()?;
        let path = self.settings.state_dir.join("disabled");
        replace_file(&path, &format!("{now_ms}\n"))
            .map_err(|err| refused(format!("cannot write {}: {err}", path.display())))?;
        let _ = std::fs::remove_file(self.lock_path());
        Ok(object(json!({"disabled": true})))
    }
}

fn lock_data(lock: Option<&lease::Lock>) -> Map<String, Value> {
    object(json!({
        "locked": lock.is_some(),
        "owner": lock.map(|l| l.owner.clone()),
        "expires_ms": lock.map(|l| l.expires_ms),
    }))
}

/// The map inside a JSON object (empty for anything else).
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &Path) -> ProvisionNode {
        let settings = NodeSettings {
            enabled: true,
            state_dir: dir.join("state"),
            hosts_file: dir.join("hosts"),
            certificate: Some(dir.join("cert.pem")),
            max_lock: Duration::from_secs(3600),
        };
        ProvisionNode::new(settings, PuppetCommand::default())
    }

    #[test]
    fn failed_resources_come_from_the_resources_section() {
        let summary = "Changes:\n            Total: 1\nEvents:\n          Failure: 2\n          Success: 1\n            Total: 3\nResources:\n          Changed: 1\n           Failed: 2\n  Failed to restart: 0\n            Total: 9\n";
        assert_eq!(failed_resources(summary), 2);
        assert_eq!(failed_resources("Resources:\n           Failed: 0\n"), 0);
        assert_eq!(failed_resources("Notice: Applied catalog\n"), 0);
    }

    #[tokio::test]
    async fn lease_disable_and_facts() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        assert_eq!(facts(&node.settings)["provision_disabled"], "false");
        node.lock("p1", Duration::from_secs(60), 0).unwrap();
        let err = node.lock("p2", Duration::from_secs(60), 1000).unwrap_err();
        assert_eq!(err.message, "locked by p1 for 59 s more");
        assert_eq!(node.unlock("p2", 1000).unwrap_err().message, "locked by p1, not by p2");
        let status = node.status(1000).await;
        assert_eq!(
            (status["locked"].clone(), status["owner"].clone(), status["has_cert"].clone()),
            (json!(true), json!("p1"), json!(false))
        );
        assert_eq!(node.status(61_000).await["locked"], false, "a lease runs out");
        node.lock("p2", Duration::from_secs(60), 61_000).unwrap();
        node.unlock("p2", 62_000).unwrap();
        node.unlock("p2", 62_000).unwrap();
        node.disable(70_000).unwrap();
        assert_eq!(facts(&node.settings)["provision_disabled"], "true");
        assert_eq!(
            node.lock("p1", Duration::from_secs(60), 71_000).unwrap_err().message,
            "provisioning is disabled on this node"
        );
        std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
        assert!(node.has_cert().await.unwrap());
    }

    #[test]
    fn hosts_file_is_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n10.9.9.9 puppet puppetdb\n")
            .unwrap();
        assert_eq!(node.set_puppet_host("10.0.0.1").unwrap()["changed"], true);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hosts")).unwrap(),
            "127.0.0.1 localhost\n10.9.9.9\tpuppetdb\n10.0.0.1\tpuppet\n"
        );
        assert_eq!(node.set_puppet_host("10.0.0.1").unwrap()["changed"], false);
        assert_eq!(
            node.set_puppet_host("evil; rm").unwrap_err().message,
            "\"evil; rm\" is not an IP address"
        );
    }
}
