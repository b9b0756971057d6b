//! The built-in `resource` agent (and `puppetral`, its MCollective name, whose `do` is
//! `apply`): Puppet-style resources applied with `cohort-resource`, inside the node's
//! `[resource]` rules. The rules are checked after the caller's authorization and before
//! anything is read: a type not allowed is refused, a title outside the name patterns is
//! refused, and a resource Puppet manages is refused unless `allow_managed` is set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_ddl::AgentDdl;
use cohort_proto::StatusCode;
use cohort_resource::policy::{PuppetResources, ResourceConfig, Safety};
use cohort_resource::provider::Env;
use cohort_resource::{ApplyError, Resources};
use serde_json::{Map, Value};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};

/// How the resource agent is set up.
#[derive(Debug, Clone, Default)]
pub struct ResourceSettings {
    /// The `[resource]` table.
    pub config: ResourceConfig,
    /// Puppet's state directories, where `resources.txt` is looked for.
    pub puppet_state_dirs: Vec<PathBuf>,
}

/// The agent, under one of its two names.
#[derive(Debug)]
pub struct ResourceAgent {
    ddl: Arc<AgentDdl>,
    safety: Safety,
    engine: Resources,
    resources_txt: Vec<PathBuf>,
}

/// Inputs that are not resource attributes.
const NOT_ATTRIBUTES: &[&str] = &["type", "name", "noop", "process_results"];

impl ResourceAgent {
    /// The agent named `name` (`resource` or `puppetral`); `None` when its DDL is missing or
    /// the `[resource]` table is invalid (assembly checks it first and says why).
    pub fn new(name: &str, settings: &ResourceSettings) -> Option<ResourceAgent> {
        let safety = Safety::new(&settings.config).ok()?;
        let resources_txt = match &settings.config.puppet_resources {
            Some(path) => vec![path.clone()],
            None => {
                settings.puppet_state_dirs.iter().map(|dir| dir.join("resources.txt")).collect()
            }
        };
        Some(ResourceAgent {
            ddl: cohort_ddl::builtin::find(name)?,
            engine: Resources {
                env: Env {
                    exec_provider: safety.exec_provider,
                    command_timeout: Duration::from_secs(300),
                },
                puppet: cohort_resource::provider::find_puppet(settings.config.puppet.as_deref()),
            },
            safety,
            resources_txt,
        })
    }

    /// Puppet's `resources.txt`, when Puppet has run here.
    fn puppet_resources(&self) -> Option<PuppetResources> {
        self.resources_txt
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .map(|text| PuppetResources::parse(&text))
    }
}

fn text<'a>(data: &'a Map<String, Value>, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn fail(error: &ApplyError) -> Outcome {
    let status = match error {
        ApplyError::Invalid(_) => StatusCode::InvalidData,
        _ => StatusCode::Aborted,
    };
    Outcome::fail(status, error.to_string())
}

fn object(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Agent for ResourceAgent {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            let data = &request.data;
            let type_name = text(data, "type").to_ascii_lowercase();
            match request.action.as_str() {
                "apply" | "do" => self.apply(&type_name, data).await,
                "find" => self.find(&type_name, text(data, "name")).await,
                "search" => self.search(&type_name).await,
                other => Outcome::fail(
                    StatusCode::UnknownAction,
                    format!("Unknown action '{other}' for agent '{}'", self.ddl.metadata.name),
                ),
            }
        })
    }
}

impl ResourceAgent {
    async fn apply(&self, type_name: &str, data: &Map<String, Value>) -> Outcome {
        let title = text(data, "name");
        let managed = self.puppet_resources().is_some_and(|r| r.manages(type_name, title));
        if let Err(refusal) = self.safety.check(type_name, title, managed) {
            return Outcome::fail(StatusCode::Aborted, refusal.0);
        }
        let mut attrs: BTreeMap<String, Value> = data
            .iter()
            .filter(|(key, _)| !NOT_ATTRIBUTES.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        // `type` names the resource type, so a key's own type comes as `key_type`.
        if let Some(key_type) = attrs.remove("key_type") {
            attrs.insert("type".into(), key_type);
        }
        let noop = data.get("noop").and_then(Value::as_bool).unwrap_or(false);
        let report = match self.engine.apply(type_name, title, &attrs, noop).await {
            Ok(report) => report,
            Err(err) => return fail(&err),
        };
        let mut out = Map::new();
        out.insert("changed".into(), Value::Bool(report.changed));
        out.insert("status".into(), Value::from(report.status()));
        out.insert("events".into(), Value::from(report.lines()));
        out.insert("resource".into(), object(&report.state));
        match report.failure() {
            Some(message) => Outcome { status: StatusCode::Aborted, message, data: out },
            None => Outcome::ok(out),
        }
    }

    async fn find(&self, type_name: &str, title: &str) -> Outcome {
        if let Err(refusal) = self.safety.check_type(type_name) {
            return Outcome::fail(StatusCode::Aborted, refusal.0);
        }
        let shown = match self.engine.find(type_name, title).await {
            Ok(shown) => shown,
            Err(err) => return fail(&err),
        };
        let managed = match self.puppet_resources() {
            Some(resources) => resources.manages(type_name, title).to_string(),
            None => "unknown".to_owned(),
        };
        let mut out = Map::new();
        out.insert("resource".into(), object(&shown.attributes));
        out.insert("managed".into(), Value::from(managed));
        Outcome::ok(out)
    }

    async fn search(&self, type_name: &str) -> Outcome {
        if let Err(refusal) = self.safety.check_type(type_name) {
            return Outcome::fail(StatusCode::Aborted, refusal.0);
        }
        let found = match self.engine.search(type_name).await {
            Ok(found) => found,
            Err(err) => return fail(&err),
        };
        let mut resources = Map::new();
        for shown in &found {
            resources.insert(shown.title.clone(), object(&shown.attributes));
        }
        let mut out = Map::new();
        out.insert("count".into(), Value::from(found.len()));
        out.insert("resources".into(), Value::Object(resources));
        Outcome::ok(out)
    }
}
