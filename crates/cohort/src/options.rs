//! Options shared by the client commands (`ping`, `find`, `rpc`, ...), handed to the client
//! library's configuration resolution (`cohort_client::config`: flags > `COHORT_*`
//! environment > config file > defaults).

use std::io::Write;
use std::path::{Path, PathBuf};

use cohort_client::config::{ClientConfig, Overrides};
use cohort_filter::FilterArgs;
use cohort_proto::Collective;

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
    /// These flags with `statements` added to `-W` (each a fact statement or a class).
    pub(crate) fn with_statements(&self, statements: &[String]) -> FilterFlags {
        let mut flags = self.clone();
        flags.with.extend(statements.iter().cloned());
        flags
    }

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
    /// Shortest silence, in seconds, that ends discovery once as many nodes answered as the
    /// last complete discovery found [default: 0.05].
    #[arg(long = "discovery-window", value_name = "SECONDS", help_heading = "Common Options")]
    discovery_window: Option<f64>,
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

/// How long a command talks to the fleet, which decides how nodes prove their replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// One command: signed replies, the cheapest to check on first contact.
    OneShot,
    /// A process that calls the same nodes for days (the scheduler, the provisioner): replies
    /// carry MACs under keys agreed with each node once, a fraction of a signature's cost on
    /// both sides from the second call on (docs/security.md, *Reply proofs*).
    LongLived,
}

/// Resolved client settings: the configuration (`cohort_client::config`) plus what only
/// this binary's output needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: ClientConfig,
    pub(crate) verbose: bool,
}

impl CommonFlags {
    /// Flags naming only a config file (or none: the default files), for commands that need
    /// nothing else of the client settings and for in-process callers (the demo).
    pub(crate) fn from_config(config: Option<PathBuf>) -> CommonFlags {
        CommonFlags { config, ..CommonFlags::default() }
    }

    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            brokers: self.broker.clone(),
            collective: self.target.clone(),
            discovery_timeout: self.discovery_timeout,
            discovery_window: self.discovery_window,
            timeout: self.timeout,
            ttl: self.ttl,
        }
    }

    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings { config: ClientConfig::resolve(&self.overrides())?, verbose: self.verbose })
    }
}

impl Settings {
    /// Settings from `path` alone, ignoring `COHORT_BROKER` and `COHORT_CONFIG` (the demo).
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<Settings> {
        Ok(Settings { config: ClientConfig::from_file(path)?, verbose: false })
    }

    /// Connects as a process of this `lifetime`, which decides how replies are proven.
    pub(crate) async fn connect(
        &self,
        lifetime: Lifetime,
    ) -> anyhow::Result<cohort_client::Client> {
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
        let (mut options, warnings) = self.config.client_options(format!("user={user}"), sender);
        if lifetime == Lifetime::LongLived {
            options.security = options.security.with_mac_replies();
        }
        for warning in warnings {
            // Not eprintln!: it panics when stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "warning: {warning}");
        }
        Ok(cohort_client::Client::connect(options).await?)
    }

    pub(crate) fn discovery(&self) -> cohort_client::DiscoveryOptions {
        self.config.discovery()
    }
}
