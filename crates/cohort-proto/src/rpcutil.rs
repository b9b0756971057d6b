//! The documents the built-in `rpcutil` agent replies with, typed: the daemon builds them, the
//! client applications (`cohort inventory`, `cohort facts`, `--export`) read them. A reply
//! that does not carry one (a refusal, an error status) fails to read as one, never panics.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `rpcutil inventory`: what a node is and has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Agents it hosts.
    pub agents: Vec<String>,
    /// Its facts.
    pub facts: Map<String, Value>,
    /// Its configuration-management classes.
    pub classes: Vec<String>,
    /// The daemon's version.
    pub version: String,
    /// The first collective it belongs to.
    pub main_collective: String,
    /// Every collective it belongs to.
    pub collectives: Vec<String>,
    /// Data plugins (none; kept for MCollective's shape).
    #[serde(default)]
    pub data_plugins: Vec<String>,
}

/// `rpcutil daemon_stats`: the daemon's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStats {
    /// Agents it hosts.
    pub agents: Vec<String>,
    /// Its process id.
    pub pid: u32,
    /// Its configuration file, empty when none.
    pub configfile: String,
    /// Its version.
    pub version: String,
    /// When it started, in seconds since the epoch.
    pub starttime: u64,
    /// Messages received.
    pub total: u64,
    /// Messages that passed the filters.
    pub passed: u64,
    /// Messages for other nodes.
    pub filtered: u64,
    /// Messages past their TTL.
    pub ttlexpired: u64,
    /// Messages that could not be read.
    pub invalid: u64,
    /// Replies sent.
    pub replies: u64,
    /// Messages whose signature or credential did not verify.
    pub unverified: u64,
    /// Messages seen before.
    pub replayed: u64,
    /// Requests the policy refused.
    pub unauthorized: u64,
    /// Audit lines for refused unverified traffic left out by the rate limit.
    #[serde(default)]
    pub audit_suppressed: u64,
}

/// `rpcutil collective_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveInfo {
    /// The first collective.
    pub main_collective: String,
    /// Every collective.
    pub collectives: Vec<String>,
}

/// `rpcutil get_fact`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FactValue {
    /// The fact asked for.
    pub fact: String,
    /// Its value; null when the node does not have it.
    pub value: Value,
}

/// Reads a reply's data as document `T`.
pub fn read<T: serde::de::DeserializeOwned>(data: &Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(data.clone())).map_err(|err| err.to_string())
}

/// A document as a reply's data.
pub fn data<T: Serialize>(document: &T) -> Map<String, Value> {
    match serde_json::to_value(document) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_not_an_inventory() {
        let refusal = Map::new();
        assert!(read::<Inventory>(&refusal).is_err());
        let inventory = Inventory {
            agents: vec!["rpcutil".into()],
            main_collective: "cohort".into(),
            collectives: vec!["cohort".into()],
            ..Inventory::default()
        };
        assert_eq!(read::<Inventory>(&data(&inventory)), Ok(inventory));
    }
}
