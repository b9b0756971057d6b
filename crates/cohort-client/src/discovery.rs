//! Broadcast discovery: send the discovery request and the broker probe, read replies until
//! the ending rule ([`crate::ending`]) says it is over, and record the count
//! ([`crate::history`]). The session can stay open while a call runs, so nodes slow to answer
//! discovery still join the call.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cohort_proto::{
    AgentName, Collective, DISCOVERY_AGENT, Filter, Identity, RequestId, RpcBody,
    broadcast_subject, now_ms, reply_subject,
};
use futures::StreamExt;
use serde_json::Map;

use crate::ending::{Ending, Verdict};
use crate::history::Key;
use crate::verify::{Incoming, Pending, Replies};
use crate::{Client, ClientError, Discovered, DiscoveryOptions, Shortfall, Unverified};

/// Last look for replies already received when the rule says discovery is over.
const GRACE: Duration = Duration::from_millis(5);

/// What discovery heard.
pub(crate) enum Heard {
    /// A node answered (first time or again), with its signed reply when verification was
    /// deferred.
    Node(Identity, Option<Bytes>),
    /// The broker answered the probe.
    Probe,
    /// The subscription ended, or no node listens at all.
    Closed,
}

/// Discovery's reply subscription, its probe, and what it found.
pub(crate) struct Session {
    replies: Replies,
    probe: Option<async_nats::Subscriber>,
    pub(crate) unverified: Vec<Unverified>,
    /// Signed replies not yet verified (when the replies are deferred).
    pub(crate) pending: Pending,
    id: RequestId,
    pub(crate) ending: Ending,
    /// When discovery last heard anything.
    pub(crate) last_heard: Instant,
    pub(crate) key: Key,
    closed: bool,
}

