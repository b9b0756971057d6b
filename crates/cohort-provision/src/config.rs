//! The provisioner's configuration (TOML, `/etc/cohort/provision.toml`) and its checks: the
//! pipeline of steps, how targets and masters are found, master criteria, retries, notifiers.
//! Every error names the key and the value at fault.

use std::path::PathBuf;
use std::time::Duration;

use cohort_filter::FilterArgs;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::master::Fallback;
use crate::notify::{Recipient, SmtpConfig, XmppConfig};

/// One step of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Point the node's `puppet` host name at the master (`provision#set_puppet_host`).
    SetPuppetHost,
    /// `puppetca#clean` of the node's certname on every master (skipped with the next two when
    /// the node already has a certificate).
    CleanCert,
    /// `provision#request_certificate`: the node sends its CSR.
    RequestCertificate,
    /// `puppetca#sign` on the master that holds the CSR; never twice.
    SignCertificate,
    /// `provision#bootstrap_puppet`: a run in the bootstrap environment.
    BootstrapPuppet,
    /// `provision#run_puppet`: a run in the node's own environment.
    RunPuppet,
    /// `provision#daemonize_puppet`: leave the Puppet agent running as a daemon.
    DaemonizePuppet,
    /// `provision#disable`: the node leaves the provisionable set.
    Disable,
    /// Send `Provisioned <node> against <master>` to every notify target.
    Notify,
    /// A site's own step: a `[custom.NAME]` entry.
    #[serde(untagged)]
    Custom(String),
}

impl Step {
    /// The step's name as written in the configuration.
    pub fn name(&self) -> &str {
        match self {
            Step::SetPuppetHost => "set_puppet_host",
            Step::CleanCert => "clean_cert",
            Step::RequestCertificate => "request_certificate",
            Step::SignCertificate => "sign_certificate",
            Step::BootstrapPuppet => "bootstrap_puppet",
            Step::RunPuppet => "run_puppet",
            Step::DaemonizePuppet => "daemonize_puppet",
            Step::Disable => "disable",
            Step::Notify => "notify",
            Step::Custom(name) => name,
        }
    }

    /// The certificate steps, skipped together for a node that already has a certificate.
    pub fn is_certificate(&self) -> bool {
        matches!(self, Step::CleanCert | Step::RequestCertificate | Step::SignCertificate)
    }

    /// Whether a node found no longer provisionable when this step is due has had the step
    /// done: true of `disable` alone, whose whole effect that is. Any other step of a node
    /// that left the set is someone else's business.
    pub fn is_done_when_disabled(&self) -> bool {
        matches!(self, Step::Disable)
    }

    const BUILT_IN: [Step; 9] = [
        Step::SetPuppetHost,
        Step::CleanCert,
        Step::RequestCertificate,
        Step::SignCertificate,
        Step::BootstrapPuppet,
        Step::RunPuppet,
        Step::DaemonizePuppet,
        Step::Disable,
        Step::Notify,
    ];
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a custom step's action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// On the node being provisioned.
    #[default]
    Node,
    /// On the master chosen for it.
    Master,
}

/// `[custom.NAME]`: any agent action that follows the step DDL (`provision_step`): it takes
/// `node`, `master` and `master_address` if it declares them, plus `inputs`, and succeeds with
/// status 0.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomStep {
    /// Agent.
    pub agent: String,
    /// Action.
    pub action: String,
    /// Where it runs.
    #[serde(default)]
    pub on: On,
    /// Fixed inputs.
    #[serde(default)]
    pub inputs: Map<String, Value>,
}

/// `[target]`: how new nodes are found.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    /// The agent new nodes run (default `provision`).
    pub agent: String,
    /// More conditions (default: `provision_disabled=false`).
    pub filter: FilterArgs,
    /// The fact holding a node's address, for the log.
    pub ipaddress_fact: String,
}

impl Default for Target {
    fn default() -> Target {
        Target {
            agent: "provision".to_owned(),
            filter: FilterArgs {
                fact: vec!["provision_disabled=false".to_owned()],
                ..FilterArgs::default()
            },
            ipaddress_fact: "ipaddress".to_owned(),
        }
    }
}

/// `[master]`: how Puppet masters are found and matched to nodes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// The agent masters run (default `puppetca`).
    pub agent: String,
    /// More conditions.
    pub filter: FilterArgs,
    /// Fact names in order of preference: the first on which node and master agree decides.
    pub criteria: Vec<String>,
    /// The fact holding a master's address, written into the node's `/etc/hosts`.
    pub ipaddress_fact: String,
    /// What happens when no criterion agrees.
    pub fallback: Fallback,
}

