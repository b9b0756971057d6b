//! The DDL data model and its loading. A DDL that is not well formed is refused with the agent,
//! action and input at fault, so a broken file never half-loads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One agent's DDL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDdl {
    /// `$schema`, when the file gives one.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Who wrote it and how long its actions may run.
    pub metadata: Metadata,
    /// Its actions.
    #[serde(default)]
    pub actions: Vec<ActionDdl>,
}

/// Agent metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Agent name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Author.
    #[serde(default)]
    pub author: String,
    /// License.
    #[serde(default)]
    pub license: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Home page.
    #[serde(default)]
    pub url: String,
    /// Seconds an action may run on a node before it is killed.
    pub timeout: f64,
    /// Implementation kind (Choria: `golang`, `external`, `ruby`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionDdl {
    /// Action name.
    pub action: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Which replies a client prints by default.
    #[serde(default)]
    pub display: Display,
    /// Inputs by name.
    #[serde(default)]
    pub input: BTreeMap<String, InputDdl>,
    /// Inputs not named in `input` are accepted when this is given, each checked against it
    /// (the resource agent takes any attribute of any type this way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_input: Option<InputDdl>,
    /// Outputs by name.
    #[serde(default)]
    pub output: BTreeMap<String, OutputDdl>,
    /// Summaries computed over all replies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregate: Vec<AggregateDdl>,
}

/// Display policy of an action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    /// Print only failed replies (the default).
    #[default]
    Failed,
    /// Print only successful replies.
    Ok,
    /// Print every reply.
    Always,
}

/// An input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDdl {
    /// Short prompt.
    #[serde(default)]
    pub prompt: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether it may be left out.
    #[serde(default)]
    pub optional: bool,
    /// Value used when it is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// For strings: a regular expression, or a named validator (`shellsafe`, `ipv4address`,
    /// `ipv6address`, `ipaddress`, `boolean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// For strings: maximum length in characters; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlength: Option<u64>,
    /// For lists: the allowed values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<Value>>,
    /// A secret (a password, a token): nodes write `[redacted]` in its place in the audit log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// Input types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// A number, written with or without a fraction.
    Float,
    /// Any number.
    Number,
    /// True or false.
    Boolean,
    /// One of the `list` values.
    List,
    /// A JSON object.
    Hash,
    /// A JSON array.
    Array,
    /// Anything.
    Any,
}

impl InputType {
    /// The name as written in DDL files.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Float => "float",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::List => "list",
            InputType::Hash => "hash",
            InputType::Array => "array",
            InputType::Any => "any",
        }
    }
}

/// An output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputDdl {
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Label clients print.
    #[serde(default)]
    pub display_as: String,
    /// Type, informational.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Value a reply starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// An aggregate: a function over one output of every reply, e.g. `summary(value)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateDdl {
    /// Function name: `summary`, `average`, `sum`, `boolean_summary`.
    pub function: String,
    /// First the output name, then an optional options object (`format`, labels).
    #[serde(default)]
    pub args: Vec<Value>,
}

/// A DDL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    /// Not JSON, or not the DDL shape.
    #[error("{0}")]
    Json(String),
    /// Well-formed but inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// Where: `agent x`, `action y`, `input z`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

const VALIDATORS: [&str; 5] = ["shellsafe", "ipv4address", "ipv6address", "ipaddress", "boolean"];

/// Whether `validation` names a built-in validator rather than a regular expression.
pub(crate) fn is_named_validator(validation: &str) -> bool {
    VALIDATORS.contains(&validation)
}

impl AgentDdl {
    /// Parses and checks a JSON DDL.
    pub fn from_json(text: &str) -> Result<AgentDdl, DdlError> {
        let ddl: AgentDdl =
            serde_json::from_str(text).map_err(|err| DdlError::Json(err.to_string()))?;
        ddl.check()?;
        Ok(ddl)
    }

    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&ActionDdl> {
        self.actions.iter().find(|action| action.action == name)
    }

    fn check(&self) -> Result<(), DdlError> {
        let agent = &self.metadata.name;
        let invalid = |path: String, message: String| DdlError::Invalid { path, message };
        if cohort_proto::AgentName::new(agent.as_str()).is_err() {
            return Err(invalid(
                format!("agent {agent:?}"),
                "name must be lowercase letters, digits and '_'".into(),
            ));
        }
        if !(self.metadata.timeout.is_finite() && self.metadata.timeout > 0.0) {
            return Err(invalid(
                format!("agent {agent}"),
                "metadata.timeout must be a positive number of seconds".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for action in &self.actions {
            let path = format!("agent {agent} action {:?}", action.action);
            if action.action.is_empty()
                || !action.action.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(invalid(path, "action names are letters, digits and '_'".into()));
            }
            if !seen.insert(action.action.as_str()) {
                return Err(invalid(path, "declared twice".into()));
            }
            let extra = action.extra_input.iter().map(|input| ("(extra)", input));
            let declared = action.input.iter().map(|(name, input)| (name.as_str(), input));
            for (name, input) in declared.chain(extra) {
                let path = format!("{path} input {name:?}");
                if let Some(validation) = &input.validation
                    && !is_named_validator(validation)
                    && let Err(err) = regex::Regex::new(validation)
                {
                    return Err(invalid(
                        path,
                        format!("validation is neither a known validator nor a valid regex: {err}"),
                    ));
                }
                if input.kind == InputType::List && input.list.as_ref().is_none_or(Vec::is_empty) {
                    return Err(invalid(
                        path,
                        "a list input needs a non-empty `list` of values".into(),
                    ));
                }
            }
            for aggregate in &action.aggregate {
                let Some(Value::String(output)) = aggregate.args.first() else {
                    return Err(invalid(
                        format!("{path} aggregate {}", aggregate.function),
                        "the first argument must be an output name".into(),
                    ));
                };
                if !action.output.contains_key(output) {
                    return Err(invalid(
                        format!("{path} aggregate {}", aggregate.function),
                        format!("unknown output {output:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ActionDdl {
    /// Every output set to its default (or null), the starting point of a reply.
    pub fn output_defaults(&self) -> serde_json::Map<String, Value> {
        self.output
            .iter()
            .map(|(name, output)| (name.clone(), output.default.clone().unwrap_or(Value::Null)))
            .collect()
    }
}
