//! Cohort's embedded broker: a server for the NATS core client protocol, for one machine and
//! small fleets, so Cohort works with nothing else installed.
//!
//! Clients (async-nats, or any NATS client) cannot tell it from nats-server for what Cohort uses:
//! pub/sub with `*`/`>` wildcards, queue groups, request/reply with headers and the no-responders
//! status, auto-unsubscribe, verbose and pedantic modes, token, user/password and nkey
//! authentication with per-user permissions, and TLS. It has no notion of Cohort's own messages
//! (an architecture invariant): it meets the rest of Cohort only on the wire. Past one machine,
//! users point everything at a nats-server cluster instead.
//!
//! Design: one task per connection owns its socket and its parser; publishing appends frames
//! to the bounded outbound queues of the matching connections (never awaiting), and each
//! connection's task writes its own queue in batches. See [`Broker`] for the entry point.

pub mod config;
pub mod metrics;

mod auth;
mod conn;
mod index;
mod server;
mod tls;

pub use config::Config;
pub use metrics::{Counters, Snapshot};
pub use server::{Broker, BrokerError, Reloader, RunningBroker};
