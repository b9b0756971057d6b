//! The operator side of Cohort: discover nodes, send a request, collect the replies, and
//! account exactly for who answered, who did not, and who answered unexpectedly.
//!
//! **API boundary** for tools: this crate never prints, never exits and never reads terminal
//! state; progress is reported through callbacks, and one node failing is a reply with a status
//! code in the result, never an `Err` of the whole call. `Err` means the call itself could not
//! be made (no broker, a subject the broker refused).
//!
//! With [`ClientSecurity`] the client signs every request and believes only replies signed by a
//! node credential for the identity they name; [`sources`] gives node lists that need no
//! network (flat files, standard input, inventories).

pub mod sources;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cohort_proto::{
    AgentName, Collective, DISCOVERY_AGENT, Filter, Identity, PROTOCOL, Reply, Request, RequestId,
    RpcBody, VERSION, broadcast_subject, node_subject, now_ms, reply_subject,
};
use cohort_security::{Role, Signer, Trust};
use futures::{FutureExt, StreamExt};
use rand::RngCore;
use serde_json::{Map, Value};

/// How to reach the bus and who is asking.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Broker URLs, tried in turn.
    pub brokers: Vec<String>,
    /// Who is asking, `kind=name` (`user=alice`); replaced by the credential's caller id when
    /// the client signs.
    pub caller: String,
    /// The host asking.
    pub sender: String,
    /// How long to try to reach a broker before giving up.
    pub connect_timeout: Duration,
    /// Signing, reply verification and TLS.
    pub security: ClientSecurity,
}

/// How the client proves who it is and checks who answers.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// Key and credential to sign requests with (and to log in to the broker with its nkey).
    /// Without it requests are unsigned, which only insecure (lab) nodes accept.
    pub signer: Option<Signer>,
    /// Issuers whose node credentials the client believes. With it, every reply must be signed
    /// by a node credential for the identity it claims; without it replies are not checked.
    pub trust: Option<Arc<Trust>>,
    /// CA certificate of the broker's TLS certificate; TLS is then required.
    pub tls_ca: Option<PathBuf>,
}

/// A reply that arrived but did not verify: counted and shown, never merged with results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// The node it claims to be from, when that much could be read.
    pub sender: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// Why a call could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No broker could be reached.
    #[error("cannot connect to {brokers}: {reason}")]
    Connect {
        /// The URLs tried.
        brokers: String,
        /// Why.
        reason: String,
    },
    /// A broker URL is not one.
    #[error("invalid broker URL {0:?}")]
    BrokerUrl(String),
    /// The broker refused a subscription or publication.
    #[error("bus error: {0}")]
    Bus(String),
}

/// A connected client.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    options: ClientOptions,
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Collective to discover in.
    pub collective: Collective,
    /// Longest discovery may take (`--dt`).
    pub timeout: Duration,
    /// Shortest quiet window: discovery ends once no reply arrived for the window, which is
    /// the largest of this, the time the first reply took (one network round trip), four
    /// times the largest gap seen between replies, and half the time discovery has run so far.
    pub quiet: Duration,
    /// Request TTL in seconds.
    pub ttl: u32,
}

/// The outcome of discovery.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Nodes that answered, sorted.
    pub nodes: BTreeSet<Identity>,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether the network was asked at all (`false` for literal identities).
    pub networked: bool,
    /// Discovery replies that did not verify (not counted as nodes).
    pub unverified: Vec<Unverified>,
}

impl Discovered {
    /// Nodes known without asking the network (literal identities, a node list).
    pub fn listed(nodes: BTreeSet<Identity>, elapsed: Duration) -> Discovered {
        Discovered { nodes, elapsed, networked: false, unverified: Vec::new() }
    }
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Broadcast with the filter; `expected` are the discovered nodes the client waits for.
    Broadcast {
        /// Nodes expected to answer.
        expected: BTreeSet<Identity>,
    },
    /// One message to each node's own subject.
    Direct(BTreeSet<Identity>),
}

