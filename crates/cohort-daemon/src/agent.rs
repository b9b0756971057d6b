//! The agent interface: what the pipeline hands an agent and what it gets back.
//!
//! Agents see only their request and a [`Context`] snapshot of the node; they cannot reach the
//! bus, the registry or other agents (an architecture invariant).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cohort_ddl::AgentDdl;
use cohort_proto::{Collective, Identity, RequestId, StatusCode};
use serde_json::{Map, Value};

use crate::facts::Facts;
use crate::stats::Stats;

/// One validated action call.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// Request id.
    pub id: RequestId,
    /// Agent called.
    pub agent: String,
    /// Action called.
    pub action: String,
    /// Inputs, validated against the DDL with defaults applied.
    pub data: Map<String, Value>,
    /// Who asked.
    pub caller: String,
    /// Host the request came from.
    pub sender: String,
    /// Collective it arrived in.
    pub collective: Collective,
    /// How long the action may run (the DDL timeout).
    pub timeout: Duration,
}

/// What an action produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Status code.
    pub status: StatusCode,
    /// Human-readable status; `OK` on success.
    pub message: String,
    /// Outputs.
    pub data: Map<String, Value>,
}

impl Outcome {
    /// Success with outputs.
    pub fn ok(data: Map<String, Value>) -> Outcome {
        Outcome { status: StatusCode::Ok, message: "OK".to_owned(), data }
    }

    /// A failure with no outputs.
    pub fn fail(status: StatusCode, message: impl Into<String>) -> Outcome {
        Outcome { status, message: message.into(), data: Map::new() }
    }
}

/// What an agent may know about the node it runs on.
#[derive(Debug, Clone)]
pub struct Context {
    /// The node.
    pub identity: Identity,
    /// Its collectives, main first.
    pub collectives: Vec<Collective>,
    /// Its facts and classes now.
    pub facts: Arc<Facts>,
    /// DDLs of every agent it hosts.
    pub agents: Vec<Arc<AgentDdl>>,
    /// Daemon counters.
    pub stats: Arc<Stats>,
    /// When the daemon started.
    pub started: SystemTime,
    /// The configuration file, if one was read.
    pub config_file: Option<PathBuf>,
    /// Configuration items `rpcutil get_config_item` may reveal.
    pub config_items: Arc<Map<String, Value>>,
}

/// A boxed future of an outcome, what [`Agent::call`] returns.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// An agent: a DDL and a way to run its actions.
pub trait Agent: Send + Sync {
    /// The agent's DDL.
    fn ddl(&self) -> &Arc<AgentDdl>;

    /// Whether the agent is offered now. An inactive agent is not discovered and its requests
    /// are refused as for an agent the node does not have; checked whenever facts are.
    fn active(&self) -> bool {
        true
    }

    /// Runs one action. Failures are outcomes with a status code, never panics; the pipeline
    /// enforces the timeout and the action's existence in the DDL before calling.
    fn call<'a>(&'a self, ctx: &'a Context, request: ActionRequest) -> CallFuture<'a>;
}
