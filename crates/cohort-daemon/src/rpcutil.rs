//! The built-in `rpcutil` agent: ping, inventory, facts, daemon statistics, agent metadata,
//! collective membership and configuration items.

use std::sync::Arc;
use std::time::SystemTime;

use cohort_ddl::AgentDdl;
use cohort_proto::{StatusCode, rpcutil};
use serde_json::{Map, Value, json};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};
use crate::stats::Stats;

/// The `rpcutil` agent.
#[derive(Debug)]
pub struct Rpcutil {
    ddl: Arc<AgentDdl>,
}

impl Rpcutil {
    /// The agent with its embedded DDL.
    pub fn new() -> Option<Rpcutil> {
        Some(Rpcutil { ddl: cohort_ddl::builtin::find("rpcutil")? })
    }
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn fact_value(facts: &Map<String, Value>, path: &str) -> Value {
    cohort_filter::lookup(facts, path).cloned().unwrap_or(Value::Null)
}

impl Agent for Rpcutil {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move { action(ctx, &request) })
    }
}

fn action(ctx: &Context, request: &ActionRequest) -> Outcome {
    let agent_names: Vec<String> = ctx.agents.iter().map(|ddl| ddl.metadata.name.clone()).collect();
    let collectives: Vec<String> = ctx.collectives.iter().map(|c| c.as_str().to_owned()).collect();
    let main = ctx.collectives.first().map(|c| c.as_str().to_owned()).unwrap_or_default();
    let data = match request.action.as_str() {
        "ping" => json!({ "pong": secs(SystemTime::now()) }),
        "inventory" => rpcutil::data(&rpcutil::Inventory {
            agents: agent_names,
            facts: ctx.facts.facts.clone(),
            classes: ctx.facts.classes.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            main_collective: main,
            collectives,
            data_plugins: Vec::new(),
        })
        .into(),
        "get_fact" => {
            let fact = request.data.get("fact").and_then(Value::as_str).unwrap_or_default();
            rpcutil::data(&rpcutil::FactValue {
                fact: fact.to_owned(),
                value: fact_value(&ctx.facts.facts, fact),
            })
            .into()
        }
        "get_facts" => {
            let names = request.data.get("facts").and_then(Value::as_str).unwrap_or_default();
            let values: Map<String, Value> = names
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(|name| (name.to_owned(), fact_value(&ctx.facts.facts, name)))
                .collect();
            json!({ "values": values })
        }
        "daemon_stats" => {
            let stats = &ctx.stats;
            rpcutil::data(&rpcutil::DaemonStats {
                agents: agent_names,
                pid: std::process::id(),
                configfile: ctx
                    .config_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                starttime: secs(ctx.started),
                total: Stats::get(&stats.total),
                passed: Stats::get(&stats.passed),
                filtered: Stats::get(&stats.filtered),
                ttlexpired: Stats::get(&stats.ttl_expired),
                invalid: Stats::get(&stats.invalid),
                replies: Stats::get(&stats.replies),
                unverified: Stats::get(&stats.unverified),
                replayed: Stats::get(&stats.replayed),
                unauthorized: Stats::get(&stats.unauthorized),
                audit_suppressed: Stats::get(&stats.audit_suppressed),
            })
            .into()
        }
        "agent_inventory" => {
            let agents: Vec<Value> = ctx
                .agents
                .iter()
                .map(|ddl| {
                    let meta = &ddl.metadata;
                    let or_unknown = |text: &str| {
                        if text.is_empty() { "unknown".to_owned() } else { text.to_owned() }
                    };
                    json!({
                        "agent": meta.name,
                        "name": meta.name,
                        "description": or_unknown(&meta.description),
                        "author": or_unknown(&meta.author),
                        "license": or_unknown(&meta.license),
                        "version": or_unknown(&meta.version),
                        "url": or_unknown(&meta.url),
                        "timeout": meta.timeout,
                    })
                })
                .collect();
            json!({ "agents": agents })
        }
        "collective_info" => {
            rpcutil::data(&rpcutil::CollectiveInfo { main_collective: main, collectives }).into()
        }
        "get_config_item" => {
            let item = request.data.get("item").and_then(Value::as_str).unwrap_or_default();
            match ctx.config_items.get(item) {
                Some(value) => json!({ "item": item, "value": value }),
                None => {
                    return Outcome::fail(
                        StatusCode::Aborted,
                        format!("Unknown config property {item}"),
                    );
                }
            }
        }
        other => {
            return Outcome::fail(
                StatusCode::UnknownAction,
                format!("Unknown action '{other}' for agent 'rpcutil'"),
            );
        }
    };
    Outcome::ok(object(data))
}