impl Targets {
    /// Nodes the client waits for.
    pub fn expected(&self) -> &BTreeSet<Identity> {
        match self {
            Targets::Broadcast { expected } | Targets::Direct(expected) => expected,
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// Agent.
    pub agent: AgentName,
    /// Action.
    pub action: String,
    /// Inputs (already converted and validated by the caller against the DDL).
    pub data: Map<String, Value>,
    /// Filter carried by the request (nodes check it again).
    pub filter: Filter,
    /// Collective.
    pub collective: Collective,
    /// Where to send it.
    pub targets: Targets,
    /// How long to wait for replies.
    pub timeout: Duration,
    /// Request TTL in seconds.
    pub ttl: u32,
}

/// A reply and when it arrived, relative to publishing.
#[derive(Debug, Clone)]
pub struct NodeReply {
    /// The reply as the node sent it.
    pub reply: Reply,
    /// Time from publishing the request to receiving this reply.
    pub elapsed: Duration,
}

impl CallResult {
    /// Adds the result of another batch of the same call: replies and every count are summed,
    /// the name lists merged and sorted. The first batch's request id and start time stay.
    pub fn absorb(&mut self, other: CallResult) {
        self.replies.extend(other.replies);
        let stats = &mut self.stats;
        let more = other.stats;
        stats.discovered += more.discovered;
        stats.responses += more.responses;
        stats.ok += more.ok;
        stats.failed += more.failed;
        stats.no_responses.extend(more.no_responses);
        stats.no_responses.sort();
        stats.unexpected.extend(more.unexpected);
        stats.unexpected.sort();
        stats.unverified.extend(more.unverified);
        stats.request_time += more.request_time;
    }

    /// A result with nothing in it, to absorb batches into.
    pub fn empty() -> CallResult {
        CallResult {
            replies: Vec::new(),
            stats: CallStats {
                request_id: RequestId::from_random([0; 16]),
                discovered: 0,
                responses: 0,
                ok: 0,
                failed: 0,
                no_responses: Vec::new(),
                unexpected: Vec::new(),
                unverified: Vec::new(),
                start_time: SystemTime::now(),
                request_time: Duration::ZERO,
            },
        }
    }
}

/// Accounting of one call.
#[derive(Debug, Clone)]
pub struct CallStats {
    /// The request id.
    pub request_id: RequestId,
    /// Nodes expected (discovered).
    pub discovered: usize,
    /// Replies received.
    pub responses: usize,
    /// Replies with status 0.
    pub ok: usize,
    /// Replies with another status.
    pub failed: usize,
    /// Expected nodes that did not answer, sorted.
    pub no_responses: Vec<Identity>,
    /// Nodes that answered without being expected, sorted.
    pub unexpected: Vec<Identity>,
    /// Replies that did not verify (forged, unsigned, or signed by someone else).
    pub unverified: Vec<Unverified>,
    /// When the request was sent.
    pub start_time: SystemTime,
    /// From publishing to the last reply (or the timeout).
    pub request_time: Duration,
}

/// What arrived on a reply subscription.
enum Incoming {
    /// The broker says nobody listens on a subject (the `Nats-Subject` header, when given).
    NoResponders(Option<String>),
    /// A reply that decoded and, when the client trusts issuers, verified.
    Reply(Reply),
    /// A reply that did not verify.
    Unverified(Unverified),
    /// A signed discovery reply read but not yet verified, with its signed bytes (see
    /// [`Pending`]).
    Deferred(Reply, Bytes),
}

/// Messages verified together at most.
const BATCH: usize = 256;

/// A reply subscription that checks signatures in batches: whatever has already arrived when
/// the first message is taken is verified together (a large fleet answers at once, and batch
/// verification costs about half as much per reply).
struct Replies {
    sub: async_nats::Subscriber,
    security: ClientSecurity,
    ready: std::collections::VecDeque<Incoming>,
    /// Signed replies are read without checking their signatures ([`Incoming::Deferred`]).
    defer: bool,
}

impl Replies {
    fn new(sub: async_nats::Subscriber, security: &ClientSecurity) -> Replies {
        Replies {
            sub,
            security: security.clone(),
            ready: std::collections::VecDeque::new(),
            defer: false,
        }
    }

    /// Replies whose signatures are checked later, and only where needed ([`Pending`]).
    fn deferred(sub: async_nats::Subscriber, security: &ClientSecurity) -> Replies {
        Replies { defer: true, ..Replies::new(sub, security) }
    }

    /// The next reply, status or refusal; `None` when the subscription ended. Cancel-safe: the
    /// only wait is for the subscription's next message, and everything taken is kept in
    /// `ready` before the next wait.
    async fn next(&mut self) -> Option<Incoming> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let first = self.sub.next().await?;
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match self.sub.next().now_or_never() {
                    Some(Some(message)) => batch.push(message),
                    _ => break,
                }
            }
            self.ready.extend(decode_batch(&self.security, batch, self.defer));
        }
    }

    async fn unsubscribe(&mut self) {
        let _ = self.sub.unsubscribe().await;
    }
}

