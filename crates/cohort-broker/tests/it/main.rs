//! Integration tests of the broker over real sockets.
//!
//! `conformance` runs one suite twice, against our broker and against the real `nats-server`,
//! with async-nats as the client: whatever passes on one must pass on the other. `abuse` and
//! `limits` check what happens to bad and slow clients, and that the rest keep being served.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod abuse;
mod conformance;
mod harness;
mod limits;
