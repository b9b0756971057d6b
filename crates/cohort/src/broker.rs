//! `cohort broker`: run the embedded broker until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cohort_broker::{Broker, Config};

/// Options of `cohort broker`. Flags override the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// Address to accept clients on [default: 127.0.0.1:4222].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Broker configuration file (TOML; see docs/reference/broker.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

pub(crate) fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Config::from_toml(&text)
                .with_context(|| format!("invalid config {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(metrics) = args.metrics {
        config.metrics = Some(metrics);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Handlers go in before the port opens, so a signal sent as soon as the broker is
        // reachable is never missed.
        let stop = shutdown_signal()?;
        let broker = Broker::bind(config).await?;
        tracing::info!("broker listening on nats://{}", broker.local_addr());
        if let Some(addr) = broker.metrics_addr() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        broker.run(stop).await;
        tracing::info!("broker stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Installs SIGINT and SIGTERM handlers; the returned future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}
