//! The built-in `nrpe` agent: runs the checks the node's NRPE configuration defines, as NRPE
//! would, and reports state, output and parsed performance data.
//!
//! The configuration is re-read on every call, so checks added by Puppet apply at once. A
//! command runs through `/bin/sh -c` in its own process group, killed whole at the timeout.
//! Exit codes 0-3 are OK, WARNING, CRITICAL, UNKNOWN; anything else, a timeout, empty output or
//! a missing plugin is UNKNOWN with a message saying why (NRPE's wording). Multi-line output is
//! kept whole (the MCollective agent dropped all but the first line). Arguments (`$ARGn$`) are
//! refused unless `nrpe_allow_arguments` is set, and then limited to characters the shell
//! neither splits, globs, comments out nor expands (NRPE's looser rule only when
//! `nrpe_unsafe_arguments` says so).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_ddl::AgentDdl;
use cohort_nagios::State;
use cohort_proto::StatusCode;
use serde_json::{Map, Value, json};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};

/// How the nrpe agent finds and runs checks.
#[derive(Debug, Clone)]
pub struct NrpeSettings {
    /// NRPE configuration files and directories, read in order (includes followed); empty
    /// reads the stock places (`cohort_nagios::nrpe::STOCK`) that exist.
    pub config: Vec<PathBuf>,
    /// How long one check may run.
    pub timeout: Duration,
    /// Whether `$ARGn$` arguments are accepted.
    pub allow_arguments: bool,
    /// Which argument values are.
    pub argument_rule: cohort_nagios::nrpe::ArgumentRule,
}

impl Default for NrpeSettings {
    fn default() -> NrpeSettings {
        NrpeSettings {
            config: Vec::new(),
            timeout: Duration::from_secs(60),
            allow_arguments: false,
            argument_rule: cohort_nagios::nrpe::ArgumentRule::Strict,
        }
    }
}

/// The `nrpe` agent.
#[derive(Debug)]
pub struct Nrpe {
    ddl: Arc<AgentDdl>,
    settings: NrpeSettings,
}

impl Nrpe {
    /// The agent with its embedded DDL.
    pub fn new(settings: NrpeSettings) -> Option<Nrpe> {
        Some(Nrpe { ddl: cohort_ddl::builtin::find("nrpe")?, settings })
    }
}

/// Most output kept from one check (NRPE reads up to 64 KiB).
const MAX_OUTPUT: usize = 64 * 1024;

impl Agent for Nrpe {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            match request.action.as_str() {
                "runcommand" => self.runcommand(&request).await,
                "list" => {
                    let loaded = cohort_nagios::nrpe::load(&self.settings.config);
                    let commands: Map<String, Value> =
                        loaded.commands.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
                    let sources: Map<String, Value> = loaded
                        .sources
                        .into_iter()
                        .map(|(k, v)| (k, Value::from(v.display().to_string())))
                        .collect();
                    let mut data = Map::new();
                    data.insert("commands".into(), Value::Object(commands));
                    data.insert("sources".into(), Value::Object(sources));
                    Outcome::ok(data)
                }
                other => Outcome::fail(
                    StatusCode::UnknownAction,
                    format!("Unknown action '{other}' for agent 'nrpe'"),
                ),
            }
        })
    }
}

/// The reply of a check: status code 0 only when the check is OK, as in the original agent, so
/// the default display (failed replies) shows the problems.
fn reply(command: &str, state: State, output: &str, long_output: &str, perfdata: &str) -> Outcome {
    let (perf, _) = cohort_nagios::output::parse_perfdata(perfdata);
    let data = json!({
        "command": command,
        "exitcode": state.code(),
        "status": state.label(),
        "output": output,
        "long_output": long_output,
        "perfdata": perfdata,
        "perf": perf,
    });
    let data = match data {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let status = if state == State::Ok { StatusCode::Ok } else { StatusCode::Aborted };
    Outcome { status, message: state.label().to_owned(), data }
}

impl Nrpe {
    async fn runcommand(&self, request: &ActionRequest) -> Outcome {
        let name =
            request.data.get("command").and_then(Value::as_str).unwrap_or_default().to_owned();
        let args: Vec<String> = match request.data.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect(),
            Some(other) => vec![other.to_string()],
        };
        let loaded = cohort_nagios::nrpe::load(&self.settings.config);
        for warning in &loaded.warnings {
            tracing::warn!("nrpe configuration: {warning}");
        }
        let Some(template) = loaded.commands.get(&name) else {
            return reply(
                &name,
                State::Unknown,
                &format!("NRPE: Command '{name}' not defined"),
                "",
                "",
            );
        };
        if !args.is_empty() && !self.settings.allow_arguments {
            return reply(
                &name,
                State::Unknown,
                "NRPE: Command arguments are disabled on this node",
                "",
                "",
            );
        }
        let command_line =
            match cohort_nagios::nrpe::substitute(template, &args, self.settings.argument_rule) {
                Ok(line) => line,
                Err(err) => return reply(&name, State::Unknown, &format!("NRPE: {err}"), "", ""),
            };
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&command_line)
            .env("NRPE_MULTILINESUPPORT", "1")
            .env("NRPE_PROGRAMVERSION", concat!("cohort ", env!("CARGO_PKG_VERSION")));
        let timeout = self.settings.timeout.min(request.timeout);
        let finished = match cohort_exec::run(command, None, timeout, MAX_OUTPUT).await {
            Ok(finished) => finished,
            Err(cohort_exec::ExecError::TimedOut(after)) => {
                return reply(
                    &name,
                    State::Unknown,
                    &format!("NRPE: Command timed out after {} seconds", after.as_secs_f64()),
                    "",
                    "",
                );
            }
            Err(err) => return reply(&name, State::Unknown, &format!("NRPE: {err}"), "", ""),
        };
        let stdout = String::from_utf8_lossy(&finished.stdout).into_owned();
        let code = finished.status.code();
        let state = State::from_exit(i64::from(code.unwrap_or(3)));
        let split = cohort_nagios::output::split(&stdout);
        let mut summary = split.summary.clone();
        match code {
            Some(126) => {
                summary =
                    format!("NRPE: exit code 126 - plugin {command_line:?} may not be executable")
            }
            Some(127) => {
                summary = format!("NRPE: exit code 127 - plugin {command_line:?} may be missing")
            }
            Some(code) if !(0..=3).contains(&code) => {
                summary = format!("NRPE: exit code {code} is out of bounds: {summary}")
            }
            None => summary = format!("NRPE: check {}: {summary}", finished.describe_exit()),
            _ => {}
        }
        if summary.trim().is_empty() {
            return reply(&name, State::Unknown, "NRPE: Unable to read output", "", "");
        }
        reply(&name, state, &summary, &split.long_output.join("\n"), &split.perfdata)
    }
}
