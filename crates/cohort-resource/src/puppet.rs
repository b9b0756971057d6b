//! Types Cohort does not manage natively (`notify`, `tidy`, a site's own types): handed to
//! Puppet's `puppet resource` when Puppet is installed on the node, its `Notice:`/`Error:`
//! lines read back as events and its `--to_yaml` document as the resulting state. Without
//! Puppet, such a type is refused by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::change::{Event, State};
use crate::model::Value;

/// What `puppet resource` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PuppetRun {
    /// Change events (`Notice: /Type[title]/property: message`), failures included.
    pub events: Vec<Event>,
    /// Errors that are not about one property (`Error: Could not run: …`).
    pub errors: Vec<String>,
    /// The resources it printed, by title.
    pub resources: BTreeMap<String, State>,
}

/// `--to_yaml`'s shape: type, title, attribute, value.
type Document = BTreeMap<String, BTreeMap<String, BTreeMap<String, serde_json::Value>>>;

/// Parses `puppet resource --to_yaml --color=false` output.
pub fn parse_output(type_name: &str, output: &str) -> PuppetRun {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut yaml = String::new();
    for line in output.lines() {
        let (level, rest) = if let Some(rest) = line.strip_prefix("Notice: ") {
            ("notice", rest)
        } else if let Some(rest) = line.strip_prefix("Error: ") {
            ("error", rest)
        } else if line.starts_with("Warning: ") || line.starts_with("Info: ") {
            continue;
        } else {
            yaml.push_str(line);
            yaml.push('\n');
            continue;
        };
        // `/Type[title]/property: message`
        let parsed = rest.strip_prefix('/').and_then(|path| {
            let close = path.find("]/")?;
            let (property, message) = path[close + 2..].split_once(": ")?;
            Some((property.to_owned(), message.to_owned()))
        });
        match (level, parsed) {
            (level, Some((property, message))) => {
                let status = if level == "error" {
                    "failure"
                } else if message.ends_with("(noop)") {
                    "noop"
                } else {
                    "success"
                };
                events.push(Event { property, message, status });
            }
            ("error", None) => errors.push(rest.to_owned()),
            _ => {}
        }
    }
    let mut resources = BTreeMap::new();
    let document: Result<Document, _> = serde_saphyr::from_str(&yaml);
    if let Ok(document) = document
        && let Some(found) = document.get(type_name)
    {
        for (title, attributes) in found {
            let state = attributes
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        serde_json::Value::Number(n) => {
                            n.as_i64().map_or_else(|| Value::Text(n.to_string()), Value::Int)
                        }
                        serde_json::Value::Array(items) => Value::List(
                            items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                                .collect(),
                        ),
                        serde_json::Value::String(text) => Value::Text(text.clone()),
                        other => Value::Text(other.to_string()),
                    };
                    (name.clone(), value)
                })
                .collect();
            resources.insert(title.clone(), state);
        }
    }
    PuppetRun { events, errors, resources }
}

/// Refuses what would reach `puppet resource`'s own option parser rather than the resource:
/// a title starting with `-`, an attribute name that is not a plain word.
pub fn check_arguments(title: &str, attrs: &BTreeMap<String, String>) -> Result<(), String> {
    if title.starts_with('-') {
        return Err(format!("title {title:?} cannot start with '-'"));
    }
    let plain = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match attrs.keys().find(|name| !plain(name)) {
        Some(name) => Err(format!("attribute name {name:?} is not a plain word")),
        None => Ok(()),
    }
}

/// Runs `puppet resource --to_yaml TYPE [TITLE [attr=value …]]` with a clean environment (a
/// broken tool on the caller's PATH makes Puppet's package listing fail).
pub async fn resource(
    puppet: &Path,
    type_name: &str,
    title: Option<&str>,
    attrs: &BTreeMap<String, String>,
    noop: bool,
    timeout: Duration,
) -> Result<PuppetRun, String> {
    let mut command = tokio::process::Command::new(puppet);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin:/opt/puppetlabs/bin")
        .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .env("LANG", "C.UTF-8")
        .args(["resource", "--to_yaml", "--color=false"]);
    if noop {
        command.arg("--noop");
    }
    command.arg(type_name);
    if let Some(title) = title {
        command.arg(title);
        for (name, value) in attrs {
            command.arg(format!("{name}={value}"));
        }
    }
    let ran = crate::provider::finish(command, None, timeout).await?;
    let output = format!("{}\n{}", ran.stdout, ran.stderr);
    let run = parse_output(type_name, &output);
    if ran.code != Some(0) && run.errors.is_empty() {
        return Err(format!("puppet resource exited with {:?}: {}", ran.code, ran.stderr.trim()));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_cannot_become_options() {
        let attrs: BTreeMap<String, String> = [("message".to_owned(), "hi".to_owned())].into();
        check_arguments("hello", &attrs).unwrap();
        assert!(check_arguments("--noop", &attrs).is_err());
        let sneaky: BTreeMap<String, String> =
            [("--modulepath".to_owned(), "/x".to_owned())].into();
        assert!(check_arguments("hello", &sneaky).unwrap_err().contains("--modulepath"));
    }

    #[test]
    fn reads_events_errors_and_yaml() {
        let output = "Notice: hi\nNotice: /Notify[hello]/message: defined 'message' as 'hi'\n---\nnotify:\n  hello: {}\n";
        let run = parse_output("notify", output);
        assert_eq!(run.events.len(), 1);
        assert_eq!(run.events[0].property, "message");
        assert_eq!(run.events[0].message, "defined 'message' as 'hi'");
        assert!(run.resources.contains_key("hello"));
        let file = "Notice: /File[/tmp/pt]/ensure: defined content as '{sha256}8f43'\n---\nfile:\n  \"/tmp/pt\":\n    ensure: file\n    mode: '0644'\n    owner: 0\n";
        let run = parse_output("file", file);
        assert_eq!(run.resources["/tmp/pt"]["owner"], Value::Int(0));
        assert_eq!(run.resources["/tmp/pt"]["mode"], Value::from("0644"));
        let failed = parse_output("nosuch", "Error: Could not run: Could not find type nosuch\n");
        assert_eq!(failed.errors, ["Could not run: Could not find type nosuch"]);
    }
}
