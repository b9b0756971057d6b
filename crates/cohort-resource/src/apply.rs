//! One resource, start to end: validate, bring into the system's terms, read its current
//! state, decide the changes (pure, [`crate::change`]), make them (or report them under noop),
//! and report what happened in Puppet's words with the resulting state, secrets redacted. The
//! same path serves the `resource` agent and `cohort resource`; types without a native
//! provider go to `puppet resource` when Puppet is installed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::change::{self, Event, Outcome, State};
use crate::manifest::Shown;
use crate::model::{Desired, Kind, ResourceError, Value};
use crate::provider::{self, Env, ProviderError};
use crate::puppet;

/// What happened to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Title.
    pub title: String,
    /// Whether anything was changed.
    pub changed: bool,
    /// Whether any change failed, or the resource could not be evaluated.
    pub failed: bool,
    /// Whether this was a noop run.
    pub noop: bool,
    /// Change events, in order.
    pub events: Vec<Event>,
    /// The resource's state afterwards (secrets redacted, provider named).
    pub state: State,
    /// Why the resource could not be evaluated at all, when it could not.
    pub error: Option<String>,
}

impl Report {
    /// `User[rip]`.
    pub fn reference(&self) -> String {
        change::reference(&self.type_name, &self.title)
    }

    /// The events as Puppet logs them: `/User[rip]/comment: defined 'comment' as 'Foo'`.
    pub fn lines(&self) -> Vec<String> {
        let reference = self.reference();
        let mut lines: Vec<String> =
            self.events.iter().map(|event| event.line(&reference)).collect();
        if let Some(error) = &self.error {
            lines.push(format!("/{reference}: Could not evaluate: {error}"));
        }
        lines
    }

    /// `failed`, `changed`, `noop` (would change) or `unchanged`.
    pub fn status(&self) -> &'static str {
        if self.failed {
            "failed"
        } else if self.changed {
            "changed"
        } else if self.events.iter().any(|e| e.status == "noop") {
            "noop"
        } else {
            "unchanged"
        }
    }

    /// The first failure, as the reply's message.
    pub fn failure(&self) -> Option<String> {
        self.error.as_ref().map(|e| format!("Could not evaluate: {e}")).or_else(|| {
            self.events.iter().find(|e| e.status == "failure").map(|e| e.message.clone())
        })
    }
}

/// Why a resource could not be looked at or applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Attributes or values at fault.
    #[error(transparent)]
    Invalid(#[from] ResourceError),
    /// Neither native nor Puppet.
    #[error(
        "Could not find type {0}: cohort manages {native} itself, and Puppet is not installed on this node for other types",
        native = native_types()
    )]
    UnknownType(String),
    /// The provider could not read the system.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// `puppet resource` failed.
    #[error("puppet resource: {0}")]
    Puppet(String),
}

fn native_types() -> String {
    Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// The resource engine of one node.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Provider settings.
    pub env: Env,
    /// `puppet`, for types Cohort does not manage natively.
    pub puppet: Option<PathBuf>,
}

fn text_attrs(attrs: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    attrs
        .iter()
        .filter(|(name, _)| name.as_str() != "noop")
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Array(items) => {
                    let items: Vec<String> = items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect();
                    items.join(",")
                }
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect()
}

fn noop_given(attrs: &BTreeMap<String, serde_json::Value>) -> bool {
    matches!(attrs.get("noop"), Some(serde_json::Value::Bool(true)))
        || attrs.get("noop").and_then(serde_json::Value::as_str).is_some_and(|v| v == "true")
}

fn is_valid_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.split("::").all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

impl Resources {
    fn with_provider(&self, desired: &Desired, state: State) -> State {
        let mut state = change::redact(desired.kind, &state);
        let name = provider::provider_name(desired.kind, desired.provider.as_deref(), &self.env);
        state.insert("provider".into(), name.into());
        state
    }

    /// `puppet resource TYPE [TITLE [attrs]]` for a type Cohort does not manage, when Puppet
    /// is installed; its overall errors (`Could not run: …`) are errors here.
    async fn puppet(
        &self,
        type_name: &str,
        title: Option<&str>,
        attrs: &BTreeMap<String, String>,
        noop: bool,
    ) -> Result<puppet::PuppetRun, ApplyError> {
        if !is_valid_type_name(type_name) {
            return Err(ApplyError::UnknownType(type_name.to_owned()));
        }
        let Some(program) = &self.puppet else {
            return Err(ApplyError::UnknownType(type_name.to_owned()));
        };
        puppet::check_arguments(title.unwrap_or_default(), attrs).map_err(ApplyError::Puppet)?;
        let run =
            puppet::resource(program, type_name, title, attrs, noop, self.env.command_timeout)
                .await
                .map_err(ApplyError::Puppet)?;
        match run.errors.first() {
            Some(error) => Err(ApplyError::Puppet(error.clone())),
            None => Ok(run),
        }
    }

