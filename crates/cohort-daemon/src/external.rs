//! External agents: an executable plus its DDL in a directory, in any language.
//!
//! Layout: `<agents_dir>/<name>/<name>.json` (the DDL, Choria's JSON schema) and
//! `<agents_dir>/<name>/<name>` (the executable). For each call the daemon runs the executable
//! in its own process group with the request as JSON on stdin and reads one JSON reply from
//! stdout:
//!
//! ```text
//! stdin:  {"protocol":"io.cohort.agent.request","version":1,"agent":"x","action":"y",
//!          "request_id":"...","caller":"user=alice","sender":"ops1","collective":"cohort",
//!          "timeout":10.0,"data":{...}}
//! stdout: {"statuscode":0,"statusmsg":"OK","data":{...}}
//! ```
//!
//! Environment: `COHORT_AGENT`, `COHORT_ACTION`, `COHORT_REQUEST_ID`, `COHORT_CALLER`. The DDL
//! timeout is enforced by killing the whole process group; stdout beyond the configured cap
//! also kills it. A crash, a timeout, a non-zero exit without a reply, or a reply that is not
//! JSON becomes a status-5 reply naming the cause; the daemon itself is never affected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohort_ddl::AgentDdl;
use cohort_proto::StatusCode;
use serde_json::{Map, Value, json};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};

/// Protocol id of the request document sent to external agents.
pub const AGENT_PROTOCOL: &str = "io.cohort.agent.request";

/// An agent implemented by an executable.
#[derive(Debug)]
pub struct ExternalAgent {
    ddl: Arc<AgentDdl>,
    executable: PathBuf,
    max_output: usize,
}

/// An agent directory that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Loads every agent under `dir`. Agents that fail to load are reported and skipped; the
/// others load regardless.
pub fn scan(dir: &Path, max_output: usize) -> (Vec<ExternalAgent>, Vec<LoadError>) {
    let mut agents = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(LoadError { path: dir.to_owned(), message: err.to_string() });
            return (agents, errors);
        }
    };
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for agent_dir in dirs {
        match load(&agent_dir, max_output) {
            Ok(agent) => agents.push(agent),
            Err(err) => errors.push(err),
        }
    }
    (agents, errors)
}

fn load(agent_dir: &Path, max_output: usize) -> Result<ExternalAgent, LoadError> {
    let name = agent_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let ddl_path = agent_dir.join(format!("{name}.json"));
    let fail = |path: &Path, message: String| LoadError { path: path.to_owned(), message };
    let text =
        std::fs::read_to_string(&ddl_path).map_err(|err| fail(&ddl_path, err.to_string()))?;
    let ddl = AgentDdl::from_json(&text).map_err(|err| fail(&ddl_path, err.to_string()))?;
    if ddl.metadata.name != name {
        return Err(fail(
            &ddl_path,
            format!("DDL names agent {:?} but lives in directory {name:?}", ddl.metadata.name),
        ));
    }
    let executable = agent_dir.join(&name);
    let meta = std::fs::metadata(&executable).map_err(|err| fail(&executable, err.to_string()))?;
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 || !meta.is_file()
    {
        return Err(fail(&executable, "not an executable file".to_owned()));
    }
    Ok(ExternalAgent { ddl: Arc::new(ddl), executable, max_output })
}

impl Agent for ExternalAgent {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(self.run(request))
    }
}

impl ExternalAgent {
    async fn run(&self, request: ActionRequest) -> Outcome {
        let input = json!({
            "protocol": AGENT_PROTOCOL,
            "version": 1,
            "agent": request.agent,
            "action": request.action,
            "request_id": request.id.as_str(),
            "caller": request.caller,
            "sender": request.sender,
            "collective": request.collective.as_str(),
            "timeout": request.timeout.as_secs_f64(),
            "data": request.data,
        });
        // Its own cgroup where there is one to have: at the deadline everything it started
        // dies, even what left its process group with setsid.
        let cgroup = cohort_exec::Cgroup::create();
        let mut command = match &cgroup {
            Some(cgroup) => cgroup.command(&self.executable),
            None => tokio::process::Command::new(&self.executable),
        };
        command
            .current_dir(self.executable.parent().unwrap_or(Path::new("/")))
            .env("COHORT_AGENT", &request.agent)
            .env("COHORT_ACTION", &request.action)
            .env("COHORT_REQUEST_ID", request.id.as_str())
            .env("COHORT_CALLER", &request.caller);
        let body = serde_json::to_vec(&input).unwrap_or_default();
        let finished = match cohort_exec::run_in(
            command,
            cgroup,
            Some(body),
            request.timeout,
            self.max_output,
        )
        .await
        {
            Ok(finished) => finished,
            Err(cohort_exec::ExecError::TimedOut(timeout)) => {
                return Outcome::fail(
                    StatusCode::UnknownError,
                    format!("agent {} timed out after {timeout:?} and was killed", request.agent),
                );
            }
            Err(cohort_exec::ExecError::OutputTooLarge(max)) => {
                return Outcome::fail(
                    StatusCode::UnknownError,
                    format!("agent output exceeds {max} bytes"),
                );
            }
            Err(err) => {
                return Outcome::fail(
                    StatusCode::UnknownError,
                    format!("agent {}: {err}", self.executable.display()),
                );
            }
        };
        let stderr_tail =
            String::from_utf8_lossy(&finished.stderr).lines().last().unwrap_or_default().to_owned();
        if !finished.stderr.is_empty() {
            tracing::warn!(
                agent = %request.agent,
                action = %request.action,
                "agent stderr: {}",
                String::from_utf8_lossy(&finished.stderr).trim_end()
            );
        }
        parse_reply(&finished, &stderr_tail)
    }
}

/// Interprets what an external agent wrote and how it exited.
fn parse_reply(finished: &cohort_exec::Finished, stderr_tail: &str) -> Outcome {
    let out = &finished.stdout[..];
    let exit = finished.status;
    let describe_exit = || finished.describe_exit();
    if out.iter().all(u8::is_ascii_whitespace) {
        let mut message = format!("agent {} without a reply", describe_exit());
        if !stderr_tail.is_empty() {
            message.push_str(&format!(": {stderr_tail}"));
        }
        return Outcome::fail(StatusCode::UnknownError, message);
    }
    let reply: Value = match serde_json::from_slice(out) {
        Ok(reply) => reply,
        Err(err) => {
            return Outcome::fail(
                StatusCode::UnknownError,
                format!("agent reply is not JSON: {err}"),
            );
        }
    };
    let Value::Object(mut reply) = reply else {
        return Outcome::fail(StatusCode::UnknownError, "agent reply is not a JSON object");
    };
    let status = match reply.get("statuscode") {
        None => StatusCode::Ok,
        Some(code) => match code.as_u64() {
            Some(code) if code <= 5 => StatusCode::from_code(code),
            _ => {
                return Outcome::fail(
                    StatusCode::UnknownError,
                    format!("agent reply has invalid statuscode {code}"),
                );
            }
        },
    };
    let message =
        reply.get("statusmsg").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
            if status == StatusCode::Ok { "OK".to_owned() } else { status.label().to_owned() }
        });
    let data = match reply.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => {
            return Outcome::fail(
                StatusCode::UnknownError,
                "agent reply data is not a JSON object",
            );
        }
    };
    if !exit.success() && status == StatusCode::Ok {
        return Outcome {
            status: StatusCode::UnknownError,
            message: format!("agent {} after replying OK", describe_exit()),
            data,
        };
    }
    Outcome { status, message, data }
}

#[cfg(test)]
mod tests;
