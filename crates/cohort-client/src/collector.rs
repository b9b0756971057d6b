//! The accounting of one call, pure: who is expected, who answered (once), who joined late,
//! who answered without being expected, which replies did not verify, and when the call is
//! over. The async loop in [`crate::call`] feeds it events and the time and does what it says.
//!
//! The rules, each unit-tested below:
//! - a reply counts once per node, and only for this request;
//! - sent to a list of nodes, a reply from a node not on it is unexpected, never a response;
//! - broadcast after discovery, a node that answers discovery late, or answers the call before
//!   its discovery reply arrived, joins the expected set: the request carried the filter, so
//!   its reply proves it matched;
//! - "no responders" for a node's own subject means that node is not connected (it stays
//!   expected and is listed as not responding); for the broadcast subject, that no node hosts
//!   the agent, and the call ends;
//! - the call ends as soon as every expected node answered, unless discovery may still bring
//!   more: fewer nodes than the last complete discovery found (or no record) hold it open until
//!   `--dt` after discovery began ([`Ending::holding`]); otherwise at its timeout;
//! - with a trusted issuer, discovery replies are verified only for nodes whose call reply did
//!   not prove them, once the call has been quiet a while: a forged discovery reply then stops
//!   holding the call open, and is reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_proto::{Collective, Identity, RequestId, StatusCode};
use cohort_security::{ReplyKeys, Trust};

use crate::ending::{Ending, Verdict};
use crate::verify::Pending;
use crate::{NodeReply, Targets, Unverified};

/// Shortest quiet time in a call before outstanding nodes' discovery replies are checked.
pub(crate) const MIN_CHECK_AFTER: Duration = Duration::from_millis(20);

/// Discovery still running alongside a call.
pub(crate) struct Following {
    /// Discovery's ending rule, carried over.
    pub(crate) ending: Ending,
    /// Discovery replies not yet verified.
    pub(crate) pending: Pending,
    /// Issuers to verify them against.
    pub(crate) trust: Option<Arc<Trust>>,
    /// The client's reply keys, for MAC'd replies.
    pub(crate) reply_keys: Option<Arc<ReplyKeys>>,
    /// How long the call must be quiet before outstanding nodes' discovery replies are checked.
    pub(crate) check_after: Duration,
}

/// The accounting of one call.
pub(crate) struct Collector {
    id: RequestId,
    node_prefix: String,
    direct: bool,
    expected: BTreeSet<Identity>,
    outstanding: BTreeSet<Identity>,
    seen: BTreeSet<Identity>,
    replies: Vec<NodeReply>,
    strangers: Vec<Identity>,
    unverified: Vec<Unverified>,
    deadline: Instant,
    /// Discovery this call follows, if any.
    discovery: Option<Ending>,
    discovery_open: bool,
    pending: Pending,
    trust: Option<Arc<Trust>>,
    reply_keys: Option<Arc<ReplyKeys>>,
    check_after: Duration,
    last_heard: Instant,
    /// Every node discovery named was refuted as a forgery: nobody is left to wait for.
    refuted_all: bool,
    /// Nobody subscribes to the agent's broadcast subject.
    nobody: bool,
    /// The broker connection was lost during the call.
    lost_broker: bool,
}

/// What the call came to.
pub(crate) struct Collected {
    pub(crate) replies: Vec<NodeReply>,
    pub(crate) expected: BTreeSet<Identity>,
    pub(crate) no_responses: Vec<Identity>,
    pub(crate) unexpected: Vec<Identity>,
    pub(crate) unverified: Vec<Unverified>,
    pub(crate) ok: usize,
    /// Discovery's rule, when the call followed discovery.
    pub(crate) discovery: Option<Ending>,
    /// The broker connection was lost during the call.
    pub(crate) lost_broker: bool,
}

impl Collector {
    /// A call with request `id` to `targets` in `collective`, sent at `now`, given up at
    /// `deadline`.
    pub(crate) fn new(
        id: RequestId,
        collective: &Collective,
        targets: &Targets,
        now: Instant,
        deadline: Instant,
    ) -> Collector {
        let expected = targets.expected().clone();
        Collector {
            id,
            node_prefix: format!("{collective}.node."),
            direct: matches!(targets, Targets::Direct(_)),
            outstanding: expected.clone(),
            expected,
            seen: BTreeSet::new(),
            replies: Vec::new(),
            strangers: Vec::new(),
            unverified: Vec::new(),
            deadline,
            discovery: None,
            discovery_open: false,
            pending: Pending::default(),
            trust: None,
            reply_keys: None,
            check_after: MIN_CHECK_AFTER,
            last_heard: now,
            refuted_all: false,
            nobody: false,
            lost_broker: false,
        }
    }

