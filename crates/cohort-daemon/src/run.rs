//! The node on the bus: connecting, subscribing, running the pipeline with bounded
//! concurrency, publishing replies and registrations, reloading facts and agents, and shutting
//! down gracefully.
//!
//! Subscriptions, per collective: `C.broadcast.agent.<agent>` for every hosted agent and for
//! `discovery`, and `C.node.<identity>`. Requests beyond `max_concurrent_actions` wait for a
//! slot without being read off the subscription, so memory stays bounded by async-nats' own
//! subscription buffer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cohort_proto::{
    PROTOCOL, Registration, VERSION, broadcast_subject, node_subject, now_ms, registration_subject,
};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_stream::{StreamExt, StreamMap};

use crate::agent::Agent;
use crate::external::{self, LoadError};
use crate::facts::FactSource;
use crate::pipeline::{Handled, NodeState};

/// What the built-in agents are configured with.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    /// The nrpe agent's settings.
    pub nrpe: crate::nrpe::NrpeSettings,
    /// The resource agent's settings.
    pub resource: crate::resource::ResourceSettings,
    /// The puppet agent's settings.
    pub puppet: cohort_puppet::PuppetConfig,
    /// The provision agent's settings.
    pub provision: cohort_provision::node::NodeSettings,
    /// The puppetca agent's settings.
    pub puppetca: cohort_provision::puppetca::CaSettings,
    /// The notify agent's settings.
    pub notify: crate::provision::NotifierSettings,
}

/// Agents compiled into Cohort: the one list of them.
pub fn builtin_agents(settings: &AgentSettings) -> Vec<Arc<dyn Agent>> {
    let mut agents: Vec<Arc<dyn Agent>> = Vec::new();
    if let Some(rpcutil) = crate::rpcutil::Rpcutil::new() {
        agents.push(Arc::new(rpcutil));
    }
    if let Some(nrpe) = crate::nrpe::Nrpe::new(settings.nrpe.clone()) {
        agents.push(Arc::new(nrpe));
    }
    if let Some(puppet) = crate::puppet::Puppet::new(settings.puppet.clone()) {
        agents.push(Arc::new(puppet));
    }
    if let Some(provision) = crate::provision::Provision::new(&settings.provision, &settings.puppet)
    {
        agents.push(Arc::new(provision));
    }
    if let Some(puppetca) = crate::provision::Puppetca::new(&settings.puppetca) {
        agents.push(Arc::new(puppetca));
    }
    if let Some(notify) = crate::provision::Notifier::new(&settings.notify) {
        agents.push(Arc::new(notify));
    }
    for name in ["resource", "puppetral"] {
        if let Some(agent) = crate::resource::ResourceAgent::new(name, &settings.resource) {
            agents.push(Arc::new(agent));
        }
    }
    agents
}

/// Built-in agents plus the external agents in `agents_dir`. An external agent with a
/// built-in's name is refused, so nobody can replace `rpcutil` by dropping a directory.
pub fn load_agents(
    agents_dir: Option<&std::path::Path>,
    max_output: usize,
    settings: &AgentSettings,
) -> (Vec<Arc<dyn Agent>>, Vec<LoadError>) {
    let mut agents = builtin_agents(settings);
    let mut errors = Vec::new();
    if let Some(dir) = agents_dir {
        let (found, failed) = external::scan(dir, max_output);
        errors.extend(failed);
        for agent in found {
            let name = agent.ddl().metadata.name.clone();
            if agents.iter().any(|have| have.ddl().metadata.name == name) {
                errors.push(LoadError {
                    path: dir.join(&name),
                    message: format!("agent {name} is built in"),
                });
            } else {
                agents.push(Arc::new(agent));
            }
        }
    }
    (agents, errors)
}

