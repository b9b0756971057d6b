//! The listener: binds, accepts connections up to the configured limit, hands each to its own
//! task, serves metrics, and shuts down gracefully.
//!
//! Shutdown order: stop accepting, tell every connection to write what it has queued (bounded
//! by `shutdown_grace`) and close, then return. Connections never outlive [`Broker::run`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::conn::{self, Subscription};
use crate::index::SubjectIndex;
use crate::metrics::{self, Counters};

/// Why the broker could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    auth: std::sync::RwLock<Arc<Auth>>,
    /// Bumped on every authorization reload; connections re-check their login when it moves.
    pub(crate) reloads: tokio::sync::watch::Sender<u64>,
    pub(crate) index: RwLock<SubjectIndex<Arc<Subscription>>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) server_id: String,
    pub(crate) server_name: String,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) next_client_id: AtomicU64,
    pub(crate) next_sub_id: AtomicU64,
    /// Connections open now, checked against `max_connections` on accept.
    pub(crate) open: AtomicUsize,
    /// What each logged-in user holds, against the per-user limits. Keyed by the names the
    /// authorization admits, so bounded by it.
    pub(crate) users: std::sync::Mutex<std::collections::HashMap<String, Arc<UserUsage>>>,
    pub(crate) local_addr: SocketAddr,
}

/// Connections and subscriptions one user holds now.
#[derive(Debug, Default)]
pub(crate) struct UserUsage {
    pub(crate) connections: AtomicUsize,
    pub(crate) subscriptions: AtomicUsize,
}

impl Shared {
    /// The usage record of user `name`.
    pub(crate) fn usage(&self, name: &str) -> Arc<UserUsage> {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        users.entry(name.to_owned()).or_default().clone()
    }

    /// The authorization in force.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Replaces a running broker's authorization (users, nkeys, permissions, token): new
/// connections use the new one at once, and every connected client is checked again, those no
/// longer admitted, or admitted with other permissions, being disconnected (they reconnect
/// under the new rules). Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    /// Installs `authorization` (`None`: no authentication) after validating it; on error the
    /// old one stays in force.
    pub fn set_authorization(
        &self,
        authorization: Option<&crate::config::Authorization>,
    ) -> Result<(), ConfigError> {
        if let Some(authorization) = authorization {
            authorization.validate()?;
        }
        let auth = Arc::new(Auth::new(authorization));
        *self.shared.auth.write().unwrap_or_else(std::sync::PoisonError::into_inner) = auth;
        self.shared.reloads.send_modify(|generation| *generation += 1);
        Ok(())
    }
}

/// A bound broker, ready to [`run`](Broker::run).
pub struct Broker {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Broker {
    /// Validates `config`, loads TLS material and binds the listeners. Port 0 picks a free port;
    /// [`Broker::local_addr`] tells which.
    pub async fn bind(config: Config) -> Result<Broker, BrokerError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
        let metrics_listener = match config.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BrokerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let server_id = nkeys::KeyPair::new_server().public_key();
        let server_name = config.server_name.clone().unwrap_or_else(|| server_id.clone());
        let shared = Arc::new(Shared {
            auth: std::sync::RwLock::new(Arc::new(Auth::new(config.authorization.as_ref()))),
            reloads: tokio::sync::watch::Sender::new(0),
            config,
            index: RwLock::new(SubjectIndex::default()),
            counters: Arc::new(Counters::default()),
            server_id,
            server_name,
            tls,
            next_client_id: AtomicU64::new(1),
            next_sub_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            users: std::sync::Mutex::default(),
            local_addr,
        });
        Ok(Broker { listener, metrics_listener, shared })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address metrics are served on, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The broker's live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// A handle to change the authorization while the broker runs.
    pub fn reloader(&self) -> Reloader {
        Reloader { shared: self.shared.clone() }
    }

    /// Serves clients until `shutdown` completes, then closes every connection gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Broker { listener, metrics_listener, shared } = self;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        if let Some(metrics_listener) = metrics_listener {
            let counters = shared.counters.clone();
            let stopped = stop.clone().cancelled_owned();
            tracker.spawn(async move {
                if let Err(err) = metrics::serve_metrics(metrics_listener, counters, stopped).await
                {
                    tracing::error!("metrics server failed: {err}");
                }
            });
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tracker.spawn(conn::serve(tcp, peer, shared.clone(), stop.clone()));
                    }
                    Err(err) => {
                        // Out of file descriptors or a connection reset before accept: keep
                        // serving the clients we have, and do not spin while the cause lasts.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        stop.cancel();
        tracker.close();
        let grace = shared.config.shutdown_grace + Duration::from_secs(1);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
    }

    /// Runs the broker on the current tokio runtime in the background.
    pub fn spawn(self) -> RunningBroker {
        let addr = self.local_addr();
        let metrics_addr = self.metrics_addr();
        let counters = self.counters();
        let reloader = self.reloader();
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        let task = tokio::spawn(self.run(stopped));
        RunningBroker { addr, metrics_addr, counters, reloader, stop, task }
    }
}

/// A broker running in the background, as `cohort demo` and tests use it.
pub struct RunningBroker {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
    reloader: Reloader,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://host:port` for clients.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The metrics address, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The broker's live counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A handle to change the authorization while the broker runs.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Stops accepting, closes every connection gracefully and waits for that to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!("broker task failed: {err}");
        }
    }
}