    /// The call follows a discovery that is still listening for latecomers; `last_heard` is
    /// when discovery last heard anything.
    pub(crate) fn follow(&mut self, following: Following, last_heard: Instant) {
        self.discovery = Some(following.ending);
        self.discovery_open = true;
        self.pending = following.pending;
        self.trust = following.trust;
        self.reply_keys = following.reply_keys;
        self.check_after = following.check_after.max(MIN_CHECK_AFTER);
        self.last_heard = last_heard;
    }

    /// A reply arrived. Returns it when it counts as a response (for progress callbacks).
    pub(crate) fn reply(&mut self, now: Instant, reply: NodeReply) -> Option<&NodeReply> {
        self.last_heard = now;
        if reply.reply.request_id != self.id {
            return None;
        }
        let sender = reply.reply.sender.clone();
        if !self.seen.insert(sender.clone()) {
            // A second answer from the same node is not a second response.
            return None;
        }
        // Its verified call reply proves what its discovery reply claimed.
        self.pending.forget(&sender);
        let counts = if self.expected.contains(&sender) {
            self.outstanding.remove(&sender);
            true
        } else if let Some(discovery) = &mut self.discovery {
            // Broadcast with the filter: a node that answers matched it, whether or not its
            // discovery reply has arrived.
            self.expected.insert(sender.clone());
            discovery.heard(now, self.expected.len());
            true
        } else if !self.direct && self.expected.is_empty() {
            // A broadcast that expects nobody in particular collects everyone.
            true
        } else {
            self.strangers.push(sender);
            false
        };
        if !counts {
            return None;
        }
        self.replies.push(reply);
        self.replies.last()
    }

    /// Discovery heard from `node` (with its signed reply, unverified, if deferred).
    pub(crate) fn discovered(&mut self, now: Instant, node: Identity, signed: Option<Bytes>) {
        self.last_heard = now;
        let answered = self.seen.contains(&node);
        if let Some(signed) = signed
            && !answered
        {
            self.pending.add(&node, signed);
        }
        if self.expected.insert(node.clone()) && !answered {
            self.outstanding.insert(node);
        }
        if let Some(discovery) = &mut self.discovery {
            discovery.heard(now, self.expected.len());
        }
    }

    /// The broker answered discovery's probe.
    pub(crate) fn probe_answered(&mut self, now: Instant) {
        if let Some(discovery) = &mut self.discovery {
            discovery.probe_answered(now);
        }
    }

    /// Discovery stopped listening (its subscription ended).
    pub(crate) fn discovery_closed(&mut self) {
        self.discovery_open = false;
    }

    /// More discovery replies read but not verified, and refusals, from the discovery session.
    pub(crate) fn absorb(&mut self, pending: Pending, unverified: Vec<Unverified>) {
        self.pending.merge(pending);
        self.unverified.extend(unverified);
    }

    /// The broker says nobody listens on `subject`.
    pub(crate) fn no_responders(&mut self, now: Instant, subject: Option<&str>) {
        self.last_heard = now;
        match subject.and_then(|s| s.strip_prefix(&self.node_prefix)) {
            // That node is not connected: nothing more will come from it.
            Some(node) => {
                if let Ok(node) = Identity::new(node) {
                    self.outstanding.remove(&node);
                }
            }
            // No node hosts the agent at all.
            None => self.nobody = true,
        }
    }

    /// A reply that did not verify.
    pub(crate) fn refused(&mut self, now: Instant, unverified: Unverified) {
        self.last_heard = now;
        self.unverified.push(unverified);
    }

    /// Whether every expected node has answered (or cannot).
    fn all_in(&self) -> bool {
        self.outstanding.is_empty()
            && (!self.expected.is_empty() || self.refuted_all || self.direct)
    }

    fn unchecked(&self) -> bool {
        self.trust.is_some() && !self.pending.is_empty() && !self.outstanding.is_empty()
    }

    /// The broker connection was lost at `now`: replies sent meanwhile are gone, and none come
    /// while it is down. The call waits `grace` more at most (counted from the first loss) for
    /// what still arrives once it is back, then ends.
    pub(crate) fn lost_broker(&mut self, now: Instant, grace: Duration) {
        if !self.lost_broker {
            self.lost_broker = true;
            self.deadline = self.deadline.min(now + grace);
        }
    }

