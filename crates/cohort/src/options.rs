//! Options shared by the client commands (`ping`, `find`, `rpc`) and the client configuration
//! they resolve against: flags > `COHORT_*` environment > config file > defaults.
//!
//! Config file: `-c FILE`, else `$COHORT_CONFIG`, else `~/.config/cohort/client.toml`, else
//! `/etc/cohort/client.toml` (the first that exists). Keys: `brokers`, `collective`,
//! `discovery_timeout`, `discovery_quiet`, `timeout`, `ttl`, `agents_dir`, `connect_timeout`,
//! and the security keys `key`, `credential`, `issuers`, `revocations`, `tls_ca` (relative
//! paths are relative to the config file). Unknown keys are an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cohort_filter::FilterArgs;
use cohort_proto::Collective;
use serde::Deserialize;

/// Host filters, as in `mco`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct FilterFlags {
    /// Combined classes and facts filter (space-separated; fact<op>value tokens are facts).
    #[arg(
        id = "filter_with",
        short = 'W',
        long = "with",
        value_name = "FILTER",
        help_heading = "Host Filters"
    )]
    with: Vec<String>,
    /// Fact filter: fact=value, fact!=value, fact<value, fact>=value, fact=~regex, fact=/regex/.
    #[arg(
        id = "filter_fact",
        short = 'F',
        long = "wf",
        visible_alias = "with-fact",
        value_name = "FACT",
        help_heading = "Host Filters"
    )]
    fact: Vec<String>,
    /// Class filter: a class name or /regex/.
    #[arg(
        id = "filter_class",
        short = 'C',
        long = "wc",
        visible_alias = "with-class",
        value_name = "CLASS",
        help_heading = "Host Filters"
    )]
    class: Vec<String>,
    /// Identity filter: a name or /regex/; several are ORed.
    #[arg(
        id = "filter_identity",
        short = 'I',
        long = "wi",
        visible_alias = "with-identity",
        value_name = "IDENTITY",
        help_heading = "Host Filters"
    )]
    identity: Vec<String>,
    /// Agent filter: nodes hosting this agent.
    #[arg(
        id = "filter_agent",
        short = 'A',
        long = "wa",
        visible_alias = "with-agent",
        value_name = "AGENT",
        help_heading = "Host Filters"
    )]
    agent: Vec<String>,
    /// Compound filter: facts and classes with and, or, not, parentheses.
    #[arg(
        id = "filter_compound",
        short = 'S',
        long = "select",
        value_name = "EXPRESSION",
        help_heading = "Host Filters"
    )]
    compound: Vec<String>,
}

impl FilterFlags {
    pub(crate) fn build(&self) -> anyhow::Result<cohort_proto::Filter> {
        let args = FilterArgs {
            with: self.with.clone(),
            fact: self.fact.clone(),
            class: self.class.clone(),
            identity: self.identity.clone(),
            agent: self.agent.clone(),
            compound: self.compound.clone(),
        };
        Ok(args.build()?)
    }
}

/// Options every client command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct CommonFlags {
    /// Client configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE", help_heading = "Common Options")]
    config: Option<PathBuf>,
    /// Broker URL (repeatable); also COHORT_BROKER (comma-separated).
    #[arg(long = "broker", value_name = "URL", help_heading = "Common Options")]
    broker: Vec<String>,
    /// Sub-collective to address.
    #[arg(
        short = 'T',
        long = "target",
        value_name = "COLLECTIVE",
        help_heading = "Common Options"
    )]
    target: Option<Collective>,
    /// Longest discovery may take, in seconds.
    #[arg(
        long = "dt",
        visible_alias = "discovery-timeout",
        value_name = "SECONDS",
        help_heading = "Common Options"
    )]
    discovery_timeout: Option<f64>,
    /// How long to wait for replies, in seconds [default: the action's DDL timeout].
    #[arg(short = 't', long = "timeout", value_name = "SECONDS", help_heading = "Common Options")]
    timeout: Option<f64>,
    /// Seconds a request stays valid.
    #[arg(long = "ttl", value_name = "SECONDS", help_heading = "Common Options")]
    ttl: Option<u32>,
    /// More detail: the full statistics block.
    #[arg(short = 'v', long = "verbose", help_heading = "Common Options")]
    pub(crate) verbose: bool,
    #[command(flatten)]
    pub(crate) discovery: crate::discovery::DiscoveryFlags,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClientFile {
    brokers: Vec<String>,
    collective: Option<Collective>,
    discovery_timeout: Option<f64>,
    discovery_quiet: Option<f64>,
    timeout: Option<f64>,
    ttl: Option<u32>,
    agents_dir: Option<PathBuf>,
    connect_timeout: Option<f64>,
    key: Option<PathBuf>,
    credential: Option<PathBuf>,
    issuers: Vec<String>,
    revocations: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

/// Resolved client settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) brokers: Vec<String>,
    pub(crate) collective: Collective,
    pub(crate) discovery_timeout: Duration,
    pub(crate) discovery_quiet: Duration,
    pub(crate) timeout: Option<Duration>,
    pub(crate) ttl: u32,
    pub(crate) agents_dir: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) verbose: bool,
    pub(crate) security: cohort_client::ClientSecurity,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name} must be a positive number of seconds, not {value}"))
}

