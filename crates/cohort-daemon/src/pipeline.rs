//! The node's request pipeline, independent of the bus: bytes in, an optional reply out.
//!
//! decode → collective and filter → verify (signature, credential chain, role, caller) → TTL →
//! replay → authorize → agent/action lookup → DDL validation → dispatch (DDL timeout) → audit →
//! reply (signed). Requests for other nodes (collective or filter) are dropped unread, whoever
//! sent them: nothing of them is acted on, and only the nodes a request is for pay for checking
//! its signature. Requests refused after that (undecodable, unsigned, forged, expired,
//! replayed) get no reply, are counted and are audited; everything that passes gets a reply
//! with a status code, a policy denial being status 1. A node running insecure (labs only)
//! skips verification, replay and authorization, and still reads requests from clients that
//! sign.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use cohort_ddl::validate_inputs;
use cohort_proto::{
    AgentName, Collective, DISCOVERY_AGENT, Identity, PROTOCOL, Reply, ReplyProof, Request,
    StatusCode, VERSION, now_ms, reply_subject,
};
use cohort_security::{ReplyKey, Unsealed, Verified};
use serde_json::{Map, Value};

use crate::agent::{ActionRequest, Agent, Context, Outcome};
use crate::audit::{AuditBudget, AuditDecision, AuditLog, AuditRecord, redact};
use crate::facts::Facts;
use crate::metrics::{NodeMetrics, Readings};
use crate::security::NodeSecurity;
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
    max_ttl_secs: u32,
    security: Option<Arc<NodeSecurity>>,
    audit: Option<Arc<AuditLog>>,
    /// Audit lines about unverified traffic (anyone on the bus can send it): 200 at once, then
    /// 20 a second; the rest are counted in `audit_suppressed`.
    audit_budget: std::sync::Mutex<AuditBudget>,
    /// Kept only when served (`with_metrics`): the fleet simulator runs thousands of nodes in
    /// one process and should not pay for series nobody reads.
    metrics: Option<Arc<NodeMetrics>>,
    /// When the facts last changed, for their age in the metrics.
    facts_changed: std::sync::Mutex<Instant>,
}

/// The agents hosted, and their names (with `discovery`) as filters see them: computed once
/// per (re)load rather than on every request.
struct Hosted {
    /// Every agent loaded, active or not.
    all: Vec<Arc<dyn Agent>>,
    /// The active ones.
    agents: Arc<Vec<Arc<dyn Agent>>>,
    names: Vec<String>,
}

impl Hosted {
    fn new(all: Vec<Arc<dyn Agent>>) -> Hosted {
        let agents: Vec<Arc<dyn Agent>> =
            all.iter().filter(|agent| agent.active()).cloned().collect();
        let mut names: Vec<String> = agents
            .iter()
            .map(|agent| agent.ddl().metadata.name.clone())
            .filter(|name| AgentName::new(name.as_str()).is_ok())
            .chain([DISCOVERY_AGENT.to_owned()])
            .collect();
        names.sort();
        names.dedup();
        Hosted { all, agents: Arc::new(agents), names }
    }
}

/// What the pipeline decided about one message.
#[derive(Debug)]
pub enum Handled {
    /// Send this reply: signed, or with a MAC under this key when the caller asked for that
    /// ([`cohort_proto::ReplyProof::Mac`]).
    Reply(Box<Reply>, Option<ReplyKey>),
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
            max_ttl_secs: cohort_proto::DEFAULT_MAX_TTL_SECS,
            security: None,
            audit: None,
            audit_budget: std::sync::Mutex::new(AuditBudget::new(20, 200)),
            metrics: None,
            facts_changed: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Refuses requests whose TTL is longer than `max_ttl` (default 300 s).
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> NodeState {
        self.max_ttl_secs = u32::try_from(max_ttl.as_secs()).unwrap_or(u32::MAX).max(1);
        self
    }

    /// Turns security on: requests must be signed and authorized, replies are signed.
    pub fn with_security(mut self, security: Arc<NodeSecurity>) -> NodeState {
        self.security = Some(security);
        self
    }

