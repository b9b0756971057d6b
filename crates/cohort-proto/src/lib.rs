//! Cohort's wire vocabulary: the JSON envelopes nodes and clients exchange, the subjects they
//! use on the bus, the filter a request carries, identifiers and status codes, and how every
//! member of the bus keeps its connection (PING interval, reconnection backoff).
//!
//! This crate is the API boundary between every node and every client of every version, so its
//! types change only deliberately: each envelope carries a protocol id and version, golden
//! examples of every message kind live in `test_data/wire/` (checked by tests), and
//! `docs/protocol.md` describes the format. Pure data: no I/O, no clock (times are passed in).

mod backoff;
mod envelope;
mod filter;
mod ids;
pub mod rpcutil;
mod subjects;

pub use backoff::{PING_INTERVAL, reconnect_delay};
pub use envelope::{
    DEFAULT_MAX_TTL_SECS, DISCOVERY_AGENT, PROTOCOL, Registration, Reply, ReplyProof, Request,
    RpcBody, StatusCode, VERSION, WireError, now_ms,
};
pub use filter::{Expr, FactFilter, FactOp, Filter};
pub use ids::{AgentName, Collective, IdError, Identity, RequestId};
pub use subjects::{
    broadcast_subject, caller_hash, node_subject, registration_subject, reply_subject,
};