/// Decodes and, when the client trusts issuers, verifies a batch of messages in order. A reply
/// counts only when it is signed by a node credential for the identity it names. Undecodable
/// noise is dropped. With `defer`, signed replies are only read, and come out as
/// [`Incoming::Deferred`] for [`verify_sealed`] later.
fn decode_batch(
    security: &ClientSecurity,
    batch: Vec<async_nats::Message>,
    defer: bool,
) -> Vec<Incoming> {
    let mut out: Vec<Option<Incoming>> = Vec::with_capacity(batch.len());
    let mut sealed: Vec<(usize, &[u8])> = Vec::new();
    for message in &batch {
        if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            let subject = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Subject"))
                .map(|v| v.as_str().to_owned());
            out.push(Some(Incoming::NoResponders(subject)));
            continue;
        }
        let payload = message.payload.as_ref();
        if !cohort_security::is_sealed(payload) {
            let item = match Reply::from_bytes(payload) {
                Err(_) => None,
                Ok(reply) if security.trust.is_some() => Some(Incoming::Unverified(Unverified {
                    sender: Some(reply.sender.to_string()),
                    reason: "unsigned reply".to_owned(),
                })),
                Ok(reply) => Some(Incoming::Reply(reply)),
            };
            out.push(item);
            continue;
        }
        if security.trust.is_none() || defer {
            let reply = cohort_security::peek(payload)
                .ok()
                .and_then(|message| Reply::from_bytes(message.as_bytes()).ok());
            out.push(reply.map(|reply| match security.trust {
                Some(_) => Incoming::Deferred(reply, message.payload.clone()),
                None => Incoming::Reply(reply),
            }));
            continue;
        }
        sealed.push((out.len(), payload));
        out.push(None);
    }
    if let Some(trust) = &security.trust {
        let payloads: Vec<&[u8]> = sealed.iter().map(|(_, payload)| *payload).collect();
        for ((index, _), checked) in sealed.iter().zip(verify_sealed(trust, &payloads)) {
            out[*index] = checked;
        }
    }
    out.into_iter().flatten().collect()
}

/// Verifies signed replies together: each comes out as a reply, as unverified with the reason,
/// or as `None` when it is not a reply at all. A reply counts only when it is signed by a node
/// credential for the identity it names.
fn verify_sealed(trust: &Trust, payloads: &[&[u8]]) -> Vec<Option<Incoming>> {
    let claimed = |message: &str| {
        Reply::from_bytes(message.as_bytes()).ok().map(|reply| reply.sender.to_string())
    };
    let now = now_ms(SystemTime::now()) / 1000;
    let opened = cohort_security::open_many(payloads, trust, now);
    payloads
        .iter()
        .zip(opened)
        .map(|(payload, result)| match result {
            Err(err) => Some(Incoming::Unverified(Unverified {
                sender: cohort_security::peek(payload).ok().and_then(|m| claimed(&m)),
                reason: err.to_string(),
            })),
            Ok(opened) => match Reply::from_bytes(opened.message.as_bytes()) {
                Err(_) => None,
                Ok(reply) => {
                    let signer = &opened.signer;
                    if signer.claims.role == Role::Node
                        && signer.claims.name == reply.sender.as_str()
                    {
                        Some(Incoming::Reply(reply))
                    } else {
                        Some(Incoming::Unverified(Unverified {
                            sender: Some(reply.sender.to_string()),
                            reason: format!(
                                "reply from {} is signed by {}",
                                reply.sender, signer.caller
                            ),
                        }))
                    }
                }
            },
        })
        .collect()
}

/// Discovery replies read but not yet verified, by the node they name. Discovery followed by a
/// call checks them only for the nodes whose call reply did not verify: a verified call reply
/// proves the node exists and matched the filter, which is all its discovery reply says. That
/// halves what the client verifies per call; a forged discovery reply is still caught (it
/// names a node that then does not answer, and its signature is checked before that node is
/// listed as not responding).
#[derive(Default)]
struct Pending {
    replies: std::collections::BTreeMap<Identity, Vec<Bytes>>,
}

/// Discovery replies kept per node for later checking: a genuine one and a few forgeries in the
/// node's name; more from the same name are dropped.
const PENDING_PER_NODE: usize = 4;

impl Pending {
    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Drops the replies of a node whose call reply verified.
    fn forget(&mut self, node: &Identity) {
        self.replies.remove(node);
    }

    fn merge(&mut self, other: Pending) {
        for (node, payloads) in other.replies {
            for payload in payloads {
                self.add(&node, payload);
            }
        }
    }

    fn add(&mut self, node: &Identity, payload: Bytes) {
        let kept = self.replies.entry(node.clone()).or_default();
        if kept.len() < PENDING_PER_NODE {
            kept.push(payload);
        }
    }

    /// Checks the pending discovery replies of `nodes`: returns those with no reply that
    /// verifies, and why each of their replies was refused.
    fn refute(
        &mut self,
        trust: &Trust,
        nodes: impl Iterator<Item = Identity>,
    ) -> (BTreeSet<Identity>, Vec<Unverified>) {
        let mut claims: Vec<(Identity, Bytes)> = Vec::new();
        for node in nodes {
            if let Some(payloads) = self.replies.remove(&node) {
                claims.extend(payloads.into_iter().map(|payload| (node.clone(), payload)));
            }
        }
        let payloads: Vec<&[u8]> = claims.iter().map(|(_, payload)| payload.as_ref()).collect();
        let checked = verify_sealed(trust, &payloads);
        let mut confirmed = BTreeSet::new();
        let mut refused = Vec::new();
        for ((node, _), result) in claims.iter().zip(checked) {
            match result {
                Some(Incoming::Reply(reply)) if reply.sender == *node => {
                    confirmed.insert(node.clone());
                }
                Some(Incoming::Unverified(unverified)) => refused.push(unverified),
                _ => refused.push(Unverified {
                    sender: Some(node.to_string()),
                    reason: "discovery reply does not verify".to_owned(),
                }),
            }
        }
        let refuted = claims.into_iter().map(|(node, _)| node).filter(|n| !confirmed.contains(n));
        (refuted.collect(), refused)
    }
}