    /// The verdict at `now`; checks outstanding nodes' discovery replies when it is time.
    pub(crate) fn poll(&mut self, now: Instant) -> Verdict {
        if now >= self.deadline || self.nobody {
            return Verdict::End;
        }
        if self.unchecked()
            && self.last_heard + self.check_after <= now
            && let Some(trust) = self.trust.clone()
        {
            let keys = self.reply_keys.as_deref();
            let (refuted, refused) =
                self.pending.refute(&trust, keys, self.outstanding.iter().cloned());
            for node in &refuted {
                self.expected.remove(node);
                self.outstanding.remove(node);
            }
            self.unverified.extend(refused);
            self.refuted_all |= self.expected.is_empty();
            if let Some(discovery) = &mut self.discovery {
                discovery.recount(self.expected.len());
            }
            // Checked: wait for the next reply before checking again.
            self.last_heard = now;
        }
        let holding =
            self.discovery_open && self.discovery.as_ref().is_some_and(|d| d.holding(now));
        let all_in = self.all_in();
        if all_in && !holding {
            return Verdict::End;
        }
        let mut wake = self.deadline;
        if all_in && let Some(discovery) = &self.discovery {
            wake = wake.min(discovery.hold_until());
        }
        if self.unchecked() {
            wake = wake.min(self.last_heard + self.check_after);
        }
        Verdict::Wait(wake)
    }

    /// The accounting, after a last check of the silent nodes' discovery replies: a node is
    /// listed as not responding only if its discovery reply verifies.
    pub(crate) fn finish(mut self) -> Collected {
        if let Some(trust) = self.trust.clone() {
            let silent: Vec<Identity> =
                self.expected.iter().filter(|node| !self.seen.contains(*node)).cloned().collect();
            let keys = self.reply_keys.as_deref();
            let (refuted, refused) = self.pending.refute(&trust, keys, silent.into_iter());
            for node in &refuted {
                self.expected.remove(node);
            }
            self.unverified.extend(refused);
            if let Some(discovery) = &mut self.discovery {
                discovery.recount(self.expected.len());
            }
        }
        let ok = self.replies.iter().filter(|r| r.reply.status == StatusCode::Ok).count();
        let mut unexpected = self.strangers;
        unexpected.sort();
        let no_responses: Vec<Identity> =
            self.expected.iter().filter(|node| !self.seen.contains(*node)).cloned().collect();
        // A lost connection matters only if a reply is missing: when every expected node
        // answered, the call completed through the reconnected broker (or another member).
        let lost_broker = self.lost_broker && !no_responses.is_empty();
        Collected {
            replies: self.replies,
            expected: self.expected,
            no_responses,
            unexpected,
            unverified: self.unverified,
            ok,
            discovery: self.discovery,
            lost_broker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_proto::{AgentName, PROTOCOL, Reply, VERSION};
    use serde_json::Map;

    const MS: Duration = Duration::from_millis(1);

    fn id(n: u8) -> RequestId {
        RequestId::from_random([n; 16])
    }

    fn node(name: &str) -> Identity {
        Identity::new(name).unwrap()
    }

    fn nodes(names: &[&str]) -> BTreeSet<Identity> {
        names.iter().map(|n| node(n)).collect()
    }

    fn reply(request: u8, sender: &str, status: StatusCode) -> NodeReply {
        NodeReply {
            reply: Reply {
                protocol: PROTOCOL.to_owned(),
                version: VERSION,
                request_id: id(request),
                sender: node(sender),
                agent: AgentName::new("rpcutil").unwrap(),
                action: "ping".to_owned(),
                status,
                status_message: String::new(),
                data: Map::new(),
                time: 0,
            },
            elapsed: MS,
        }
    }

    fn collector(targets: Targets) -> (Instant, Collector) {
        let t = Instant::now();
        let collective = Collective::new("cohort").unwrap();
        (t, Collector::new(id(1), &collective, &targets, t, t + MS * 1000))
    }

    fn following(t: Instant, expect: Option<usize>) -> Following {
        Following {
            ending: Ending::new(t, MS * 300, MS * 300, MS * 50, expect).without_probe(),
            pending: Pending::default(),
            trust: None,
            reply_keys: None,
            check_after: MS * 20,
        }
    }

    #[test]
    fn ends_when_every_listed_node_answered() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        assert!(c.reply(t + MS, reply(1, "a", StatusCode::Ok)).is_some());
        assert_eq!(c.poll(t + MS), Verdict::Wait(t + MS * 1000));
        assert!(c.reply(t + MS * 2, reply(1, "b", StatusCode::Aborted)).is_some());
        assert_eq!(c.poll(t + MS * 2), Verdict::End);
        let done = c.finish();
        assert_eq!(done.replies.len(), 2);
        assert_eq!(done.ok, 1);
        assert!(done.no_responses.is_empty());
    }

    #[test]
    fn a_lost_broker_cuts_the_wait_to_the_grace_once() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        c.lost_broker(t + MS * 100, MS * 200);
        assert_eq!(c.poll(t + MS * 100), Verdict::Wait(t + MS * 300));
        // A second loss does not move the end again; a reply after the loss still counts.
        c.lost_broker(t + MS * 250, MS * 200);
        assert!(c.reply(t + MS * 260, reply(1, "a", StatusCode::Ok)).is_some());
        assert_eq!(c.poll(t + MS * 260), Verdict::Wait(t + MS * 300));
        assert_eq!(c.poll(t + MS * 300), Verdict::End);
        // Lost near the deadline: the deadline stays.
        let (t2, mut late) = collector(Targets::Direct(nodes(&["a"])));
        late.lost_broker(t2 + MS * 900, MS * 200);
        assert_eq!(late.poll(t2 + MS * 900), Verdict::Wait(t2 + MS * 1000));
        let done = c.finish();
        assert!(done.lost_broker);
        assert_eq!(done.no_responses, vec![node("b")]);
    }

