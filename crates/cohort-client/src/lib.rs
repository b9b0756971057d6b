//! The operator side of Cohort: discover nodes, send a request, collect the replies, and
//! account exactly for who answered, who did not, and who answered unexpectedly.
//!
//! **API boundary** for tools: this crate never prints, never exits and never reads terminal
//! state; progress is reported through callbacks, and one node failing is a reply with a status
//! code in the result, never an `Err` of the whole call. `Err` means the call itself could not
//! be made (no broker, a subject the broker refused).
//!
//! The modules, from the pure core out: `ending` decides when discovery is over and
//! `collector` does a call's accounting (both pure, fed the time); [`history`] keeps the
//! counts discovery expects; `verify` reads and checks replies; `discovery` and `call` are the
//! short async loops around them. With [`ClientSecurity`] the client signs every request and
//! believes only replies signed by a node credential for the identity they name; [`sources`]
//! gives node lists that need no network (flat files, standard input, inventories).

mod call;
mod collector;
pub mod config;
mod discovery;
mod ending;
pub mod history;
mod link;
pub mod selection;
pub mod sources;
mod types;
mod verify;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use cohort_proto::{
    AgentName, Collective, Filter, Identity, PROTOCOL, ReplyProof, Request, RequestId, RpcBody,
    VERSION, broadcast_subject, node_subject, now_ms,
};
use rand::{Rng, RngCore};

pub use selection::{Count, Pick, Selection, Spread, reply_timeout};
pub use types::{
    Call, CallResult, CallStats, ClientError, ClientOptions, ClientSecurity, DEFAULT_LOST_GRACE,
    DEFAULT_WINDOW, Discovered, DiscoveryOptions, NodeReply, Shortfall, Targets, Unverified,
};

/// A connected client.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    options: ClientOptions,
    link: link::Link,
}

/// Refuses to start with a credential every node would refuse: expired, not yet valid, or
/// revoked by the list `trust` carries. A credential from an issuer `trust` does not name (one
/// for clients, another for nodes) is left to the nodes to judge.
fn own_credential_usable(
    signer: &cohort_security::Signer,
    trust: Option<&cohort_security::Trust>,
    now: SystemTime,
) -> Result<(), ClientError> {
    use cohort_security::CredentialError;
    let now = now_ms(now) / 1000;
    let checked = signer.credential().claims.check_period(now).and_then(|()| {
        trust.map_or(Ok(()), |trust| trust.verify(signer.credential(), now).map(|_| ()))
    });
    match checked {
        Err(
            err @ (CredentialError::Expired { .. }
            | CredentialError::NotYetValid { .. }
            | CredentialError::Revoked { .. }),
        ) => Err(ClientError::Credential(err.to_string())),
        _ => Ok(()),
    }
}

pub(crate) fn new_request_id() -> RequestId {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    RequestId::from_random(bytes)
}

/// The subjects `call` is published on: its agent's broadcast subject, or each listed node's
/// own subject.
fn subjects(call: &Call) -> Vec<String> {
    match &call.targets {
        Targets::Broadcast { .. } => vec![broadcast_subject(&call.collective, &call.agent)],
        Targets::Direct(nodes) => {
            nodes.iter().map(|node| node_subject(&call.collective, node)).collect()
        }
    }
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
        if let Some(signer) = &options.security.signer {
            own_credential_usable(signer, options.security.trust.as_deref(), SystemTime::now())?;
        }
        let link = link::Link::new();
        let events = link.clone();
        let mut connect = async_nats::ConnectOptions::new().event_callback(move |event| {
            events.record(&event);
            std::future::ready(())
        });
        if let Some(signer) = &options.security.signer {
            connect = connect.nkey(signer.key().seed());
        }
        if let Some(ca) = &options.security.tls_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        // The daemons' policy: immediately, then jittered backoff; a PING every 10 s notices a
        // silently dropped connection (the provisioner and the scheduler run for days).
        let connect = connect
            .name(format!("cohort client {}", options.caller))
            .connection_timeout(options.connect_timeout)
            .ping_interval(cohort_proto::PING_INTERVAL)
            .reconnect_delay_callback(|attempts| {
                cohort_proto::reconnect_delay(attempts, rand::thread_rng().gen_range(0.5..1.5))
            })
            .connect(servers);
        let nats =
            match tokio::time::timeout(options.connect_timeout + Duration::from_secs(1), connect)
                .await
            {
                Ok(Ok(nats)) => nats,
                Ok(Err(err))
                    if err.kind() == async_nats::ConnectErrorKind::AuthorizationViolation =>
                {
                    return Err(ClientError::Refused { brokers, reason: err.to_string() });
                }
                Ok(Err(err)) => {
                    return Err(ClientError::Connect { brokers, reason: err.to_string() });
                }
                Err(_) => {
                    return Err(ClientError::Connect { brokers, reason: "timed out".to_owned() });
                }
            };
        Ok(Client { nats, options, link })
    }

    /// Calls that lose the broker wait `grace` for replies before they end (the client's
    /// [`ClientOptions::lost_grace`]).
    pub fn with_lost_grace(mut self, grace: Duration) -> Client {
        self.options.lost_grace = grace;
        self
    }

    /// The caller id requests carry.
    pub fn caller(&self) -> &str {
        &self.options.caller
    }

    /// A new request for `call`, with its fresh id.
    pub(crate) fn call_request(&self, call: &Call, process_results: bool) -> (RequestId, Request) {
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
    pub(crate) fn encode(&self, request: &Request) -> Vec<u8> {
        match &self.options.security.signer {
            Some(signer) => signer.seal(&String::from_utf8_lossy(&request.to_bytes())),
            None => request.to_bytes(),
        }
    }

    /// The underlying connection, for tools that need more than this API.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub(crate) fn request(
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
            reply_to: None,
            reply_proof: match (&self.options.security.signer, &self.options.security.reply_keys) {
                (Some(_), Some(_)) => ReplyProof::Mac,
                _ => ReplyProof::Signature,
            },
        }
    }

    /// Sends `call` without waiting for replies. With `reply_to`, nodes answer on that subject
    /// (for another process to collect); without it, nodes act and send nothing back (`--nr`).
    /// Returns the request id.
    pub async fn send(
        &self,
        call: &Call,
        reply_to: Option<&str>,
    ) -> Result<RequestId, ClientError> {
        let (id, mut request) = self.call_request(call, reply_to.is_some());
        // Secure nodes reply only where the signature says.
        request.reply_to = reply_to.map(str::to_owned);
        // Whoever collects them elsewhere may not hold this client's reply keys.
        request.reply_proof = ReplyProof::Signature;
        let bytes: bytes::Bytes = self.encode(&request).into();
        for subject in subjects(call) {
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
