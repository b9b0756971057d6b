//! The node's request pipeline, independent of the bus: bytes in, an optional reply out.
//!
//! decode → verify → TTL → filter → agent/action lookup → DDL validation → dispatch (DDL
//! timeout) → reply. Requests that fail to decode, verify, or are expired or filtered out get
//! no reply (the client's "no response" accounting covers them); everything after the filter
//! gets a reply with a status code. The verify stage accepts every request for now: the
//! security work fills it in with signature, credential and replay checks.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use cohort_ddl::validate_inputs;
use cohort_proto::{
    AgentName, Collective, DISCOVERY_AGENT, Identity, PROTOCOL, Reply, Request, StatusCode,
    VERSION, now_ms,
};
use serde_json::{Map, Value};

use crate::agent::{ActionRequest, Agent, Context, Outcome};
use crate::facts::Facts;
use crate::stats::Stats;

/// Everything a node is, shared by its pipeline and its bus loop.
pub struct NodeState {
    /// The node's identity.
    pub identity: Identity,
    /// Its collectives, main first.
    pub collectives: Vec<Collective>,
    facts: RwLock<Arc<Facts>>,
    hosted: RwLock<Arc<Hosted>>,
    /// Counters.
    pub stats: Arc<Stats>,
    started: SystemTime,
    config_file: Option<PathBuf>,
    config_items: Arc<Map<String, Value>>,
    clock_skew: Duration,
}

/// The agents hosted, and their names (with `discovery`) as filters see them: computed once
/// per (re)load rather than on every request.
struct Hosted {
    agents: Arc<Vec<Arc<dyn Agent>>>,
    names: Vec<String>,
}

impl Hosted {
    fn new(agents: Vec<Arc<dyn Agent>>) -> Hosted {
        let mut names: Vec<String> = agents
            .iter()
            .map(|agent| agent.ddl().metadata.name.clone())
            .filter(|name| AgentName::new(name.as_str()).is_ok())
            .chain([DISCOVERY_AGENT.to_owned()])
            .collect();
        names.sort();
        names.dedup();
        Hosted { agents: Arc::new(agents), names }
    }
}

/// What the pipeline decided about one message.
#[derive(Debug)]
pub enum Handled {
    /// Send this reply.
    Reply(Box<Reply>),
    /// Acted, but the caller asked for no reply.
    NoReply,
    /// Not for this node, expired, or not a valid request: stay silent.
    Ignored(&'static str),
}

impl NodeState {
    /// A node with the given identity, collectives, facts and agents.
    pub fn new(
        identity: Identity,
        collectives: Vec<Collective>,
        facts: Facts,
        agents: Vec<Arc<dyn Agent>>,
        config_file: Option<PathBuf>,
        config_items: Map<String, Value>,
        clock_skew: Duration,
    ) -> NodeState {
        NodeState {
            identity,
            collectives,
            facts: RwLock::new(Arc::new(facts)),
            hosted: RwLock::new(Arc::new(Hosted::new(agents))),
            stats: Arc::new(Stats::default()),
            started: SystemTime::now(),
            config_file,
            config_items: Arc::new(config_items),
            clock_skew,
        }
    }

