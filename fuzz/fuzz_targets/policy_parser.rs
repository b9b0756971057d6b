//! Fuzz target for the policy and groups parsers and rule evaluation: arbitrary text must parse
//! or fail with a line number, never panic, and a parsed policy must decide for any caller.
//!
//! Run: `cargo fuzz run policy_parser --sanitizer none`.

#![no_main]

use cohort_security::policy::NodeView;
use cohort_security::{Groups, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (groups_text, policy_text) = text.split_once("\n---\n").unwrap_or(("", text));
    let groups = Groups::parse(groups_text).unwrap_or_default();
    match Policy::parse(policy_text, &groups) {
        Ok(policy) => {
            let facts = serde_json::Map::new();
            let classes = vec!["role::web".to_owned()];
            let node = NodeView { identity: "n1", facts: &facts, classes: &classes, agents: &[] };
            let _ = policy.decide("client=alice", "ping", &node);
        }
        Err(err) => assert!(err.line >= 1),
    }
});
