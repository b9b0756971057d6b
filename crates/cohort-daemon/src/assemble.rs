//! Putting a node together from `daemon.toml`: the configuration file read and validated, the
//! identity, facts, agents, security (trust, the node's own credential, policies, audit log)
//! and the run options, ready for [`crate::run::connect`] and [`crate::run::run`]. What
//! `cohort daemon` does before it goes on the bus, as a library so other tools (a provisioner
//! testing a node's configuration, a packaging check) assemble nodes the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohort_proto::Identity;
use cohort_security::Role;
use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::parse_decision;
use crate::facts::{FactSource, core_facts};
use crate::nrpe::NrpeSettings;
use crate::run::{AgentSettings, BusAuth, PolicySource, RunOptions, TrustSource, load_agents};
use crate::security::NodeSecurity;
use crate::{Config, ConfigError, NodeState};

/// Where the daemon's configuration is when none is named.
pub const DEFAULT_CONFIG: &str = "/etc/cohort/daemon.toml";

/// Why a node cannot be put together. Each names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The configuration file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration{}: {source}", .path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Config {
        /// The file, if any.
        path: Option<PathBuf>,
        /// What is wrong.
        source: ConfigError,
    },
    /// The host name is not a valid identity.
    #[error("the host name {0:?} is not a valid identity; set --identity")]
    Identity(String),
    /// Facts cannot be loaded.
    #[error("cannot load facts:\n  {}", .0.join("\n  "))]
    Facts(Vec<String>),
    /// The node's security cannot be set up.
    #[error("{0}")]
    Security(String),
    /// A key, credential or issuer file cannot be used.
    #[error("{context}: {source}")]
    Keys {
        /// What was being loaded.
        context: String,
        /// Why.
        source: cohort_keystore::KeystoreError,
    },
    /// The audit log cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the configuration at `path`, or [`DEFAULT_CONFIG`] when it exists, or the defaults.
/// Returns the file it came from.
pub fn read_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), AssembleError> {
    let parse = |text: &str, path: &Path| {
        Config::from_toml(text)
            .map_err(|source| AssembleError::Config { path: Some(path.to_owned()), source })
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| AssembleError::Read { path: path.to_owned(), source })?;
            Ok((parse(&text, path)?, Some(path.to_owned())))
        }
        None => match std::fs::read_to_string(DEFAULT_CONFIG) {
            Ok(text) => {
                let path = Path::new(DEFAULT_CONFIG);
                Ok((parse(&text, path)?, Some(path.to_owned())))
            }
            Err(_) => Ok((Config::default(), None)),
        },
    }
}

/// A node ready to go on the bus.
pub struct Node {
    /// Its identity.
    pub identity: Identity,
    /// Brokers to connect to.
    pub brokers: Vec<String>,
    /// How it logs in to the broker.
    pub auth: BusAuth,
    /// What it is and does.
    pub state: Arc<NodeState>,
    /// Where its facts come from (re-read while it runs).
    pub facts: FactSource,
    /// How it runs.
    pub options: RunOptions,
}

/// Assembles the node `config` (already overridden by flags) describes; `config_file` is
/// where it came from, for `daemon_stats` and messages.
pub fn assemble(config: Config, config_file: Option<PathBuf>) -> Result<Node, AssembleError> {
    config
        .validate()
        .map_err(|source| AssembleError::Config { path: config_file.clone(), source })?;
    let core = core_facts();
    let identity = match &config.identity {
        Some(identity) => identity.clone(),
        None => {
            let fqdn = core.get("fqdn").and_then(Value::as_str).unwrap_or("localhost");
            Identity::new(fqdn).map_err(|_| AssembleError::Identity(fqdn.to_owned()))?
        }
    };
    // Without a classes file named, Puppet's own `classes.txt`, as MCollective read it.
    let stock_classes =
        config.puppet_state_dirs.iter().map(|dir| dir.join("classes.txt")).collect();
    let mut facts = FactSource::new(core, config.facts.clone(), config.classes.clone())
        .with_default_classes(stock_classes)
        .with_puppet(config.puppet_state_dirs.clone())
        .with_provision(config.provision.clone());
    if let Err(errors) = facts.refresh() {
        return Err(AssembleError::Facts(errors.iter().map(ToString::to_string).collect()));
    }
    let agent_settings = AgentSettings {
        nrpe: NrpeSettings {
            config: config.nrpe_config.clone(),
            timeout: config.nrpe_timeout,
            allow_arguments: config.nrpe_allow_arguments,
            argument_rule: if config.nrpe_unsafe_arguments {
                cohort_nagios::nrpe::ArgumentRule::NrpeMetachars
            } else {
                cohort_nagios::nrpe::ArgumentRule::Strict
            },
        },
        resource: crate::resource::ResourceSettings {
            config: config.resource.clone(),
            puppet_state_dirs: config.puppet_state_dirs.clone(),
        },
        puppet: config.puppet.clone(),
        provision: config.provision.clone(),
        puppetca: config.puppetca.clone(),
        notify: config.notify.clone(),
    };
    let (agents, errors) =
        load_agents(config.agents_dir.as_deref(), config.max_agent_output, &agent_settings);
    for error in errors {
        tracing::error!("agent not loaded: {error}");
    }
    let (security, policies, nkey_seed) = security(&config, &identity)?;
    let mut state = NodeState::new(
        identity.clone(),
        config.collectives.clone(),
        facts.current().clone(),
        agents,
        config_file,
        config_items(&config, &identity),
        config.clock_skew,
    )
    .with_max_ttl(config.max_ttl);
    if config.metrics.is_some() {
        state = state.with_metrics();
    }
    if let Some(security) = security {
        state = state.with_security(security);
    }
    if let Some(path) = &config.security.audit_log {
        let audit = AuditLog::open(path)
            .map_err(|source| AssembleError::Audit { path: path.clone(), source })?;
        state = state.with_audit(Arc::new(audit));
    }
    let options = RunOptions {
        registration_interval: config.registration_interval,
        max_concurrent_actions: config.max_concurrent_actions,
        facts_refresh: config.facts_refresh,
        agents_dir: config.agents_dir.clone(),
        max_agent_output: config.max_agent_output,
        shutdown_grace: config.shutdown_grace,
        agent_settings,
        policies,
        trust: (!config.security.insecure).then(|| TrustSource {
            issuers: config.security.issuers.clone(),
            revocations: config.security.revocations.clone(),
        }),
    };
    Ok(Node {
        identity,
        brokers: config.brokers.clone(),
        auth: BusAuth { nkey_seed, tls_ca: config.security.tls_ca.clone() },
        state: Arc::new(state),
        facts,
        options,
    })
}