impl Session {
    /// The next thing discovery hears. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Heard {
        loop {
            if self.closed {
                return std::future::pending().await;
            }
            let incoming = tokio::select! {
                incoming = self.replies.next() => incoming,
                () = next_probe(&mut self.probe) => {
                    self.probe = None;
                    return Heard::Probe;
                }
            };
            let (reply, signed) = match incoming {
                None | Some(Incoming::NoResponders(_)) => {
                    self.closed = true;
                    return Heard::Closed;
                }
                Some(Incoming::Reply(reply)) => (reply, None),
                Some(Incoming::Deferred(reply, signed)) => (reply, Some(signed)),
                Some(Incoming::Unverified(unverified)) => {
                    self.unverified.push(unverified);
                    continue;
                }
            };
            if reply.request_id != self.id {
                continue;
            }
            self.last_heard = Instant::now();
            return Heard::Node(reply.sender, signed);
        }
    }

    pub(crate) async fn close(&mut self) {
        self.replies.unsubscribe().await;
        if let Some(mut probe) = self.probe.take() {
            let _ = probe.unsubscribe().await;
        }
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

/// What the discovery loop ended with.
pub(crate) struct Found {
    pub(crate) nodes: BTreeSet<Identity>,
    pub(crate) started: Instant,
    /// The broker connection was lost while discovering: the count is short, perhaps.
    pub(crate) lost: bool,
}

impl Client {
    /// Finds the nodes matching `filter` (see [`crate::ending`] for when it ends). `on_reply`
    /// sees each node as it answers, with the time since the request was sent (what `cohort
    /// ping` prints).
    pub async fn discover(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        on_reply: impl FnMut(&Identity, Duration),
    ) -> Result<Discovered, ClientError> {
        let (found, session) = self.discover_session(filter, options, false, on_reply).await?;
        let Some(mut session) = session else {
            return Ok(Discovered::listed(found.nodes, found.started.elapsed()));
        };
        session.close().await;
        let unverified = std::mem::take(&mut session.unverified);
        Ok(self.conclude(found, &session.ending, &session.key, unverified))
    }

    /// The outcome of a networked discovery that found `nodes` and ended as `ending` says,
    /// with the count recorded in the history under `key`.
    pub(crate) fn conclude(
        &self,
        Found { nodes, started, lost }: Found,
        ending: &Ending,
        key: &Key,
        unverified: Vec<Unverified>,
    ) -> Discovered {
        let elapsed = started.elapsed();
        let expected = ending.expected();
        let shortfall = expected.filter(|expected| nodes.len() < *expected).map(|expected| {
            Shortfall { expected, found: nodes.len(), waited: ending.waited(Instant::now()) }
        });
        // Lost, but as many found as the last discovery did: as complete as a discovery can
        // know itself to be, so not reported as a loss.
        let lost_broker = (lost && (expected.is_none() || shortfall.is_some()))
            .then(|| self.options.brokers.join(", "));
        let mut history_error = None;
        // A discovery that found nobody, or lost the broker, is not evidence that the fleet
        // shrank: the next one keeps expecting the count before it.
        if let Some(history) = &self.options.history
            && !nodes.is_empty()
            && !lost
        {
            let now = now_ms(SystemTime::now()) / 1000;
            if let Err(err) = history.record(key, nodes.len(), u64::try_from(now).unwrap_or(0)) {
                history_error = Some(err.to_string());
            }
        }
        Discovered {
            nodes,
            elapsed,
            networked: true,
            unverified,
            expected,
            shortfall,
            history_error,
            lost_broker,
        }
    }

    /// Discovery, keeping its reply subscription open for latecomers. With `then_call` (a call
    /// follows), reply signatures are left for the call to check where needed ([`Pending`]),
    /// and discovery hands over to the call after a shorter silence. Returns no session for
    /// literal identities (nothing was asked).
    pub(crate) async fn discover_session(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        then_call: bool,
        mut on_reply: impl FnMut(&Identity, Duration),
    ) -> Result<(Found, Option<Session>), ClientError> {
        let started = Instant::now();
        if let Some(nodes) = crate::literal_identities(filter) {
            return Ok((Found { nodes, started, lost: false }, None));
        }
        let key = Key::new(&self.options.brokers, &options.collective, filter);
        let expect = options
            .expect
            .or_else(|| self.options.history.as_ref().and_then(|history| history.expected(&key)));
        let id = crate::new_request_id();
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
        let bus = |err: &dyn std::fmt::Display| ClientError::Bus(err.to_string());
        let link_start = self.link.now();
        let mut link = self.link.watch();
        let broadcast = broadcast_subject(&options.collective, &discovery);
        let probing = probe_subject(&options.collective);
        let probe_reply = format!("{reply_to}.probe");
        let ours = [broadcast.as_str(), &reply_to, &probing, &probe_reply].map(str::to_owned);
        let replies = self.nats.subscribe(reply_to.clone()).await.map_err(|e| bus(&e))?;
        // The probe: a message to a subject no node can have, sent right after the request on
        // the same connection. A broker handles one connection's messages in order, so its "no
        // responders" answer to the probe means it has finished handing the request to every
        // node; until then, silence does not mean discovery is over.
        let probe = self.nats.subscribe(probe_reply.clone()).await.map_err(|e| bus(&e))?;
        let sent = Instant::now();
        self.nats
            .publish_with_reply(broadcast, reply_to, self.encode(&request).into())
            .await
            .map_err(|e| bus(&e))?;
        self.nats
            .publish_with_reply(probing, probe_reply, Bytes::new())
            .await
            .map_err(|e| bus(&e))?;
        let _ = self.nats.flush().await;
        let replies = match then_call {
            true => Replies::deferred(replies, &self.options.security),
            false => Replies::new(replies, &self.options.security),
        };
        let mut session = Session {
            replies,
            probe: Some(probe),
            unverified: Vec::new(),
            pending: Pending::default(),
            id,
            ending: Ending::new(sent, options.timeout, options.limit, options.window, expect),
            last_heard: sent,
            key,
            closed: false,
        };
        let mut nodes = BTreeSet::new();
        let mut heard = |session: &mut Session, heard: Heard, nodes: &mut BTreeSet<Identity>| {
            let now = Instant::now();
            match heard {
                Heard::Node(node, signed) => {
                    if let Some(signed) = signed {
                        session.pending.add(&node, signed);
                    }
                    if nodes.insert(node.clone()) {
                        on_reply(&node, sent.elapsed());
                        session.ending.heard(now, nodes.len());
                    }
                }
                Heard::Probe => session.ending.probe_answered(now),
                Heard::Closed => {}
            }
        };
        loop {
            if session.closed {
                break;
            }
            let wake = match session.ending.poll(Instant::now(), then_call) {
                Verdict::Wait(at) => at,
                Verdict::End => {
                    // The rule says over; take what the connection already holds.
                    match tokio::time::timeout(GRACE, session.next()).await {
                        Ok(found) => {
                            heard(&mut session, found, &mut nodes);
                            continue;
                        }
                        Err(_) => break,
                    }
                }
            };
            tokio::select! {
                found = session.next() => heard(&mut session, found, &mut nodes),
                Ok(()) = link.changed() => {
                    let now = link.borrow_and_update().clone();
                    // Lost: nothing more comes while it is down, and replies sent meanwhile
                    // are gone; discovery ends with what it has, and says so.
                    if crate::link::check(&link_start, &now, &ours, &self.options.brokers)? {
                        return Ok((Found { nodes, started, lost: true }, Some(session)));
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        Ok((Found { nodes, started, lost: false }, Some(session)))
    }
}
