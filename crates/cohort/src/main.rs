//! The `cohort` command: one binary with a subcommand for every role. This file only parses
//! flags, sets up logging and hands over to the library crates; each subcommand lives in its
//! own module.

mod broker;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Exactly one rustls provider is compiled in; installing it up front means no library can
    // trip over rustls' "no default provider" panic later.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Broker(args) => broker::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cohort: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `COHORT_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
}