    /// Makes `type_name[title]` as `attrs` say (`noop` among them, or `noop` here).
    pub async fn apply(
        &self,
        type_name: &str,
        title: &str,
        attrs: &BTreeMap<String, serde_json::Value>,
        noop: bool,
    ) -> Result<Report, ApplyError> {
        let Some(kind) = Kind::from_name(type_name) else {
            return self
                .apply_with_puppet(type_name, title, attrs, noop || noop_given(attrs))
                .await;
        };
        let mut desired = Desired::build(kind, title, attrs)?;
        desired.noop |= noop;
        provider::resolve(&mut desired, &self.env).await;
        let mut report = Report {
            type_name: kind.name().to_owned(),
            title: title.to_owned(),
            changed: false,
            failed: false,
            noop: desired.noop,
            events: Vec::new(),
            state: State::new(),
            error: None,
        };
        let current = match provider::retrieve(&desired, &self.env).await {
            Ok(current) => current,
            Err(err) => {
                report.failed = true;
                report.error = Some(err.0);
                return Ok(report);
            }
        };
        let changes = change::changes(&desired, &current);
        if changes.is_empty() || desired.noop {
            for change in &changes {
                report.events.push(event(&desired, change, &Outcome::Noop));
            }
            report.state = self.with_provider(&desired, current);
            return Ok(report);
        }
        let results = if kind == Kind::Exec {
            let (result, output) = provider::exec::run(&desired, &self.env).await;
            for line in output {
                report.events.push(Event {
                    property: "returns".into(),
                    message: line,
                    status: "output",
                });
            }
            vec![result]
        } else {
            provider::sync(&desired, &current, &changes, &self.env).await
        };
        for (change, result) in changes.iter().zip(results) {
            let outcome = match result {
                Ok(()) => {
                    report.changed = true;
                    Outcome::Done
                }
                Err(why) => {
                    report.failed = true;
                    Outcome::Failed(why)
                }
            };
            report.events.push(event(&desired, change, &outcome));
        }
        let after = if kind == Kind::Exec {
            let mut state = current;
            if !report.failed
                && let Some(returns) = desired.should.get("returns")
            {
                state.insert("returns".into(), returns.clone());
            }
            state
        } else {
            provider::retrieve(&desired, &self.env).await?
        };
        report.state = self.with_provider(&desired, after);
        Ok(report)
    }

    async fn apply_with_puppet(
        &self,
        type_name: &str,
        title: &str,
        attrs: &BTreeMap<String, serde_json::Value>,
        noop: bool,
    ) -> Result<Report, ApplyError> {
        let run = self.puppet(type_name, Some(title), &text_attrs(attrs), noop).await?;
        let failed = run.events.iter().any(|e| e.status == "failure");
        Ok(Report {
            type_name: type_name.to_owned(),
            title: title.to_owned(),
            changed: run.events.iter().any(|e| e.status == "success"),
            failed,
            noop,
            state: run.resources.get(title).cloned().unwrap_or_default(),
            events: run.events,
            error: None,
        })
    }

    /// The current state of `type_name[title]`.
    pub async fn find(&self, type_name: &str, title: &str) -> Result<Shown, ApplyError> {
        let Some(kind) = Kind::from_name(type_name) else {
            let run = self.puppet(type_name, Some(title), &BTreeMap::new(), false).await?;
            return Ok(Shown {
                type_name: type_name.to_owned(),
                title: title.to_owned(),
                attributes: run.resources.get(title).cloned().unwrap_or_default(),
            });
        };
        let mut desired = Desired::build(kind, title, &BTreeMap::new())?;
        provider::resolve(&mut desired, &self.env).await;
        let state = provider::retrieve(&desired, &self.env).await?;
        Ok(Shown {
            type_name: kind.name().to_owned(),
            title: title.to_owned(),
            attributes: self.with_provider(&desired, state),
        })
    }

    /// Every instance of `type_name`, sorted by title.
    pub async fn search(&self, type_name: &str) -> Result<Vec<Shown>, ApplyError> {
        let Some(kind) = Kind::from_name(type_name) else {
            let run = self.puppet(type_name, None, &BTreeMap::new(), false).await?;
            return Ok(run
                .resources
                .into_iter()
                .map(|(title, attributes)| Shown {
                    type_name: type_name.to_owned(),
                    title,
                    attributes,
                })
                .collect());
        };
        let provider_name = provider::provider_name(kind, None, &self.env);
        Ok(provider::instances(kind, &self.env)
            .await?
            .into_iter()
            .map(|(title, state)| {
                let mut attributes = change::redact(kind, &state);
                attributes.insert("provider".into(), provider_name.into());
                Shown { type_name: kind.name().to_owned(), title, attributes }
            })
            .collect())
    }
}

/// A file's owner and group are stored as ids and shown as names, as Puppet shows them.
fn named(desired: &Desired, change: &change::Change) -> change::Change {
    let name = |value: &Value| -> Value {
        let Value::Int(id) = value else { return value.clone() };
        let Ok(id) = u32::try_from(*id) else { return value.clone() };
        let found = match change.property.as_str() {
            "owner" => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
                .ok()
                .flatten()
                .map(|u| u.name),
            _ => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id))
                .ok()
                .flatten()
                .map(|g| g.name),
        };
        found.map_or_else(|| value.clone(), Value::Text)
    };
    let mut shown = change.clone();
    if desired.kind == Kind::File && matches!(change.property.as_str(), "owner" | "group") {
        shown.is = change.is.as_ref().map(name);
        shown.should = name(&change.should);
    }
    shown
}

fn event(desired: &Desired, change: &change::Change, outcome: &Outcome) -> Event {
    Event {
        property: change.property.clone(),
        message: change::message(desired, &named(desired, change), outcome),
        status: match outcome {
            Outcome::Done => "success",
            Outcome::Noop => "noop",
            Outcome::Failed(_) => "failure",
        },
    }
}