/// What `rpcutil get_config_item` can tell.
fn config_items(config: &Config, identity: &Identity) -> Map<String, Value> {
    let mut items = Map::new();
    items.insert("identity".into(), json!(identity));
    items.insert("collectives".into(), json!(config.collectives));
    items.insert("main_collective".into(), json!(config.main_collective()));
    items.insert("brokers".into(), json!(config.brokers));
    items.insert("registration_interval".into(), json!(config.registration_interval.as_secs()));
    items.insert("max_concurrent_actions".into(), json!(config.max_concurrent_actions));
    items.insert("agents_dir".into(), json!(config.agents_dir));
    items.insert("nrpe_config".into(), json!(config.nrpe_config));
    items
}

/// The node's security, its policies and its broker login.
type Secured = (Option<Arc<NodeSecurity>>, Option<PolicySource>, Option<String>);

/// The node's security from `[security]`: trust, its own key and credential (checked to be a
/// valid node credential for this identity), policies. `None` when running insecure.
fn security(config: &Config, identity: &Identity) -> Result<Secured, AssembleError> {
    let settings = &config.security;
    if settings.insecure {
        tracing::warn!(
            "running INSECURE: requests are not verified, replay-checked or authorized (labs only)"
        );
        return Ok((None, None, None));
    }
    let (Some(key), Some(credential)) = (&settings.key, &settings.credential) else {
        return Err(AssembleError::Security(
            "security.key and security.credential are required unless --insecure".to_owned(),
        ));
    };
    let keys = |context: &str| {
        let context = context.to_owned();
        move |source| AssembleError::Keys { context, source }
    };
    let trust = cohort_keystore::read_trust(&settings.issuers, settings.revocations.as_deref())
        .map_err(keys("cannot load the trusted issuers"))?;
    let signer = cohort_keystore::read_signer(key, credential)
        .map_err(keys("cannot load the node's key and credential"))?;
    let claims = &signer.credential().claims;
    if claims.role != Role::Node || claims.name != identity.as_str() {
        return Err(AssembleError::Security(format!(
            "{} is a credential for {}, not for node={identity}",
            credential.display(),
            claims.caller()
        )));
    }
    let now = cohort_proto::now_ms(std::time::SystemTime::now()) / 1000;
    trust.verify(signer.credential(), now).map_err(|err| {
        AssembleError::Security(format!(
            "the node's own credential {} is not valid: {err}",
            credential.display()
        ))
    })?;
    let decision = |key, text: &str| {
        parse_decision(key, text).map_err(|source| AssembleError::Config { path: None, source })
    };
    let mut defaults = HashMap::new();
    for (agent, text) in &settings.policy_defaults {
        defaults.insert(agent.clone(), decision("security.policy_defaults", text)?);
    }
    let fallback = settings
        .policy_default
        .as_deref()
        .map(|text| decision("security.policy_default", text))
        .transpose()?;
    let policies = PolicySource { dir: settings.policies.clone(), defaults, fallback };
    let seed = signer.key().seed();
    let security = NodeSecurity::new(trust, signer, policies.load(), settings.replay_cache_size);
    Ok((Some(Arc::new(security)), Some(policies), Some(seed)))
}