fn read_file(path: &Path) -> anyhow::Result<ClientFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut file: ClientFile = toml::from_str(&text)
        .with_context(|| format!("invalid client config {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for entry in [&mut file.key, &mut file.credential, &mut file.revocations, &mut file.tls_ca] {
        if let Some(relative) = entry.as_mut().filter(|p| p.is_relative()) {
            *relative = base.join(&*relative);
        }
    }
    for issuer in &mut file.issuers {
        if issuer.contains('/') && Path::new(issuer.as_str()).is_relative() {
            *issuer = base.join(issuer.as_str()).display().to_string();
        }
    }
    Ok(file)
}

/// Signing and verification settings from the client file. Errors name the file at fault.
fn client_security(file: &ClientFile) -> anyhow::Result<cohort_client::ClientSecurity> {
    let signer = match (&file.key, &file.credential) {
        (Some(key), Some(credential)) => Some(cohort_keystore::read_signer(key, credential)?),
        (None, None) => None,
        _ => anyhow::bail!("the client config needs both `key` and `credential`, or neither"),
    };
    let trust = if file.issuers.is_empty() {
        None
    } else {
        let trust = cohort_keystore::read_trust(&file.issuers, file.revocations.as_deref())
            .context("cannot load the trusted issuers")?;
        Some(std::sync::Arc::new(trust))
    };
    Ok(cohort_client::ClientSecurity { signer, trust, tls_ca: file.tls_ca.clone() })
}

impl CommonFlags {
    /// Flags naming only a config file (or none: the default files), for commands that need
    /// nothing else of the client settings and for in-process callers (the demo).
    pub(crate) fn from_config(config: Option<PathBuf>) -> CommonFlags {
        CommonFlags { config, ..CommonFlags::default() }
    }

    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => {
                let env = std::env::var_os("COHORT_CONFIG").map(PathBuf::from);
                if let Some(path) = &env
                    && !path.is_file()
                {
                    anyhow::bail!("COHORT_CONFIG names {}, which is not a file", path.display());
                }
                let home = std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".config/cohort/client.toml"));
                let candidates =
                    env.into_iter().chain(home).chain([PathBuf::from("/etc/cohort/client.toml")]);
                match candidates.into_iter().find(|path| path.is_file()) {
                    Some(path) => read_file(&path)?,
                    None => ClientFile::default(),
                }
            }
        };
        let security = client_security(&file)?;
        let env_brokers: Vec<String> = std::env::var("COHORT_BROKER")
            .ok()
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let brokers = if !self.broker.is_empty() {
            self.broker.clone()
        } else if !env_brokers.is_empty() {
            env_brokers
        } else if !file.brokers.is_empty() {
            file.brokers
        } else {
            vec!["nats://127.0.0.1:4222".to_owned()]
        };
        let collective = match (&self.target, file.collective) {
            (Some(target), _) => target.clone(),
            (None, Some(collective)) => collective,
            (None, None) => Collective::new("cohort")?,
        };
        let discovery_timeout =
            seconds("--dt", self.discovery_timeout.or(file.discovery_timeout).unwrap_or(2.0))?;
        let discovery_quiet = seconds("discovery_quiet", file.discovery_quiet.unwrap_or(0.05))?;
        let timeout = self.timeout.or(file.timeout).map(|t| seconds("--timeout", t)).transpose()?;
        Ok(Settings {
            brokers,
            collective,
            discovery_timeout,
            discovery_quiet,
            timeout,
            ttl: self.ttl.or(file.ttl).unwrap_or(60),
            agents_dir: file.agents_dir,
            connect_timeout: seconds("connect_timeout", file.connect_timeout.unwrap_or(5.0))?,
            verbose: self.verbose,
            security,
        })
    }
}

impl Settings {
    pub(crate) async fn connect(&self) -> anyhow::Result<cohort_client::Client> {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| "unknown".to_owned(), |u| u.name)
        });
        let sender = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        if self.security.signer.is_none() {
            eprintln!(
                "warning: no credential configured (key and credential in the client config): \
                 requests are unsigned, and only insecure (lab) nodes will answer them"
            );
        }
        let options = cohort_client::ClientOptions {
            brokers: self.brokers.clone(),
            caller: format!("user={user}"),
            sender,
            connect_timeout: self.connect_timeout,
            security: self.security.clone(),
        };
        Ok(cohort_client::Client::connect(options).await?)
    }

    pub(crate) fn discovery(&self) -> cohort_client::DiscoveryOptions {
        cohort_client::DiscoveryOptions {
            collective: self.collective.clone(),
            timeout: self.discovery_timeout,
            quiet: self.discovery_quiet.min(self.discovery_timeout),
            ttl: self.ttl,
        }
    }
}
