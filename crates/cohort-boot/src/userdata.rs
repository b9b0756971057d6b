//! User data: what the instance should become, as YAML.
//!
//! ```yaml
//! facts:
//!   role: webserver
//! actions:
//!   - type: getactions
//!     url: https://boot.example.net/actions
//!   - type: shell
//!     command: apt-get install -y puppet
//!     on_error: continue
//!   - type: cohort
//!     brokers: [nats://broker1:4222]
//! ```
//!
//! The original ec2-boot-init form, with Ruby-symbol keys and values (`:facts:`, `:actions:`,
//! `:type: :shell`), is accepted too. Gzip-compressed user data is detected by its magic bytes.
//! Anything invalid is an error naming the line and the key, and then no action runs. Pure.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Parsed user data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserData {
    /// Facts to write to the facts file.
    pub facts: BTreeMap<String, String>,
    /// Whether to write the flattened metadata as `ec2_*` facts too (default yes).
    pub write_ec2_facts: bool,
    /// Actions, in order.
    pub actions: Vec<Action>,
}

/// One action of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// `getactions`, `shell`, `write_file`, `cohort`, or the name of an installed script.
    pub kind: String,
    /// Name for its once-per-instance semaphore; default `<position>-<type>`.
    pub name: String,
    /// Whether a failure stops the run.
    pub on_error: OnError,
    /// Its other parameters.
    pub params: Map<String, Value>,
}

/// What a failing action does to the rest of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop: later actions do not run, and the boot fails (the default).
    #[default]
    Stop,
    /// Record the failure and go on with the next action.
    Continue,
}

/// User data that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The gzip stream is corrupt.
    #[error("user data looks gzip-compressed but does not decompress: {0}")]
    Gzip(std::io::Error),
    /// Not UTF-8 text.
    #[error("user data is not UTF-8 text")]
    Encoding,
    /// Not YAML of the expected shape; the message names the line, column and key.
    #[error("invalid user data: {0}")]
    Yaml(String),
    /// Well-formed YAML with an invalid value.
    #[error("invalid user data: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default, alias = ":facts")]
    facts: Option<BTreeMap<String, Scalar>>,
    #[serde(default, alias = ":write_ec2_facts")]
    write_ec2_facts: Option<bool>,
    #[serde(default, alias = ":actions")]
    actions: Option<Vec<ActionDocument>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize)]
struct ActionDocument {
    #[serde(rename = "type", alias = ":type")]
    kind: String,
    #[serde(default, alias = ":name")]
    name: Option<String>,
    #[serde(default, alias = ":on_error")]
    on_error: Option<String>,
    #[serde(flatten)]
    params: BTreeMap<String, Value>,
}

/// `:shell` → `shell`: Ruby symbols as ec2-boot-init's YAML wrote them.
fn unsymbol(text: &str) -> &str {
    text.strip_prefix(':').unwrap_or(text)
}

fn unsymbol_value(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(unsymbol(&text).to_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(unsymbol_value).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter().map(|(k, v)| (unsymbol(&k).to_owned(), unsymbol_value(v))).collect(),
        ),
        other => other,
    }
}

/// Decompresses gzip user data; passes anything else through.
pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>, UserDataError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    // 16 MiB is a thousand times what EC2 allows; more is an attack, not user data.
    flate2::read::GzDecoder::new(bytes)
        .take(16 << 20)
        .read_to_end(&mut out)
        .map_err(UserDataError::Gzip)?;
    Ok(out)
}

