//! The provisioner's loop: notice new nodes (start-up announcements, batched, and a periodic
//! sweep), keep every node's [`Progress`] in the [`Store`], and work on up to `concurrency`
//! nodes at once, each through the pipeline: renew the node's lease, choose its master, run
//! the step, record the outcome, retry with backoff or give up (unlock, notify), and resume
//! after a restart exactly where the store says. The bus is behind [`Fleet`], which the binary
//! implements with the client library.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cohort_proto::{Filter, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::config::{On, ProvisionConfig, Step};
use crate::master::{Candidate, pick};
use crate::metrics::{ProvisionMetrics, StepLabel};
use crate::notify::{Message, Recipient, Senders};
use crate::progress::{Outcome, Progress, State};
use crate::store::Store;

/// A node found by discovery, with its facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its identity.
    pub identity: String,
    /// Its facts.
    pub facts: Map<String, Value>,
}

/// One node's answer to an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The reply's status.
    pub status: StatusCode,
    /// The status message.
    pub message: String,
    /// Outputs.
    pub data: Map<String, Value>,
}

impl Answer {
    /// Whether the action succeeded (status 0).
    pub fn ok(&self) -> bool {
        self.status == StatusCode::Ok
    }
}

/// What the provisioner needs from the bus.
pub trait Fleet: Send + Sync + 'static {
    /// Nodes hosting `agent` that match `filter`, with their facts.
    fn discover(
        &self,
        agent: &str,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Found>, String>> + Send;

    /// `agent`'s `action` on `node` alone. `Err` when it did not answer (or the call could not
    /// be made); a refusal is an [`Answer`] that is not ok.
    fn call(
        &self,
        node: &str,
        agent: &str,
        action: &str,
        data: Map<String, Value>,
    ) -> impl Future<Output = Result<Answer, String>> + Send;
}

/// Operators' requests to a running provisioner.
#[derive(Debug)]
pub enum Command {
    /// Every node's progress.
    Status(oneshot::Sender<Vec<Progress>>),
    /// Try a failed node again.
    Retry(String, oneshot::Sender<Result<String, String>>),
    /// Drop a node's record (it is noticed again if it is still provisionable).
    Forget(String, oneshot::Sender<Result<String, String>>),
}

/// The identity a registration names if, by its own account, it hosts `agent` and matches
/// `filter`. A signed registration carries the envelope as the text of its `message` field.
pub fn provisionable_announcement(payload: &[u8], agent: &str, filter: &Filter) -> Option<String> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let registration: cohort_proto::Registration =
        match value.get("message").and_then(Value::as_str) {
            Some(inner) => serde_json::from_str(inner).ok()?,
            None => serde_json::from_value(value).ok()?,
        };
    let agents: Vec<String> = registration.agents.iter().map(|a| a.as_str().to_owned()).collect();
    let node = cohort_filter::Node {
        identity: registration.identity.as_str(),
        facts: &registration.facts,
        classes: &registration.classes,
        agents: &agents,
    };
    let offered = agents.iter().any(|a| a == agent);
    (offered && cohort_filter::matches(filter, &node))
        .then(|| registration.identity.as_str().to_owned())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The provisioner.
pub struct Driver<F: Fleet> {
    fleet: F,
    config: ProvisionConfig,
    filters: Filters,
    store: Arc<Store>,
    senders: Senders,
    owner: String,
    metrics: ProvisionMetrics,
    nodes: Mutex<BTreeMap<String, Progress>>,
    running: Mutex<BTreeSet<String>>,
    /// The masters last discovered, and when: one discovery serves every node for a while.
    masters: tokio::sync::Mutex<Option<(Instant, Vec<Found>)>>,
}

/// How long a discovery of the masters is reused (a retry always asks again).
const MASTERS_FRESH: Duration = Duration::from_secs(10);

struct Filters {
    target: Filter,
    master: Filter,
    notify: Filter,
}

