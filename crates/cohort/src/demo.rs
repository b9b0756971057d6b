//! `cohort demo`: the embedded broker on a free loopback port, a fleet of simulated nodes in
//! this process (each with its own broker connection and the real node pipeline), and a short
//! tour of real commands with their real output. `--serve` keeps the fleet up for trying
//! commands from another terminal.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cohort_broker::{Broker, Config as BrokerConfig};
use cohort_daemon::NodeState;
use cohort_daemon::facts::Facts;
use cohort_daemon::run::{RunOptions, Signal, builtin_agents};
use cohort_proto::{Collective, Identity};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

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

const COUNTRIES: [&str; 6] = ["uk", "us", "de", "fr", "nl", "jp"];
const ROLES: [&str; 4] = ["web", "db", "cache", "lb"];
const OSES: [(&str, &str, &str); 3] = [
    ("Debian", "Debian GNU/Linux", "12"),
    ("Debian", "Ubuntu", "22.04"),
    ("RedHat", "Rocky Linux", "9.4"),
];
const INSTANCE_TYPES: [&str; 4] = ["t3.medium", "m6i.large", "c6i.xlarge", "r6i.2xlarge"];

/// Facts and classes of simulated node `idx`, varied but reproducible.
pub(crate) fn simulated_node(idx: u32, rng: &mut impl Rng) -> (Identity, Facts) {
    let country = COUNTRIES[rng.gen_range(0..COUNTRIES.len())];
    let role = ROLES[idx as usize % ROLES.len()];
    let (family, os_name, release) = OSES[rng.gen_range(0..OSES.len())];
    let name = format!("{role}{idx:04}.{country}.example.net");
    let zone = format!(
        "{}-{}",
        ["eu-west-1", "us-east-1", "ap-northeast-1"][rng.gen_range(0..3)],
        ["a", "b", "c"][rng.gen_range(0..3)]
    );
    let major = release.split('.').next().unwrap_or_default();
    let puppet_enabled = if rng.gen_bool(0.9) { "1" } else { "0" };
    let cpus = [2, 4, 8, 16][rng.gen_range(0..4)];
    let memory = [4u64, 8, 16, 64][rng.gen_range(0..4)] << 30;
    let facts = json!({
        "hostname": format!("{role}{idx:04}"),
        "fqdn": name,
        "domain": format!("{country}.example.net"),
        "country": country,
        "role": role,
        "os": { "family": family, "name": os_name, "release": { "full": release, "major": major } },
        "processors": { "count": cpus },
        "memory": { "total_bytes": memory },
        "puppet_enabled": puppet_enabled,
        "ec2_instance_id": format!("i-{:017x}", rng.r#gen::<u64>() >> 4),
        "ec2_instance_type": INSTANCE_TYPES[rng.gen_range(0..INSTANCE_TYPES.len())],
        "ec2_placement_availability_zone": zone,
        "uptime_seconds": rng.gen_range(3600..90 * 86400),
    });
    let mut classes = vec![format!("role::{role}"), "profile::base".to_owned()];
    if role == "db" {
        classes.push("bacula::node".to_owned());
    }
    let facts = match facts {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    // Names built from fixed tables are always valid identities.
    let identity =
        Identity::new(name).unwrap_or_else(|_| unreachable!("generated identity is valid"));
    (identity, Facts { facts, classes })
}

/// A simulated fleet running in this process.
pub(crate) struct Fleet {
    stops: Vec<tokio::sync::mpsc::Sender<Signal>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Fleet {
    /// Starts `count` nodes connected to `url`.
    pub(crate) async fn start(url: &str, count: u32, seed: u64) -> anyhow::Result<Fleet> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let collective = Collective::new("cohort")?;
        let mut fleet = Fleet { stops: Vec::new(), tasks: tokio::task::JoinSet::new() };
        let options = RunOptions {
            registration_interval: Duration::ZERO,
            max_concurrent_actions: 4,
            facts_refresh: Duration::from_secs(3600),
            agents_dir: None,
            max_agent_output: 1024 * 1024,
            shutdown_grace: Duration::from_secs(2),
        };
        for idx in 0..count {
            let (identity, facts) = simulated_node(idx, &mut rng);
            let state = Arc::new(NodeState::new(
                identity.clone(),
                vec![collective.clone()],
                facts,
                builtin_agents(),
                None,
                Map::new(),
                Duration::from_secs(30),
            ));
            let client = async_nats_connect(url, identity.as_str()).await?;
            let (stop, signals) = tokio::sync::mpsc::channel(1);
            let options = options.clone();
            fleet.tasks.spawn(async move {
                if let Err(err) =
                    cohort_daemon::run::run(state, client, options, None, signals).await
                {
                    tracing::error!("simulated node {identity} failed: {err}");
                }
            });
            fleet.stops.push(stop);
        }
        Ok(fleet)
    }

    /// Stops every node and waits for them.
    pub(crate) async fn stop(mut self) {
        for stop in &self.stops {
            let _ = stop.send(Signal::Shutdown).await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn async_nats_connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(url)
        .await
        .with_context(|| format!("simulated node {name} cannot connect to {url}"))
}

#[derive(Debug, Parser)]
#[command(name = "cohort", no_binary_name = false)]
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
                        "cohort rpc rpcutil get_fact fact=os.name -W 'role::web country=us'",
                        &["rpc", "rpcutil", "get_fact", "fact=os.name", "-W", "role::web country=us", "--np"],
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
