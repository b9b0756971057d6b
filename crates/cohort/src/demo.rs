//! `cohort demo`: the embedded broker on a free loopback port, a fleet of simulated nodes in
//! this process (each with its own broker connection and the real node pipeline), and a short
//! tour of real commands with their real output. `--serve` keeps the fleet up for trying
//! commands from another terminal.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cohort_broker::{Broker, Config as BrokerConfig};
use cohort_daemon::sim::Fleet;
use cohort_proto::Collective;

use crate::output::Io;
use crate::{ClientCommand, run_client};

/// Options of `cohort demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    nodes: u32,
    /// Keep the fleet running after the tour, until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

#[derive(Debug, Parser)]
#[command(name = "cohort")]
struct TourCommand {
    #[command(subcommand)]
    command: ClientCommand,
}

async fn tour_step(io: &mut Io<'_>, url: &str, shown: &str, argv: &[&str]) -> anyhow::Result<()> {
    writeln!(io.out, "$ {shown}")?;
    let mut full = vec!["cohort"];
    full.extend_from_slice(argv);
    full.extend_from_slice(&["--broker", url]);
    let parsed =
        TourCommand::try_parse_from(&full).with_context(|| format!("demo step {shown:?}"))?;
    run_client(parsed.command, io).await?;
    writeln!(io.out)?;
    Ok(())
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let config = BrokerConfig { listen: "127.0.0.1:0".parse()?, ..BrokerConfig::default() };
        let broker = Broker::bind(config).await?.spawn();
        let url = broker.url();
        let started = Instant::now();
        eprintln!("Starting {} simulated nodes on the embedded broker at {url} ...", args.nodes);
        let fleet = Fleet::start(&url, args.nodes, 42).await?;
        wait_for_fleet(&url, args.nodes).await?;
        eprintln!("Fleet of {} nodes up in {:.1} s.\n", args.nodes, started.elapsed().as_secs_f64());
        let result = Io::with_std(|io| {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    tour_step(io, &url, "cohort ping", &["ping"]).await?;
                    tour_step(io, &url, "cohort find -F country=uk", &["find", "-F", "country=uk"]).await?;
                    tour_step(
                        io,
                        &url,
                        "cohort find -S 'role::db and (country=uk or country=de) and puppet_enabled=1'",
                        &["find", "-S", "role::db and (country=uk or country=de) and puppet_enabled=1"],
                    )
                    .await?;
                    tour_step(
                        io,
                        &url,
                        "cohort rpc rpcutil get_fact fact=os.name -C role::web",
                        &["rpc", "rpcutil", "get_fact", "fact=os.name", "-C", "role::web", "--np"],
                    )
                    .await?;
                    anyhow::Ok(())
                })
            })
        });
        if result.is_ok() && args.serve {
            println!("COHORT_BROKER={url}");
            eprintln!("The fleet stays up; try `COHORT_BROKER={url} cohort ping` in another terminal. Ctrl-C stops it.");
            let _ = tokio::signal::ctrl_c().await;
        }
        fleet.stop().await;
        broker.shutdown().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

/// Waits until discovery sees the whole fleet (every node has subscribed).
async fn wait_for_fleet(url: &str, count: u32) -> anyhow::Result<()> {
    let options = cohort_client::ClientOptions {
        brokers: vec![url.to_owned()],
        caller: "user=demo".to_owned(),
        sender: "demo".to_owned(),
        connect_timeout: Duration::from_secs(5),
    };
    let client = cohort_client::Client::connect(options).await?;
    let discovery = cohort_client::DiscoveryOptions {
        collective: Collective::new("cohort")?,
        timeout: Duration::from_secs(5),
        quiet: Duration::from_millis(300),
        ttl: 60,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found =
            client.discover(&cohort_proto::Filter::default(), &discovery, |_, _| {}).await?;
        if found.nodes.len() >= count as usize {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {count} simulated nodes answered",
            found.nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