/// Why a step could not be done.
enum StepError {
    /// Try again later.
    Failed(String),
    /// Another provisioner holds the node.
    Lost(String),
    /// The node is no longer provisionable (disabled, or its agent gone), as it said.
    Gone(String),
}

type StepResult = Result<(Outcome, String), StepError>;

fn failed(message: impl Into<String>) -> StepError {
    StepError::Failed(message.into())
}

fn data(value: Value) -> Map<String, Value> {
    crate::node::object(value)
}

impl<F: Fleet> Driver<F> {
    /// A provisioner named `owner` (its lease holder name) over `fleet`.
    pub fn new(
        fleet: F,
        config: ProvisionConfig,
        store: Store,
        owner: String,
        metrics: ProvisionMetrics,
    ) -> Result<Driver<F>, String> {
        let build = |key: &str, args: &cohort_filter::FilterArgs| {
            args.build().map_err(|err| format!("{key}: {err}"))
        };
        let filters = Filters {
            target: build("target.filter", &config.target.filter)?,
            master: build("master.filter", &config.master.filter)?,
            notify: build("notify.filter", &config.notify.filter)?,
        };
        let senders = Senders::new(config.notify.smtp.clone(), config.notify.xmpp.clone());
        let known = store.all().map_err(|err| err.to_string())?;
        let nodes = known.into_iter().map(|p| (p.node.clone(), p)).collect();
        Ok(Driver {
            fleet,
            config,
            filters,
            store: Arc::new(store),
            senders,
            owner,
            metrics,
            nodes: Mutex::new(nodes),
            running: Mutex::new(BTreeSet::new()),
            masters: tokio::sync::Mutex::new(None),
        })
    }

