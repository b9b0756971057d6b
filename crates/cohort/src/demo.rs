//! `cohort demo`: the embedded broker on a free loopback port, a fleet of simulated nodes in
//! this process (each with its own broker connection and the real node pipeline), and a short
//! tour of real commands with their real output. `--serve` keeps the fleet up for trying
//! commands from another terminal.
//!
//! Security is on, as in production, with throwaway keys in a temporary directory: an issuer,
//! a client credential, a node credential per simulated node, TLS with a fresh CA, and broker
//! role permissions. Each simulated node has NRPE checks (`check_puppet_run`, WARNING or
//! CRITICAL on a few nodes, and `check_load`) for the tour's fleet check. Nothing outside the
//! temporary directory is touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cohort_broker::config::{Authorization, TlsConfig};
use cohort_broker::{Broker, Config as BrokerConfig};
use cohort_daemon::audit::AuditLog;
use cohort_daemon::sim::{Fleet, FleetSecurity, plan};
use cohort_keystore::KeyDir;
use cohort_proto::Collective;
use cohort_security::Role;

use crate::options::Lifetime;
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

async fn tour_step(
    io: &mut Io<'_>,
    config: &str,
    broker: &str,
    shown: &str,
    argv: &[&str],
) -> anyhow::Result<()> {
    writeln!(io.out, "$ {shown}")?;
    // The tour is self-contained: its own config and broker whatever COHORT_BROKER or
    // COHORT_CONFIG say, and never standard input.
    let mut full = vec!["cohort"];
    full.extend_from_slice(argv);
    full.extend_from_slice(&["-c", config, "--broker", broker, "--dm", "broadcast"]);
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
    let dir = tempfile::Builder::new()
        .prefix("cohort-demo-")
        .tempdir()
        .context("cannot create a temporary directory for the demo's keys")?;
    let secure = Secure::create(dir.path(), args.nodes)?;
    runtime.block_on(async move {
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse()?,
            tls: Some(TlsConfig { cert: secure.cert.clone(), key: secure.key.clone() }),
            authorization: Some(Authorization { token: None, users: secure.users.clone() }),
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config).await?.spawn();
        let url = broker.url().replacen("nats://", "tls://", 1);
        let client_config = secure.write_client_config(&url)?;
        let started = Instant::now();
        eprintln!(
            "Starting {} simulated nodes on the embedded broker at {url} (TLS, signed requests, broker permissions) ...",
            args.nodes
        );
        let nrpe = secure.dir.join("nrpe.d");
        cohort_daemon::sim::write_nrpe_checks(&nrpe, args.nodes, SEED)
            .with_context(|| format!("cannot write the simulated nodes' checks in {}", nrpe.display()))?;
        let fleet = Fleet::start(&url, args.nodes, SEED, Some(&secure.fleet), Some(&nrpe), None).await?;
        wait_for_fleet(&client_config, args.nodes).await?;
        eprintln!("Fleet of {} nodes up in {:.1} s.\n", args.nodes, started.elapsed().as_secs_f64());
        let config_arg = client_config.display().to_string();
        let config = config_arg.as_str();
        let result = Io::with_std(|io| {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    tour_step(io, config, &url, "cohort ping", &["ping"]).await?;
                    tour_step(io, config, &url, "cohort find -F country=uk", &["find", "-F", "country=uk"]).await?;
                    tour_step(
                        io,
                        config,
                        &url,
                        "cohort find -S 'role::db and (country=uk or country=de) and puppet_enabled=1'",
                        &["find", "-S", "role::db and (country=uk or country=de) and puppet_enabled=1"],
                    )
                    .await?;
                    tour_step(
                        io,
                        config,
                        &url,
                        "cohort rpc rpcutil get_fact fact=os.name -C role::web",
                        &["rpc", "rpcutil", "get_fact", "fact=os.name", "-C", "role::web", "--np"],
                    )
                    .await?;
                    tour_step(
                        io,
                        config,
                        &url,
                        "cohort nrpe -W puppet_enabled=1 check_puppet_run",
                        &["nrpe", "-W", "puppet_enabled=1", "check_puppet_run", "--np"],
                    )
                    .await?;
                    tour_step(
                        io,
                        config,
                        &url,
                        "cohort nagios -W puppet_enabled=1 check_puppet_run    # the Nagios plugin",
                        &["nagios", "-W", "puppet_enabled=1", "check_puppet_run"],
                    )
                    .await?;
                    anyhow::Ok(())
                })
            })
        });
        if result.is_ok() && args.serve {
            println!("COHORT_BROKER={}", broker.url().replacen("nats://", "tls://", 1));
            println!("COHORT_CONFIG={}", client_config.display());
            eprintln!(
                "The fleet stays up. In another terminal, export the two lines above and run \
                 `cohort ping`. Every request the nodes handle or refuse is recorded in {}. \
                 Ctrl-C stops it (the throwaway keys go with it).",
                secure.dir.join("audit.log").display()
            );
            let _ = tokio::signal::ctrl_c().await;
        }
        fleet.stop().await;
        broker.shutdown().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

