//! One client connection: its task, its outbound queue and its subscriptions.
//!
//! Design: the task owns the socket, the read buffer and the parser. Everything destined for the
//! client (messages routed by other connections, and its own `PONG`/`+OK`/`-ERR`) goes through
//! [`Outbound`], a queue bounded by `max_pending` bytes: a producer appends a frame under a short
//! lock and never waits, and the task writes whatever has accumulated in one batch. A client that
//! lets its queue overflow, or cannot take a write within `write_deadline`, is disconnected as a
//! slow consumer, so one stuck client can neither grow the broker's memory nor slow the others.
//! Payloads travel as shared `Bytes` inside an `Arc<Publish>`: a message to a thousand
//! subscribers is one allocation plus a thousand small queue entries.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cohort_nats_proto::client::Publish;
use cohort_nats_proto::server::{self, Info};
use cohort_nats_proto::{ClientOp, Connect, Parser, subject};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Grants;
use crate::server::{Shared, UserUsage};

/// Buffered output is written out once it reaches this size, so a large backlog goes out in
/// several writes rather than one huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;
/// Buffers larger than this are released once idle, keeping idle connections small.
const IDLE_BUFFER: usize = 16 * 1024;

/// A frame waiting to be written to a client.
enum Frame {
    /// Protocol bytes (`PONG`, `+OK`, `-ERR`, `PING`).
    Raw(&'static [u8]),
    /// An error line.
    Err(String),
    /// A routed message for subscription `sid`.
    Msg { msg: Arc<Publish>, sid: Arc<str> },
}

/// What the connection learned from `CONNECT` that other connections need when they deliver
/// to it. Set once.
pub(crate) struct Peer {
    pub(crate) grants: Option<Arc<Grants>>,
}

struct Queue {
    frames: VecDeque<Frame>,
    pending: usize,
    slow: bool,
}

/// The bounded outbound queue of one connection, shared with whoever routes to it.
pub(crate) struct Outbound {
    client_id: u64,
    max_pending: usize,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    peer: OnceLock<Peer>,
}

impl Outbound {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is
        // a single push or take), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a frame of about `size` bytes. False when the connection is already being
    /// dropped, or when this frame overflowed its queue (it is then marked a slow consumer).
    fn push(&self, frame: Frame, size: usize, shared: &Shared) -> bool {
        let mut queue = self.lock();
        if queue.slow {
            return false;
        }
        if queue.pending + size > self.max_pending {
            queue.slow = true;
            queue.frames.clear();
            queue.pending = 0;
            drop(queue);
            shared.counters.slow_consumers.inc();
            self.wake.notify_one();
            return false;
        }
        queue.pending += size;
        queue.frames.push_back(frame);
        let first = queue.frames.len() == 1;
        drop(queue);
        if first {
            self.wake.notify_one();
        }
        true
    }

    fn push_raw(&self, bytes: &'static [u8], shared: &Shared) {
        self.push(Frame::Raw(bytes), bytes.len(), shared);
    }