/// How the bus loop behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seconds between registrations; zero for none.
    pub registration_interval: Duration,
    /// Actions running at once.
    pub max_concurrent_actions: usize,
    /// How often fact files are checked.
    pub facts_refresh: Duration,
    /// External agents directory, rescanned on reload.
    pub agents_dir: Option<PathBuf>,
    /// External agent output cap.
    pub max_agent_output: usize,
    /// How long shutdown waits for running actions.
    pub shutdown_grace: Duration,
    /// Settings of the built-in agents, for reloads.
    pub agent_settings: AgentSettings,
    /// Where the authorization policies come from, re-read on reload.
    pub policies: Option<PolicySource>,
    /// Where the trusted issuers and the revocation list come from, re-read on reload.
    pub trust: Option<TrustSource>,
}

/// The trusted issuers (keys or files) and the revocation list file.
#[derive(Debug, Clone)]
pub struct TrustSource {
    /// Issuer public keys, or files holding them.
    pub issuers: Vec<String>,
    /// Revocation list, if any.
    pub revocations: Option<PathBuf>,
}

/// The policy directory and the defaults for agents without a policy file.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Directory of `<agent>.policy` files and `groups`.
    pub dir: PathBuf,
    /// Per-agent defaults from configuration.
    pub defaults: std::collections::HashMap<String, cohort_security::Decision>,
    /// Default for agents with neither a policy nor a per-agent default.
    pub fallback: Option<cohort_security::Decision>,
}

impl PolicySource {
    /// Reads the policies, logging files that do not parse (their agents are denied).
    pub fn load(&self) -> cohort_security::Authorizer {
        let (authorizer, errors) =
            cohort_keystore::read_policies(&self.dir, self.defaults.clone(), self.fallback);
        for error in errors {
            tracing::error!("policy not loaded, denying its agent: {error}");
        }
        authorizer
    }
}

/// How a node or client proves itself to the broker and checks the broker's certificate.
#[derive(Debug, Clone, Default)]
pub struct BusAuth {
    /// nkeys seed to sign the broker's nonce with (the credential's key).
    pub nkey_seed: Option<String>,
    /// CA certificate to verify the broker's TLS certificate against; TLS is then required.
    pub tls_ca: Option<PathBuf>,
}

impl BusAuth {
    /// Applies these settings to connection options.
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
    }
}

/// Something the outside world tells a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Rescan agents and re-read facts (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM, SIGINT).
    Shutdown,
}

/// Connects to the first reachable broker of `urls`, retrying forever in the background when
/// none is up yet, and reconnecting with jittered exponential backoff when the connection drops.
/// Each time the connection comes back after a loss, `reconnects` is counted.
pub async fn connect(
    urls: &[String],
    name: &str,
    auth: &BusAuth,
    reconnects: prometheus_client::metrics::counter::Counter,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers: Vec<async_nats::ServerAddr> =
        urls.iter().filter_map(|url| url.parse().ok()).collect();
    let link = LinkLog::new(urls.join(", "), reconnects);
    auth.apply(async_nats::ConnectOptions::new())
        .event_callback(move |event| {
            link.record(&event, std::time::Instant::now());
            std::future::ready(())
        })
        .name(name)
        .ping_interval(cohort_proto::PING_INTERVAL)
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            cohort_proto::reconnect_delay(attempts, rand::thread_rng().gen_range(0.5..1.5))
        })
        .connect(servers)
        .await
}

/// The broker connection's story in the daemon's log, in place of async-nats' own terse
/// events (`client error: nats: IO error` on every attempt): which broker, since when it is
/// unreachable and why, at most one line per [`LinkLog::EVERY`] while it stays down.
#[derive(Clone)]
struct LinkLog {
    brokers: String,
    down: Arc<std::sync::Mutex<Option<Down>>>,
    reconnects: prometheus_client::metrics::counter::Counter,
}

#[derive(Clone, Copy)]
struct Down {
    since: std::time::Instant,
    said: std::time::Instant,
    attempts: u64,
}

impl LinkLog {
    const EVERY: Duration = Duration::from_secs(30);

    fn new(brokers: String, reconnects: prometheus_client::metrics::counter::Counter) -> LinkLog {
        LinkLog { brokers, down: Arc::default(), reconnects }
    }