/// A call's result plus the final expected set (discovery latecomers included).
struct CallOutcome {
    result: CallResult,
    expected: BTreeSet<Identity>,
}

/// A discovery timer firing this much after its deadline means the process was descheduled.
const OVERSLEPT: Duration = Duration::from_millis(10);
/// Last look for replies already received when discovery's window closes.
const GRACE: Duration = Duration::from_millis(5);
/// Shortest quiet time in a call before outstanding nodes' discovery replies are checked.
const MIN_CHECK_AFTER: Duration = Duration::from_millis(20);
/// Longest discovery waits for the broker's answer to its probe.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// Discovery's reply subscription and its adaptive quiet window.
struct DiscoverySession {
    replies: Replies,
    unverified: Vec<Unverified>,
    /// Signed replies not yet verified (when the replies are deferred).
    pending: Pending,
    id: RequestId,
    sent: Instant,
    /// Discovery ends once no reply arrived for this long. It adapts to the network: a fleet
    /// whose first reply takes 80 ms, or whose replies trickle in 30 ms apart, is given
    /// correspondingly longer to finish.
    window: Duration,
    /// The window without its "half the time so far" part: how long discovery waits when a
    /// call follows (`then_call`). Ending sooner loses nobody then, because the session stays
    /// open while the call runs and the call waits out the full `window` for latecomers; the
    /// call just goes out while the last, slowest nodes are still answering discovery.
    gap_window: Duration,
    then_call: bool,
    last_reply: Option<Instant>,
    /// No node is subscribed at all (the broker said so).
    silent: bool,
}

impl DiscoverySession {
    /// The next node to answer; `None` when the subscription ended or nobody listens.
    async fn next(&mut self) -> Option<Identity> {
        loop {
            if self.silent {
                return None;
            }
            let (reply, signed) = match self.replies.next().await? {
                Incoming::NoResponders(_) => {
                    self.silent = true;
                    return None;
                }
                Incoming::Reply(reply) => (reply, None),
                Incoming::Deferred(reply, signed) => (reply, Some(signed)),
                Incoming::Unverified(unverified) => {
                    self.unverified.push(unverified);
                    continue;
                }
            };
            if reply.request_id != self.id {
                continue;
            }
            if let Some(signed) = signed {
                self.pending.add(&reply.sender, signed);
            }
            let now = Instant::now();
            match self.last_reply {
                None => self.gap_window = self.gap_window.max(now - self.sent),
                Some(previous) => self.gap_window = self.gap_window.max((now - previous) * 4),
            }
            // A large fleet takes a while to answer; the longer it has taken, the longer a
            // pause can be without meaning it is over.
            self.window = self.gap_window.max((now - self.sent) / 2).max(self.window);
            self.last_reply = Some(now);
            return Some(reply.sender);
        }
    }

    /// How long a silence ends discovery.
    fn ending_window(&self) -> Duration {
        if self.then_call { self.gap_window } else { self.window }
    }

    /// When the quiet window after the last reply ends.
    fn quiet_at(&self) -> Instant {
        self.last_reply.unwrap_or(self.sent) + self.window
    }
}

/// Waits for the broker's answer to the discovery probe; never, once it came.
async fn next_probe(probe: &mut Option<async_nats::Subscriber>) {
    match probe {
        Some(sub) => {
            // Any message (the 503 status) or the end of the subscription: either way the
            // broker is done with the request.
            let _ = sub.next().await;
        }
        None => std::future::pending().await,
    }
}

/// `C.node.$probe`: a subject no node subscribes to (`$` is not allowed in identities).
fn probe_subject(collective: &Collective) -> String {
    format!("{collective}.node.$probe")
}

async fn next_late(late: &mut Option<DiscoverySession>) -> Option<Identity> {
    match late {
        Some(session) => session.next().await,
        None => std::future::pending().await,
    }
}

/// Replies and accounting of one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// Replies in arrival order; a node answering twice is kept once (the first).
    pub replies: Vec<NodeReply>,
    /// Accounting.
    pub stats: CallStats,
}

fn new_request_id() -> RequestId {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    RequestId::from_random(bytes)
}

