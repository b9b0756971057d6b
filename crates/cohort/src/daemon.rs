//! `cohort daemon`: run a node. Reads `/etc/cohort/daemon.toml` (or `--config`), applies the
//! flags over it, loads its key, credential, trusted issuers and policies (or runs insecure
//! when told so), gathers facts, loads agents and serves requests until SIGTERM/SIGINT; SIGHUP
//! rescans agents, re-reads facts and policies and reopens the audit log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use cohort_daemon::audit::AuditLog;
use cohort_daemon::config::parse_decision;
use cohort_daemon::facts::{FactSource, core_facts};
use cohort_daemon::nrpe::NrpeSettings;
use cohort_daemon::run::{
    AgentSettings, BusAuth, PolicySource, RunOptions, Signal, TrustSource, load_agents,
};
use cohort_daemon::security::NodeSecurity;
use cohort_daemon::{Config, NodeState};
use cohort_proto::{Collective, Identity};
use cohort_security::Role;
use serde_json::{Map, Value, json};

const DEFAULT_CONFIG: &str = "/etc/cohort/daemon.toml";

/// Options of `cohort daemon`. Flags override the config file.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DaemonArgs {
    /// Configuration file [default: /etc/cohort/daemon.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's identity [default: the host's FQDN].
    #[arg(long, value_name = "NAME")]
    identity: Option<Identity>,
    /// Broker URL (repeatable: our broker, or a nats-server cluster).
    #[arg(long = "broker", value_name = "URL")]
    brokers: Vec<String>,
    /// Collective (repeatable; the first is the main one) [default: cohort].
    #[arg(long = "collective", value_name = "NAME")]
    collectives: Vec<Collective>,
    /// Fact file: YAML, JSON or key=value lines (repeatable; later files win).
    #[arg(long = "facts", value_name = "FILE")]
    facts: Vec<PathBuf>,
    /// Classes file, one class per line.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// Directory of external agents.
    #[arg(long = "agents-dir", value_name = "DIR")]
    agents_dir: Option<PathBuf>,
    /// Run without signatures, replay protection or authorization. For labs only.
    #[arg(long)]
    insecure: bool,
}

pub(crate) fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let (mut config, config_file) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (
                Config::from_toml(&text)
                    .with_context(|| format!("invalid config {}", path.display()))?,
                Some(path.clone()),
            )
        }
        None => match std::fs::read_to_string(DEFAULT_CONFIG) {
            Ok(text) => (
                Config::from_toml(&text)
                    .with_context(|| format!("invalid config {DEFAULT_CONFIG}"))?,
                Some(PathBuf::from(DEFAULT_CONFIG)),
            ),
            Err(_) => (Config::default(), None),
        },
    };
    if let Some(identity) = args.identity {
        config.identity = Some(identity);
    }
    if !args.brokers.is_empty() {
        config.brokers = args.brokers;
    }
    if !args.collectives.is_empty() {
        config.collectives = args.collectives;
    }
    if !args.facts.is_empty() {
        config.facts = args.facts;
    }
    if args.classes.is_some() {
        config.classes = args.classes;
    }
    if args.agents_dir.is_some() {
        config.agents_dir = args.agents_dir;
    }
    if args.insecure {
        config.security.insecure = true;
    }
    config.validate().with_context(|| match &config_file {
        Some(path) => format!("invalid configuration ({})", path.display()),
        None => "invalid configuration".to_owned(),
    })?;

    let core = core_facts();
    let identity = match &config.identity {
        Some(identity) => identity.clone(),
        None => {
            let fqdn = core.get("fqdn").and_then(Value::as_str).unwrap_or("localhost");
            Identity::new(fqdn).with_context(|| {
                format!("the host name {fqdn:?} is not a valid identity; set --identity")
            })?
        }
    };
    let mut facts = FactSource::new(core, config.facts.clone(), config.classes.clone())
        .with_puppet(config.puppet_state_dirs.clone());
    if let Err(errors) = facts.refresh() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("cannot load facts:\n  {}", list.join("\n  "));
    }
    let agent_settings = AgentSettings {
        nrpe: NrpeSettings {
            config: config.nrpe_config.clone(),
            timeout: config.nrpe_timeout,
            allow_arguments: config.nrpe_allow_arguments,
        },
    };
    let (agents, errors) =
        load_agents(config.agents_dir.as_deref(), config.max_agent_output, &agent_settings);
    for error in errors {
        tracing::error!("agent not loaded: {error}");
    }
    let mut items = Map::new();
    items.insert("identity".into(), json!(identity));
    items.insert("collectives".into(), json!(config.collectives));
    items.insert("main_collective".into(), json!(config.main_collective()));
    items.insert("brokers".into(), json!(config.brokers));
    items.insert("registration_interval".into(), json!(config.registration_interval.as_secs()));
    items.insert("max_concurrent_actions".into(), json!(config.max_concurrent_actions));
    items.insert("agents_dir".into(), json!(config.agents_dir));
    items.insert("nrpe_config".into(), json!(config.nrpe_config));
    let (security, policies, nkey_seed) = security(&config, &identity)?;
    let mut state = NodeState::new(
        identity.clone(),
        config.collectives.clone(),
        facts.current().clone(),
        agents,
        config_file,
        items,
        config.clock_skew,
    );
    if let Some(security) = security {
        state = state.with_security(security);
    }
    if let Some(path) = &config.security.audit_log {
        let audit = AuditLog::open(path)
            .with_context(|| format!("cannot open the audit log {}", path.display()))?;
        state = state.with_audit(Arc::new(audit));
    }
    let state = Arc::new(state);
    let auth = BusAuth { nkey_seed, tls_ca: config.security.tls_ca.clone() };
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let signals = signals()?;
        let client = cohort_daemon::run::connect(&config.brokers, identity.as_str(), &auth)
            .await
            .context("cannot connect to the broker")?;
        tracing::info!(node = %identity, brokers = ?config.brokers, "daemon starting");
        cohort_daemon::run::run(state, client, options, Some(facts), signals).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The node's security from `[security]`: trust, its own key and credential (checked to be a
