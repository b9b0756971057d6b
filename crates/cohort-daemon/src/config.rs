//! Daemon configuration: the TOML file (`/etc/cohort/daemon.toml` by default) and its checks.
//! Command-line flags override file values; the binary applies them before [`Config::validate`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cohort_proto::{Collective, Identity};
use serde::Deserialize;

/// Everything a node can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The node's name; default: the host's FQDN.
    pub identity: Option<Identity>,
    /// Broker URLs (our broker, or a nats-server cluster); tried in turn.
    pub brokers: Vec<String>,
    /// Collectives, the first being the main one.
    pub collectives: Vec<Collective>,
    /// Fact files (YAML, JSON or `key=value` lines), merged in order, later wins.
    pub facts: Vec<PathBuf>,
    /// Classes file, one class per line (Puppet's `classes.txt`).
    pub classes: Option<PathBuf>,
    /// Directory of external agents, one sub-directory per agent.
    pub agents_dir: Option<PathBuf>,
    /// Seconds between registration messages; 0 turns registration off.
    #[serde(with = "humantime_serde")]
    pub registration_interval: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (`host:port`).
    pub metrics: Option<String>,
    /// Actions running at once; further requests wait.
    pub max_concurrent_actions: usize,
    /// How often fact and class files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub facts_refresh: Duration,
    /// Largest reply an external agent may write, in bytes.
    pub max_agent_output: usize,
    /// How far a request's time may be ahead of the node's clock.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// The longest TTL a request may carry; longer ones are refused.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long shutdown waits for running actions.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// NRPE configuration files and directories (every `*.cfg`) the nrpe agent reads, includes
    /// followed; empty: the stock places that exist (`/etc/nagios/nrpe.cfg`,
    /// `/etc/nagios/nrpe.d/`, and the other distributions' usual ones).
    pub nrpe_config: Vec<PathBuf>,
    /// How long one NRPE check may run.
    #[serde(with = "humantime_serde")]
    pub nrpe_timeout: Duration,
    /// Whether NRPE command arguments (`$ARGn$`) are accepted: letters, digits and
    /// `. _ : , @ % + = / -` only (and `~:` for Nagios ranges).
    pub nrpe_allow_arguments: bool,
    /// With `nrpe_allow_arguments`, NRPE's own looser rule instead (anything but its
    /// `nasty_metachars`): values with spaces split, `*` globs, `#` comments out. Unsafe.
    pub nrpe_unsafe_arguments: bool,
    /// Where to look for Puppet's state (`puppet_enabled` and friends), first found wins.
    pub puppet_state_dirs: Vec<PathBuf>,
    /// Signing, trust, authorization, audit and TLS.
    pub security: SecurityConfig,
    /// What the resource agent may manage (default: nothing).
    pub resource: cohort_resource::policy::ResourceConfig,
    /// How the puppet agent finds and runs Puppet.
    pub puppet: cohort_puppet::PuppetConfig,
    /// The `provision` agent (new nodes).
    pub provision: cohort_provision::node::NodeSettings,
    /// The `puppetca` agent (Puppet masters).
    pub puppetca: cohort_provision::puppetca::CaSettings,
    /// The built-in `notify` agent.
    pub notify: crate::provision::NotifierSettings,
}

/// The `[security]` table. Without `issuers`, `key` and `credential` the daemon refuses to
/// start unless `insecure` is set (labs only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Run without signatures, replay protection or authorization. For labs only.
    pub insecure: bool,
    /// Trusted issuers: public keys (`O…`) or files holding one.
    pub issuers: Vec<String>,
    /// The node's private key (nkeys seed file, mode 0600).
    pub key: Option<PathBuf>,
    /// The node's credential, issued by a trusted issuer for this identity with role `node`.
    pub credential: Option<PathBuf>,
    /// Revocation list signed by a trusted issuer.
    pub revocations: Option<PathBuf>,
    /// Directory of `<agent>.policy` files and the `groups` file.
    pub policies: PathBuf,
    /// Default for agents with no policy file and no entry in `policy_defaults`: `allow` or
    /// `deny`. Unset: built-in read-only agents (rpcutil, nrpe, discovery) are allowed and
    /// every other agent is denied.
    pub policy_default: Option<String>,
    /// Per-agent defaults, `agent = "allow"|"deny"`.
    pub policy_defaults: BTreeMap<String, String>,
    /// JSON-lines audit log; unset for none.
    pub audit_log: Option<PathBuf>,
    /// CA certificate that signed the broker's TLS certificate; TLS is then required.
    pub tls_ca: Option<PathBuf>,
    /// Request ids remembered by the replay cache at most.
    pub replay_cache_size: usize,
}