    fn push_err(&self, message: String, shared: &Shared) {
        let size = message.len() + 9;
        self.push(Frame::Err(message), size, shared);
    }
}

/// One subscription, as stored in the index.
pub(crate) struct Subscription {
    id: u64,
    out: Arc<Outbound>,
    sid: Arc<str>,
    subject: String,
    queue: Option<String>,
    /// Deliveries after which the subscription ends; 0 for none.
    max: AtomicU64,
    delivered: AtomicU64,
    /// The user it counts against, released when the last reference goes (however the
    /// subscription ended: UNSUB, auto-unsubscribe, disconnection).
    usage: Option<Arc<UserUsage>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A user's connection slot, released when the connection task ends.
struct UserSlot(Arc<UserUsage>);

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl crate::index::Keyed for Arc<Subscription> {
    fn key(&self) -> u64 {
        self.id
    }
}

/// Why the connection loop stopped reading.
enum Stop {
    /// Write what is queued, then close.
    Flush,
}

/// Per-connection state owned by the task.
struct Conn {
    id: u64,
    shared: Arc<Shared>,
    out: Arc<Outbound>,
    connect: Option<Box<Connect>>,
    nonce: Option<String>,
    subs: HashMap<String, Arc<Subscription>>,
    pings_out: u32,
    rng: rand::rngs::SmallRng,
    /// When the login stops being valid (Unix seconds), for a credential with an end.
    expires: Option<i64>,
    /// The logged-in user's connection slot, for the per-user limits.
    user: Option<UserSlot>,
}

/// Serves one accepted TCP connection until it closes or the broker stops.
pub(crate) async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let _open = OpenGuard::new(&shared);
    let config = &shared.config;
    if shared.open.load(Ordering::Relaxed) > config.max_connections {
        let _ = tokio::time::timeout(
            config.write_deadline,
            tcp.write_all(b"-ERR 'maximum connections exceeded'\r\n"),
        )
        .await;
        return;
    }
    let _ = tcp.set_nodelay(true);
    shared.counters.connections_total.inc();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let nonce = shared.auth().wants_nonce().then(|| {
        let bytes: [u8; 16] = rng.r#gen();
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    });
    let info = Info {
        server_id: shared.server_id.clone(),
        server_name: shared.server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        proto: 1,
        host: shared.local_addr.ip().to_string(),
        port: shared.local_addr.port(),
        headers: true,
        max_payload: config.max_payload,
        client_id: id,
        client_ip: peer.ip().to_string(),
        auth_required: shared.auth().required(),
        tls_required: shared.tls.is_some(),
        nonce: nonce.clone(),
    };
    let mut hello = BytesMut::new();
    server::encode_info(&info, &mut hello);
    match tokio::time::timeout(config.write_deadline, tcp.write_all(&hello)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let out = Arc::new(Outbound {
        client_id: id,
        max_pending: config.max_pending,
        queue: Mutex::new(Queue { frames: VecDeque::new(), pending: 0, slow: false }),
        wake: tokio::sync::Notify::new(),
        peer: OnceLock::new(),
    });
    let mut conn = Conn {
        id,
        shared: shared.clone(),
        out,
        connect: None,
        nonce,
        subs: HashMap::new(),
        pings_out: 0,
        rng,
        expires: None,
        user: None,
    };
    match &shared.tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(config.auth_timeout, acceptor.accept(tcp)).await;
            match handshake {
                Ok(Ok(tls)) => conn.run(tls, &stop).await,
                Ok(Err(err)) => tracing::debug!(client = id, %peer, "tls handshake failed: {err}"),
                Err(_) => tracing::debug!(client = id, %peer, "tls handshake timed out"),
            }
        }
        None => conn.run(tcp, &stop).await,
    }
    conn.unsubscribe_all();
}

/// Keeps the open-connection count and gauge right however the task ends.
struct OpenGuard<'a>(&'a Shared);

