//! A simulated fleet: many nodes in one process, each with its own broker connection, its own
//! identity and varied realistic facts, running the real node pipeline. Used by `cohort demo`,
//! the benchmarks and tests that need more nodes than processes are worth.

use std::sync::Arc;
use std::time::Duration;

use cohort_proto::{Collective, Identity};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::NodeState;
use crate::facts::Facts;
use crate::run::{AgentSettings, BusAuth, RunOptions, Signal, builtin_agents};

const COUNTRIES: [&str; 6] = ["uk", "us", "de", "fr", "nl", "jp"];
const ROLES: [&str; 4] = ["web", "db", "cache", "lb"];
const OSES: [(&str, &str, &str); 3] = [
    ("Debian", "Debian GNU/Linux", "12"),
    ("Debian", "Ubuntu", "22.04"),
    ("RedHat", "Rocky Linux", "9.4"),
];
const INSTANCE_TYPES: [&str; 4] = ["t3.medium", "m6i.large", "c6i.xlarge", "r6i.2xlarge"];

/// Facts and classes of simulated node `idx`, varied but reproducible.
pub fn simulated_node(idx: u32, rng: &mut impl Rng) -> (Identity, Facts) {
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
        "parity": if idx.is_multiple_of(2) { "even" } else { "odd" },
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

/// The NRPE checks of simulated node `idx`, as NRPE configuration lines: `check_puppet_run`
/// (the seed's headline check, WARNING on about one node in 23 and CRITICAL on one in 37) and
/// `check_load` (always OK). Plain `sh`, so they run without any Nagios plugin installed.
pub fn nrpe_checks(idx: u32) -> String {
    let (code, state, minutes) = if idx % 37 == 11 {
        (2, "CRITICAL", 190)
    } else if idx % 23 == 7 {
        (1, "WARNING", 95)
    } else {
        (0, "OK", 5 + idx % 50)
    };
    let age = minutes * 60;
    format!(
        "command[check_puppet_run]=echo '{state}: last Puppet run {minutes} minutes ago|age={age}s;5400;7200;0'; exit {code}\n\
         command[check_load]=echo 'OK - load average: 0.12, 0.10, 0.05|load1=0.12;15;30;0'; exit 0\n"
    )
}

/// Writes `<dir>/<identity>.cfg` with [`nrpe_checks`] for each node of the plan.
pub fn write_nrpe_checks(dir: &std::path::Path, count: u32, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (idx, (identity, _)) in (0..).zip(plan(count, seed)) {
        std::fs::write(dir.join(format!("{identity}.cfg")), nrpe_checks(idx))?;
    }
    Ok(())
}

/// DDL of the `bench` agent simulated nodes host, for payload-size benchmarks.
const BENCH_DDL: &str = r#"{
  "metadata": {"name": "bench", "description": "Benchmark helpers on simulated nodes", "author": "Cohort", "license": "Apache-2.0", "version": "1.0.0", "url": "", "timeout": 10},
  "actions": [{
    "action": "blob",
    "description": "Reply with a payload of the requested size",
    "input": {"size": {"prompt": "Size", "description": "Bytes", "type": "integer", "optional": false}},
    "output": {"blob": {"description": "Filler", "display_as": "Blob"}}
  }]
}"#;

/// The `bench` agent: `blob size=N` answers N bytes of filler.
#[derive(Debug)]
pub struct BenchAgent {
    ddl: Arc<cohort_ddl::AgentDdl>,
}

impl BenchAgent {
    /// The agent, if its embedded DDL parses (a test checks it does).
    pub fn new() -> Option<BenchAgent> {
        Some(BenchAgent { ddl: Arc::new(cohort_ddl::AgentDdl::from_json(BENCH_DDL).ok()?) })
    }
}

impl crate::agent::Agent for BenchAgent {
    fn ddl(&self) -> &Arc<cohort_ddl::AgentDdl> {
        &self.ddl
    }