    fn record(&self, event: &async_nats::Event, now: std::time::Instant) {
        let mut down = self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            async_nats::Event::Connected => match down.take() {
                Some(was) => {
                    self.reconnects.inc();
                    tracing::info!(
                        "reconnected to the broker at {} after {:.0?} down",
                        self.brokers,
                        now.duration_since(was.since)
                    );
                }
                None => tracing::info!("connected to the broker at {}", self.brokers),
            },
            async_nats::Event::Disconnected => {
                tracing::warn!(
                    "lost the broker at {}; requests cannot reach this node until it is back \
                     (reconnecting)",
                    self.brokers
                );
                *down = Some(Down { since: now, said: now, attempts: 0 });
            }
            async_nats::Event::ClientError(err) => {
                let state = down.get_or_insert(Down { since: now, said: now, attempts: 0 });
                state.attempts += 1;
                if state.attempts == 1 || now.duration_since(state.said) >= LinkLog::EVERY {
                    state.said = now;
                    tracing::warn!(
                        "cannot reach the broker at {} ({}; {} attempts in {:.0?}); still trying",
                        self.brokers,
                        err,
                        state.attempts,
                        now.duration_since(state.since)
                    );
                }
            }
            async_nats::Event::ServerError(err) => {
                tracing::error!("the broker at {} says: {err}", self.brokers);
            }
            async_nats::Event::SlowConsumer(sid) => {
                tracing::warn!("subscription {sid} cannot keep up; the client dropped messages");
            }
            _ => {}
        }
    }
}

/// The node's subscriptions, by subject. A reload or an agent's activation changing touches
/// only the subjects that changed: a subscription kept is never dropped with requests still in
/// its buffer, and a subscription removed is unsubscribed and then read to its end, so a
/// request that reached it before the reload is still answered (as an unknown agent, if so).
struct Subscriptions {
    streams: StreamMap<String, async_nats::Subscriber>,
}

impl Subscriptions {
    async fn new(
        client: &async_nats::Client,
        state: &NodeState,
    ) -> Result<Subscriptions, async_nats::SubscribeError> {
        let mut subscriptions = Subscriptions { streams: StreamMap::new() };
        subscriptions.sync(client, state).await?;
        Ok(subscriptions)
    }

    /// The subjects `state` should hear now.
    fn wanted(state: &NodeState) -> Vec<String> {
        let mut subjects = Vec::new();
        for collective in &state.collectives {
            for agent in state.agent_names() {
                subjects.push(broadcast_subject(collective, &agent));
            }
            subjects.push(node_subject(collective, &state.identity));
        }
        subjects
    }

    /// Subscribes to the subjects newly wanted and unsubscribes from those no longer wanted.
    async fn sync(
        &mut self,
        client: &async_nats::Client,
        state: &NodeState,
    ) -> Result<(), async_nats::SubscribeError> {
        let wanted = Subscriptions::wanted(state);
        for subject in &wanted {
            if !self.streams.contains_key(subject) {
                let subscriber = client.subscribe(subject.clone()).await?;
                self.streams.insert(subject.clone(), subscriber);
            }
        }
        for (subject, subscriber) in self.streams.iter_mut() {
            if !wanted.contains(subject) {
                // The stream ends once its buffer is read; the map then drops it.
                if let Err(err) = subscriber.unsubscribe().await {
                    tracing::warn!("cannot unsubscribe from {subject}: {err}");
                }
            }
        }
        Ok(())
    }

    async fn next(&mut self) -> Option<async_nats::Message> {
        self.streams.next().await.map(|(_, message)| message)
    }
}

