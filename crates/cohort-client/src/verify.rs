//! Reading replies off a subscription: decoding, and checking signatures in batches, or
//! keeping signed discovery replies to check later and only where needed ([`Pending`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cohort_proto::{Identity, Reply, now_ms};
use cohort_security::{ReplyKeys, Role, Trust};
use futures::{FutureExt, StreamExt};

use crate::{ClientSecurity, Unverified};

/// What arrived on a reply subscription.
pub(crate) enum Incoming {
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

/// How long replies that need verifying are gathered, from the first one, before the batch is
/// checked. A fleet's replies arrive spread over the time its nodes take to answer; checked as
/// they come they would be checked one by one (about 45 µs each), gathered for 3 ms they are
/// checked dozens at a time (batch verification: under 20 µs each). A call ends at most this
/// much later.
const GATHER: Duration = Duration::from_millis(3);

/// A reply subscription that checks signatures in batches: what arrives within [`GATHER`] of
/// the first message, up to [`BATCH`], is verified together.
pub(crate) struct Replies {
    sub: async_nats::Subscriber,
    security: ClientSecurity,
    ready: VecDeque<Incoming>,
    /// Messages taken off the subscription and not yet decoded, and until when to gather more:
    /// kept here, not in `next`'s locals, so that cancelling `next` loses nothing.
    gathering: Vec<async_nats::Message>,
    gather_until: Instant,
    /// Signed replies are read without checking their signatures ([`Incoming::Deferred`]).
    defer: bool,
}

impl Replies {
    pub(crate) fn new(sub: async_nats::Subscriber, security: &ClientSecurity) -> Replies {
        Replies {
            sub,
            security: security.clone(),
            ready: VecDeque::new(),
            gathering: Vec::new(),
            gather_until: Instant::now(),
            defer: false,
        }
    }

    /// Replies whose signatures are checked later, and only where needed ([`Pending`]).
    pub(crate) fn deferred(sub: async_nats::Subscriber, security: &ClientSecurity) -> Replies {
        Replies { defer: true, ..Replies::new(sub, security) }
    }

    /// The next reply, status or refusal; `None` when the subscription ended. Cancel-safe: the
    /// only wait is for the subscription's next message, and everything taken is kept in
    /// `ready` before the next wait.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.gathering.is_empty() {
                let first = self.sub.next().await?;
                self.gathering.push(first);
                self.gather_until = Instant::now() + GATHER;
            }
            let mut ended = false;
            while self.gathering.len() < BATCH {
                match self.sub.next().now_or_never() {
                    Some(Some(message)) => self.gathering.push(message),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            // MAC'd replies are checked one by one at ~1 µs: nothing to gather for.
            let batching =
                self.security.trust.is_some() && self.security.reply_keys.is_none() && !self.defer;
            if batching && !ended && self.gathering.len() < BATCH {
                let more = tokio::time::timeout_at(self.gather_until.into(), self.sub.next());
                if let Ok(Some(message)) = more.await {
                    self.gathering.push(message);
                    continue;
                }
            }
            let batch = std::mem::take(&mut self.gathering);
            self.ready.extend(decode_batch(&self.security, batch, self.defer));
        }
    }

    pub(crate) async fn unsubscribe(&mut self) {
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
    let mut sealed: Vec<(usize, Read<'_>)> = Vec::new();
    let verifying = security.trust.is_some() && !defer;
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
        if verifying {
            // Read once: a signed reply is parsed here and checked from what was read.
            match cohort_security::unseal(payload) {
                Ok(unsealed) => {
                    sealed.push((out.len(), (payload, Ok(unsealed))));
                    out.push(None);
                    continue;
                }
                Err(err) if cohort_security::is_sealed(payload) => {
                    sealed.push((out.len(), (payload, Err(err))));
                    out.push(None);
                    continue;
                }
                Err(_) => {}
            }
        }
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
        let reply = cohort_security::peek(payload)
            .ok()
            .and_then(|message| Reply::from_bytes(message.as_bytes()).ok());
        out.push(reply.map(|reply| match security.trust {
            Some(_) => Incoming::Deferred(reply, message.payload.clone()),
            None => Incoming::Reply(reply),
        }));
    }
    if let Some(trust) = &security.trust {
        let (indices, read): (Vec<usize>, Vec<Read<'_>>) = sealed.into_iter().unzip();
        let keys = security.reply_keys.as_deref();
        for (index, checked) in indices.into_iter().zip(verify_read(trust, keys, read)) {
            out[index] = checked;
        }
    }
    out.into_iter().flatten().collect()
}

/// A signed reply's bytes and what [`cohort_security::unseal`] made of them.
type Read<'a> = (&'a [u8], Result<cohort_security::Unsealed, cohort_security::OpenError>);

/// Verifies signed replies together: each comes out as a reply, as unverified with the reason,
/// or as `None` when it is not a reply at all. A reply counts only when it is signed by a node
/// credential for the identity it names.
pub(crate) fn verify_sealed(
    trust: &Trust,
    keys: Option<&ReplyKeys>,
    payloads: &[&[u8]],
) -> Vec<Option<Incoming>> {
    verify_read(
        trust,
        keys,
        payloads.iter().map(|payload| (*payload, cohort_security::unseal(payload))).collect(),
    )
}

/// [`verify_sealed`] for replies already read.
fn verify_read(
    trust: &Trust,
    keys: Option<&ReplyKeys>,
    read: Vec<Read<'_>>,
) -> Vec<Option<Incoming>> {
    let claimed = |message: &str| {
        Reply::from_bytes(message.as_bytes()).ok().map(|reply| reply.sender.to_string())
    };
    let now = now_ms(SystemTime::now()) / 1000;
    let (payloads, unsealed): (Vec<&[u8]>, Vec<_>) = read.into_iter().unzip();
    let opened = cohort_security::open_unsealed(unsealed, trust, now, keys);
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
pub(crate) struct Pending {
    replies: BTreeMap<Identity, Vec<Bytes>>,
}

/// Discovery replies kept per node for later checking: a genuine one and a few forgeries in the
/// node's name; more from the same name are dropped.
const PENDING_PER_NODE: usize = 4;

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Drops the replies of a node whose call reply verified.
    pub(crate) fn forget(&mut self, node: &Identity) {
        self.replies.remove(node);
    }

    pub(crate) fn merge(&mut self, other: Pending) {
        for (node, payloads) in other.replies {
            for payload in payloads {
                self.add(&node, payload);
            }
        }
    }

    pub(crate) fn add(&mut self, node: &Identity, payload: Bytes) {
        let kept = self.replies.entry(node.clone()).or_default();
        if kept.len() < PENDING_PER_NODE {
            kept.push(payload);
        }
    }

    /// Checks the pending discovery replies of `nodes`: returns those with no reply that
    /// verifies, and why each of their replies was refused.
    pub(crate) fn refute(
        &mut self,
        trust: &Trust,
        keys: Option<&ReplyKeys>,
        nodes: impl Iterator<Item = Identity>,
    ) -> (BTreeSet<Identity>, Vec<Unverified>) {
        let mut claims: Vec<(Identity, Bytes)> = Vec::new();
        for node in nodes {
            if let Some(payloads) = self.replies.remove(&node) {
                claims.extend(payloads.into_iter().map(|payload| (node.clone(), payload)));
            }
        }
        let payloads: Vec<&[u8]> = claims.iter().map(|(_, payload)| payload.as_ref()).collect();
        let checked = verify_sealed(trust, keys, &payloads);
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