    fn call<'a>(
        &'a self,
        _ctx: &'a crate::agent::Context,
        request: crate::agent::ActionRequest,
    ) -> crate::agent::CallFuture<'a> {
        Box::pin(async move {
            // The DDL caps nothing; keep a runaway request from exhausting memory.
            let size = request.data.get("size").and_then(Value::as_u64).unwrap_or(0).min(4 << 20);
            let mut data = Map::new();
            data.insert(
                "blob".to_owned(),
                Value::String("x".repeat(usize::try_from(size).unwrap_or(0))),
            );
            crate::agent::Outcome::ok(data)
        })
    }
}

/// Security for a simulated fleet: every node gets its own key and a node credential from
/// `issuer`, trusts only `issuer`, signs its replies and refuses unsigned requests. Policies
/// allow everything, so the cost measured is that of signing and verifying.
#[derive(Debug, Clone)]
pub struct FleetSecurity {
    /// The organisation issuer.
    pub issuer: cohort_security::SecretKey,
    /// Log in to the broker with each node's nkey (the broker must list them: see
    /// [`FleetSecurity::node_key`]).
    pub broker_login: bool,
    /// CA of the broker's TLS certificate; TLS is then required.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Allow every caller every action (benchmarks); otherwise the defaults apply: read-only
    /// built-in agents allowed, every other agent denied.
    pub allow_all: bool,
    /// One audit log all simulated nodes write to (each record names its node).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
}

impl FleetSecurity {
    /// The key of simulated node `identity`: derived from the issuer and the name, so a broker
    /// can be told the fleet's nkeys before the fleet starts. Simulation only: real nodes get
    /// random keys from `cohort keys issue`.
    pub fn node_key(&self, identity: &Identity) -> cohort_security::SecretKey {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.issuer.public().as_str().hash(&mut hasher);
        identity.as_str().hash(&mut hasher);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(hasher.finish());
        cohort_security::SecretKey::generate(cohort_security::KeyKind::Member, rng.r#gen())
    }
}

/// The identities and facts of a simulated fleet of `count` nodes from `seed`, as
/// [`Fleet::start`] creates them.
pub fn plan(count: u32, seed: u64) -> Vec<(Identity, Facts)> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..count).map(|idx| simulated_node(idx, &mut rng)).collect()
}

