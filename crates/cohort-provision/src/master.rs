//! Which Puppet master a node gets. The original walked every criterion without stopping, so
//! the *last* criterion that matched won; here the criteria are a priority order: the first
//! fact on which node and a master agree decides, ties go to the master with the fewest nodes
//! in progress (then discovery order), and when none agrees the configured fallback applies,
//! with the reason said.

use serde::Deserialize;
use serde_json::{Map, Value};

/// What to do when no criterion agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The least busy master (then the first discovered).
    #[default]
    First,
    /// Any master, at random.
    Random,
    /// None: the node waits for a master that matches.
    Refuse,
}

/// A master found by discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its identity.
    pub identity: String,
    /// Its facts.
    pub facts: Map<String, Value>,
    /// Nodes this provisioner is working on against it.
    pub in_progress: usize,
}

/// The master chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Its identity.
    pub master: String,
    /// `ec2_placement_region == "eu-west-1"`, or the fallback's reason.
    pub reason: String,
}

/// Why no master was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoMaster {
    /// Discovery found none.
    #[error("No masters found")]
    NoneFound,
    /// None agrees and the fallback is `refuse`.
    #[error("no master agrees with the node on any of {0:?} (fallback: refuse)")]
    NoneAgrees(Vec<String>),
}

/// A fact's value as compared: strings as they are, anything else as JSON text; absent and
/// null facts never agree.
fn comparable(facts: &Map<String, Value>, name: &str) -> Option<String> {
    match cohort_filter::lookup(facts, name)? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Picks the master for a node with `facts` among `candidates` (in discovery order).
/// `random` is any number, used only by [`Fallback::Random`].
pub fn pick(
    facts: &Map<String, Value>,
    candidates: &[Candidate],
    criteria: &[String],
    fallback: Fallback,
    random: usize,
) -> Result<Choice, NoMaster> {
    if candidates.is_empty() {
        return Err(NoMaster::NoneFound);
    }
    let least_busy = |among: &[&Candidate]| -> Option<String> {
        among.iter().min_by_key(|c| c.in_progress).map(|c| c.identity.clone())
    };
    for criterion in criteria {
        let Some(wanted) = comparable(facts, criterion) else { continue };
        let agreeing: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| comparable(&c.facts, criterion).as_deref() == Some(wanted.as_str()))
            .collect();
        if let Some(master) = least_busy(&agreeing) {
            return Ok(Choice { master, reason: format!("{criterion} == {wanted:?}") });
        }
    }
    let why = if criteria.is_empty() {
        "no criteria configured".to_owned()
    } else {
        format!("no master agrees on any of {}", criteria.join(", "))
    };
    match fallback {
        Fallback::First => {
            let all: Vec<&Candidate> = candidates.iter().collect();
            let master = least_busy(&all).unwrap_or_default();
            Ok(Choice { master, reason: format!("{why}; fallback: the least busy") })
        }
        Fallback::Random => {
            let master = candidates[random % candidates.len()].identity.clone();
            Ok(Choice { master, reason: format!("{why}; fallback: random") })
        }
        Fallback::Refuse => Err(NoMaster::NoneAgrees(criteria.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn master(identity: &str, value: Value, in_progress: usize) -> Candidate {
        Candidate { identity: identity.into(), facts: facts(value), in_progress }
    }

    fn criteria() -> Vec<String> {
        vec!["region".into(), "country".into()]
    }

    #[test]
    fn the_first_agreeing_criterion_wins_not_the_last() {
        let node = facts(json!({"region": "eu-west-1", "country": "de"}));
        let masters = [
            master("m-eu", json!({"region": "eu-west-1", "country": "ie"}), 0),
            master("m-de", json!({"region": "eu-central-1", "country": "de"}), 0),
        ];
        let choice = pick(&node, &masters, &criteria(), Fallback::Refuse, 0).unwrap();
        assert_eq!(choice.master, "m-eu", "the original let country override region");
        assert_eq!(choice.reason, "region == \"eu-west-1\"");
    }

    #[test]
    fn a_later_criterion_decides_when_the_first_finds_nobody() {
        let node = facts(json!({"region": "ap-south-1", "country": "de"}));
        let masters = [
            master("m-eu", json!({"region": "eu-west-1", "country": "ie"}), 0),
            master("m-de", json!({"region": "eu-central-1", "country": "de"}), 0),
        ];
        let choice = pick(&node, &masters, &criteria(), Fallback::Refuse, 0).unwrap();
        assert_eq!(choice.master, "m-de");
        assert_eq!(choice.reason, "country == \"de\"");
    }

    #[test]
    fn a_node_without_the_fact_skips_that_criterion() {
        let node = facts(json!({"country": "ie"}));
        let masters = [
            master("a", json!({"country": "de"}), 0),
            master("b", json!({"region": null, "country": "ie"}), 0),
        ];
        assert_eq!(pick(&node, &masters, &criteria(), Fallback::Refuse, 0).unwrap().master, "b");
    }

    #[test]
    fn ties_go_to_the_least_busy_then_discovery_order() {
        let node = facts(json!({"region": "eu"}));
        let masters = [
            master("busy", json!({"region": "eu"}), 4),
            master("idle1", json!({"region": "eu"}), 1),
            master("idle2", json!({"region": "eu"}), 1),
        ];
        assert_eq!(
            pick(&node, &masters, &criteria(), Fallback::Refuse, 0).unwrap().master,
            "idle1"
        );
    }

    #[test]
    fn fallbacks_and_their_reasons() {
        let node = facts(json!({"region": "mars"}));
        let masters =
            [master("a", json!({"region": "eu"}), 3), master("b", json!({"region": "us"}), 2)];
        let first = pick(&node, &masters, &criteria(), Fallback::First, 0).unwrap();
        assert_eq!(first.master, "b");
        assert_eq!(
            first.reason,
            "no master agrees on any of region, country; fallback: the least busy"
        );
        assert_eq!(pick(&node, &masters, &criteria(), Fallback::Random, 2).unwrap().master, "a");
        assert_eq!(pick(&node, &masters, &criteria(), Fallback::Random, 3).unwrap().master, "b");
        assert_eq!(
            pick(&node, &masters, &criteria(), Fallback::Refuse, 0).unwrap_err().to_string(),
            "no master agrees with the node on any of [\"region\", \"country\"] (fallback: refuse)"
        );
        assert_eq!(pick(&node, &[], &criteria(), Fallback::First, 0), Err(NoMaster::NoneFound));
    }

    #[test]
    fn structured_and_numeric_facts_compare_by_value() {
        let node = facts(json!({"placement": {"zone": 3}}));
        let masters = [
            master("a", json!({"placement": {"zone": 2}}), 0),
            master("b", json!({"placement": {"zone": 3}}), 0),
        ];
        let choice =
            pick(&node, &masters, &["placement.zone".into()], Fallback::Refuse, 0).unwrap();
        assert_eq!(
            (choice.master.as_str(), choice.reason.as_str()),
            ("b", "placement.zone == \"3\"")
        );
    }
}