/// Parses raw user data (possibly gzip-compressed). Empty user data is no facts, no actions.
pub fn parse(raw: &[u8]) -> Result<UserData, UserDataError> {
    let bytes = decompress(raw)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| UserDataError::Encoding)?;
    if text.trim().is_empty() || text.trim() == "---" {
        return Ok(UserData { write_ec2_facts: true, ..UserData::default() });
    }
    let document: Document =
        serde_saphyr::from_str(text).map_err(|err| UserDataError::Yaml(err.to_string()))?;
    let facts = document
        .facts
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Scalar::Bool(flag) => flag.to_string(),
                Scalar::Integer(n) => n.to_string(),
                Scalar::Float(n) => n.to_string(),
                Scalar::Text(text) => unsymbol(&text).to_owned(),
            };
            (unsymbol(&key).to_owned(), value)
        })
        .collect::<BTreeMap<_, _>>();
    for (key, value) in &facts {
        if key.is_empty() || key.contains(['=', '\n']) || value.contains('\n') {
            return Err(UserDataError::Invalid(format!(
                "facts.{key}: names may not contain '=' or newlines, values not newlines"
            )));
        }
    }
    let mut actions = Vec::new();
    for (idx, action) in document.actions.unwrap_or_default().into_iter().enumerate() {
        let kind = unsymbol(&action.kind).to_owned();
        if kind.is_empty()
            || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(UserDataError::Invalid(format!(
                "actions[{idx}].type: {kind:?} is not an action name (letters, digits, '_', '-')"
            )));
        }
        let on_error = match action.on_error.as_deref().map(unsymbol) {
            None | Some("stop") => OnError::Stop,
            Some("continue") => OnError::Continue,
            Some(other) => {
                return Err(UserDataError::Invalid(format!(
                    "actions[{idx}].on_error: {other:?} is neither stop nor continue"
                )));
            }
        };
        let name = action
            .name
            .map_or_else(|| format!("{idx:02}-{kind}"), |name| unsymbol(&name).to_owned());
        if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(UserDataError::Invalid(format!(
                "actions[{idx}].name: {name:?} cannot name a file"
            )));
        }
        let params = action
            .params
            .into_iter()
            .map(|(k, v)| (unsymbol(&k).to_owned(), unsymbol_value(v)))
            .collect();
        actions.push(Action { kind, name, on_error, params });
    }
    Ok(UserData { facts, write_ec2_facts: document.write_ec2_facts.unwrap_or(true), actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_form() {
        let data = parse(b"facts:\n  role: web\n  replicas: 3\nactions:\n  - type: shell\n    command: ls\n    on_error: continue\n  - type: cohort\n    name: join\n").unwrap();
        assert_eq!(data.facts["role"], "web");
        assert_eq!(data.facts["replicas"], "3");
        assert!(data.write_ec2_facts);
        assert_eq!(data.actions[0].kind, "shell");
        assert_eq!(data.actions[0].name, "00-shell");
        assert_eq!(data.actions[0].on_error, OnError::Continue);
        assert_eq!(data.actions[0].params["command"], "ls");
        assert_eq!(data.actions[1].name, "join");
    }

    #[test]
    fn original_ec2_boot_init_form() {
        let text = b"---\n:facts:\n  :role: webserver\n:write_ec2_facts: false\n:actions:\n- :type: :getactions\n  :url: http://your.net/ec2actions/\n  :list: list.txt\n- :type: :shell\n  :command: \"yum -y install puppet\"\n";
        let data = parse(text).unwrap();
        assert_eq!(data.facts["role"], "webserver");
        assert!(!data.write_ec2_facts);
        assert_eq!(data.actions[0].kind, "getactions");
        assert_eq!(data.actions[0].params["url"], "http://your.net/ec2actions/");
        assert_eq!(data.actions[1].params["command"], "yum -y install puppet");
    }

    #[test]
    fn gzip_and_empty() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"facts:\n  role: db\n").unwrap();
        let data = parse(&encoder.finish().unwrap()).unwrap();
        assert_eq!(data.facts["role"], "db");
        assert_eq!(parse(b"").unwrap().actions.len(), 0);
        assert!(matches!(parse(&[0x1f, 0x8b, 1, 2, 3]), Err(UserDataError::Gzip(_))));
    }

    #[track_caller]
    fn check_err(text: &str, expect: &[&str]) {
        let err = parse(text.as_bytes()).unwrap_err().to_string();
        for needle in expect {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        check_err(
            "facts:\n  role: web\nactions:\n  - command: ls\n",
            &["line 4", "missing field `type`"],
        );
        check_err("facts: [1, 2]\n", &["line 1"]);
        check_err("facts:\n  role: web\nbogus: 1\n", &["line 3", "unknown field `bogus`"]);
        check_err("facts:\n  role: [web\n", &["line 2", "unclosed bracket"]);
        check_err("actions:\n  - type: \"rm -rf /\"\n", &["actions[0].type"]);
        check_err("actions:\n  - type: shell\n    on_error: maybe\n", &["actions[0].on_error"]);
        check_err("actions:\n  - type: shell\n    name: ../x\n", &["actions[0].name"]);
        check_err("facts:\n  motd: \"a\\nb\"\n", &["facts.motd"]);
    }
}
