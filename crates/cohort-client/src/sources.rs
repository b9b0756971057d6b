//! Discovery without the network: node lists from a flat file, from standard input (plain
//! identities, or what `cohort rpc -j`/`--jsonl` printed, so commands chain), and from an
//! inventory file of nodes with their facts, classes, agents and collectives, filtered locally
//! with every filter kind.
//!
//! Pure: callers read the files and pass the text in. A filter a source cannot evaluate is an
//! error that says which filter and which method would.

use std::collections::BTreeSet;

use cohort_proto::{Collective, Filter, Identity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a node list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A line or entry that is not an identity.
    #[error("{source_name} line {line}: {message}")]
    Line {
        /// `flatfile`, `stdin` or `inventory`.
        source_name: &'static str,
        /// 1-based line (or entry) number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A filter the method cannot evaluate.
    #[error(
        "the {method} discovery method knows only identities and cannot evaluate {what} filters; \
         use --dm inventory or --dm broadcast"
    )]
    Unsupported {
        /// The method.
        method: &'static str,
        /// The filter kind.
        what: &'static str,
    },
    /// An inventory that does not parse.
    #[error("inventory: {0}")]
    Inventory(String),
}

/// Identities from a flat file: one per line; blank lines and `#` comments are skipped.
pub fn flatfile(text: &str) -> Result<Vec<Identity>, SourceError> {
    identities_from_lines("flatfile", text)
}

fn identities_from_lines(name: &'static str, text: &str) -> Result<Vec<Identity>, SourceError> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = Identity::new(line).map_err(|err| SourceError::Line {
            source_name: name,
            line: index + 1,
            message: err.to_string(),
        })?;
        found.push(identity);
    }
    Ok(found)
}

/// Identities from standard input: the JSON document `cohort rpc -j` prints (its repliers), the
/// lines `--jsonl` prints, or plain identities one per line.
pub fn stdin(text: &str) -> Result<Vec<Identity>, SourceError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(document) = serde_json::from_str::<Value>(trimmed) {
            return senders("stdin", std::slice::from_ref(&document));
        }
        // JSON lines: one object per line.
        let mut values = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value = serde_json::from_str::<Value>(line).map_err(|err| SourceError::Line {
                source_name: "stdin",
                line: index + 1,
                message: format!("not JSON: {err}"),
            })?;
            values.push(value);
        }
        return senders("stdin", &values);
    }
    identities_from_lines("stdin", text)
}

