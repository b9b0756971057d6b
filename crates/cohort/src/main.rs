//! The `cohort` command: one binary with a subcommand for every role. This file only parses
//! flags, sets up logging and hands over to one module per subcommand, which in turn call the
//! library crates.

mod apps;
mod boot;
mod broker;
mod checks;
mod daemon;
mod demo;
mod discovery;
mod find;
mod keys;
mod options;
mod output;
mod ping;
mod provision;
mod puppet;
mod resource;
mod rpc;
mod schedule;

use std::io::Write as _;
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
    /// Run an NRPE check on every matching node and summarize the states.
    Nrpe(checks::NrpeArgs),
    /// Nagios/Icinga plugin: one NRPE check across the fleet as one service result.
    Nagios(checks::NagiosArgs),
    /// Start a broker and a simulated fleet in this process and tour the commands.
    Demo(demo::DemoArgs),
    /// Run a simulated fleet of insecure lab nodes on an existing broker until stopped, for
    /// stress tests and benchmarks.
    #[command(hide = true)]
    Simulate(demo::SimulateArgs),
    /// First-boot setup of a cloud instance from user data and metadata.
    Boot(boot::BootArgs),
    /// Puppet-style resources on this machine: list a type, show one, or make one so.
    Resource(resource::ResourceArgs),
    /// Puppet across the fleet: count, status, summary, enable, disable, runonce, runall.
    Puppet(puppet::PuppetArgs),
    /// The provisioner: take new nodes from bare to production (run, status, retry, forget).
    Provision(provision::ProvisionArgs),
    /// Manage the organisation issuer, credentials, revocations and broker TLS.
    Keys(keys::KeysArgs),
    /// Each value of a fact across the matching nodes, with how many have it.
    Facts(apps::FactsArgs),
    /// One node's statistics, agents, classes and facts; or the collectives; or an export.
    Inventory(apps::InventoryArgs),
    /// Explain a filter in words.
    DescribeFilter(apps::DescribeFilterArgs),
    /// Agent documentation from the DDLs.
    Plugin(apps::PluginArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from the command-line definition.
    Man,
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
    /// Nrpe.
    Nrpe(checks::NrpeArgs),
    /// Nagios.
    Nagios(checks::NagiosArgs),
    /// Facts.
    Facts(apps::FactsArgs),
    /// Inventory.
    Inventory(apps::InventoryArgs),
    /// Puppet.
    Puppet(puppet::PuppetArgs),
    /// Provision.
    Provision(provision::ProvisionArgs),
}

async fn run_client(command: ClientCommand, io: &mut output::Io<'_>) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Ping(args) => ping::run(args, io).await,
        ClientCommand::Find(args) => find::run(args, io).await,
        ClientCommand::Rpc(args) => rpc::run(args, io).await,
        ClientCommand::Nrpe(args) => checks::nrpe(args, io).await,
        ClientCommand::Nagios(args) => Ok(checks::plugin(args, io.out).await),
        ClientCommand::Facts(args) => apps::facts(args, io).await,
        ClientCommand::Inventory(args) => apps::inventory(args, io).await,
        ClientCommand::Puppet(args) => puppet::run(args, io).await,
        ClientCommand::Provision(args) => provision::run(args, io).await,
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

/// The command line, parsed under the name the binary was invoked as: `mco` (a symlink, for
/// MCollective operators' muscle memory and scripts: `mco ping`, `mco rpc`, ...) or `cohort`.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let invoked = std::env::args_os().next().map(std::path::PathBuf::from);
    let name = invoked.as_deref().and_then(std::path::Path::file_name);
    if name.is_some_and(|name| name == "mco") {
        let matches = Cli::command().name("mco").bin_name("mco").try_get_matches()?;
        return Cli::from_arg_matches(&matches);
    }
    Cli::try_parse()
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        // A Nagios plugin must exit 3 (UNKNOWN) on bad arguments, with one line saying why;
        // clap's exit code 2 would read as CRITICAL.
        Err(err) if std::env::args().nth(1).as_deref() == Some("nagios") && err.use_stderr() => {
            let first = err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            println!("UNKNOWN: {first}");
            return ExitCode::from(3);
        }
        Err(err) => err.exit(),
    };
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
        Command::Nrpe(args) => client_runtime(ClientCommand::Nrpe(args)),
        Command::Nagios(args) => Ok(checks::nagios(args)),
        Command::Demo(args) => demo::run(args),
        Command::Simulate(args) => demo::simulate(args),
        Command::Boot(args) => boot::run(args),
        Command::Resource(args) => output::Io::with_std(|io| resource::run(args, io)),
        Command::Puppet(args) => client_runtime(ClientCommand::Puppet(args)),
        Command::Provision(args) => client_runtime(ClientCommand::Provision(args)),
        Command::Keys(args) => output::Io::with_std(|io| keys::run(args, io)),
        Command::Facts(args) => client_runtime(ClientCommand::Facts(args)),
        Command::Inventory(args) => client_runtime(ClientCommand::Inventory(args)),
        Command::DescribeFilter(args) => output::Io::with_std(|io| apps::describe_filter(args, io)),
        Command::Plugin(args) => output::Io::with_std(|io| apps::plugin(args, io)),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            // Rendered into memory first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cohort", &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => write_stdout(&page),
                Err(err) => Err(err.into()),
            }
        }
    };
    match result {
        Ok(code) => code,
        // The reader went away (`cohort rpc ... | head`): nothing left to say, like `cat`.
        Err(err)
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Not eprintln!: it panics when stderr cannot be written (a full disk).
            let _ = writeln!(std::io::stderr(), "cohort: error: {}", render(&err));
            error_exit_code(&err)
        }
    }
}

/// The error and its causes on one line, each cause once: library errors often say their
/// cause in their own message too, and `{:#}` would repeat it.
fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit code for a command that failed: the broker's refusals have their own codes
/// (docs/reference/cli.md), so scripts can tell "not allowed" from "not reachable".
fn error_exit_code(err: &anyhow::Error) -> ExitCode {
    use cohort_client::ClientError;
    let client = err.chain().find_map(|cause| cause.downcast_ref::<ClientError>());
    match client {
        Some(ClientError::Denied(_)) => ExitCode::from(6),
        Some(ClientError::Refused { .. } | ClientError::Credential(_)) => ExitCode::from(7),
        _ => ExitCode::FAILURE,
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr, filtered by `COHORT_LOG` (default `info` for daemons, `warn` otherwise).
/// A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped: the
/// subscriber's own report of the failure would go to the same stderr through `eprintln!`,
/// which panics, and a daemon must not die of its log.
fn init_logging() {
    let daemon = |c: &str| matches!(c, "broker" | "daemon" | "provision");
    // async-nats logs every connection event at info, tersely; the daemon says them itself.
    let default = if std::env::args().nth(1).is_some_and(|c| daemon(&c)) {
        "info,async_nats=warn"
    } else {
        "warn,async_nats=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
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
