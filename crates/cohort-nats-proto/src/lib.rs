//! The NATS core client protocol as pure data: a parser for what clients send, an encoder for
//! what servers send, and the subject rules (validation and wildcard matching) both sides share.
//!
//! Nothing here does I/O, reads a clock or allocates per-subscriber copies of a payload: the
//! parser hands out payloads as reference-counted [`bytes::Bytes`] split off the read buffer, and
//! "need more bytes" is the normal `Ok(None)` outcome rather than an error. The broker drives this
//! codec from its socket tasks; the fuzz target and the property tests drive it directly.
//!
//! Behaviour follows nats-server 2.15 where the written protocol description is silent (error
//! texts, what closes a connection); the broker's conformance suite checks both side by side.

pub mod client;
pub mod server;
pub mod subject;

pub use client::{ClientOp, Connect, ParseError, Parser};
pub use server::Info;
