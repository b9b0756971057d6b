//! Broker counters, readable from the library and served in Prometheus text format.
//!
//! Counters are prometheus-client atomics shared by every connection task; routing adds its
//! per-message counts once per published message rather than once per subscriber, to keep
//! contended atomic operations off the fan-out path.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Live counters of one broker.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) connections_total: Counter,
    pub(crate) connections: Gauge,
    pub(crate) subscriptions: Gauge,
    pub(crate) subscriptions_refused: Counter,
    pub(crate) user_limits_refused: Counter,
    pub(crate) msgs_in: Counter,
    pub(crate) msgs_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) slow_consumers: Counter,
    pub(crate) auth_failures: Counter,
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections open now.
    pub connections: i64,
    /// Subscriptions registered now.
    pub subscriptions: i64,
    /// Subscriptions refused for `max_subscriptions`.
    pub subscriptions_refused: u64,
    /// Connections and subscriptions refused for a user's limits (`max_user_connections`,
    /// `max_user_subscriptions`).
    pub user_limits_refused: u64,
    /// Messages received from clients.
    pub msgs_in: u64,
    /// Messages delivered to clients.
    pub msgs_out: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Payload bytes delivered to clients.
    pub bytes_out: u64,
    /// Clients disconnected because they could not keep up.
    pub slow_consumers: u64,
    /// Connections refused for bad credentials.
    pub auth_failures: u64,
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections_total: self.connections_total.get(),
            connections: self.connections.get(),
            subscriptions: self.subscriptions.get(),
            subscriptions_refused: self.subscriptions_refused.get(),
            user_limits_refused: self.user_limits_refused.get(),
            msgs_in: self.msgs_in.get(),
            msgs_out: self.msgs_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            slow_consumers: self.slow_consumers.get(),
            auth_failures: self.auth_failures.get(),
        }
    }

    /// The counters in Prometheus/OpenMetrics text exposition format.
    pub fn prometheus_text(&self) -> String {
        let mut registry = Registry::with_prefix("cohort_broker");
        registry.register("connections", "Connections accepted", self.connections_total.clone());
        registry.register("open_connections", "Connections open now", self.connections.clone());
        registry.register(
            "subscriptions",
            "Subscriptions registered now",
            self.subscriptions.clone(),
        );
        registry.register(
            "subscriptions_refused",
            "Subscriptions refused over max_subscriptions",
            self.subscriptions_refused.clone(),
        );
        registry.register(
            "user_limits_refused",
            "Connections and subscriptions refused over a user's limits",
            self.user_limits_refused.clone(),
        );
        registry.register("messages_in", "Messages received from clients", self.msgs_in.clone());
        registry.register("messages_out", "Messages delivered to clients", self.msgs_out.clone());
        registry.register("bytes_in", "Payload bytes received", self.bytes_in.clone());
        registry.register("bytes_out", "Payload bytes delivered", self.bytes_out.clone());
        registry.register(
            "slow_consumers",
            "Clients disconnected for not keeping up",
            self.slow_consumers.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused for bad credentials",
            self.auth_failures.clone(),
        );
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let counters = counters.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    counters.prometheus_text(),
                )
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