    /// The facts in force.
    pub fn facts(&self) -> Arc<Facts> {
        self.facts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the facts (after a fact file changed).
    pub fn set_facts(&self, facts: Facts) {
        *self.facts.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(facts);
    }

    fn hosted(&self) -> Arc<Hosted> {
        self.hosted.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The agents hosted now.
    pub fn agents(&self) -> Arc<Vec<Arc<dyn Agent>>> {
        self.hosted().agents.clone()
    }

    /// Replaces the agents (after a rescan).
    pub fn set_agents(&self, agents: Vec<Arc<dyn Agent>>) {
        *self.hosted.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Hosted::new(agents));
    }

    /// Names of the agents hosted, including the discovery pseudo-agent.
    pub fn agent_names(&self) -> Vec<AgentName> {
        self.hosted().names.iter().filter_map(|name| AgentName::new(name.as_str()).ok()).collect()
    }

    fn context(&self) -> Context {
        Context {
            identity: self.identity.clone(),
            collectives: self.collectives.clone(),
            facts: self.facts(),
            agents: self.agents().iter().map(|agent| agent.ddl().clone()).collect(),
            stats: self.stats.clone(),
            started: self.started,
            config_file: self.config_file.clone(),
            config_items: self.config_items.clone(),
        }
    }

    /// Runs the whole pipeline for one message received at `now`.
    pub async fn handle(&self, payload: &[u8], now: SystemTime) -> Handled {
        Stats::bump(&self.stats.total);
        let request = match Request::from_bytes(payload) {
            Ok(request) => request,
            Err(err) => {
                Stats::bump(&self.stats.invalid);
                tracing::debug!(node = %self.identity, "dropping undecodable message: {err}");
                return Handled::Ignored("undecodable");
            }
        };
        if let Err(reason) = verify(&request) {
            Stats::bump(&self.stats.invalid);
            tracing::warn!(node = %self.identity, request = %request.id, "refusing request: {reason}");
            return Handled::Ignored("unverified");
        }
        let age_ms = now_ms(now) - request.time;
        let skew_ms = i64::try_from(self.clock_skew.as_millis()).unwrap_or(i64::MAX);
        if age_ms > i64::from(request.ttl) * 1000 || -age_ms > skew_ms {
            Stats::bump(&self.stats.ttl_expired);
            tracing::info!(
                node = %self.identity,
                request = %request.id,
                "request created {age_ms} ms ago with a TTL of {} s: ignoring it",
                request.ttl
            );
            return Handled::Ignored("expired");
        }
        if !self.collectives.contains(&request.collective) {
            Stats::bump(&self.stats.filtered);
            return Handled::Ignored("other collective");
        }
        let facts = self.facts();
        let hosted = self.hosted();
        let node = cohort_filter::Node {
            identity: self.identity.as_str(),
            facts: &facts.facts,
            classes: &facts.classes,
            agents: &hosted.names,
        };
        if !cohort_filter::matches(&request.filter, &node) {
            Stats::bump(&self.stats.filtered);
            return Handled::Ignored("filtered");
        }
        Stats::bump(&self.stats.passed);
        let outcome = if request.agent.as_str() == DISCOVERY_AGENT {
            let mut data = Map::new();
            data.insert("pong".to_owned(), Value::Bool(true));
            Outcome::ok(data)
        } else {
            self.dispatch(&request, &hosted.agents).await
        };
        if !request.body.process_results {
            return Handled::NoReply;
        }
        Stats::bump(&self.stats.replies);
        Handled::Reply(Box::new(Reply {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
            request_id: request.id,
            sender: self.identity.clone(),
            agent: request.agent,
            action: request.body.action,
            time: now_ms(SystemTime::now()),
            status: outcome.status,
            status_message: outcome.message,
            data: outcome.data,
        }))
    }

    async fn dispatch(&self, request: &Request, agents: &[Arc<dyn Agent>]) -> Outcome {
        let agent_name = request.agent.as_str();
        let Some(agent) = agents.iter().find(|agent| agent.ddl().metadata.name == agent_name)
        else {
            return Outcome::fail(
                StatusCode::UnknownAction,
                format!("no agent '{agent_name}' on this node"),
            );
        };
        let ddl = agent.ddl().clone();
        let action_name = &request.body.action;
        let Some(action) = ddl.action(action_name) else {
            return Outcome::fail(
                StatusCode::UnknownAction,
                format!("Unknown action '{action_name}' for agent '{agent_name}'"),
            );
        };
        let mut data = request.body.data.clone();
        if let Err(err) = validate_inputs(action, &mut data) {
            return Outcome::fail(err.code, err.message);
        }
        let timeout = Duration::from_secs_f64(ddl.metadata.timeout);
        let call = ActionRequest {
            id: request.id.clone(),
            agent: agent_name.to_owned(),
            action: action_name.clone(),
            data,
            caller: request.caller.clone(),
            sender: request.sender.clone(),
            collective: request.collective.clone(),
            timeout,
        };
        let ctx = self.context();
        // The agent's own deadline plus a second: external agents enforce theirs by killing the
        // process group and report it; this one catches a built-in agent that hangs.
        let outcome =
            match tokio::time::timeout(timeout + Duration::from_secs(1), agent.call(&ctx, call))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome::fail(
                    StatusCode::UnknownError,
                    format!("agent {agent_name} timed out after {timeout:?}"),
                ),
            };
        // Every declared output is present, at its default when the agent did not set it.
        let mut data = action.output_defaults();
        data.extend(outcome.data);
        Outcome { data, ..outcome }
    }
}

/// The verify stage. Requests are unsigned until the security work lands; then this checks
/// the signature, the credential chain, the caller's role and the replay cache.
fn verify(_request: &Request) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests;