/// Runs `state` on the bus until a [`Signal::Shutdown`] arrives or `signals` ends.
pub async fn run(
    state: Arc<NodeState>,
    client: async_nats::Client,
    options: RunOptions,
    mut facts: Option<FactSource>,
    mut signals: tokio::sync::mpsc::Receiver<Signal>,
) -> Result<(), async_nats::SubscribeError> {
    let mut incoming = Subscriptions::new(&client, &state).await?;
    let slots = Arc::new(Semaphore::new(options.max_concurrent_actions));
    let mut facts_tick = tokio::time::interval(options.facts_refresh);
    facts_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Registration starts after a random splay so a fleet restarted together does not
    // register in one burst.
    let registration = !options.registration_interval.is_zero();
    let interval =
        if registration { options.registration_interval } else { Duration::from_secs(3600) };
    let splay = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
    let mut register_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + splay.min(Duration::from_secs(30)),
        interval,
    );
    tracing::info!(node = %state.identity, agents = ?state.agent_names(), "node serving");
    // Announce the start at once (a provisioner notices new nodes by it); the periodic
    // registrations follow after their splay.
    if registration {
        register(&client, &state).await;
    }
    loop {
        tokio::select! {
            message = incoming.next() => {
                let Some(message) = message else {
                    tracing::warn!("subscriptions closed; stopping");
                    break;
                };
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let state = state.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let handled = state.handle(&message.payload, message.reply.as_deref(), SystemTime::now()).await;
                    if let (Handled::Reply(reply, key), Some(subject)) = (handled, message.reply)
                        && let Err(err) = client.publish(subject, state.reply_bytes(&reply, key.as_ref()).into()).await
                    {
                        tracing::warn!("cannot publish reply: {err}");
                    }
                    drop(permit);
                });
            }
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => {
                    let (agents, errors) =
                        load_agents(options.agents_dir.as_deref(), options.max_agent_output, &options.agent_settings);
                    for error in errors {
                        tracing::error!("agent not loaded: {error}");
                    }
                    state.set_agents(agents);
                    if let Err(err) = incoming.sync(&client, &state).await {
                        tracing::error!("resubscribing after reload failed: {err}");
                    }
                    refresh_facts(&state, facts.as_mut());
                    if let (Some(security), Some(policies)) = (state.security(), &options.policies) {
                        security.set_authorizer(policies.load());
                    }
                    if let (Some(security), Some(source)) = (state.security(), &options.trust) {
                        match cohort_keystore::read_trust(&source.issuers, source.revocations.as_deref()) {
                            Ok(trust) => security.set_trust(trust),
                            Err(err) => tracing::error!("trust not reloaded, keeping the previous one: {err}"),
                        }
                    }
                    if let Some(audit) = state.audit() {
                        audit.reopen();
                    }
                    tracing::info!(agents = ?state.agent_names(), "reloaded");
                }
                Some(Signal::Shutdown) | None => break,
            },
            _ = facts_tick.tick() => {
                refresh_facts(&state, facts.as_mut());
                if state.refresh_activation() {
                    if let Err(err) = incoming.sync(&client, &state).await {
                        tracing::error!("resubscribing after an agent's activation changed: {err}");
                    }
                    tracing::info!(agents = ?state.agent_names(), "active agents changed");
                }
            }
            _ = register_tick.tick(), if registration => {
                register(&client, &state).await;
            }
        }
    }
    drop(incoming);
    // Let running actions finish and their replies go out, within the grace period.
    let all = u32::try_from(options.max_concurrent_actions).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.shutdown_grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("actions still running after {:?}; stopping anyway", options.shutdown_grace);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    tracing::info!(node = %state.identity, "node stopped");
    Ok(())
}

fn refresh_facts(state: &NodeState, facts: Option<&mut FactSource>) {
    let Some(source) = facts else { return };
    match source.refresh() {
        Ok(true) => {
            state.set_facts(source.current().clone());
            tracing::info!("facts reloaded");
        }
        Ok(false) => {}
        Err(errors) => {
            for error in errors {
                tracing::error!("facts not reloaded, keeping the previous ones: {error}");
            }
        }
    }
}

async fn register(client: &async_nats::Client, state: &NodeState) {
    let Some(main) = state.collectives.first() else { return };
    let facts = state.facts();
    let registration = Registration {
        protocol: PROTOCOL.to_owned(),
        version: VERSION,
        identity: state.identity.clone(),
        collectives: state.collectives.clone(),
        agents: state.agent_names(),
        facts: facts.facts.clone(),
        classes: facts.classes.clone(),
        time: now_ms(SystemTime::now()),
    };
    if let Err(err) = client
        .publish(registration_subject(main), state.outgoing(registration.to_bytes()).into())
        .await
    {
        tracing::warn!("registration not sent: {err}");
    }
}