/// The nodes named in JSON values: a `-j` document (`replies[].sender`), `--jsonl` reply lines
/// (`sender`), an inventory (`nodes[].identity`), or a list of identity strings.
fn senders(name: &'static str, values: &[Value]) -> Result<Vec<Identity>, SourceError> {
    let mut found = Vec::new();
    let mut push =
        |text: &str, line: usize| {
            Identity::new(text).map(|identity| found.push(identity)).map_err(|err| {
                SourceError::Line { source_name: name, line, message: err.to_string() }
            })
        };
    for (index, value) in values.iter().enumerate() {
        let line = index + 1;
        match value {
            Value::Object(object) => {
                if let Some(Value::Array(replies)) = object.get("replies") {
                    for reply in replies {
                        if let Some(sender) = reply.get("sender").and_then(Value::as_str) {
                            push(sender, line)?;
                        }
                    }
                } else if let Some(Value::Array(nodes)) = object.get("nodes") {
                    for node in nodes {
                        if let Some(identity) = node.get("identity").and_then(Value::as_str) {
                            push(identity, line)?;
                        }
                    }
                } else if let Some(sender) = object.get("sender").and_then(Value::as_str) {
                    push(sender, line)?;
                }
            }
            Value::Array(items) => {
                for item in items {
                    if let Some(text) = item.as_str() {
                        push(text, line)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Keeps the identities `filter` selects, for sources that know nothing but identities.
pub fn select_identities(
    method: &'static str,
    nodes: Vec<Identity>,
    filter: &Filter,
) -> Result<BTreeSet<Identity>, SourceError> {
    let unsupported = |what| Err(SourceError::Unsupported { method, what });
    if !filter.fact.is_empty() {
        return unsupported("fact");
    }
    if !filter.class.is_empty() {
        return unsupported("class");
    }
    if !filter.agent.is_empty() {
        return unsupported("agent");
    }
    if !filter.compound.is_empty() {
        return unsupported("compound (-S)");
    }
    let facts = Map::new();
    Ok(nodes
        .into_iter()
        .filter(|identity| {
            let node = cohort_filter::Node {
                identity: identity.as_str(),
                facts: &facts,
                classes: &[],
                agents: &[],
            };
            cohort_filter::matches(filter, &node)
        })
        .collect())
}

/// An inventory file: what `cohort inventory --export` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The nodes.
    pub nodes: Vec<InventoryNode>,
}

/// One node of an inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryNode {
    /// Its identity.
    pub identity: Identity,
    /// Collectives it is in.
    #[serde(default)]
    pub collectives: Vec<Collective>,
    /// Agents it hosts.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Its classes.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Its facts.
    #[serde(default)]
    pub facts: Map<String, Value>,
}

impl Inventory {
    /// Parses an inventory in JSON or YAML.
    pub fn parse(text: &str) -> Result<Inventory, SourceError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|err| SourceError::Inventory(err.to_string()))
        } else {
            serde_saphyr::from_str(text).map_err(|err| SourceError::Inventory(err.to_string()))
        }
    }

    /// The nodes in `collective` that `filter` selects, evaluated exactly as nodes do.
    pub fn select(&self, filter: &Filter, collective: &Collective) -> BTreeSet<Identity> {
        self.nodes
            .iter()
            .filter(|node| node.collectives.is_empty() || node.collectives.contains(collective))
            .filter(|node| {
                let mut agents = node.agents.clone();
                agents.push(cohort_proto::DISCOVERY_AGENT.to_owned());
                let view = cohort_filter::Node {
                    identity: node.identity.as_str(),
                    facts: &node.facts,
                    classes: &node.classes,
                    agents: &agents,
                };
                cohort_filter::matches(filter, &view)
            })
            .map(|node| node.identity.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[Identity]) -> Vec<&str> {
        list.iter().map(Identity::as_str).collect()
    }

    #[test]
    fn flatfile_skips_comments_and_names_bad_lines() {
        let nodes = flatfile("# web tier\nweb1.example.com\n\n  web2.example.com  \n").unwrap();
        assert_eq!(ids(&nodes), ["web1.example.com", "web2.example.com"]);
        let err = flatfile("ok1\nnot ok\n").unwrap_err().to_string();
        assert!(err.starts_with("flatfile line 2:"), "{err}");
    }

    #[test]
    fn stdin_reads_what_rpc_prints() {
        let document =
            r#"{"agent":"rpcutil","replies":[{"sender":"a1"},{"sender":"a2"}],"stats":{}}"#;
        assert_eq!(ids(&stdin(document).unwrap()), ["a1", "a2"]);
        let lines = "{\"type\":\"reply\",\"sender\":\"b1\"}\n{\"type\":\"reply\",\"sender\":\"b2\"}\n{\"type\":\"summary\"}\n";
        assert_eq!(ids(&stdin(lines).unwrap()), ["b1", "b2"]);
        assert_eq!(ids(&stdin("c1\nc2\n").unwrap()), ["c1", "c2"]);
        assert!(
            stdin("{\"sender\":\"x\"}\nnot json\n").unwrap_err().to_string().contains("line 2")
        );
    }

    #[test]
    fn identity_only_sources_refuse_other_filters() {
        let nodes = flatfile("web1\nweb2\ndb1\n").unwrap();
        let filter = Filter { identity: vec!["/^web/".into()], ..Filter::default() };
        let picked = select_identities("flatfile", nodes.clone(), &filter).unwrap();
        assert_eq!(picked.len(), 2);
        let filter = cohort_filter::parse_with("country=uk").unwrap();
        let err = select_identities("flatfile", nodes, &filter).unwrap_err().to_string();
        assert!(
            err.contains("flatfile") && err.contains("fact") && err.contains("inventory"),
            "{err}"
        );
    }

    #[test]
    fn inventory_filters_like_a_node() {
        let yaml = "nodes:\n  - identity: web1\n    classes: [role::web]\n    agents: [rpcutil]\n    facts: {country: uk, os: {family: Debian}}\n  - identity: db1\n    collectives: [eu]\n    facts: {country: de}\n";
        let inventory = Inventory::parse(yaml).unwrap();
        let cohort = Collective::new("cohort").unwrap();
        let eu = Collective::new("eu").unwrap();
        let filter = cohort_filter::parse_compound("os.family=Debian and role::web").unwrap();
        let filter = Filter { compound: vec![filter], ..Filter::default() };
        assert_eq!(inventory.select(&filter, &cohort).len(), 1);
        assert_eq!(inventory.select(&Filter::default(), &cohort).len(), 1);
        assert_eq!(inventory.select(&Filter::default(), &eu).len(), 2);
        let json = serde_json::to_string(&inventory).unwrap();
        assert_eq!(Inventory::parse(&json).unwrap(), inventory);
        assert!(Inventory::parse("nodes: [{identity: x, colour: red}]").is_err());
    }
}