const SEED: u64 = 42;

/// Options of `cohort simulate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimulateArgs {
    /// The broker the nodes connect to.
    #[arg(long, value_name = "URL")]
    broker: String,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    nodes: u32,
    /// Seed of the nodes' names and facts (the demo's fleet with the default).
    #[arg(long, default_value_t = SEED)]
    seed: u64,
}

/// `cohort simulate`: the demo's fleet without security, on a broker started elsewhere, so a
/// test can stop the fleet's process (SIGSTOP) without stopping the broker or the client.
/// Says `ready` on stderr once every node is connected; stops on SIGTERM or Ctrl-C.
pub(crate) fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let fleet = Fleet::start(&args.broker, args.nodes, args.seed, None, None, None)
            .await
            .with_context(|| format!("cannot connect the simulated nodes to {}", args.broker))?;
        eprintln!("ready: {} simulated nodes on {}", args.nodes, args.broker);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch for SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        fleet.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The demo's throwaway security material.
struct Secure {
    dir: PathBuf,
    keys: KeyDir,
    client_key: PathBuf,
    client_credential: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    users: Vec<cohort_broker::config::User>,
    fleet: FleetSecurity,
}

impl Secure {
    /// Issuer, client credential, CA and broker certificate, and the broker users: the client
    /// and every simulated node, each with its role's permissions.
    fn create(dir: &Path, nodes: u32) -> anyhow::Result<Secure> {
        let keys = KeyDir::new(dir.join("keys"));
        let now = cohort_proto::now_ms(std::time::SystemTime::now()) / 1000;
        keys.init(crate::keys::random_bytes(), now)?;
        let client = keys.issue(
            "demo",
            Role::Client,
            now,
            86_400,
            crate::keys::random_bytes(),
            crate::keys::random_serial(),
        )?;
        let (ca, cert, key) = keys.tls(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let mut users: Vec<_> =
            crate::broker::role_users(keys.path())?.into_iter().map(|(_, user)| user).collect();
        let fleet = FleetSecurity {
            issuer: keys.issuer()?,
            broker_login: true,
            tls_ca: Some(ca.clone()),
            allow_all: false,
            audit: Some(std::sync::Arc::new(
                AuditLog::open(&dir.join("audit.log"))
                    .context("cannot open the demo's audit log")?,
            )),
        };
        for (identity, _) in plan(nodes, SEED) {
            let node_key = fleet.node_key(&identity);
            users.push(crate::broker::user_for(
                Role::Node,
                identity.as_str(),
                node_key.public().as_str(),
            ));
        }
        Ok(Secure {
            dir: dir.to_owned(),
            keys,
            client_key: client.key,
            client_credential: client.credential,
            ca,
            cert,
            key,
            users,
            fleet,
        })
    }

    /// The client configuration `cohort` commands use against the demo fleet.
    fn write_client_config(&self, url: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("client.toml");
        let quoted = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
        let text = format!(
            "# Written by `cohort demo` for its throwaway fleet.\n\
             brokers = [{}]\nkey = {}\ncredential = {}\nissuers = [{}]\ntls_ca = {}\n\
             discovery_history = {}\n",
            serde_json::to_string(url).unwrap_or_default(),
            quoted(&self.client_key),
            quoted(&self.client_credential),
            quoted(&self.keys.issuer_public_path()),
            quoted(&self.ca),
            quoted(&self.dir.join("discovery.json")),
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// Waits until discovery sees the whole fleet (every node has subscribed).
async fn wait_for_fleet(config: &Path, count: u32) -> anyhow::Result<()> {
    let settings = crate::options::Settings::from_file(config)?;
    let client = settings.connect(Lifetime::OneShot).await?;
    let discovery = cohort_client::DiscoveryOptions {
        expect: Some(count as usize),
        window: Duration::from_millis(300),
        ..cohort_client::DiscoveryOptions::new(Collective::new("cohort")?, Duration::from_secs(5))
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
