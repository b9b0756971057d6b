//! Sending a request and collecting its replies: a short loop that feeds the pure
//! [`Collector`] what arrives (replies, refusals, discovery latecomers) and the time, and stops
//! when it says so.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use cohort_proto::{Filter, Identity, reply_subject};

use crate::collector::{Collected, Collector, Following};
use crate::discovery::{Found, Heard, Session};
use crate::ending::{Ending, Verdict};
use crate::verify::{Incoming, Replies};
use crate::{
    Call, CallResult, CallStats, Client, ClientError, Discovered, DiscoveryOptions, NodeReply,
    Targets,
};

impl Client {
    /// Discovery, then `call` broadcast to the discovered nodes. Nodes that answer discovery
    /// after it handed over (or answer the call first) join the call while it runs, and the
    /// call ends as soon as every expected node answered and discovery has nothing more to
    /// bring ([`crate::collector`]). For literal identities there is no discovery, and the
    /// request goes to each node's own subject.
    pub async fn discover_and_call(
        &self,
        filter: &Filter,
        options: &DiscoveryOptions,
        mut call: Call,
        on_discovered: impl FnOnce(&Discovered),
        on_reply: impl FnMut(&NodeReply),
    ) -> Result<(Discovered, CallResult), ClientError> {
        let (found, session) = self.discover_session(filter, options, true, |_, _| {}).await?;
        let Some(mut session) = session else {
            let discovered = Discovered::listed(found.nodes, found.started.elapsed());
            on_discovered(&discovered);
            if discovered.nodes.is_empty() {
                return Ok((discovered, CallResult::empty()));
            }
            call.targets = Targets::Direct(discovered.nodes.clone());
            let result = self.call(call, on_reply).await?;
            return Ok((discovered, result));
        };
        let discovered = Discovered {
            nodes: found.nodes.clone(),
            elapsed: found.started.elapsed(),
            networked: true,
            expected: session.ending.expected(),
            ..Discovered::default()
        };
        on_discovered(&discovered);
        if found.nodes.is_empty() {
            // Nothing matched: nothing is sent.
            session.close().await;
            let unverified = std::mem::take(&mut session.unverified);
            let discovered = self.conclude(found, &session.ending, &session.key, unverified);
            return Ok((discovered, CallResult::empty()));
        }
        call.targets = Targets::Broadcast { expected: found.nodes.clone() };
        let finished = self.collect(call, Some(&mut session), on_reply).await?;
        // The call went on listening to discovery: its rule and count are the final ones.
        let ending = finished.discovery.as_ref().unwrap_or(&session.ending);
        let lost = found.lost || finished.result.stats.lost_broker.is_some();
        let found = Found { nodes: finished.expected, started: found.started, lost };
        let discovered = Discovered {
            elapsed: discovered.elapsed,
            ..self.conclude(found, ending, &session.key, Vec::new())
        };
        Ok((discovered, finished.result))
    }

    /// Sends `call` and collects replies until every expected node answered or the timeout
    /// passed. `on_reply` sees each reply as it arrives (progress bars, JSON lines).
    pub async fn call(
        &self,
        call: Call,
        on_reply: impl FnMut(&NodeReply),
    ) -> Result<CallResult, ClientError> {
        Ok(self.collect(call, None, on_reply).await?.result)
    }

    async fn collect(
        &self,
        call: Call,
        mut discovery: Option<&mut Session>,
        mut on_reply: impl FnMut(&NodeReply),
    ) -> Result<Finished, ClientError> {
        let start_time = SystemTime::now();
        let (id, request) = self.call_request(&call, true);
        let reply_to = reply_subject(&call.collective, &self.options.caller, &id);
        let bus = |err: &dyn std::fmt::Display| ClientError::Bus(err.to_string());
        let link_start = self.link.now();
        let mut link = self.link.watch();
        let published_to = crate::subjects(&call);
        let ours: Vec<&str> =
            published_to.iter().map(String::as_str).chain([reply_to.as_str()]).collect();
        let mut incoming = Replies::new(
            self.nats.subscribe(reply_to.clone()).await.map_err(|e| bus(&e))?,
            &self.options.security,
        );
        let bytes: bytes::Bytes = self.encode(&request).into();
        let sent = Instant::now();
        // Every node is sent its copy even if one publication fails; the first error counts.
        let mut published = Ok(());
        for subject in &published_to {
            published = published.and(
                self.nats
                    .publish_with_reply(subject.clone(), reply_to.clone(), bytes.clone())
                    .await,
            );
        }
        published.map_err(|e| bus(&e))?;
        let _ = self.nats.flush().await;

        let mut collector =
            Collector::new(id.clone(), &call.collective, &call.targets, sent, sent + call.timeout);
        if let Some(session) = discovery.as_deref_mut() {
            // The first check of discovery replies waits as long as discovery's window: by
            // then the fleet has had the time it needed to answer once.
            let following = Following {
                ending: session.ending.clone(),
                pending: std::mem::take(&mut session.pending),
                trust: self.options.security.trust.clone(),
                reply_keys: self.options.security.reply_keys.clone(),
                check_after: session.ending.window(),
            };
            collector.follow(following, session.last_heard);
        }
        loop {
            let wake = match collector.poll(Instant::now()) {
                Verdict::End => break,
                Verdict::Wait(at) => at,
            };
            tokio::select! {
                item = incoming.next() => {
                    let now = Instant::now();
                    match item {
                        None => break,
                        Some(Incoming::NoResponders(subject)) => {
                            collector.no_responders(now, subject.as_deref());
                        }
                        Some(Incoming::Unverified(refused)) => collector.refused(now, refused),
                        Some(Incoming::Reply(reply)) => {
                            let reply = NodeReply { reply, elapsed: sent.elapsed() };
                            if let Some(counted) = collector.reply(now, reply) {
                                on_reply(counted);
                            }
                        }
                        Some(Incoming::Deferred(..)) => {}
                    }
                }
                heard = next_late(discovery.as_deref_mut()) => {
                    let now = Instant::now();
                    match heard {
                        Heard::Node(node, signed) => collector.discovered(now, node, signed),
                        Heard::Probe => collector.probe_answered(now),
                        Heard::Closed => collector.discovery_closed(),
                    }
                }
                Ok(()) = link.changed() => {
                    let now = link.borrow_and_update().clone();
                    if crate::link::check(&link_start, &now, &ours, &self.options.brokers)? {
                        collector.lost_broker(Instant::now(), self.options.lost_grace);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        let request_time = sent.elapsed();
        incoming.unsubscribe().await;
        if let Some(session) = discovery {
            session.close().await;
            collector.absorb(
                std::mem::take(&mut session.pending),
                std::mem::take(&mut session.unverified),
            );
        }
        let Collected {
            replies,
            expected,
            no_responses,
            unexpected,
            unverified,
            ok,
            discovery,
            lost_broker,
        } = collector.finish();
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
            lost_broker: lost_broker.then(|| self.options.brokers.join(", ")),
        };
        Ok(Finished { result: CallResult { replies, stats }, expected, discovery })
    }
}

/// A finished call: its result, the final expected set (discovery latecomers included) and,
/// when it followed discovery, discovery's rule as it ended.
struct Finished {
    result: CallResult,
    expected: BTreeSet<Identity>,
    discovery: Option<Ending>,
}

async fn next_late(session: Option<&mut Session>) -> Heard {
    match session {
        Some(session) => session.next().await,
        None => std::future::pending().await,
    }
}
