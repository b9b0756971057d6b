//! `cohort daemon`: run a node. Reads `/etc/cohort/daemon.toml` (or `--config`), applies the
//! flags over it, has `cohort_daemon::assemble` load its key, credential, trusted issuers and
//! policies (or run insecure when told so), facts and agents, and serves requests until
//! SIGTERM/SIGINT; SIGHUP rescans agents, re-reads facts and policies and reopens the audit
//! log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cohort_daemon::assemble::{assemble, read_config};
use cohort_daemon::run::Signal;
use cohort_proto::{Collective, Identity};

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
    /// Serve Prometheus metrics at http://ADDR/metrics [config: metrics].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

pub(crate) fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let (mut config, config_file) = read_config(args.config.as_deref())?;
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
    if args.metrics.is_some() {
        config.metrics = args.metrics;
    }
    let metrics = config.metrics.clone();
    let node = assemble(config, config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let signals = signals()?;
        if let Some(address) = &metrics {
            let state = node.state.clone();
            crate::schedule::serve_metrics(address, move || state.metrics_text()).await?;
            tracing::info!("metrics on http://{address}/metrics");
        }
        let reconnects =
            node.state.metrics().map(|metrics| metrics.reconnects.clone()).unwrap_or_default();
        let client = cohort_daemon::run::connect(
            &node.brokers,
            node.identity.as_str(),
            &node.auth,
            reconnects,
        )
        .await
        .context("cannot connect to the broker")?;
        tracing::info!(node = %node.identity, brokers = ?node.brokers, "daemon starting");
        cohort_daemon::run::run(node.state, client, node.options, Some(node.facts), signals)
            .await?;
        Ok(ExitCode::SUCCESS)
    })
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