/// True when the filter is nothing but literal identities: discovery can then be skipped and
/// the identities used as they are (MCollective's identity optimisation).
pub fn literal_identities(filter: &Filter) -> Option<BTreeSet<Identity>> {
    let only_identities = !filter.identity.is_empty()
        && filter.fact.is_empty()
        && filter.class.is_empty()
        && filter.agent.is_empty()
        && filter.compound.is_empty();
    if !only_identities {
        return None;
    }
    filter
        .identity
        .iter()
        .map(|id| if id.starts_with('/') { None } else { Identity::new(id.as_str()).ok() })
        .collect()
}

impl Client {
    /// Connects to the first reachable broker, failing after `connect_timeout`.
    pub async fn connect(mut options: ClientOptions) -> Result<Client, ClientError> {
        if let Some(signer) = &options.security.signer {
            // Reply subjects are derived from the caller id, and the broker lets a credential
            // read only its own; the two must agree.
            options.caller = signer.caller();
        }
        let mut servers = Vec::new();
        for url in &options.brokers {
            servers.push(
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|_| ClientError::BrokerUrl(url.clone()))?,
            );
        }
        let brokers = options.brokers.join(", ");
        let mut connect = async_nats::ConnectOptions::new();
        if let Some(signer) = &options.security.signer {
            connect = connect.nkey(signer.key().seed());
        }
        if let Some(ca) = &options.security.tls_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        let connect = connect
            .name(format!("cohort client {}", options.caller))
            .connection_timeout(options.connect_timeout)
            .connect(servers);
        let nats =
            match tokio::time::timeout(options.connect_timeout + Duration::from_secs(1), connect)
                .await
            {
                Ok(Ok(nats)) => nats,
                Ok(Err(err)) => {
                    return Err(ClientError::Connect { brokers, reason: err.to_string() });
                }
                Err(_) => {
                    return Err(ClientError::Connect { brokers, reason: "timed out".to_owned() });
                }
            };
        Ok(Client { nats, options })
    }

    /// The caller id requests carry.
    pub fn caller(&self) -> &str {
        &self.options.caller
    }

    /// A new request for `call`, with its fresh id.
    fn call_request(&self, call: &Call, process_results: bool) -> (RequestId, Request) {
        let id = new_request_id();
        let body =
            RpcBody { action: call.action.clone(), data: call.data.clone(), process_results };
        let request = self.request(
            id.clone(),
            &call.collective,
            call.agent.clone(),
            body,
            call.filter.clone(),
            call.ttl,
        );
        (id, request)
    }

    /// The request as it goes on the wire: signed when the client has a credential.
    fn encode(&self, request: &Request) -> Vec<u8> {
        match &self.options.security.signer {
            Some(signer) => signer.seal(&String::from_utf8_lossy(&request.to_bytes())),
            None => request.to_bytes(),
        }
    }

    /// The underlying connection, for tools that need more than this API.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    fn request(
        &self,
        id: RequestId,
        collective: &Collective,
        agent: AgentName,
        body: RpcBody,
        filter: Filter,
        ttl: u32,
    ) -> Request {
        Request {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
            id,
            sender: self.options.sender.clone(),
            caller: self.options.caller.clone(),
            collective: collective.clone(),
            agent,
            time: now_ms(SystemTime::now()),
            ttl,
            filter,
            body,
        }
    }

    /// Finds the nodes matching `filter`. Ends when replies stop arriving for an adaptive quiet
    /// window (see [`DiscoveryOptions::quiet`]), or at `options.timeout`, or at once when no
    /// node listens at all. `on_reply` sees each node as it answers, with the time since the
    /// request was sent (what `cohort ping` prints).
    pub async fn discover(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        on_reply: impl FnMut(&Identity, Duration),
    ) -> Result<Discovered, ClientError> {
        let (discovered, session) = self.discover_session(filter, options, false, on_reply).await?;
        if let Some(mut session) = session {
            session.replies.unsubscribe().await;
        }
        Ok(discovered)
    }

    /// Discovery, keeping its reply subscription open for latecomers. With `then_call` (a call
    /// follows), reply signatures are left for the call to check where needed ([`Pending`]),
    /// and discovery hands over to the call after a shorter silence (`gap_window`).
    async fn discover_session(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        then_call: bool,
        mut on_reply: impl FnMut(&Identity, Duration),
    ) -> Result<(Discovered, Option<DiscoverySession>), ClientError> {
        let started = Instant::now();
        if let Some(nodes) = literal_identities(filter) {
            return Ok((Discovered::listed(nodes, started.elapsed()), None));
        }
        let id = new_request_id();
        let discovery =
            AgentName::new(DISCOVERY_AGENT).map_err(|err| ClientError::Bus(err.to_string()))?;
        let body = RpcBody { action: "ping".to_owned(), data: Map::new(), process_results: true };
        let request = self.request(
            id.clone(),
            &options.collective,
            discovery.clone(),
            body,
            filter.clone(),
            options.ttl,
        );
        let reply_to = reply_subject(&options.collective, &self.options.caller, &id);
        let replies = self
            .nats
            .subscribe(reply_to.clone())
            .await
            .map_err(|err| ClientError::Bus(err.to_string()))?;
        // The probe: a message to a subject no node can have, sent right after the request on
        // the same connection. A broker handles one connection's messages in order, so its "no
        // responders" answer to the probe means it has finished handing the request to every
        // node; until then, silence does not mean discovery is over.
        let probe_reply = format!("{reply_to}.probe");
        let mut probe = Some(
            self.nats
                .subscribe(probe_reply.clone())
                .await
                .map_err(|err| ClientError::Bus(err.to_string()))?,
        );
        let sent = Instant::now();
        self.nats
            .publish_with_reply(
                broadcast_subject(&options.collective, &discovery),
                reply_to,
                self.encode(&request).into(),
            )
            .await
            .map_err(|err| ClientError::Bus(err.to_string()))?;
        self.nats
            .publish_with_reply(probe_subject(&options.collective), probe_reply, Bytes::new())
            .await
            .map_err(|err| ClientError::Bus(err.to_string()))?;
        let _ = self.nats.flush().await;
        let replies = match then_call {
            true => Replies::deferred(replies, &self.options.security),
            false => Replies::new(replies, &self.options.security),
        };
        let mut session = DiscoverySession {
            replies,
            unverified: Vec::new(),
            pending: Pending::default(),
            id,
            sent,
            window: options.quiet,
            gap_window: options.quiet,
            then_call,
            last_reply: None,
            silent: false,
        };
        let hard_deadline = tokio::time::Instant::now() + options.timeout;
        // A broker that does not answer the probe (no "no responders" support) costs at most
        // this much before the quiet window alone decides.
        let probe_deadline = (tokio::time::Instant::now() + PROBE_WAIT).min(hard_deadline);
        let mut deadline = hard_deadline;
        let mut nodes = BTreeSet::new();
        loop {
            let wait_until = if probe.is_some() { deadline.max(probe_deadline) } else { deadline };
            let step = tokio::time::timeout_at(wait_until, async {
                tokio::select! {
                    found = session.next() => Some(found),
                    () = next_probe(&mut probe) => None,
                }
            })
            .await;
            let found = match step {
                Ok(Some(found)) => found,
                // The broker has handed the request to every node: the quiet window starts now
                // at the earliest.
                Ok(None) => {
                    probe = None;
                    let quiet = tokio::time::Instant::now() + session.ending_window();
                    deadline = deadline.max(quiet).min(hard_deadline);
                    continue;
                }
                Err(_) if probe.is_some() && tokio::time::Instant::now() < hard_deadline => {
                    probe = None;
                    continue;
                }
                Err(_) => {
                    // Silence, or this process was not scheduled: a timer that fires well after
                    // its deadline means replies may be waiting unread. Give one more window,
                    // then a short grace for the connection task to hand over what it has.
                    let now = tokio::time::Instant::now();
                    if now.saturating_duration_since(deadline) > OVERSLEPT
                        && deadline < hard_deadline
                    {
                        deadline = (now + session.ending_window()).min(hard_deadline);
                        continue;
                    }
                    match tokio::time::timeout(GRACE, session.next()).await {
                        Ok(found) => found,
                        Err(_) => break,
                    }
                }
            };
            let Some(node) = found else { break };
            if nodes.insert(node.clone()) {
                on_reply(&node, sent.elapsed());
            }
            deadline = (tokio::time::Instant::now() + session.ending_window()).min(hard_deadline);
        }
        let discovered = Discovered {
            nodes,
            elapsed: started.elapsed(),
            networked: true,
            unverified: std::mem::take(&mut session.unverified),
        };
        Ok((discovered, Some(session)))
    }

    /// Discovery, then `call` broadcast to the discovered nodes. Discovery replies that arrive
    /// after discovery ended (a node that was slow to answer) add the node to the expected set
    /// while the call runs, and the call does not end while such latecomers are still arriving:
    /// under load, a node is never lost between the two phases. For literal identities there is
    /// no discovery, and the request goes to each node's own subject.
    pub async fn discover_and_call(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        mut call: Call,
        on_discovered: impl FnOnce(&Discovered),
        on_reply: impl FnMut(&NodeReply),
    ) -> Result<(Discovered, CallResult), ClientError> {
        let (mut discovered, session) =
            self.discover_session(filter, options, true, |_, _| {}).await?;
        on_discovered(&discovered);
        call.targets = if discovered.networked {
            Targets::Broadcast { expected: discovered.nodes.clone() }
        } else {
            Targets::Direct(discovered.nodes.clone())
        };
        if discovered.nodes.is_empty() {
            // Nothing matched: nothing is sent (latecomers have nothing to join).
            if let Some(mut session) = session {
                session.replies.unsubscribe().await;
            }
            return Ok((discovered, CallResult::empty()));
        }
        let result = self.call_inner(call, session, on_reply).await?;
        if discovered.networked {
            discovered.nodes = result.expected.clone();
        }
        Ok((discovered, result.result))
    }

    /// Sends `call` and collects replies until every expected node answered or the timeout
    /// passed. `on_reply` sees each reply as it arrives (progress bars, JSON lines).
    pub async fn call(
        &self,
        call: Call,
        on_reply: impl FnMut(&NodeReply),
    ) -> Result<CallResult, ClientError> {
        Ok(self.call_inner(call, None, on_reply).await?.result)
    }

    async fn call_inner(
        &self,
        call: Call,
        mut late: Option<DiscoverySession>,
        mut on_reply: impl FnMut(&NodeReply),
    ) -> Result<CallOutcome, ClientError> {
        let start_time = SystemTime::now();
        let (id, request) = self.call_request(&call, true);
        let reply_to = reply_subject(&call.collective, &self.options.caller, &id);
        let mut incoming = Replies::new(
            self.nats
                .subscribe(reply_to.clone())
                .await
                .map_err(|err| ClientError::Bus(err.to_string()))?,
            &self.options.security,
        );
        let bytes: bytes::Bytes = self.encode(&request).into();
        let sent = Instant::now();
        match &call.targets {
            Targets::Broadcast { .. } => {
                let subject = broadcast_subject(&call.collective, &call.agent);
                self.nats.publish_with_reply(subject, reply_to.clone(), bytes).await
            }
            Targets::Direct(nodes) => {
                let mut result = Ok(());
                for node in nodes {
                    let subject = node_subject(&call.collective, node);
                    result = result.and(
                        self.nats
                            .publish_with_reply(subject, reply_to.clone(), bytes.clone())
                            .await,
                    );
                }
                result
            }
        }
        .map_err(|err| ClientError::Bus(err.to_string()))?;
        let _ = self.nats.flush().await;

        let mut expected = call.targets.expected().clone();
        let mut outstanding = expected.clone();
        let mut seen: BTreeSet<Identity> = BTreeSet::new();
        let mut replies = Vec::new();
        let mut unverified = Vec::new();
        // Replies from nodes nobody expected: held while discovery latecomers may still make
        // them expected, then reported by name only (never counted as responses).
        let mut held: Vec<NodeReply> = Vec::new();
        let mut strangers: Vec<Identity> = Vec::new();
        let deadline = tokio::time::Instant::now() + call.timeout;
        let node_prefix = format!("{}.node.", call.collective);
        let direct = matches!(call.targets, Targets::Direct(_));
        // Discovery replies not yet verified (taken from the session as its nodes arrive), and
        // how long the call must be quiet before the outstanding nodes' ones are checked: a
        // node that answers the call needs no check, one that does not is checked before it
        // is waited for any longer (a forged discovery reply must not hold the call open).
        // The first check waits as long as discovery took: by then the fleet has had the time
        // it needed to answer once.
        let mut pending = late.as_mut().map(|s| std::mem::take(&mut s.pending)).unwrap_or_default();
        let check_after =
            late.as_ref().map_or(Duration::ZERO, |session| session.window).max(MIN_CHECK_AFTER);
        let mut last_heard =
            Instant::now() + late.as_ref().map_or(Duration::ZERO, |s| s.sent.elapsed());
        let trust = self.options.security.trust.clone();
        let mut refuted_all = false;
        loop {
            let unchecked = trust.is_some() && !pending.is_empty();
            if unchecked
                && last_heard + check_after <= Instant::now()
                && let Some(trust) = &trust
            {
                let (refuted, refused) = pending.refute(trust, outstanding.iter().cloned());
                for node in &refuted {
                    expected.remove(node);
                    outstanding.remove(node);
                }
                unverified.extend(refused);
                // Every node discovery named was a forgery: nobody is left to wait for.
                refuted_all |= expected.is_empty();
                // Checked: wait for the next reply before checking again.
                last_heard = Instant::now();
                continue;
            }
            let all_in = (!expected.is_empty() || refuted_all) && outstanding.is_empty();
            // Latecomers to discovery may still be arriving: wait out their quiet window too.
            let late_quiet_at = late.as_ref().map(DiscoverySession::quiet_at);
            if all_in && late_quiet_at.is_none_or(|at| at <= Instant::now()) {
                break;
            }
            let mut wake = match (all_in, late_quiet_at) {
                (true, Some(at)) => tokio::time::Instant::from_std(at).min(deadline),
                _ => deadline,
            };
            if unchecked && !outstanding.is_empty() {
                wake = wake.min(tokio::time::Instant::from_std(last_heard + check_after));
            }
            tokio::select! {
                incoming_item = incoming.next() => {
                    last_heard = Instant::now();
                    let reply = match incoming_item {
                        None => break,
                        // Which subject had nobody: a node's own subject means that node is not
                        // connected; a broadcast subject means no node hosts the agent.
                        Some(Incoming::NoResponders(subject)) => {
                            match subject.as_deref().and_then(|s| s.strip_prefix(&node_prefix)) {
                                Some(node) => {
                                    if let Ok(node) = Identity::new(node) {
                                        outstanding.remove(&node);
                                    }
                                    if outstanding.is_empty() && late.is_none() {
                                        break;
                                    }
                                }
                                None => break,
                            }
                            continue;
                        }
                        Some(Incoming::Unverified(found)) => {
                            unverified.push(found);
                            continue;
                        }
                        Some(Incoming::Reply(reply)) if reply.request_id == id => reply,
                        Some(Incoming::Reply(_) | Incoming::Deferred(..)) => continue,
                    };
                    if !seen.insert(reply.sender.clone()) {
                        // A second answer from the same node is not a second response.
                        continue;
                    }
                    let node_reply = NodeReply { reply, elapsed: sent.elapsed() };
                    let sender = node_reply.reply.sender.clone();
                    // Its verified call reply proves what its discovery reply claimed.
                    pending.forget(&sender);
                    if expected.is_empty() || expected.contains(&sender) {
                        outstanding.remove(&sender);
                        on_reply(&node_reply);
                        replies.push(node_reply);
                        if expected.is_empty() && direct {
                            break;
                        }
                    } else if late.is_some() {
                        // Perhaps a node whose discovery reply is still on its way.
                        held.push(node_reply);
                    } else {
                        strangers.push(sender);
                    }
                }
                node = next_late(&mut late) => {
                    last_heard = Instant::now();
                    match node {
                        Some(node) => {
                            if let Some(session) = late.as_mut() {
                                pending.merge(std::mem::take(&mut session.pending));
                            }
                            if seen.contains(&node) {
                                pending.forget(&node);
                            }
                            if expected.insert(node.clone()) {
                                if let Some(at) = held.iter().position(|r| r.reply.sender == node) {
                                    let node_reply = held.remove(at);
                                    on_reply(&node_reply);
                                    replies.push(node_reply);
                                } else if !seen.contains(&node) {
                                    outstanding.insert(node);
                                }
                            }
                        }
                        // The discovery subscription ended; stop listening to it.
                        None => {
                            if let Some(session) = late.take() {
                                unverified.extend(session.unverified);
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let request_time = sent.elapsed();
        incoming.unsubscribe().await;
        if let Some(mut session) = late {
            unverified.append(&mut session.unverified);
            session.replies.unsubscribe().await;
            pending.merge(session.pending);
        }
        // Nodes that did not answer are listed only if their discovery reply verifies.
        if let Some(trust) = &trust {
            let silent = expected.iter().filter(|node| !seen.contains(*node)).cloned();
            let (refuted, refused) = pending.refute(trust, silent);
            for node in &refuted {
                expected.remove(node);
            }
            unverified.extend(refused);
        }
        let ok = replies.iter().filter(|r| r.reply.status == cohort_proto::StatusCode::Ok).count();
        let mut unexpected: Vec<Identity> =
            held.into_iter().map(|r| r.reply.sender).chain(strangers).collect();
        unexpected.sort();
        let no_responses: Vec<Identity> =
            expected.iter().filter(|node| !seen.contains(*node)).cloned().collect();
        let stats = CallStats {
            request_id: id,
            discovered: expected.len(),
            responses: replies.len(),
            ok,
            failed: replies.len() - ok,
            no_responses,
            unexpected,
            unverified,
            start_time,
            request_time,
        };
        Ok(CallOutcome { result: CallResult { replies, stats }, expected })
    }

    /// Sends `call` without waiting for replies. With `reply_to`, nodes answer on that subject
    /// (for another process to collect); without it, nodes act and send nothing back (`--nr`).
    /// Returns the request id.
    pub async fn send(
        &self,
        call: &Call,
        reply_to: Option<&str>,
    ) -> Result<RequestId, ClientError> {
        let (id, request) = self.call_request(call, reply_to.is_some());
        let bytes: bytes::Bytes = self.encode(&request).into();
        let subjects: Vec<String> = match &call.targets {
            Targets::Broadcast { .. } => vec![broadcast_subject(&call.collective, &call.agent)],
            Targets::Direct(nodes) => {
                nodes.iter().map(|node| node_subject(&call.collective, node)).collect()
            }
        };
        for subject in subjects {
            let sent = match reply_to {
                Some(reply) => {
                    self.nats.publish_with_reply(subject, reply.to_owned(), bytes.clone()).await
                }
                None => self.nats.publish(subject, bytes.clone()).await,
            };
            sent.map_err(|err| ClientError::Bus(err.to_string()))?;
        }
        self.nats.flush().await.map_err(|err| ClientError::Bus(err.to_string()))?;
        Ok(id)
    }

    /// Waits until everything published has been written to the broker.
    pub async fn flush(&self) {
        let _ = self.nats.flush().await;
    }
}