    /// The identity a start-up announcement (a registration, signed or not) names, when it
    /// looks provisionable by its own account (the target agent and filter, on the agents,
    /// facts and classes it announces) and is not known here yet. Only a hint: the node is then
    /// checked by a signed discovery. Everything else (the steady stream of periodic
    /// registrations from a provisioned fleet) costs nothing more than this.
    pub fn announced(&self, payload: &[u8]) -> Option<String> {
        let identity =
            provisionable_announcement(payload, &self.config.target.agent, &self.filters.target)?;
        (!self.nodes().contains_key(&identity)).then_some(identity)
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Progress>> {
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn save(&self, progress: &Progress) -> Result<(), String> {
        self.nodes().insert(progress.node.clone(), progress.clone());
        let store = self.store.clone();
        let copy = progress.clone();
        match tokio::task::spawn_blocking(move || store.put(&copy)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::error!("{err}");
                Err(err.to_string())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    async fn drop_node(&self, node: &str) {
        self.nodes().remove(node);
        let store = self.store.clone();
        let name = node.to_owned();
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || store.remove(&name)).await {
            tracing::error!("{err}");
        }
    }

    /// Runs until `shutdown` completes. `noticed` brings identities of nodes that just started
    /// (checked against the target filter in batches), `commands` the operators' requests.
    pub async fn run(
        self: Arc<Self>,
        mut noticed: mpsc::Receiver<String>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        let mut checks: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let mut sweep = tokio::time::interval(self.config.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting: BTreeSet<String> = BTreeSet::new();
        let mut sweep_due = true;
        tracing::info!(
            "provisioner {} started: {} nodes on record, steps {}",
            self.owner,
            self.nodes().len(),
            self.config.steps.iter().map(Step::name).collect::<Vec<_>>().join(", ")
        );
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(identity) = noticed.recv() => {
                    if waiting.len() < 10_000 {
                        waiting.insert(identity);
                    }
                    continue;
                }
                Some(command) = commands.recv() => {
                    self.command(command).await;
                    continue;
                }
                _ = sweep.tick() => sweep_due = true,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                Some(_) = checks.join_next(), if !checks.is_empty() => {}
                _ = tick.tick() => {}
            }
            // One discovery at a time: a sweep, or a batch of announced nodes.
            if checks.is_empty() {
                if sweep_due {
                    sweep_due = false;
                    waiting.clear();
                    let me = self.clone();
                    checks.spawn(async move { me.find(None).await });
                } else if !waiting.is_empty() {
                    let batch = std::mem::take(&mut waiting);
                    let me = self.clone();
                    checks.spawn(async move { me.find(Some(batch)).await });
                }
            }
            let now = now_ms();
            let due: Vec<String> = {
                let nodes = self.nodes();
                let running = self.running();
                let free = self.config.concurrency.saturating_sub(running.len());
                nodes
                    .values()
                    .filter(|p| p.is_due(now) && !running.contains(&p.node))
                    .map(|p| p.node.clone())
                    .take(free)
                    .collect()
            };
            for node in due {
                self.running().insert(node.clone());
                let me = self.clone();
                tasks.spawn(async move {
                    me.work(&node).await;
                    me.running().remove(&node);
                });
            }
            self.count_states();
        }
        // Nodes in the middle of a step stay `working` in the store and are resumed next time.
        tasks.shutdown().await;
        checks.shutdown().await;
        tracing::info!("provisioner {} stopped", self.owner);
    }

    fn count_states(&self) {
        let mut counts: BTreeMap<&str, usize> = ["queued", "working", "waiting", "done", "failed"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for progress in self.nodes().values() {
            *counts.entry(progress.state.name()).or_default() += 1;
        }
        self.metrics.set_states(&counts.into_iter().collect::<Vec<_>>());
    }

    /// Discovers provisionable nodes (all, or the `only` ones) and records the new ones.
    async fn find(&self, only: Option<BTreeSet<String>>) {
        let mut filter = self.filters.target.clone();
        if let Some(names) = &only {
            filter.identity = names.iter().cloned().collect();
        }
        let found = match self.fleet.discover(&self.config.target.agent, &filter).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!("looking for nodes to provision: {err}");
                return;
            }
        };
        for node in found {
            if self.nodes().contains_key(&node.identity) {
                continue;
            }
            let address = cohort_filter::lookup(&node.facts, &self.config.target.ipaddress_fact)
                .map_or_else(
                    || "unknown address".to_owned(),
                    |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                );
            tracing::info!("{}: noticed ({address})", node.identity);
            let progress = Progress::new(&node.identity, now_ms());
            let _ = self.save(&progress).await;
        }
    }

    async fn command(&self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.nodes().values().cloned().collect());
            }
            Command::Retry(node, reply) => {
                let found = self.nodes().get(&node).cloned();
                let answer = match found {
                    None => Err(format!("no record of {node}")),
                    Some(mut progress) => match progress.retry(now_ms()) {
                        Ok(()) => self
                            .save(&progress)
                            .await
                            .map(|()| format!("{node} queued again at step {}", progress.step + 1)),
                        Err(err) => Err(err),
                    },
                };
                let _ = reply.send(answer);
            }
            Command::Forget(node, reply) => {
                let answer = if self.running().contains(&node) {
                    Err(format!("{node} is being worked on; try again when its step ends"))
                } else if self.nodes().contains_key(&node) {
                    self.drop_node(&node).await;
                    Ok(format!("{node} forgotten"))
                } else {
                    Err(format!("no record of {node}"))
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn certname(node: &str) -> String {
        node.to_ascii_lowercase()
    }

    fn needs_master(&self) -> bool {
        self.config.steps.iter().any(|step| match step {
            Step::Custom(name) => self.config.custom.get(name).is_some_and(|c| c.on == On::Master),
            Step::DaemonizePuppet | Step::Disable | Step::Notify => false,
            _ => true,
        })
    }

    /// The masters, from a recent discovery unless `fresh` (then, and when stale, asked anew;
    /// concurrent askers wait for the one discovery).
    async fn masters(&self, fresh: bool) -> Result<Vec<Found>, String> {
        let mut cached = self.masters.lock().await;
        if !fresh
            && let Some((at, found)) = cached.as_ref()
            && at.elapsed() < MASTERS_FRESH
        {
            return Ok(found.clone());
        }
        let mut found =
            self.fleet.discover(&self.config.master.agent, &self.filters.master).await?;
        found.sort_by(|a, b| a.identity.cmp(&b.identity));
        *cached = Some((Instant::now(), found.clone()));
        Ok(found)
    }

    /// Chooses the master for `progress` (recording it), or says why not.
    async fn choose_master(
        &self,
        progress: &mut Progress,
        node_facts: &Map<String, Value>,
    ) -> Result<(), String> {
        let masters = self.masters(false).await?;
        let busy: BTreeMap<String, usize> = {
            let mut busy = BTreeMap::new();
            for p in self.nodes().values().filter(|p| !p.is_settled()) {
                if let Some(master) = &p.master {
                    *busy.entry(master.clone()).or_insert(0) += 1;
                }
            }
            busy
        };
        let candidates: Vec<Candidate> = masters
            .iter()
            .map(|m| Candidate {
                identity: m.identity.clone(),
                facts: m.facts.clone(),
                in_progress: busy.get(&m.identity).copied().unwrap_or(0),
            })
            .collect();
        let choice = pick(
            node_facts,
            &candidates,
            &self.config.master.criteria,
            self.config.master.fallback,
            rand::random::<u32>() as usize,
        )
        .map_err(|err| err.to_string())?;
        let facts = &masters
            .iter()
            .find(|m| m.identity == choice.master)
            .map(|m| m.facts.clone())
            .unwrap_or_default();
        let fact = &self.config.master.ipaddress_fact;
        let address = cohort_filter::lookup(facts, fact)
            .and_then(Value::as_str)
            .filter(|a| crate::hosts::is_address(a))
            .ok_or_else(|| {
                format!(
                    "Could not determine master ip address from fact {fact} of {}",
                    choice.master
                )
            })?;
        let message = format!("{} / {address}: {}", choice.master, choice.reason);
        tracing::info!("{}: master {message}", progress.node);
        progress.log(now_ms(), "master", Outcome::Info, message, 0);
        progress.master = Some(choice.master);
        progress.master_address = Some(address.to_owned());
        Ok(())
    }

    async fn node_facts(&self, node: &str) -> Result<Map<String, Value>, String> {
        let filter = Filter { identity: vec![node.to_owned()], ..Filter::default() };
        let found = self.fleet.discover(&self.config.target.agent, &filter).await?;
        found
            .into_iter()
            .next()
            .map(|f| f.facts)
            .ok_or_else(|| format!("{node} did not answer discovery"))
    }

    /// Takes or renews the node's lease.
    async fn lease(&self, node: &str) -> Result<(), StepError> {
        let ttl = self.config.lock_ttl.as_secs();
        let answer = self
            .fleet
            .call(node, "provision", "lock", data(json!({"owner": self.owner, "ttl": ttl})))
            .await
            .map_err(|err| failed(format!("lock: {err}")))?;
        if answer.ok() {
            return Ok(());
        }
        if answer.data.get("locked").and_then(Value::as_bool) == Some(true) {
            return Err(StepError::Lost(answer.message));
        }
        // Disabled, or its provision agent already deactivated: someone finished it.
        let disabled = answer.data.get("disabled").and_then(Value::as_bool) == Some(true);
        if disabled || answer.status == StatusCode::UnknownAction {
            return Err(StepError::Gone(answer.message));
        }
        Err(failed(format!("lock: {}", answer.message)))
    }

    async fn unlock(&self, node: &str) {
        let _ =
            self.fleet.call(node, "provision", "unlock", data(json!({"owner": self.owner}))).await;
    }

    /// Works on one node until it is done, failed, or waiting for a retry.
    async fn work(&self, node: &str) {
        let Some(mut progress) = self.nodes().get(node).cloned() else { return };
        progress.begin(now_ms());
        let _ = self.save(&progress).await;
        let total = self.config.steps.len();
        if total == 0 {
            progress.state = State::Done;
        }
        while progress.state == State::Working {
            let began = Instant::now();
            let (step, result) = self.attempt(&mut progress).await;
            let elapsed = began.elapsed();
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            let label = StepLabel { step: step.name().to_owned() };
            match result {
                Ok((outcome, message)) => {
                    self.metrics.step_seconds.get_or_create(&label).observe(elapsed.as_secs_f64());
                    let word = if outcome == Outcome::Skipped { "skipped" } else { "ok" };
                    tracing::info!("{node}: {step} {word} in {ms} ms: {message}");
                    progress.advance(step.name(), outcome, message, ms, total, now_ms());
                    if progress.state == State::Done {
                        self.metrics.provisioned.inc();
                    }
                }
                Err(StepError::Lost(holder)) => {
                    tracing::info!("{node}: left alone: {holder}");
                    self.drop_node(node).await;
                    return;
                }
                Err(StepError::Gone(why)) => {
                    tracing::info!("{node}: left alone: no longer provisionable: {why}");
                    self.drop_node(node).await;
                    return;
                }
                Err(StepError::Failed(message)) => {
                    self.metrics.step_failures.get_or_create(&label).inc();
                    let jitter = 0.5 + rand::random::<f64>() / 2.0;
                    let last = progress.fail(
                        step.name(),
                        message.clone(),
                        ms,
                        &self.config.retry,
                        jitter,
                        now_ms(),
                    );
                    tracing::warn!(
                        "{node}: {step} failed (attempt {}) in {ms} ms: {message}",
                        progress.attempts
                    );
                    if last {
                        self.give_up(&mut progress).await;
                    }
                }
            }
            let _ = self.save(&progress).await;
        }
        if progress.state == State::Done {
            self.unlock(node).await;
            let master = progress.master.clone().unwrap_or_else(|| "no master".to_owned());
            tracing::info!("{node}: provisioned against {master}");
            progress.log(now_ms(), "done", Outcome::Ok, format!("provisioned against {master}"), 0);
            let _ = self.save(&progress).await;
        }
    }

    async fn give_up(&self, progress: &mut Progress) {
        let node = progress.node.clone();
        self.metrics.failed.inc();
        self.unlock(&node).await;
        let State::Failed { reason } = &progress.state else { return };
        tracing::error!("{node}: provisioning failed: {reason}");
        if !self.config.notify.targets.is_empty() {
            let message = Message {
                subject: format!("Provisioning failed: {node}"),
                message: format!("Provisioning {node} failed: {reason}"),
            };
            match self.notify(&message, &mut Vec::new()).await {
                Ok(sent) => progress.log(now_ms(), "notify", Outcome::Info, sent, 0),
                Err(err) => progress.log(now_ms(), "notify", Outcome::Failed, err, 0),
            }
        }
    }

    /// One attempt at `step`: the lease, the master, then the step itself.
    async fn attempt(&self, progress: &mut Progress) -> (Step, StepResult) {
        let result = self.prepare(progress).await;
        let step = self.config.steps[progress.step.min(self.config.steps.len() - 1)].clone();
        match result {
            Ok(()) => {
                let result = self.step(progress, &step).await;
                (step, result)
            }
            // Leaving the provisionable set is all `disable` does, so a node found gone at that
            // step has had it done: typically by our last attempt, whose reply was lost with the
            // broker after the node acted. Leaving it alone would drop a provisioned node from
            // the record, never done and never notified.
            Err(StepError::Gone(why)) if step.is_done_when_disabled() => {
                (step, Ok((Outcome::Ok, format!("no longer provisionable already: {why}"))))
            }
            Err(err) => (step, Err(err)),
        }
    }

    /// Before a step: renew the lease and make sure the node has a master that is still there.
    async fn prepare(&self, progress: &mut Progress) -> Result<(), StepError> {
        let node = progress.node.clone();
        // Once the node is disabled it refuses locks (it is no longer provisionable); the
        // steps after `disable` do not touch it.
        let disabled = self
            .config
            .steps
            .iter()
            .position(|s| *s == Step::Disable)
            .is_some_and(|at| at < progress.step);
        if !disabled {
            self.lease(&node).await?;
        }
        if self.needs_master() {
            // On a retry, a master that went away is replaced: the node starts over with the
            // next one by the criteria.
            if progress.attempts > 0
                && let Some(master) = progress.master.clone()
            {
                let masters = self.masters(true).await.map_err(failed)?;
                if !masters.iter().any(|m| m.identity == master) {
                    progress.restart(format!("{master} went away; choosing again"), now_ms());
                    tracing::warn!("{node}: master {master} went away; starting over");
                }
            }
            if progress.master.is_none() {
                let facts = self.node_facts(&node).await.map_err(failed)?;
                self.choose_master(progress, &facts)
                    .await
                    .map_err(|err| failed(format!("master: {err}")))?;
                let _ = self.save(progress).await;
            }
        }
        Ok(())
    }

    async fn on_node(
        &self,
        node: &str,
        action: &str,
        input: Map<String, Value>,
    ) -> Result<Answer, StepError> {
        let answer = self
            .fleet
            .call(node, "provision", action, input)
            .await
            .map_err(|err| failed(format!("{action}: {err}")))?;
        if answer.ok() { Ok(answer) } else { Err(failed(answer.message)) }
    }

    async fn has_certificate(&self, progress: &mut Progress) -> Result<bool, StepError> {
        if let Some(has) = progress.has_certificate {
            return Ok(has);
        }
        let answer = self.on_node(&progress.node, "has_cert", Map::new()).await?;
        let has = answer.data.get("has_cert").and_then(Value::as_bool).unwrap_or(false);
        progress.has_certificate = Some(has);
        Ok(has)
    }

    async fn step(&self, progress: &mut Progress, step: &Step) -> StepResult {
        let node = progress.node.clone();
        let master = progress.master.clone().unwrap_or_default();
        let certname = Self::certname(&node);
        if step.is_certificate() && !progress.signed && self.has_certificate(progress).await? {
            return Ok((Outcome::Skipped, "the node already has a certificate".to_owned()));
        }
        let said = |answer: &Answer, fallback: &str| {
            let output = answer
                .data
                .get("exitcode")
                .and_then(Value::as_i64)
                .map(|code| format!("exit {code}"));
            output.unwrap_or_else(|| fallback.to_owned())
        };
        match step {
            Step::SetPuppetHost => {
                let address = progress.master_address.clone().unwrap_or_default();
                let answer = self
                    .on_node(&node, "set_puppet_host", data(json!({"ipaddress": address})))
                    .await?;
                let changed = answer.data.get("changed").and_then(Value::as_bool).unwrap_or(false);
                Ok((
                    Outcome::Ok,
                    format!("puppet is {address}{}", if changed { "" } else { " already" }),
                ))
            }
            Step::CleanCert => {
                let masters = self.masters(progress.attempts > 0).await.map_err(failed)?;
                let mut cleaned = Vec::new();
                for m in &masters {
                    let answer = self
                        .fleet
                        .call(
                            &m.identity,
                            &self.config.master.agent,
                            "clean",
                            data(json!({"certname": certname})),
                        )
                        .await
                        .map_err(|err| failed(format!("clean on {}: {err}", m.identity)))?;
                    if answer.ok() {
                        cleaned.push(m.identity.clone());
                    } else if !answer.message.starts_with("Could not find any certs") {
                        return Err(failed(format!("clean on {}: {}", m.identity, answer.message)));
                    }
                }
                Ok((
                    Outcome::Ok,
                    if cleaned.is_empty() {
                        "no old certificates".to_owned()
                    } else {
                        format!("cleaned on {}", cleaned.join(", "))
                    },
                ))
            }
            Step::RequestCertificate => {
                let answer = self.on_node(&node, "request_certificate", Map::new()).await?;
                Ok((Outcome::Ok, format!("CSR sent ({})", said(&answer, "ok"))))
            }
            Step::SignCertificate => self.sign(progress, &certname).await,
            Step::BootstrapPuppet => {
                let environment = self.config.bootstrap_environment.clone();
                let answer = self
                    .on_node(&node, "bootstrap_puppet", data(json!({"environment": environment})))
                    .await?;
                Ok((Outcome::Ok, format!("{environment} run: {}", said(&answer, "ok"))))
            }
            Step::RunPuppet => {
                let answer = self.on_node(&node, "run_puppet", Map::new()).await?;
                Ok((Outcome::Ok, format!("run: {}", said(&answer, "ok"))))
            }
            Step::DaemonizePuppet => {
                self.on_node(&node, "daemonize_puppet", Map::new()).await?;
                Ok((Outcome::Ok, "Puppet daemon started".to_owned()))
            }
            Step::Disable => {
                self.on_node(&node, "disable", Map::new()).await?;
                Ok((Outcome::Ok, "no longer provisionable".to_owned()))
            }
            Step::Notify => {
                let message = Message {
                    subject: self.config.notify.subject.clone(),
                    message: format!("Provisioned {node} against {master}"),
                };
                let mut done = progress.notified.clone();
                let result = self.notify(&message, &mut done).await;
                progress.notified = done;
                result.map(|sent| (Outcome::Ok, sent)).map_err(failed)
            }
            Step::Custom(name) => {
                let Some(custom) = self.config.custom.get(name) else {
                    return Err(failed(format!("no [custom.{name}]")));
                };
                let address = progress.master_address.clone().unwrap_or_default();
                let inputs: Map<String, Value> = custom
                    .inputs
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => Value::String(
                                s.replace("{node}", &node)
                                    .replace("{master}", &master)
                                    .replace("{master_address}", &address),
                            ),
                            other => other.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let target = if custom.on == On::Master { master.clone() } else { node.clone() };
                let answer =
                    self.fleet.call(&target, &custom.agent, &custom.action, inputs).await.map_err(
                        |err| failed(format!("{}#{}: {err}", custom.agent, custom.action)),
                    )?;
                if answer.ok() {
                    Ok((
                        Outcome::Ok,
                        format!(
                            "{}#{} on {target}: {}",
                            custom.agent, custom.action, answer.message
                        ),
                    ))
                } else {
                    Err(failed(format!(
                        "{}#{} on {target}: {}",
                        custom.agent, custom.action, answer.message
                    )))
                }
            }
        }
    }

    /// Signs on the master holding the CSR, never twice: `sign_sent` is stored before the
    /// request goes out, and a certificate found signed after that is our signature.
    async fn sign(&self, progress: &mut Progress, certname: &str) -> StepResult {
        if progress.signed {
            return Ok((Outcome::Skipped, "signed already".to_owned()));
        }
        let masters = self.masters(progress.attempts > 0).await.map_err(failed)?;
        let agent = &self.config.master.agent;
        let mut holder = None;
        for m in &masters {
            let answer = self
                .fleet
                .call(&m.identity, agent, "status", data(json!({"certname": certname})))
                .await
                .map_err(|err| failed(format!("status on {}: {err}", m.identity)))?;
            match answer.data.get("status").and_then(Value::as_str) {
                Some("signed") if progress.sign_sent => {
                    progress.signed = true;
                    return Ok((
                        Outcome::Ok,
                        format!("signed on {} (before a restart)", m.identity),
                    ));
                }
                Some("signed") => {
                    return Err(failed(format!(
                        "{certname} already has a certificate on {} that this provisioner did not sign; clean it first",
                        m.identity
                    )));
                }
                Some("awaiting signature") => holder = Some(m.identity.clone()),
                _ => {}
            }
        }
        let Some(holder) = holder else {
            return Err(failed(format!(
                "Could not find certificate {certname} to sign on any master"
            )));
        };
        progress.sign_sent = true;
        self.save(progress)
            .await
            .map_err(|err| failed(format!("not signing: the progress store failed: {err}")))?;
        let answer = self
            .fleet
            .call(&holder, agent, "sign", data(json!({"certname": certname})))
            .await
            .map_err(|err| failed(format!("sign on {holder}: {err}")))?;
        if !answer.ok() {
            return Err(failed(format!("sign on {holder}: {}", answer.message)));
        }
        progress.signed = true;
        Ok((Outcome::Ok, format!("signed on {holder}")))
    }

    /// Sends `message` to every target not in `done` (adding the ones that worked).
    async fn notify(&self, message: &Message, done: &mut Vec<String>) -> Result<String, String> {
        let targets: Vec<&String> =
            self.config.notify.targets.iter().filter(|t| !done.contains(t)).collect();
        let mut errors = Vec::new();
        let notifier = match &self.config.notify.agent {
            None => None,
            Some(agent) => {
                let mut found = self.fleet.discover(agent, &self.filters.notify).await?;
                found.sort_by(|a, b| a.identity.cmp(&b.identity));
                Some((
                    agent.clone(),
                    found
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            format!("Could not find any instances of the '{agent}' agent")
                        })?
                        .identity,
                ))
            }
        };
        for target in targets {
            let sent = match &notifier {
                Some((agent, node)) => self
                    .fleet
                    .call(node, agent, "sendmsg", data(json!({"recipient": target, "subject": message.subject, "message": message.message})))
                    .await
                    .and_then(|a| if a.ok() { Ok(format!("{target} via {node}")) } else { Err(format!("{node}: {}", a.message)) }),
                None => match Recipient::parse(target) {
                    Ok(recipient) => self.senders.send(&recipient, message).await,
                    Err(err) => Err(err.to_string()),
                },
            };
            match sent {
                Ok(_) => done.push(target.clone()),
                Err(err) => errors.push(format!("{target}: {err}")),
            }
        }
        if errors.is_empty() {
            Ok(format!("told {}", done.join(", ")))
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(agents: &[&str], disabled: &str) -> Vec<u8> {
        json!({
            "protocol": cohort_proto::PROTOCOL, "version": cohort_proto::VERSION, "identity": "n1",
            "collectives": ["cohort"], "agents": agents, "facts": {"provision_disabled": disabled},
            "classes": [], "time": 0,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn announcements_are_read_signed_or_not_and_filtered() {
        let filter = cohort_filter::FilterArgs {
            fact: vec!["provision_disabled=false".into()],
            ..Default::default()
        }
        .build()
        .unwrap();
        let plain = registration(&["rpcutil", "provision"], "false");
        assert_eq!(provisionable_announcement(&plain, "provision", &filter).as_deref(), Some("n1"));
        let sealed = json!({"protocol": "x", "message": String::from_utf8(plain).unwrap(), "signature": "s"}).to_string();
        assert_eq!(
            provisionable_announcement(sealed.as_bytes(), "provision", &filter).as_deref(),
            Some("n1")
        );
        assert_eq!(
            provisionable_announcement(&registration(&["rpcutil"], "false"), "provision", &filter),
            None
        );
        assert_eq!(
            provisionable_announcement(&registration(&["provision"], "true"), "provision", &filter),
            None
        );
        assert_eq!(provisionable_announcement(b"{not json", "provision", &filter), None);
    }
}