impl Default for SecurityConfig {
    fn default() -> SecurityConfig {
        SecurityConfig {
            insecure: false,
            issuers: Vec::new(),
            key: None,
            credential: None,
            revocations: None,
            policies: PathBuf::from("/etc/cohort/policies"),
            policy_default: None,
            policy_defaults: BTreeMap::new(),
            audit_log: None,
            tls_ca: None,
            replay_cache_size: crate::security::DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// Parses `allow`/`deny` for the key `key`.
pub fn parse_decision(
    key: &'static str,
    text: &str,
) -> Result<cohort_security::Decision, ConfigError> {
    match text {
        "allow" => Ok(cohort_security::Decision::Allow),
        "deny" => Ok(cohort_security::Decision::Deny),
        other => Err(ConfigError::Invalid {
            key,
            message: format!("expected \"allow\" or \"deny\", found {other:?}"),
        }),
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            identity: None,
            brokers: vec!["nats://127.0.0.1:4222".to_owned()],
            collectives: vec![
                Collective::new("cohort").unwrap_or_else(|_| unreachable!("valid literal")),
            ],
            facts: Vec::new(),
            classes: None,
            agents_dir: None,
            registration_interval: Duration::from_secs(300),
            metrics: None,
            max_concurrent_actions: 32,
            facts_refresh: Duration::from_secs(1),
            max_agent_output: 1024 * 1024,
            clock_skew: Duration::from_secs(30),
            max_ttl: Duration::from_secs(u64::from(cohort_proto::DEFAULT_MAX_TTL_SECS)),
            shutdown_grace: Duration::from_secs(10),
            nrpe_config: Vec::new(),
            nrpe_timeout: Duration::from_secs(60),
            nrpe_allow_arguments: false,
            nrpe_unsafe_arguments: false,
            puppet_state_dirs: crate::facts::PUPPET_STATE_DIRS.iter().map(PathBuf::from).collect(),
            security: SecurityConfig::default(),
            resource: cohort_resource::policy::ResourceConfig::default(),
            puppet: cohort_puppet::PuppetConfig::default(),
            provision: cohort_provision::node::NodeSettings::default(),
            puppetca: cohort_provision::puppetca::CaSettings::default(),
            notify: crate::provision::NotifierSettings::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or a key of the wrong name or type.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// The key at fault.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses a TOML document (validation happens after flags are applied).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Checks values the types do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_owned() });
        if self.brokers.is_empty() {
            return invalid("brokers", "at least one broker URL is needed");
        }
        for url in &self.brokers {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "brokers",
                    message: format!("{url:?} is not a broker URL"),
                });
            }
        }
        if self.collectives.is_empty() {
            return invalid("collectives", "at least one collective is needed");
        }
        if self.max_concurrent_actions == 0 {
            return invalid("max_concurrent_actions", "must be at least 1");
        }
        if self.facts_refresh.is_zero() {
            return invalid("facts_refresh", "must be longer than zero");
        }
        if self.nrpe_timeout.is_zero() {
            return invalid("nrpe_timeout", "must be longer than zero");
        }
        if self.max_agent_output < 1024 {
            return invalid("max_agent_output", "must be at least 1024 bytes");
        }
        if let Err(err) = cohort_resource::policy::Safety::new(&self.resource) {
            return Err(ConfigError::Invalid { key: "resource", message: err.to_string() });
        }
        let security = &self.security;
        if let Some(default) = &security.policy_default {
            parse_decision("security.policy_default", default)?;
        }
        for value in security.policy_defaults.values() {
            parse_decision("security.policy_defaults", value)?;
        }
        if self.max_ttl < Duration::from_secs(1) || self.max_ttl > Duration::from_secs(86_400) {
            return invalid("max_ttl", "must be between 1s and 1d");
        }
        if security.replay_cache_size == 0 {
            return invalid("security.replay_cache_size", "must be at least 1");
        }
        if !security.insecure {
            let mut missing = Vec::new();
            if security.issuers.is_empty() {
                missing.push("issuers");
            }
            if security.key.is_none() {
                missing.push("key");
            }
            if security.credential.is_none() {
                missing.push("credential");
            }
            if !missing.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "security",
                    message: format!(
                        "security is not configured (missing {}); set them in [security] \
                         (see docs/security.md) or run with --insecure, for labs only",
                        missing.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The main collective.
    pub fn main_collective(&self) -> Option<&Collective> {
        self.collectives.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_keys() {
        let config = Config::from_toml(
            "identity = \"web1.example.com\"\nbrokers = [\"nats://a:4222\", \"nats://b:4222\"]\n\
             collectives = [\"cohort\", \"eu\"]\nregistration_interval = \"30s\"\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("missing issuers, key, credential"), "{err}");
        assert!(err.contains("--insecure"), "{err}");
        let mut config = config;
        config.security.insecure = true;
        config.validate().unwrap();
        assert_eq!(config.collectives.len(), 2);
        assert_eq!(config.registration_interval, Duration::from_secs(30));
        let err = Config::from_toml("identiy = \"x\"").unwrap_err().to_string();
        assert!(err.contains("identiy"), "{err}");
        let err = Config::from_toml("identity = \"bad name\"").unwrap_err().to_string();
        assert!(err.contains("invalid identity"), "{err}");
        let err = Config::from_toml("collectives = [\"a.b\"]").unwrap_err().to_string();
        assert!(err.contains("invalid collective"), "{err}");
        let config = Config { brokers: vec!["::bad::".into()], ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().starts_with("brokers:"));
        let err = Config::from_toml("[security]\ninsecure = true\npolicy_default = \"maybe\"")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.policy_default") && err.contains("maybe"), "{err}");
        let err = Config::from_toml("[security]\nissuer = \"x\"").unwrap_err().to_string();
        assert!(err.contains("issuer"), "{err}");
        let err = Config::from_toml("max_ttl = \"10y\"\n[security]\ninsecure = true")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "max_ttl: must be between 1s and 1d");
    }
}