impl<'a> OpenGuard<'a> {
    fn new(shared: &'a Shared) -> OpenGuard<'a> {
        shared.open.fetch_add(1, Ordering::Relaxed);
        shared.counters.connections.inc();
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.counters.connections.dec();
    }
}

impl Conn {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        stop: &CancellationToken,
    ) {
        let config = &self.shared.config;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut parser = Parser::new(config.max_control_line, config.max_payload);
        let mut rbuf = BytesMut::new();
        let mut wbuf = BytesMut::new();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + config.ping_interval,
            config.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let auth_deadline = tokio::time::sleep(config.auth_timeout);
        tokio::pin!(auth_deadline);
        let write_deadline = config.write_deadline;
        let mut reloads = self.shared.reloads.subscribe();
        // Checked every second, only for a login that ends: an expired credential is cut off
        // by the broker itself, not at the next reload.
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    let grace = self.shared.config.shutdown_grace;
                    let _ = self.write_queued(&mut writer, &mut wbuf, grace).await;
                    let _ = tokio::time::timeout(grace, writer.shutdown()).await;
                    return;
                }
                () = self.out.wake.notified() => {
                    if !self.write_queued(&mut writer, &mut wbuf, write_deadline).await {
                        return;
                    }
                }
                read = reader.read_buf(&mut rbuf) => {
                    match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if let Some(Stop::Flush) = self.handle_input(&mut parser, &mut rbuf) {
                        let _ = self.write_queued(&mut writer, &mut wbuf, write_deadline).await;
                        return;
                    }
                    if rbuf.is_empty() && rbuf.capacity() > IDLE_BUFFER {
                        rbuf = BytesMut::new();
                    }
                    // A small read buffer grows as traffic needs; it starts empty so idle
                    // connections cost little.
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(4096);
                    }
                }
                _ = ping.tick() => {
                    if self.pings_out >= self.shared.config.max_pings_out {
                        self.out.push_err("Stale Connection".to_owned(), &self.shared);
                        let _ = self.write_queued(&mut writer, &mut wbuf, write_deadline).await;
                        return;
                    }
                    self.pings_out += 1;
                    self.out.push_raw(server::PING, &self.shared);
                }
                Ok(()) = reloads.changed() => {
                    if !self.still_admitted() {
                        tracing::info!(client = self.id, "no longer admitted after an authorization reload");
                        self.out.push_err("Authorization Violation".to_owned(), &self.shared);
                        let _ = self.write_queued(&mut writer, &mut wbuf, write_deadline).await;
                        return;
                    }
                }
                _ = expiry.tick(), if self.expires.is_some() => {
                    if self.expires.is_some_and(|expires| unix_now() > expires) {
                        tracing::info!(client = self.id, "credential expired; disconnecting");
                        self.out.push_err("User Authentication Expired".to_owned(), &self.shared);
                        let _ = self.write_queued(&mut writer, &mut wbuf, write_deadline).await;
                        return;
                    }
                }
                () = &mut auth_deadline, if self.connect.is_none() => {
                    self.out.push_err("Authentication Timeout".to_owned(), &self.shared);
                    let _ = self.write_queued(&mut writer, &mut wbuf, write_deadline).await;
                    return;
                }
            }
        }
    }

    /// Parses and handles every complete operation in `rbuf`.
    fn handle_input(&mut self, parser: &mut Parser, rbuf: &mut BytesMut) -> Option<Stop> {
        loop {
            match parser.parse(rbuf) {
                Ok(Some(op)) => {
                    if let Some(stop) = self.handle(op) {
                        return Some(stop);
                    }
                }
                Ok(None) => return None,
                Err(err) => {
                    tracing::debug!(client = self.id, "protocol error: {err}");
                    self.out.push_err(err.server_message(), &self.shared);
                    return Some(Stop::Flush);
                }
            }
        }
    }

    /// Writes every queued frame. False when the connection must close: it is a slow consumer
    /// (its queue overflowed, or a write missed `deadline`) or the socket failed.
    async fn write_queued<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        wbuf: &mut BytesMut,
        deadline: Duration,
    ) -> bool {
        let (frames, slow) = {
            let mut queue = self.out.lock();
            queue.pending = 0;
            (std::mem::take(&mut queue.frames), queue.slow)
        };
        if slow {
            tracing::info!(client = self.id, "slow consumer: outbound queue full, disconnecting");
            return false;
        }
        let headers = self.connect.as_ref().is_some_and(|connect| connect.headers);
        let mut bytes_out = 0u64;
        for frame in frames {
            match frame {
                Frame::Raw(raw) => wbuf.put_slice(raw),
                Frame::Err(message) => server::encode_err(&message, wbuf),
                Frame::Msg { msg, sid } => {
                    let payload = match msg.header_len {
                        // A client that did not announce header support gets the body only.
                        Some(header_len) if !headers => &msg.payload[header_len..],
                        _ => &msg.payload[..],
                    };
                    let header_len = msg.header_len.filter(|_| headers);
                    let reply = msg.reply.as_deref();
                    server::encode_msg_header(
                        &msg.subject,
                        &sid,
                        reply,
                        header_len,
                        payload.len(),
                        wbuf,
                    );
                    wbuf.put_slice(payload);
                    wbuf.put_slice(b"\r\n");
                    bytes_out += payload.len() as u64;
                }
            }
            if wbuf.len() >= WRITE_CHUNK && !self.write_out(writer, wbuf, deadline).await {
                return false;
            }
        }
        let written = self.write_out(writer, wbuf, deadline).await;
        self.shared.counters.bytes_out.inc_by(bytes_out);
        if wbuf.capacity() > IDLE_BUFFER {
            *wbuf = BytesMut::new();
        }
        written
    }

    async fn write_out<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        wbuf: &mut BytesMut,
        deadline: Duration,
    ) -> bool {
        if wbuf.is_empty() {
            return true;
        }
        let write = async {
            writer.write_all(wbuf).await?;
            writer.flush().await
        };
        let result = tokio::time::timeout(deadline, write).await;
        wbuf.clear();
        match result {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!(
                    client = self.id,
                    "slow consumer: write deadline passed, disconnecting"
                );
                self.shared.counters.slow_consumers.inc();
                false
            }
        }
    }

    fn ok(&self) {
        if self.connect.as_ref().is_some_and(|connect| connect.verbose) {
            self.out.push_raw(server::OK, &self.shared);
        }
    }

    fn err(&self, message: String) {
        self.out.push_err(message, &self.shared);
    }

    fn handle(&mut self, op: ClientOp) -> Option<Stop> {
        let connected = self.connect.is_some();
        match op {
            ClientOp::Ping => {
                self.out.push_raw(server::PONG, &self.shared);
                None
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                None
            }
            ClientOp::Connect(connect) if !connected => self.handle_connect(connect),
            // A repeated CONNECT changes nothing (nats-server accepts it, too).
            ClientOp::Connect(_) => {
                self.ok();
                None
            }
            _ if !connected => {
                // nats-server lets an unauthenticated server skip CONNECT; we do not, so
                // that every client has declared its options before it can act.
                self.err("Authorization Violation".to_owned());
                Some(Stop::Flush)
            }
            ClientOp::Sub { subject, queue, sid } => {
                self.handle_sub(subject, queue, sid);
                None
            }
            ClientOp::Unsub { sid, max } => {
                self.handle_unsub(&sid, max);
                self.ok();
                None
            }
            ClientOp::Pub(publish) => self.handle_pub(publish),
        }
    }

    fn handle_connect(&mut self, connect: Box<Connect>) -> Option<Stop> {
        if connect.no_responders && !connect.headers {
            self.err("no responders requires headers support".to_owned());
            return Some(Stop::Flush);
        }
        let Some(identity) =
            self.shared.auth().authenticate(&connect, self.nonce.as_deref(), unix_now())
        else {
            self.shared.counters.auth_failures.inc();
            tracing::info!(client = self.id, user = ?connect.user, nkey = ?connect.nkey, "authorization violation");
            self.err("Authorization Violation".to_owned());
            return Some(Stop::Flush);
        };
        if let Some(name) = &identity.name {
            let usage = self.shared.usage(name);
            let slot = UserSlot(usage.clone());
            if usage.connections.fetch_add(1, Ordering::Relaxed)
                >= self.shared.config.max_user_connections
            {
                drop(slot);
                self.shared.counters.user_limits_refused.inc();
                tracing::info!(client = self.id, user = %name, "too many connections for one user");
                self.err("maximum account active connections exceeded".to_owned());
                return Some(Stop::Flush);
            }
            self.user = Some(slot);
        }
        tracing::debug!(client = self.id, name = ?connect.name, user = ?identity.name, "connected");
        let _ = self.out.peer.set(Peer { grants: identity.grants });
        self.expires = identity.expires;
        self.connect = Some(connect);
        self.ok();
        None
    }

    /// Whether the login this connection made still admits it, with the same permissions,
    /// under the authorization in force (after a reload). Not yet logged in: nothing to check.
    fn still_admitted(&self) -> bool {
        let Some(connect) = &self.connect else { return true };
        match self.shared.auth().authenticate(connect, self.nonce.as_deref(), unix_now()) {
            None => false,
            Some(identity) => identity.grants.as_deref() == self.grants(),
        }
    }

    fn grants(&self) -> Option<&Grants> {
        self.out.peer.get().and_then(|peer| peer.grants.as_deref())
    }

    fn handle_sub(&mut self, subject: String, queue: Option<String>, sid: String) {
        if subject::validate_pattern(&subject).is_err() {
            self.err("Invalid Subject".to_owned());
            return;
        }
        if let Some(queue) = &queue
            && subject::validate_queue(queue).is_err()
        {
            self.err("Invalid Queue Name".to_owned());
            return;
        }
        if let Some(grants) = self.grants()
            && !grants.may_subscribe(&subject)
        {
            let message = match &queue {
                Some(queue) => format!(
                    "Permissions Violation for Subscription to {subject:?} using queue {queue:?}"
                ),
                None => format!("Permissions Violation for Subscription to {subject:?}"),
            };
            self.err(message);
            return;
        }
        // As nats-server: refused with an error, the connection kept.
        if !self.subs.contains_key(&sid) && self.subs.len() >= self.shared.config.max_subscriptions
        {
            self.shared.counters.subscriptions_refused.inc();
            self.err("maximum subscriptions exceeded".to_owned());
            return;
        }
        // nats-server ignores a SUB that reuses a live sid; so do we.
        if !self.subs.contains_key(&sid) {
            let usage = self.user.as_ref().map(|slot| slot.0.clone());
            if let Some(usage) = &usage
                && usage.subscriptions.fetch_add(1, Ordering::Relaxed)
                    >= self.shared.config.max_user_subscriptions
            {
                usage.subscriptions.fetch_sub(1, Ordering::Relaxed);
                self.shared.counters.user_limits_refused.inc();
                self.err("maximum subscriptions exceeded".to_owned());
                return;
            }
            let sub = Arc::new(Subscription {
                id: self.shared.next_sub_id.fetch_add(1, Ordering::Relaxed),
                out: self.out.clone(),
                sid: sid.as_str().into(),
                subject,
                queue,
                max: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                usage,
            });
            write_index(&self.shared).insert(&sub.subject, sub.queue.as_deref(), sub.clone());
            self.shared.counters.subscriptions.inc();
            self.subs.insert(sid, sub);
        }
        self.ok();
    }

    fn handle_unsub(&mut self, sid: &str, max: Option<u64>) {
        let Some(sub) = self.subs.get(sid) else {
            return;
        };
        if let Some(max) = max.filter(|max| *max > 0) {
            sub.max.store(max, Ordering::Relaxed);
            if sub.delivered.load(Ordering::Relaxed) < max {
                return;
            }
        }
        if let Some(sub) = self.subs.remove(sid) {
            remove_sub(&self.shared, &sub);
        }
    }

    fn handle_pub(&mut self, publish: Publish) -> Option<Stop> {
        let Some(connect) = &self.connect else {
            return Some(Stop::Flush);
        };
        if publish.header_len.is_some() && !connect.headers {
            // The client said it does not speak headers, then sent some: out of step.
            self.err("Unknown Protocol Operation".to_owned());
            return Some(Stop::Flush);
        }
        if connect.pedantic && subject::validate_publish(&publish.subject).is_err() {
            // nats-server reports the error and still acknowledges the PUB in verbose mode.
            self.err("Invalid Publish Subject".to_owned());
            self.ok();
            return None;
        }
        if let Some(grants) = self.grants()
            && !grants.may_publish(&publish.subject)
        {
            self.err(format!("Permissions Violation for Publish to {:?}", publish.subject));
            return None;
        }
        let counters = &self.shared.counters;
        counters.msgs_in.inc();
        counters.bytes_in.inc_by(publish.payload.len() as u64);
        let wants_status = connect.no_responders && connect.headers && publish.reply.is_some();
        let echo = connect.echo;
        // The acknowledgement precedes any delivery to the publisher itself, as in nats-server.
        self.ok();
        let msg = Arc::new(publish);
        let delivered = self.route(&msg, echo);
        if delivered == 0 && wants_status {
            self.no_responders(&msg);
        }
        None
    }

    /// Delivers `msg` to every matching subscription and one member of each matching queue
    /// group. Returns how many deliveries were made.
    fn route(&mut self, msg: &Arc<Publish>, echo: bool) -> u64 {
        let mut delivered = 0u64;
        let mut finished: Vec<Arc<Subscription>> = Vec::new();
        {
            let index = read_index(&self.shared);
            let found = index.matches(&msg.subject);
            for sub in found.plain {
                if self.deliver(sub, msg, echo, &mut finished) {
                    delivered += 1;
                }
            }
            for (_, members) in found.groups {
                // Start at a random member and take the first that accepts, so a closing or
                // echo-suppressed member does not swallow the message.
                let start = self.rng.gen_range(0..members.len());
                for offset in 0..members.len() {
                    let sub = members[(start + offset) % members.len()];
                    if self.deliver(sub, msg, echo, &mut finished) {
                        delivered += 1;
                        break;
                    }
                }
            }
        }
        for sub in finished {
            remove_sub(&self.shared, &sub);
        }
        self.shared.counters.msgs_out.inc_by(delivered);
        delivered
    }

    fn deliver(
        &self,
        sub: &Arc<Subscription>,
        msg: &Arc<Publish>,
        echo: bool,
        finished: &mut Vec<Arc<Subscription>>,
    ) -> bool {
        if !echo && sub.out.client_id == self.id {
            return false;
        }
        if let Some(grants) = sub.out.peer.get().and_then(|peer| peer.grants.as_deref())
            && grants.has_subscribe_deny()
            && grants.withholds(&msg.subject)
        {
            return false;
        }
        let max = sub.max.load(Ordering::Relaxed);
        let count = sub.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if max != 0 && count > max {
            return false;
        }
        let size = server::msg_header_len(&msg.subject, &sub.sid, msg.reply.as_deref())
            + msg.payload.len()
            + 2;
        let frame = Frame::Msg { msg: msg.clone(), sid: sub.sid.clone() };
        if !sub.out.push(frame, size, &self.shared) {
            return false;
        }
        if max != 0 && count == max {
            finished.push(sub.clone());
        }
        true
    }

    /// Sends the 503 status message to the publisher's own subscription on the reply subject,
    /// as nats-server does for clients that asked for it.
    fn no_responders(&self, msg: &Publish) {
        let Some(reply) = msg.reply.as_deref() else {
            return;
        };
        let sid = {
            let index = read_index(&self.shared);
            let found = index.matches(reply);
            found
                .plain
                .iter()
                .chain(found.groups.iter().flat_map(|(_, members)| members.iter()))
                .find(|sub| sub.out.client_id == self.id)
                .map(|sub| sub.sid.clone())
        };
        let Some(sid) = sid else { return };
        let headers = server::no_responders_headers(&msg.subject);
        let status = Arc::new(Publish {
            subject: reply.to_owned(),
            reply: None,
            header_len: Some(headers.len()),
            payload: Bytes::from(headers),
        });
        let size = server::msg_header_len(reply, &sid, None) + status.payload.len() + 2;
        self.out.push(Frame::Msg { msg: status, sid }, size, &self.shared);
    }

    fn unsubscribe_all(&mut self) {
        for (_, sub) in self.subs.drain() {
            remove_sub(&self.shared, &sub);
        }
    }
}

fn read_index(
    shared: &Shared,
) -> std::sync::RwLockReadGuard<'_, crate::index::SubjectIndex<Arc<Subscription>>> {
    shared.index.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_index(
    shared: &Shared,
) -> std::sync::RwLockWriteGuard<'_, crate::index::SubjectIndex<Arc<Subscription>>> {
    shared.index.write().unwrap_or_else(PoisonError::into_inner)
}

/// Removes `sub` from the index if it is still there (auto-unsubscribe may have beaten the
/// connection to it).
fn remove_sub(shared: &Shared, sub: &Subscription) {
    let removed = write_index(shared).remove(&sub.subject, sub.queue.as_deref(), sub.id);
    if removed.is_some() {
        shared.counters.subscriptions.dec();
    }
}

/// The wall clock in Unix seconds, which credential ends are written in.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}