impl Default for MasterConfig {
    fn default() -> MasterConfig {
        MasterConfig {
            agent: "puppetca".to_owned(),
            filter: FilterArgs::default(),
            criteria: Vec::new(),
            ipaddress_fact: "ipaddress".to_owned(),
            fallback: Fallback::First,
        }
    }
}

/// `[retry]`: how a failed step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one step before the node is marked failed (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            attempts: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// `[notify]`: who hears of each node provisioned or failed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Recipient URIs: `mailto:`, `https://` (or `http://`) webhooks, `xmpp:`, `exec:`.
    pub targets: Vec<String>,
    /// Send through one node running this agent (`sendmsg`) instead of directly.
    pub agent: Option<String>,
    /// Which nodes may be that notifier.
    pub filter: FilterArgs,
    /// The message subject.
    pub subject: String,
    /// Outgoing mail, for `mailto:` sent directly.
    pub smtp: SmtpConfig,
    /// XMPP account, for `xmpp:` sent directly.
    pub xmpp: XmppConfig,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            targets: Vec::new(),
            agent: None,
            filter: FilterArgs::default(),
            subject: "New Node".to_owned(),
            smtp: SmtpConfig::default(),
            xmpp: XmppConfig::default(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionConfig {
    /// The durable progress store (an embedded database file).
    pub store: PathBuf,
    /// Nodes provisioned at once.
    pub concurrency: usize,
    /// Time between discovery sweeps (new nodes are normally noticed at once from their
    /// start-up announcement; the sweep is the safety net).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long the node's lock lasts without renewal: a crashed provisioner's lock runs out.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// The environment of the bootstrap run.
    pub bootstrap_environment: String,
    /// The pipeline, in order (the lock is always taken first and is not a step).
    pub steps: Vec<Step>,
    /// How new nodes are found.
    pub target: Target,
    /// How masters are found and chosen.
    pub master: MasterConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Notifications.
    pub notify: NotifyConfig,
    /// Custom steps by name.
    pub custom: std::collections::BTreeMap<String, CustomStep>,
    /// `ADDR:PORT` to serve Prometheus metrics on.
    pub metrics: Option<String>,
}

impl Default for ProvisionConfig {
    fn default() -> ProvisionConfig {
        ProvisionConfig {
            store: PathBuf::from("/var/lib/cohort/provision.redb"),
            concurrency: 10,
            sweep_interval: Duration::from_secs(60),
            lock_ttl: Duration::from_secs(1800),
            bootstrap_environment: "bootstrap".to_owned(),
            steps: Step::BUILT_IN.to_vec(),
            target: Target::default(),
            master: MasterConfig::default(),
            retry: RetryConfig::default(),
            notify: NotifyConfig::default(),
            custom: std::collections::BTreeMap::new(),
            metrics: None,
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or a key or value of the wrong kind.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl ProvisionConfig {
    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> Result<ProvisionConfig, ConfigError> {
        let config: ProvisionConfig = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.retry.attempts == 0 {
            return Err(invalid("retry.attempts", "must be at least 1"));
        }
        if self.lock_ttl < Duration::from_secs(10) {
            return Err(invalid("lock_ttl", "must be at least 10s"));
        }
        if self.sweep_interval.is_zero() {
            return Err(invalid("sweep_interval", "must be more than 0"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for step in &self.steps {
            if !seen.insert(step.name()) {
                return Err(invalid(
                    "steps",
                    format!("{step:?} is listed twice", step = step.name()),
                ));
            }
            if let Step::Custom(name) = step
                && !self.custom.contains_key(name)
            {
                return Err(invalid(
                    "steps",
                    format!(
                        "unknown step {name:?}: built-in steps are {}, custom ones need a [custom.{name}] table",
                        Step::BUILT_IN.iter().map(Step::name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let position = |wanted: &Step| self.steps.iter().position(|step| step == wanted);
        if let (Some(request), Some(sign)) =
            (position(&Step::RequestCertificate), position(&Step::SignCertificate))
            && sign < request
        {
            return Err(invalid("steps", "sign_certificate must come after request_certificate"));
        }
        for (name, custom) in &self.custom {
            if Step::BUILT_IN.iter().any(|step| step.name() == name) {
                return Err(invalid(format!("custom.{name}"), "is the name of a built-in step"));
            }
            for (key, value) in [("agent", &custom.agent), ("action", &custom.action)] {
                if !valid_word(value) {
                    return Err(invalid(
                        format!("custom.{name}.{key}"),
                        format!("{value:?} is not a valid name"),
                    ));
                }
            }
        }
        for (key, filter) in [
            ("target.filter", &self.target.filter),
            ("master.filter", &self.master.filter),
            ("notify.filter", &self.notify.filter),
        ] {
            filter.build().map_err(|err| invalid(key, err.to_string()))?;
        }
        for (key, agent) in
            [("target.agent", &self.target.agent), ("master.agent", &self.master.agent)]
        {
            if !valid_word(agent) {
                return Err(invalid(key, format!("{agent:?} is not a valid agent name")));
            }
        }
        if !valid_word(&self.bootstrap_environment) {
            return Err(invalid(
                "bootstrap_environment",
                format!("{:?} is not a valid environment name", self.bootstrap_environment),
            ));
        }
        for (index, target) in self.notify.targets.iter().enumerate() {
            let recipient = Recipient::parse(target)
                .map_err(|err| invalid(format!("notify.targets[{index}]"), err.to_string()))?;
            // Sent directly (no notifier agent), an xmpp: target needs our own account.
            let direct = self.notify.agent.is_none();
            if direct && matches!(recipient, Recipient::Xmpp(_)) {
                if self.notify.xmpp.jid.is_none() {
                    return Err(invalid(
                        "notify.xmpp.jid",
                        format!("{target:?} is sent directly and needs the sending account"),
                    ));
                }
                if self.notify.xmpp.password_file.is_none() {
                    return Err(invalid(
                        "notify.xmpp.password_file",
                        format!("{target:?} is sent directly and needs the account's password"),
                    ));
                }
            }
        }
        if self.steps.contains(&Step::Notify) && self.notify.targets.is_empty() {
            return Err(invalid("notify.targets", "the notify step needs at least one target"));
        }
        Ok(())
    }
}

/// Agent, action and environment names: a letter, then letters, digits and `_`.
fn valid_word(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_whole_pipeline() {
        let config =
            ProvisionConfig::parse("[notify]\ntargets = [\"mailto:ops@example.com\"]\n").unwrap();
        assert_eq!(config.steps.first(), Some(&Step::SetPuppetHost));
        assert_eq!(config.steps.last(), Some(&Step::Notify));
        assert_eq!(config.concurrency, 10);
        assert_eq!(config.target.filter.fact, ["provision_disabled=false"]);
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let cases = [
            ("steps = [\"set_puppet_host\", \"dance\"]\n", "steps: unknown step \"dance\""),
            ("steps = [\"run_puppet\", \"run_puppet\"]\n", "steps: \"run_puppet\" is listed twice"),
            ("concurrency = 0\n", "concurrency: must be at least 1"),
            (
                "steps = [\"sign_certificate\", \"request_certificate\"]\n",
                "steps: sign_certificate must come after request_certificate",
            ),
            ("steps = [\"notify\"]\n", "notify.targets: the notify step needs at least one target"),
            ("steps = []\n[notify]\ntargets = [\"gopher://x\"]\n", "notify.targets[0]: "),
            (
                "[notify]\ntargets = [\"xmpp:ops@example.com\"]\n",
                "notify.xmpp.jid: \"xmpp:ops@example.com\" is sent directly",
            ),
            (
                "[notify]\ntargets = [\"xmpp:ops@example.com\"]\n[notify.xmpp]\njid = \"c@example.com\"\n",
                "notify.xmpp.password_file: ",
            ),
            ("steps = []\n[master]\nfilter = { fact = [\"=x\"] }\n", "master.filter: "),
            (
                "steps = []\n[custom.notify]\nagent = \"a\"\naction = \"b\"\n",
                "custom.notify: is the name",
            ),
            (
                "steps = []\n[custom.x]\nagent = \"a b\"\naction = \"b\"\n",
                "custom.x.agent: \"a b\"",
            ),
            ("steps = []\nbootstrap_environment = \"../x\"\n", "bootstrap_environment: \"../x\""),
        ];
        for (text, expected) in cases {
            let err = ProvisionConfig::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        let err = ProvisionConfig::parse("colour = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn custom_steps_join_the_pipeline() {
        let config = ProvisionConfig::parse(
            "steps = [\"set_puppet_host\", \"register_dns\", \"run_puppet\"]\n\
             [custom.register_dns]\nagent = \"dns\"\naction = \"add\"\non = \"master\"\ninputs = { zone = \"example.com\" }\n",
        )
        .unwrap();
        assert_eq!(config.steps[1], Step::Custom("register_dns".into()));
        assert_eq!(config.custom["register_dns"].on, On::Master);
        assert_eq!(config.custom["register_dns"].inputs["zone"], "example.com");
    }
}