/// A simulated fleet running in this process.
pub struct Fleet {
    stops: Vec<tokio::sync::mpsc::Sender<Signal>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Fleet {
    /// Starts `count` nodes connected to `url`, secure when `security` is given. `url` may be a
    /// comma-separated list (a cluster's members): node `i` starts at member `i mod n`, so the
    /// fleet is spread evenly, and fails over to the others in turn. With `nrpe`,
    /// each node's NRPE configuration is `<nrpe>/<identity>.cfg` ([`write_nrpe_checks`]).
    pub async fn start(
        url: &str,
        count: u32,
        seed: u64,
        security: Option<&FleetSecurity>,
        nrpe: Option<&std::path::Path>,
        agents: Option<&AgentSettings>,
    ) -> Result<Fleet, async_nats::ConnectError> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed);
        let collective =
            Collective::new("cohort").unwrap_or_else(|_| unreachable!("valid literal"));
        let mut fleet = Fleet { stops: Vec::new(), tasks: tokio::task::JoinSet::new() };
        let options = RunOptions {
            registration_interval: Duration::ZERO,
            max_concurrent_actions: 4,
            facts_refresh: Duration::from_secs(3600),
            agents_dir: None,
            max_agent_output: 1024 * 1024,
            shutdown_grace: Duration::from_secs(2),
            agent_settings: AgentSettings::default(),
            policies: None,
            trust: None,
        };
        // Parsed once for the whole fleet; each node gets the list rotated to start at its own.
        let members: Vec<async_nats::ServerAddr> =
            url.split(',').map(str::trim).filter_map(|member| member.parse().ok()).collect();
        for (identity, facts) in plan(count, seed) {
            let state = NodeState::new(
                identity.clone(),
                vec![collective.clone()],
                facts,
                {
                    let mut settings = agents.cloned().unwrap_or_default();
                    if let Some(dir) = nrpe {
                        settings.nrpe.config = vec![dir.join(format!("{identity}.cfg"))];
                    }
                    settings.puppet = for_node(&settings.puppet, identity.as_str());
                    let own = |p: &std::path::Path| {
                        std::path::PathBuf::from(
                            p.display().to_string().replace("{identity}", identity.as_str()),
                        )
                    };
                    settings.provision.state_dir = own(&settings.provision.state_dir);
                    settings.provision.hosts_file = own(&settings.provision.hosts_file);
                    settings.provision.certificate =
                        settings.provision.certificate.as_deref().map(own);
                    let mut agents = builtin_agents(&settings);
                    if let Some(bench) = BenchAgent::new() {
                        agents.push(Arc::new(bench));
                    }
                    agents
                },
                None,
                Map::new(),
                Duration::from_secs(30),
            );
            let state = match security {
                Some(security) => state.with_security(node_security(security, &identity, &mut rng)),
                None => state,
            };
            let state = Arc::new(match security.and_then(|security| security.audit.clone()) {
                Some(audit) => state.with_audit(audit),
                None => state,
            });
            let auth = security.map_or_else(BusAuth::default, |security| BusAuth {
                nkey_seed: security.broker_login.then(|| security.node_key(&identity).seed()),
                tls_ca: security.tls_ca.clone(),
            });
            let servers: Vec<async_nats::ServerAddr> = (0..members.len())
                .map(|shift| members[(fleet.stops.len() + shift) % members.len()].clone())
                .collect();
            let client = auth
                .apply(async_nats::ConnectOptions::new())
                .name(identity.as_str())
                .retain_servers_order()
                .connect(servers)
                .await?;
            let (stop, signals) = tokio::sync::mpsc::channel(1);
            let options = options.clone();
            fleet.tasks.spawn(async move {
                if let Err(err) = crate::run::run(state, client, options, None, signals).await {
                    tracing::error!("simulated node {identity} failed: {err}");
                }
            });
            fleet.stops.push(stop);
        }
        Ok(fleet)
    }

    /// Stops every node and waits for them.
    pub async fn stop(mut self) {
        for stop in &self.stops {
            let _ = stop.send(Signal::Shutdown).await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

fn node_security(
    security: &FleetSecurity,
    identity: &Identity,
    rng: &mut impl Rng,
) -> Arc<crate::security::NodeSecurity> {
    use cohort_security::{Authorizer, Credential, Decision, Role, Signer, Trust};
    let key = security.node_key(identity);
    let now = cohort_proto::now_ms(std::time::SystemTime::now()) / 1000;
    let serial = format!("{:032x}", rng.r#gen::<u128>());
    let issued = Credential::issue(
        &security.issuer,
        identity.as_str(),
        Role::Node,
        key.public(),
        serial,
        now - 60,
        now + 86_400,
    );
    // A simulated identity is always a valid name, and the key is the one just certified.
    let signer = issued
        .ok()
        .and_then(|credential| Signer::new(key, credential).ok())
        .unwrap_or_else(|| unreachable!("simulated node credential is valid"));
    Arc::new(crate::security::NodeSecurity::new(
        Trust::new(vec![security.issuer.public().clone()]),
        signer,
        Authorizer::new(
            Default::default(),
            Default::default(),
            security.allow_all.then_some(Decision::Allow),
        ),
        crate::security::DEFAULT_REPLAY_CAPACITY,
    ))
}

/// Each simulated node's own Puppet: `{identity}` in the configured paths and arguments
/// becomes the node's name (a benchmark gives every node its own state directory).
fn for_node(config: &cohort_puppet::PuppetConfig, identity: &str) -> cohort_puppet::PuppetConfig {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref().map(|p| {
            std::path::PathBuf::from(p.display().to_string().replace("{identity}", identity))
        })
    };
    cohort_puppet::PuppetConfig {
        extra_args: config.extra_args.iter().map(|a| a.replace("{identity}", identity)).collect(),
        agent_disabled_lockfile: path(&config.agent_disabled_lockfile),
        agent_catalog_run_lockfile: path(&config.agent_catalog_run_lockfile),
        lastrunfile: path(&config.lastrunfile),
        lastrunreport: path(&config.lastrunreport),
        pidfile: path(&config.pidfile),
        resourcefile: path(&config.resourcefile),
        ..config.clone()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_ddl_parses() {
        assert!(super::BenchAgent::new().is_some());
    }
}
