//! The node daemon as a library: what `cohort daemon` runs, and what `cohort demo` and the fleet
//! simulator run many times in one process.
//!
//! A node receives requests from the bus, and for each one runs the pipeline in [`pipeline`]:
//! decode → filter → verify → TTL → replay → authorize → agent and action lookup → DDL
//! validation → dispatch (with the DDL timeout) → audit → signed reply. Partial failure is data: an agent that fails, crashes or hangs
//! produces a reply with a status code, never a daemon failure. [`run`] owns the bus side:
//! subscriptions, bounded concurrency, registration, reloads and graceful shutdown.

pub mod agent;
pub mod assemble;
pub mod audit;
pub mod config;
pub mod external;
pub mod facts;
pub mod metrics;
pub mod nrpe;
pub mod pipeline;
pub mod provision;
pub mod puppet;
pub mod resource;
pub mod rpcutil;
pub mod run;
pub mod security;
pub mod sim;
pub mod stats;

pub use config::{Config, ConfigError};
pub use pipeline::NodeState;