/// valid node credential for this identity), policies. `None` when running insecure.
#[allow(clippy::type_complexity)]
fn security(
    config: &Config,
    identity: &Identity,
) -> anyhow::Result<(Option<Arc<NodeSecurity>>, Option<PolicySource>, Option<String>)> {
    let settings = &config.security;
    if settings.insecure {
        tracing::warn!(
            "running INSECURE: requests are not verified, replay-checked or authorized (labs only)"
        );
        return Ok((None, None, None));
    }
    let (Some(key), Some(credential)) = (&settings.key, &settings.credential) else {
        bail!("security.key and security.credential are required unless --insecure");
    };
    let trust = cohort_keystore::read_trust(&settings.issuers, settings.revocations.as_deref())
        .context("cannot load the trusted issuers")?;
    let signer = cohort_keystore::read_signer(key, credential)?;
    let claims = &signer.credential().claims;
    if claims.role != Role::Node || claims.name != identity.as_str() {
        bail!(
            "{} is a credential for {}, not for node={identity}",
            credential.display(),
            claims.caller()
        );
    }
    let now = cohort_proto::now_ms(std::time::SystemTime::now()) / 1000;
    trust.verify(signer.credential(), now).with_context(|| {
        format!("the node's own credential {} is not valid", credential.display())
    })?;
    let mut defaults = std::collections::HashMap::new();
    for (agent, decision) in &settings.policy_defaults {
        defaults.insert(agent.clone(), parse_decision("security.policy_defaults", decision)?);
    }
    let fallback = settings
        .policy_default
        .as_deref()
        .map(|text| parse_decision("security.policy_default", text))
        .transpose()?;
    let policies = PolicySource { dir: settings.policies.clone(), defaults, fallback };
    let seed = signer.key().seed();
    let security = NodeSecurity::new(trust, signer, policies.load(), settings.replay_cache_size);
    Ok((Some(Arc::new(security)), Some(policies), Some(seed)))
}

/// SIGHUP → reload; SIGTERM/SIGINT → shutdown. Installed before connecting so no signal is lost.
fn signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = hangup.recv() => Signal::Reload,
                _ = terminate.recv() => Signal::Shutdown,
                _ = interrupt.recv() => Signal::Shutdown,
            };
            tracing::info!("received {signal:?}");
            if tx.send(signal).await.is_err() || signal == Signal::Shutdown {
                break;
            }
        }
    });
    Ok(rx)
}