    #[test]
    fn a_lost_broker_does_not_taint_a_call_every_node_answered() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        assert!(c.reply(t + MS, reply(1, "a", StatusCode::Ok)).is_some());
        c.lost_broker(t + MS * 2, MS * 200);
        // b's reply came through the broker the client reconnected to.
        assert!(c.reply(t + MS * 50, reply(1, "b", StatusCode::Ok)).is_some());
        assert_eq!(c.poll(t + MS * 50), Verdict::End);
        let done = c.finish();
        assert!(!done.lost_broker);
        assert!(done.no_responses.is_empty());
    }

    #[test]
    fn a_node_counts_once_and_only_for_this_request() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        assert!(c.reply(t, reply(9, "a", StatusCode::Ok)).is_none());
        assert!(c.reply(t, reply(1, "a", StatusCode::Ok)).is_some());
        assert!(c.reply(t, reply(1, "a", StatusCode::Ok)).is_none());
        let done = c.finish();
        assert_eq!(done.replies.len(), 1);
        assert_eq!(done.no_responses, vec![node("b")]);
    }

    #[test]
    fn a_stranger_to_a_listed_call_is_unexpected_not_a_response() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a"])));
        assert!(c.reply(t, reply(1, "z", StatusCode::Ok)).is_none());
        assert!(c.reply(t, reply(1, "a", StatusCode::Ok)).is_some());
        assert_eq!(c.poll(t), Verdict::End);
        let done = c.finish();
        assert_eq!(done.unexpected, vec![node("z")]);
        assert_eq!(done.replies.len(), 1);
    }

    #[test]
    fn the_timeout_lists_the_silent() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        c.reply(t, reply(1, "a", StatusCode::Ok));
        assert_eq!(c.poll(t + MS * 1000), Verdict::End);
        assert_eq!(c.finish().no_responses, vec![node("b")]);
    }

    #[test]
    fn no_responders_for_a_node_means_it_is_not_connected() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a", "b"])));
        c.reply(t, reply(1, "a", StatusCode::Ok));
        c.no_responders(t, Some("cohort.node.b"));
        assert_eq!(c.poll(t), Verdict::End);
        assert_eq!(c.finish().no_responses, vec![node("b")]);
    }

    #[test]
    fn no_responders_for_the_broadcast_means_nobody_hosts_the_agent() {
        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.no_responders(t, Some("cohort.broadcast.agent.x"));
        assert_eq!(c.poll(t), Verdict::End);
    }

    #[test]
    fn a_discovery_latecomer_joins_and_is_waited_for() {
        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.follow(following(t, Some(2)), t);
        c.reply(t + MS, reply(1, "a", StatusCode::Ok));
        // One of two expected: the hold keeps the call open though "a" answered.
        assert_eq!(c.poll(t + MS * 2), Verdict::Wait(t + MS * 300));
        c.discovered(t + MS * 100, node("b"), None);
        assert_eq!(c.poll(t + MS * 100), Verdict::Wait(t + MS * 1000));
        c.reply(t + MS * 120, reply(1, "b", StatusCode::Ok));
        // Every expected reply is in and the count is reached: no tail.
        assert_eq!(c.poll(t + MS * 120), Verdict::End);
        let done = c.finish();
        assert_eq!(done.expected, nodes(&["a", "b"]));
        assert!(done.unexpected.is_empty());
    }

    #[test]
    fn a_call_reply_before_the_discovery_reply_counts() {
        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.follow(following(t, Some(2)), t);
        c.reply(t, reply(1, "a", StatusCode::Ok));
        assert!(c.reply(t + MS, reply(1, "b", StatusCode::Ok)).is_some());
        c.discovered(t + MS * 2, node("b"), None);
        assert_eq!(c.poll(t + MS * 2), Verdict::End);
        let done = c.finish();
        assert_eq!(done.replies.len(), 2);
        assert!(done.unexpected.is_empty() && done.no_responses.is_empty());
    }

    #[test]
    fn without_a_record_the_call_holds_to_the_discovery_timeout() {
        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.follow(following(t, None), t);
        c.reply(t, reply(1, "a", StatusCode::Ok));
        assert_eq!(c.poll(t + MS), Verdict::Wait(t + MS * 300));
        assert_eq!(c.poll(t + MS * 300), Verdict::End);
    }

    #[test]
    fn a_short_count_stops_holding_once_discovery_closed() {
        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.follow(following(t, Some(5)), t);
        c.reply(t, reply(1, "a", StatusCode::Ok));
        c.discovery_closed();
        assert_eq!(c.poll(t + MS), Verdict::End);
    }

    #[test]
    fn a_broadcast_expecting_nobody_collects_until_the_timeout() {
        let (t, mut c) = collector(Targets::Broadcast { expected: BTreeSet::new() });
        assert!(c.reply(t, reply(1, "a", StatusCode::Ok)).is_some());
        assert_eq!(c.poll(t + MS), Verdict::Wait(t + MS * 1000));
        assert_eq!(c.finish().replies.len(), 1);
    }

    #[test]
    fn a_forged_discovery_reply_stops_holding_the_call_once_checked() {
        use cohort_security::{Credential, KeyKind, Role, SecretKey, Signer};
        let issuer = SecretKey::generate(KeyKind::Issuer, [7; 32]);
        let key = SecretKey::generate(KeyKind::Member, [8; 32]);
        let credential =
            Credential::issue(&issuer, "b", Role::Node, key.public(), "b".into(), 0, i64::MAX)
                .unwrap();
        // Node `b`'s credential, claiming to be `ghost`.
        let forger = Signer::new(key, credential).unwrap();
        let mut claim = reply(1, "ghost", StatusCode::Ok).reply;
        claim.agent = AgentName::new("discovery").unwrap();
        let forged = Bytes::from(forger.seal(&String::from_utf8(claim.to_bytes()).unwrap()));
        let trust = Arc::new(Trust::new(vec![issuer.public().clone()]));

        let (t, mut c) = collector(Targets::Broadcast { expected: nodes(&["a"]) });
        c.follow(Following { trust: Some(trust), ..following(t, Some(1)) }, t);
        c.discovered(t, node("ghost"), Some(forged));
        c.reply(t + MS, reply(1, "a", StatusCode::Ok));
        // Quiet for less than the check delay: the ghost is still awaited.
        assert_eq!(c.poll(t + MS * 10), Verdict::Wait(t + MS * 21));
        // Then its discovery reply is checked, refuted, and nobody is left to wait for.
        assert_eq!(c.poll(t + MS * 21), Verdict::End);
        let done = c.finish();
        assert_eq!(done.expected, nodes(&["a"]));
        assert!(done.no_responses.is_empty());
        assert_eq!(done.unverified.len(), 1);
        assert!(done.unverified[0].reason.contains("signed by node=b"), "{:?}", done.unverified);
    }

    #[test]
    fn refusals_are_kept() {
        let (t, mut c) = collector(Targets::Direct(nodes(&["a"])));
        c.refused(t, Unverified { sender: Some("a".into()), reason: "unsigned reply".into() });
        let done = c.finish();
        assert_eq!(done.unverified.len(), 1);
        assert_eq!(done.no_responses, vec![node("a")]);
    }
}
