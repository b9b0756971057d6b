//! The built-in `puppet` agent: runs, enables, disables and reports on the node's Puppet agent
//! through `cohort-puppet`, reading and writing Puppet's own files so `puppet agent --enable`
//! and Cohort agree.

use std::sync::Arc;

use cohort_ddl::AgentDdl;
use cohort_proto::StatusCode;
use cohort_puppet::runonce::RunRequest;
use cohort_puppet::{PuppetAgent, PuppetConfig};
use serde_json::{Map, Value, json};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};

/// The `puppet` agent.
#[derive(Debug)]
pub struct Puppet {
    ddl: Arc<AgentDdl>,
    agent: PuppetAgent,
}

impl Puppet {
    /// The agent with its embedded DDL.
    pub fn new(config: PuppetConfig) -> Option<Puppet> {
        Some(Puppet { ddl: cohort_ddl::builtin::find("puppet")?, agent: PuppetAgent::new(config) })
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn refused(message: String, data: Map<String, Value>) -> Outcome {
    Outcome { status: StatusCode::Aborted, message, data }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a time in seconds since the epoch.
fn minute_text(secs: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

impl Agent for Puppet {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            match request.action.as_str() {
                "runonce" => self.runonce(&request).await,
                "enable" => match self.agent.enable().await {
                    Ok(status) => Outcome::ok(object(json!({"status": status, "enabled": true}))),
                    Err(err) => refused(err.0, Map::new()),
                },
                "disable" => self.disable(&request).await,
                "status" => match self.agent.status().await {
                    Ok(status) => {
                        Outcome::ok(object(serde_json::to_value(status).unwrap_or_default()))
                    }
                    Err(err) => refused(err.0, Map::new()),
                },
                "last_run_summary" => self.last_run_summary(&request).await,
                other => Outcome::fail(
                    StatusCode::UnknownAction,
                    format!("Unknown action '{other}' for agent 'puppet'"),
                ),
            }
        })
    }
}

impl Puppet {
    async fn runonce(&self, request: &ActionRequest) -> Outcome {
        let run: RunRequest = match serde_json::from_value(Value::Object(request.data.clone())) {
            Ok(run) => run,
            Err(err) => return Outcome::fail(StatusCode::InvalidData, err.to_string()),
        };
        match self.agent.runonce(&run).await {
            Ok(started) => Outcome::ok(object(json!({
                "summary": started.summary,
                "initiated_at": started.initiated_at,
            }))),
            Err(err) => refused(err.0, Map::new()),
        }
    }

    async fn disable(&self, request: &ActionRequest) -> Outcome {
        let message = match request.data.get("message").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => text.to_owned(),
            _ => {
                let now = cohort_puppet::host::unix_now();
                format!("Disabled via Cohort by {} at {}", request.caller, minute_text(now))
            }
        };
        match self.agent.disable(&message).await {
            Ok(status) => Outcome::ok(object(json!({"status": status, "enabled": false}))),
            Err(err) => refused(err.0, object(json!({"enabled": false}))),
        }
    }

    async fn last_run_summary(&self, request: &ActionRequest) -> Outcome {
        let (summary, details) = match self.agent.last_run().await {
            Ok(found) => found,
            Err(err) => return refused(err.0, Map::new()),
        };
        let Some(summary) = summary else {
            return refused("Puppet has not completed a run on this node".into(), Map::new());
        };
        let now = cohort_puppet::host::unix_now();
        let lastrun = summary.last_run().unwrap_or(0);
        let with_logs = request.data.get("logs").and_then(Value::as_bool).unwrap_or(false);
        let raw = json!({
            "version": summary.version,
            "resources": summary.resources,
            "time": summary.time,
            "changes": summary.changes,
            "events": summary.events,
        });
        let mut data = object(json!({
            "out_of_sync_resources": summary.count("out_of_sync"),
            "failed_resources": summary.count("failed"),
            "corrected_resources": summary.count("corrective_change"),
            "changed_resources": summary.count("changed"),
            "total_resources": summary.count("total").max(0),
            "total_time": summary.time.get("total").copied().unwrap_or(0.0),
            "config_retrieval_time": summary.time.get("config_retrieval").copied().unwrap_or(0.0),
            "lastrun": lastrun,
            "since_lastrun": if lastrun > 0 { (now - lastrun).max(0) } else { 0 },
            "config_version": summary.config_version(),
            "type_distribution": details.type_distribution,
            "summary": raw,
        }));
        if with_logs {
            data.insert("logs".into(), serde_json::to_value(&details.logs).unwrap_or_default());
        }
        Outcome::ok(data)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn minute_text() {
        assert_eq!(super::minute_text(0), "1970-01-01 00:00");
        assert_eq!(super::minute_text(1_796_227_898), "2026-12-02 16:11");
    }
}
