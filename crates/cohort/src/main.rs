//! The `cohort` command: one binary with a subcommand for every role. This file only parses
//! flags, sets up logging and hands over to one module per subcommand, which in turn call the
//! library crates.

mod boot;
mod broker;
mod daemon;
mod demo;
mod find;
mod options;
mod output;
mod ping;
mod rpc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fleet orchestration: the successor of The Marionette Collective.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded NATS-protocol broker.
    Broker(broker::BrokerArgs),
    /// Run a node: serve requests for its agents.
    Daemon(daemon::DaemonArgs),
    /// Ping every matching node and print round-trip times.
    Ping(ping::PingArgs),
    /// List the identities of the matching nodes.
    Find(find::FindArgs),
    /// Call an agent's action on every matching node.
    Rpc(rpc::RpcArgs),
    /// Start a broker and a simulated fleet in this process and tour the commands.
    Demo(demo::DemoArgs),
    /// First-boot setup of a cloud instance from user data and metadata.
    Boot(boot::BootArgs),
}

/// Client commands, shared by `main` and the demo tour.
#[derive(Debug, Clone, Subcommand)]
enum ClientCommand {
    /// Ping.
    Ping(ping::PingArgs),
    /// Find.
    Find(find::FindArgs),
    /// Rpc.
    Rpc(rpc::RpcArgs),
}

async fn run_client(command: ClientCommand, io: &mut output::Io<'_>) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Ping(args) => ping::run(args, io).await,
        ClientCommand::Find(args) => find::run(args, io).await,
        ClientCommand::Rpc(args) => rpc::run(args, io).await,
    }
}

fn client_runtime(command: ClientCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("cannot start the async runtime: {err}"))?;
    output::Io::with_std(|io| runtime.block_on(run_client(command, io)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Exactly one rustls provider is compiled in; installing it up front means no library can
    // trip over rustls' "no default provider" panic later.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Ping(args) => client_runtime(ClientCommand::Ping(args)),
        Command::Find(args) => client_runtime(ClientCommand::Find(args)),
        Command::Rpc(args) => client_runtime(ClientCommand::Rpc(args)),
        Command::Demo(args) => demo::run(args),
        Command::Boot(args) => boot::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cohort: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `COHORT_LOG` (default `info` for daemons, `warn` otherwise).
fn init_logging() {
    let default = if std::env::args().nth(1).is_some_and(|c| c == "broker" || c == "daemon") {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