    /// Records every request in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> NodeState {
        self.audit = Some(audit);
        self
    }

    /// The security settings, when on.
    pub fn security(&self) -> Option<&Arc<NodeSecurity>> {
        self.security.as_ref()
    }

    /// The audit log, when on.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// The bytes to publish for `reply`: signed when security is on, or with a MAC under `key`
    /// when the caller asked for one.
    pub fn reply_bytes(&self, reply: &Reply, key: Option<&ReplyKey>) -> Vec<u8> {
        match (&self.security, key) {
            (Some(security), Some(key)) => {
                security.signer.seal_mac(&String::from_utf8_lossy(&reply.to_bytes()), key)
            }
            _ => self.outgoing(reply.to_bytes()),
        }
    }

    /// Signs an outgoing envelope when security is on.
    pub fn outgoing(&self, envelope: Vec<u8>) -> Vec<u8> {
        match &self.security {
            Some(security) => security.signer.seal(&String::from_utf8_lossy(&envelope)),
            None => envelope,
        }
    }

    /// The facts in force.
    pub fn facts(&self) -> Arc<Facts> {
        self.facts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the facts (after a fact file changed).
    pub fn set_facts(&self, facts: Facts) {
        *self.facts.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(facts);
        *self.facts_changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Instant::now();
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

    /// Re-checks which agents are active; true when that changed (subscriptions then need
    /// renewing).
    pub fn refresh_activation(&self) -> bool {
        let hosted = self.hosted();
        let now: Vec<bool> = hosted.all.iter().map(|agent| agent.active()).collect();
        let was: Vec<bool> = hosted
            .all
            .iter()
            .map(|agent| hosted.agents.iter().any(|active| Arc::ptr_eq(active, agent)))
            .collect();
        if now == was {
            return false;
        }
        self.set_agents(hosted.all.clone());
        true
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

    /// Keeps the metrics a metrics endpoint serves ([`NodeState::metrics_text`]).
    pub fn with_metrics(mut self) -> NodeState {
        self.metrics = Some(Arc::new(NodeMetrics::default()));
        self
    }

    /// The metrics, when kept.
    pub fn metrics(&self) -> Option<&Arc<NodeMetrics>> {
        self.metrics.as_ref()
    }

    /// The metrics in OpenMetrics text, with the readings of this moment (only the readings
    /// when the metrics are not kept).
    pub fn metrics_text(&self) -> String {
        let changed = *self.facts_changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (replay_ids, replay_capacity) =
            self.security.as_ref().map_or((0, 0), |security| security.replay_use());
        let kept = self.metrics.clone().unwrap_or_default();
        kept.prometheus_text(Readings {
            facts_age: changed.elapsed().as_secs_f64(),
            replay_ids,
            replay_capacity,
            audit_write_errors: self.audit.as_ref().map_or(0, |audit| audit.write_errors()),
            messages: Stats::get(&self.stats.total),
            replies: Stats::get(&self.stats.replies),
            filtered: Stats::get(&self.stats.filtered),
        })
    }

    /// Runs the whole pipeline for one message received at `now`.
    /// `reply` is the subject the message asks replies on.
    pub async fn handle(&self, payload: &[u8], reply: Option<&str>, now: SystemTime) -> Handled {
        let handled = self.handle_message(payload, reply, now).await;
        if let (Some(metrics), Handled::Ignored(reason)) = (&self.metrics, &handled)
            && !matches!(*reason, "filtered" | "other collective")
        {
            metrics.refused(reason);
        }
        handled
    }

    async fn handle_message(
        &self,
        payload: &[u8],
        reply: Option<&str>,
        now: SystemTime,
    ) -> Handled {
        Stats::bump(&self.stats.total);
        let started = Instant::now();
        let (request, unsealed) = match self.decode(payload) {
            Ok(decoded) => decoded,
            Err(refusal) => {
                tracing::debug!(node = %self.identity, "refusing a message: {}", refusal.reason);
                // Unsigned or forged traffic addressed to other nodes leaves no trace here,
                // as a valid request for other nodes does not: a flood aimed at a node that
                // does not exist must not fill every node's disk.
                if refusal.claimed.as_deref().is_none_or(|claimed| self.addressed_here(claimed)) {
                    self.refuse_unverified(refusal.claimed.as_deref(), &refusal.reason, now);
                }
                return Handled::Ignored(refusal.kind);
            }
        };
        // Whether the request is for this node is decided before its signature is checked: a
        // request for other nodes is dropped unread whoever sent it, so the check (the costly
        // part of a request, ~70 us) is paid only by the nodes a request is for.
        if !self.collectives.contains(&request.collective) {
            Stats::bump(&self.stats.filtered);
            return Handled::Ignored("other collective");
        }
        let (facts, hosted) = (self.facts(), self.hosted());
        let node = self.filter_node(&facts, &hosted);
        if !cohort_filter::matches(&request.filter, &node) {
            Stats::bump(&self.stats.filtered);
            return Handled::Ignored("filtered");
        }
        let (verified, reply_key) = match &self.security {
            None => (false, None),
            Some(security) => {
                let checked = match unsealed {
                    Some(unsealed) => self.verify(security, unsealed, &request, now),
                    // `decode` refuses unsigned requests on a secure node; should that ever
                    // change, an unsigned request is still never acted on here.
                    None => Err(self.unverified("unsigned", "unsigned request".to_owned(), None)),
                };
                match checked {
                    Err(refusal) => {
                        tracing::debug!(node = %self.identity, "refusing a message: {}", refusal.reason);
                        self.refuse_unverified(Some(&request), &refusal.reason, now);
                        return Handled::Ignored(refusal.kind);
                    }
                    // A caller whose key agrees no secret (small order) gets signed replies.
                    Ok(signer) => (
                        true,
                        (request.reply_proof == ReplyProof::Mac)
                            .then(|| security.reply_keys.with(&signer.key))
                            .flatten(),
                    ),
                }
            }
        };
        let age_ms = now_ms(now) - request.time;
        let skew_ms = i64::try_from(self.clock_skew.as_millis()).unwrap_or(i64::MAX);
        // A long TTL is a long replay window and a long stay in the replay cache.
        if request.ttl > self.max_ttl_secs {
            Stats::bump(&self.stats.ttl_expired);
            let reason = format!(
                "TTL of {} s is longer than this node accepts (max_ttl {} s)",
                request.ttl, self.max_ttl_secs
            );
            tracing::info!(node = %self.identity, request = %request.id, "ignoring it: {reason}");
            self.refuse(Some(&request), verified, &reason, now);
            return Handled::Ignored("expired");
        }
        if age_ms > i64::from(request.ttl) * 1000 || -age_ms > skew_ms {
            Stats::bump(&self.stats.ttl_expired);
            let reason = format!(
                "request created {age_ms} ms ago with a TTL of {} s (clock skew allowed: {skew_ms} ms)",
                request.ttl
            );
            tracing::info!(node = %self.identity, request = %request.id, "ignoring it: {reason}");
            self.refuse(Some(&request), verified, &reason, now);
            return Handled::Ignored("expired");
        }
        if let Some(refusal) = self.security.as_ref().and_then(|_| self.unbound(&request, reply)) {
            Stats::bump(&self.stats.replayed);
            tracing::warn!(node = %self.identity, caller = %request.caller, "refusing: {refusal}");
            self.refuse(Some(&request), verified, &refusal, now);
            return Handled::Ignored("replayed");
        }
        if let Some(security) = &self.security {
            let expires = request.time + i64::from(request.ttl) * 1000 + skew_ms;
            let admitted =
                security.admit(request.id.as_str(), &request.caller, expires, now_ms(now));
            if let Err(err) = admitted {
                Stats::bump(&self.stats.replayed);
                tracing::warn!(node = %self.identity, caller = %request.caller, "refusing: {err}");
                self.refuse(Some(&request), verified, &err.to_string(), now);
                return Handled::Ignored("replayed");
            }
        }
        Stats::bump(&self.stats.passed);
        let verdict = self.security.as_ref().map(|security| {
            security.authorizer().authorize(
                request.agent.as_str(),
                &request.caller,
                &request.body.action,
                &node,
            )
        });
        let denied = verdict
            .as_ref()
            .is_some_and(|verdict| verdict.decision == cohort_security::Decision::Deny);
        let outcome = if denied {
            Stats::bump(&self.stats.unauthorized);
            Outcome::fail(
                StatusCode::Aborted,
                "You are not authorized to call this agent or action.".to_owned(),
            )
        } else if request.agent.as_str() == DISCOVERY_AGENT {
            let mut data = Map::new();
            data.insert("pong".to_owned(), Value::Bool(true));
            Outcome::ok(data)
        } else {
            self.dispatch(&request, &hosted.agents).await
        };
        if let Some(metrics) = &self.metrics {
            let hosted_agent =
                hosted.agents.iter().find(|a| a.ddl().metadata.name == request.agent.as_str());
            let (agent, action) = match hosted_agent {
                Some(agent) if agent.ddl().action(&request.body.action).is_some() => {
                    (request.agent.as_str(), request.body.action.as_str())
                }
                Some(_) => (request.agent.as_str(), "unknown"),
                None if request.agent.as_str() == DISCOVERY_AGENT => (DISCOVERY_AGENT, "ping"),
                None => ("unknown", "unknown"),
            };
            let status = outcome.status.code().to_string();
            metrics.handled(agent, action, &status, started.elapsed().as_secs_f64());
        }
        if let Some(audit) = &self.audit {
            let mut record = self.record(
                &request,
                verified,
                if denied { AuditDecision::Deny } else { AuditDecision::Allow },
                now,
            );
            record.inputs = Some(self.redacted_inputs(&request, &hosted.agents));
            record.rule = verdict.map(|verdict| verdict.rule);
            record.reason = (outcome.status != StatusCode::Ok).then(|| outcome.message.clone());
            record.status = Some(outcome.status.code());
            record.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            audit.write(record);
        }
        if !request.body.process_results {
            return Handled::NoReply;
        }
        Stats::bump(&self.stats.replies);
        let reply = Box::new(Reply {
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
        });
        Handled::Reply(reply, reply_key)
    }

    /// Decodes a message; on a secure node, also returns its signed envelope, to be verified
    /// before the request is acted on. An unsigned request on a secure node needs no check to
    /// be refused.
    fn decode(&self, payload: &[u8]) -> Result<(Request, Option<Unsealed>), Refusal> {
        let sealed = cohort_security::is_sealed(payload);
        match (&self.security, sealed) {
            (Some(_), true) => {
                let unsealed = cohort_security::unseal(payload).map_err(|err| {
                    // What the message claims, for the audit log (marked unverified).
                    let claimed = cohort_security::peek(payload)
                        .ok()
                        .and_then(|message| Request::from_bytes(message.as_bytes()).ok());
                    self.unverified("unverified", err.to_string(), claimed)
                })?;
                let request = self.parse(unsealed.message().as_bytes())?;
                Ok((request, Some(unsealed)))
            }
            (Some(_), false) => {
                let claimed = Request::from_bytes(payload).ok();
                let reason = "unsigned request: this node requires signatures".to_owned();
                Err(self.unverified("unsigned", reason, claimed))
            }
            (None, true) => {
                let message = cohort_security::peek(payload).map_err(|err| {
                    Stats::bump(&self.stats.invalid);
                    Refusal { kind: "undecodable", reason: err.to_string(), claimed: None }
                })?;
                Ok((self.parse(message.as_bytes())?, None))
            }
            (None, false) => Ok((self.parse(payload)?, None)),
        }
    }

    /// Proves who sent `request` (read from `unsealed`'s message): the signature, the
    /// credential's chain to a trusted issuer, its validity and role, and that the request's
    /// caller is the credential's.
    fn verify(
        &self,
        security: &NodeSecurity,
        unsealed: Unsealed,
        request: &Request,
        now: SystemTime,
    ) -> Result<Arc<Verified>, Refusal> {
        let opened = unsealed
            .verify(&security.trust(), now_ms(now) / 1000)
            .map_err(|err| self.unverified("unverified", err.to_string(), None))?;
        let signer = &opened.signer;
        if !signer.claims.role.may_request() {
            let reason =
                format!("{} may not send requests (role {})", signer.caller, signer.claims.role);
            return Err(self.unverified("unverified", reason, None));
        }
        if request.caller != signer.caller {
            let reason = format!(
                "request claims caller {:?} but is signed by {}",
                request.caller, signer.caller
            );
            return Err(self.unverified("unverified", reason, None));
        }
        Ok(opened.signer)
    }

    /// Why a verified request cannot be run as sent, if it cannot: its signature must cover
    /// where its reply goes, and the replay cache of this process must have seen everything
    /// that could be a replay of it.
    ///
    /// The reply subject is the one the request signs (`reply_to`), or else the caller's own
    /// (`C.reply.<caller-hash>.<id>`, which only the caller may read): a captured request
    /// republished with another reply subject is refused, so nobody but its caller reads its
    /// reply. A request created before this daemon started may have run in the previous
    /// process, whose replay cache is gone: it is refused. The price is that a caller whose
    /// clock lags this node's by `d` sees its requests refused during the first `d` after a
    /// restart (audited with this reason), instead of a replay window of the clock skew
    /// allowed after every restart.
    fn unbound(&self, request: &Request, reply: Option<&str>) -> Option<String> {
        let started = now_ms(self.started);
        if request.time < started {
            return Some(format!(
                "request created {} ms before this daemon started: it may have run before the \
                 restart (check the caller's clock if this was not a replay)",
                started - request.time
            ));
        }
        let reply = reply?;
        let signed = match &request.reply_to {
            Some(subject) => std::borrow::Cow::Borrowed(subject.as_str()),
            None => reply_subject(&request.collective, &request.caller, &request.id).into(),
        };
        (reply != signed).then(|| {
            format!("reply subject {reply:?} is not the one the request signs ({signed:?})")
        })
    }

    fn parse(&self, bytes: &[u8]) -> Result<Request, Refusal> {
        Request::from_bytes(bytes).map_err(|err| {
            Stats::bump(&self.stats.invalid);
            Refusal { kind: "undecodable", reason: err.to_string(), claimed: None }
        })
    }

    /// Whether `request` is for this node: its collective, and its filter against the facts,
    /// classes and agents in force.
    fn addressed_here(&self, request: &Request) -> bool {
        if !self.collectives.contains(&request.collective) {
            return false;
        }
        let (facts, hosted) = (self.facts(), self.hosted());
        cohort_filter::matches(&request.filter, &self.filter_node(&facts, &hosted))
    }

    /// This node as filters and policies see it.
    fn filter_node<'a>(&'a self, facts: &'a Facts, hosted: &'a Hosted) -> cohort_filter::Node<'a> {
        cohort_filter::Node {
            identity: self.identity.as_str(),
            facts: &facts.facts,
            classes: &facts.classes,
            agents: &hosted.names,
        }
    }

    /// Audits a refusal of unverified traffic within the audit budget; counts what it leaves out.
    fn refuse_unverified(&self, request: Option<&Request>, reason: &str, now: SystemTime) {
        if self.audit.is_none() {
            return;
        }
        let mut budget =
            self.audit_budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !budget.take(Instant::now()) {
            Stats::bump(&self.stats.audit_suppressed);
            return;
        }
        drop(budget);
        self.refuse(request, false, reason, now);
    }

    fn unverified(&self, kind: &'static str, reason: String, claimed: Option<Request>) -> Refusal {
        Stats::bump(&self.stats.unverified);
        Refusal { kind, reason, claimed: claimed.map(Box::new) }
    }

    fn record(
        &self,
        request: &Request,
        verified: bool,
        decision: AuditDecision,
        now: SystemTime,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(self.identity.as_str(), decision, now);
        record.request_id = Some(request.id.to_string());
        record.request_time = Some(request.time);
        record.caller = Some(request.caller.clone());
        record.verified = verified;
        record.sender = Some(request.sender.clone());
        record.agent = Some(request.agent.to_string());
        record.action = Some(request.body.action.clone());
        record
    }

    /// Audits a refusal: what is known of the request (nothing of its inputs: a refused
    /// request is not trusted enough to be copied into the log), and why.
    fn refuse(&self, request: Option<&Request>, verified: bool, reason: &str, now: SystemTime) {
        let Some(audit) = &self.audit else { return };
        let mut record = match request {
            Some(request) => self.record(request, verified, AuditDecision::Refused, now),
            None => AuditRecord::new(self.identity.as_str(), AuditDecision::Refused, now),
        };
        record.reason = Some(reason.to_owned());
        audit.write(record);
    }

    fn redacted_inputs(&self, request: &Request, agents: &[Arc<dyn Agent>]) -> Map<String, Value> {
        let sensitive: Vec<&str> = agents
            .iter()
            .find(|agent| agent.ddl().metadata.name == request.agent.as_str())
            .and_then(|agent| agent.ddl().action(&request.body.action))
            .map(|action| {
                action
                    .input
                    .iter()
                    .filter(|(_, input)| input.sensitive)
                    .map(|(name, _)| name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        redact(&request.body.data, &sensitive)
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

/// Why a message was refused, with what it claimed to be (unverified).
struct Refusal {
    kind: &'static str,
    reason: String,
    claimed: Option<Box<Request>>,
}

#[cfg(test)]
mod tests;
