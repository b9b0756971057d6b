//! The client's public vocabulary: how to connect, what to discover, what to send, and what
//! came back. Plain data; the behaviour lives in the other modules.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cohort_proto::{AgentName, Collective, Filter, Identity, Reply, RequestId};
use cohort_security::{ReplyKeys, Signer, Trust};
use serde_json::{Map, Value};

use crate::history::History;

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
    /// Where the counts of earlier discoveries are kept ([`History`]); without it every
    /// discovery holds to its `--dt`.
    pub history: Option<Arc<History>>,
    /// How long a call that lost its broker connection still waits for replies (the
    /// connection may come back), before it ends and reports the loss ([`DEFAULT_LOST_GRACE`]).
    pub lost_grace: Duration,
}

/// How long a call waits for replies after losing the broker, by default.
pub const DEFAULT_LOST_GRACE: Duration = Duration::from_secs(5);

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
    /// With it, requests ask nodes to prove their replies with a MAC under a key only this
    /// client and the node share ([`ReplyProof::Mac`](cohort_proto::ReplyProof::Mac)) instead
    /// of a signature: ~32 µs per node the first time, ~1 µs per reply after that, against
    /// ~15 µs per reply for a signature. For clients that live long and call the same nodes
    /// repeatedly ([`ClientSecurity::with_mac_replies`]); a one-shot command is better off
    /// with signatures.
    pub reply_keys: Option<Arc<ReplyKeys>>,
}

impl ClientSecurity {
    /// Asks for MAC'd replies (see `reply_keys`), when the client signs its requests.
    #[must_use]
    pub fn with_mac_replies(mut self) -> ClientSecurity {
        self.reply_keys = self.signer.as_ref().map(|signer| Arc::new(ReplyKeys::new(signer.key())));
        self
    }
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
    /// The bus failed a subscription or publication.
    #[error("bus error: {0}")]
    Bus(String),
    /// The broker refused one of the call's publications or subscriptions: the credential's
    /// role does not allow it (a node credential used by a client, say).
    #[error("the broker refused this call: {0} (does this credential's role allow it?)")]
    Denied(String),
    /// The broker refused this client's login, or ended it.
    #[error("the broker at {brokers} refused this client's credential: {reason}")]
    Refused {
        /// The URLs tried.
        brokers: String,
        /// What the broker said.
        reason: String,
    },
    /// This client's own credential cannot be used (expired, not yet valid, revoked).
    #[error("this client's credential cannot be used: {0}")]
    Credential(String),
}

/// Discovery settings; docs/discovery.md has the rule they feed.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Collective to discover in.
    pub collective: Collective,
    /// `--dt`: while fewer nodes have answered than the last complete discovery found (or
    /// when there is no record), discovery holds on this long whatever the silence.
    pub timeout: Duration,
    /// The longest discovery waits at all; at least `timeout`. Past `timeout`, the quiet
    /// window alone decides up to this bound (`cohort ping` waits for slow nodes this way).
    pub limit: Duration,
    /// Shortest quiet window (`--discovery-window`): once the expected count is in,
    /// discovery ends after a silence this long at least; the window grows with the fleet's
    /// observed reply times.
    pub window: Duration,
    /// Request TTL in seconds.
    pub ttl: u32,
    /// How many nodes to expect; `None` looks it up in the client's [`History`].
    pub expect: Option<usize>,
}

impl DiscoveryOptions {
    /// Discovery in `collective` bounded by `timeout` (`--dt`), with the default 50 ms
    /// window and 60 s TTL.
    pub fn new(collective: Collective, timeout: Duration) -> DiscoveryOptions {
        DiscoveryOptions {
            collective,
            timeout,
            limit: timeout,
            window: DEFAULT_WINDOW.min(timeout),
            ttl: 60,
            expect: None,
        }
    }
}

/// The default shortest quiet window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);

/// Discovery that ended at `--dt` with fewer nodes than the last complete one found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// The count the last complete discovery found.
    pub expected: usize,
    /// The count this one found.
    pub found: usize,
    /// How long it waited for the rest.
    pub waited: Duration,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "discovered {} of about {} expected nodes; {} did not answer in {}",
            self.found,
            self.expected,
            self.expected.saturating_sub(self.found),
            seconds(self.waited)
        )
    }
}

/// `2 s`, `1.5 s`, `0.25 s`.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.2}", duration.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} s")
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
    /// The count expected from the last complete discovery, when there was one.
    pub expected: Option<usize>,
    /// Set when discovery ended at `--dt` short of the expected count.
    pub shortfall: Option<Shortfall>,
    /// Why this discovery's count could not be recorded in the history, if it could not.
    pub history_error: Option<String>,
    /// The broker (its URLs) when the connection to it was lost while discovering: nodes may
    /// be missing, and the count is not recorded.
    pub lost_broker: Option<String>,
}

impl Discovered {
    /// Nodes known without asking the network (literal identities, a node list).
    pub fn listed(nodes: BTreeSet<Identity>, elapsed: Duration) -> Discovered {
        Discovered { nodes, elapsed, ..Discovered::default() }
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

/// Replies and accounting of one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// Replies in arrival order; a node answering twice is kept once (the first).
    pub replies: Vec<NodeReply>,
    /// Accounting.
    pub stats: CallStats,
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
        stats.lost_broker = stats.lost_broker.take().or(more.lost_broker);
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
                lost_broker: None,
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
    /// The broker (its URLs) when the connection to it was lost during the call: replies
    /// may be missing, whether or not it came back.
    pub lost_broker: Option<String>,
}
