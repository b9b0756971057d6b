//! Per-agent authorization policies: MCollective's actionpolicy format, with its bugs fixed.
//!
//! A policy file (`<agent>.policy`) holds `#` comments, blank lines, an optional
//! `policy default allow|deny`, and rules of four or five fields separated by tabs:
//!
//! ```text
//! allow<TAB>client=alice client=bob<TAB>ping status<TAB>country=uk<TAB>role::web
//! deny<TAB>admins<TAB>restart<TAB>*<TAB>*
//! allow<TAB>*<TAB>*<TAB>os.family=Debian and role::web
//! ```
//!
//! decision, callers (`*`, exact caller ids, or group names from the `groups` file), actions
//! (`*` or names), facts (`*`, `fact<op>value` items that must all hold, or a compound `-S`
//! expression), classes (`*`, class names that must all be present, or a compound expression).
//! The first matching rule decides. Fixed against the original (reference/mcollective.md §10):
//! callers are compared exactly, never as a substring of the field; `*` in the facts field
//! means any node in both the four- and five-field forms; a line that does not parse is an
//! error naming the line, never silently skipped (a policy that cannot be read denies all).
//! Pure: files are read by the caller.

use std::collections::HashMap;
use std::fmt;

use cohort_filter::{Node, matches, parse_compound, parse_fact};
use cohort_proto::Filter;

/// How a policy sees the node it runs on (the filter language's view).
pub use cohort_filter::Node as NodeView;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may run.
    Allow,
    /// The request is refused.
    Deny,
}

impl Decision {
    fn parse(text: &str) -> Option<Decision> {
        match text {
            "allow" => Some(Decision::Allow),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }

    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy or groups file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Caller groups: `name caller caller …` per line.
#[derive(Debug, Clone, Default)]
pub struct Groups(HashMap<String, Vec<String>>);

impl Groups {
    /// Parses a groups file.
    pub fn parse(text: &str) -> Result<Groups, PolicyError> {
        let mut groups = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                return Err(PolicyError {
                    line: index + 1,
                    message: format!("group name {name:?} may hold only letters, digits, _ . -"),
                });
            }
            groups.insert(name.to_owned(), words.map(str::to_owned).collect());
        }
        Ok(Groups(groups))
    }
}

#[derive(Debug, Clone)]
struct Rule {
    line: usize,
    decision: Decision,
    /// `None` for `*`.
    callers: Option<Vec<String>>,
    /// `None` for `*`.
    actions: Option<Vec<String>>,
    filter: Filter,
}

/// One agent's policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    default: Option<Decision>,
    rules: Vec<Rule>,
}

/// A decision and what made it, for the reply and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed or not.
    pub decision: Decision,
    /// The rule: `line 3`, `policy default`, or the configured default.
    pub rule: String,
}

impl Policy {
    /// A policy that denies everything: what an agent gets when its policy file cannot be read.
    pub fn deny_all() -> Policy {
        Policy { default: Some(Decision::Deny), rules: Vec::new() }
    }

    /// Parses a policy file, resolving group names with `groups`.
    pub fn parse(text: &str, groups: &Groups) -> Result<Policy, PolicyError> {
        let mut policy = Policy::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| PolicyError { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("policy default") {
                let decision = Decision::parse(rest.trim()).ok_or_else(|| {
                    err(format!("expected 'policy default allow' or 'deny', found {trimmed:?}"))
                })?;
                policy.default = Some(decision);
                continue;
            }
            let fields: Vec<&str> =
                trimmed.split('\t').map(str::trim).filter(|f| !f.is_empty()).collect();
            if !(4..=5).contains(&fields.len()) {
                return Err(err(format!(
                    "expected 4 or 5 tab-separated fields (allow|deny, callers, actions, facts [, classes]), found {}",
                    fields.len()
                )));
            }
            let decision = Decision::parse(fields[0])
                .ok_or_else(|| err(format!("expected allow or deny, found {:?}", fields[0])))?;
            let callers = if fields[1] == "*" {
                None
            } else {
                let mut callers = Vec::new();
                for word in fields[1].split_whitespace() {
                    if word.contains('=') {
                        callers.push(word.to_owned());
                    } else {
                        let members = groups.0.get(word).ok_or_else(|| {
                            err(format!("{word:?} is neither a caller id (kind=name) nor a group in the groups file"))
                        })?;
                        callers.extend(members.iter().cloned());
                    }
                }
                Some(callers)
            };
            let actions = (fields[2] != "*")
                .then(|| fields[2].split_whitespace().map(str::to_owned).collect());
            let mut filter = Filter::default();
            if fields[3] != "*" {
                add_facts(&mut filter, fields[3]).map_err(err)?;
            }
            if let Some(classes) = fields.get(4)
                && *classes != "*"
            {
                add_classes(&mut filter, classes).map_err(err)?;
            }
            policy.rules.push(Rule { line, decision, callers, actions, filter });
        }
        Ok(policy)
    }

    /// The first rule matching `caller`, `action` and `node`, else the file's default.
    pub fn decide(&self, caller: &str, action: &str, node: &Node<'_>) -> Option<Verdict> {
        for rule in &self.rules {
            let caller_ok =
                rule.callers.as_ref().is_none_or(|callers| callers.iter().any(|c| c == caller));
            let action_ok =
                rule.actions.as_ref().is_none_or(|actions| actions.iter().any(|a| a == action));
            if caller_ok && action_ok && matches(&rule.filter, node) {
                return Some(Verdict {
                    decision: rule.decision,
                    rule: format!("line {}", rule.line),
                });
            }
        }
        self.default.map(|decision| Verdict { decision, rule: "policy default".to_owned() })
    }
}

fn looks_compound(field: &str) -> bool {
    field.contains('(')
        || field.split_whitespace().any(|word| matches!(word, "and" | "or" | "not" | "!"))
}

fn add_facts(filter: &mut Filter, field: &str) -> Result<(), String> {
    if looks_compound(field) {
        let expr = parse_compound(field).map_err(|e| e.to_string())?;
        filter.compound.push(expr);
        return Ok(());
    }
    for word in field.split_whitespace() {
        filter.fact.push(parse_fact(word).map_err(|e| e.to_string())?);
    }
    Ok(())
}

fn add_classes(filter: &mut Filter, field: &str) -> Result<(), String> {
    if looks_compound(field) || field.contains('=') {
        let expr = parse_compound(field).map_err(|e| e.to_string())?;
        filter.compound.push(expr);
        return Ok(());
    }
    filter.class.extend(field.split_whitespace().map(str::to_owned));
    Ok(())
}

/// Every agent's policy plus the defaults for agents without one.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    policies: HashMap<String, Policy>,
    defaults: HashMap<String, Decision>,
    fallback: Option<Decision>,
}

/// Built-in agents that only read: allowed when nothing else is configured. Every other agent
/// (external ones may change anything) is denied unless a policy or a default allows it.
pub const READ_ONLY_AGENTS: &[&str] = &["rpcutil", "discovery", "nrpe"];

impl Authorizer {
    /// An authorizer with `policies` by agent, per-agent `defaults` from configuration, and a
    /// `fallback` default for agents that have neither.
    pub fn new(
        policies: HashMap<String, Policy>,
        defaults: HashMap<String, Decision>,
        fallback: Option<Decision>,
    ) -> Authorizer {
        Authorizer { policies, defaults, fallback }
    }

    /// Decides whether `caller` may run `agent`/`action` on `node`.
    pub fn authorize(&self, agent: &str, caller: &str, action: &str, node: &Node<'_>) -> Verdict {
        if let Some(verdict) =
            self.policies.get(agent).and_then(|policy| policy.decide(caller, action, node))
        {
            return Verdict { rule: format!("{agent}.policy {}", verdict.rule), ..verdict };
        }
        if let Some(decision) = self.defaults.get(agent) {
            return Verdict {
                decision: *decision,
                rule: format!("configured default for {agent}"),
            };
        }
        if let Some(decision) = self.fallback {
            return Verdict { decision, rule: "configured default".to_owned() };
        }
        if READ_ONLY_AGENTS.contains(&agent) {
            Verdict { decision: Decision::Allow, rule: "read-only built-in agent".to_owned() }
        } else {
            Verdict { decision: Decision::Deny, rule: "no policy (default deny)".to_owned() }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    struct Fixture {
        facts: Map<String, Value>,
        classes: Vec<String>,
        agents: Vec<String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let Value::Object(facts) = json!({"country": "uk", "os": {"family": "Debian"}}) else {
                unreachable!()
            };
            Fixture { facts, classes: vec!["role::web".into()], agents: vec![] }
        }

        fn node(&self) -> Node<'_> {
            Node {
                identity: "web1",
                facts: &self.facts,
                classes: &self.classes,
                agents: &self.agents,
            }
        }
    }

    fn decide(policy: &str, caller: &str, action: &str) -> Option<(Decision, String)> {
        let groups = Groups::parse("admins client=root client=ops\n").unwrap();
        let policy = Policy::parse(policy, &groups).unwrap();
        let fixture = Fixture::new();
        policy.decide(caller, action, &fixture.node()).map(|v| (v.decision, v.rule))
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let policy = "# test\npolicy default deny\n\
                      deny\tclient=bob\t*\t*\t*\n\
                      allow\tclient=alice client=bob\tping status\tcountry=uk\trole::web\n\
                      allow\tadmins\t*\t*\n";
        assert_eq!(
            decide(policy, "client=alice", "ping"),
            Some((Decision::Allow, "line 4".into()))
        );
        assert_eq!(decide(policy, "client=bob", "ping"), Some((Decision::Deny, "line 3".into())));
        assert_eq!(
            decide(policy, "client=alice", "restart"),
            Some((Decision::Deny, "policy default".into()))
        );
        assert_eq!(decide(policy, "client=ops", "restart").map(|v| v.0), Some(Decision::Allow));
    }

    #[test]
    fn original_bugs_are_fixed() {
        // Substring caller match: "client=adm" is not "client=admin".
        let policy = "allow\tclient=admin client=ops\t*\t*\t*\n";
        assert_eq!(decide(policy, "client=adm", "x"), None);
        assert_eq!(decide(policy, "client=admin", "x").map(|v| v.0), Some(Decision::Allow));
        // `*` in the facts field of a 4-field line matches every node.
        assert_eq!(decide("allow\t*\t*\t*\n", "client=x", "y").map(|v| v.0), Some(Decision::Allow));
    }

    #[test]
    fn facts_classes_and_compound() {
        let miss = "allow\t*\t*\tcountry=de\t*\n";
        assert_eq!(decide(miss, "client=a", "x"), None);
        let compound = "allow\t*\t*\tos.family=Debian and role::web\n";
        assert_eq!(decide(compound, "client=a", "x").map(|v| v.0), Some(Decision::Allow));
        let not_class = "allow\t*\t*\t*\tnot role::web\n";
        assert_eq!(decide(not_class, "client=a", "x"), None);
        let classes = "allow\t*\t*\t*\trole::web /^ro/\n";
        assert_eq!(decide(classes, "client=a", "x").map(|v| v.0), Some(Decision::Allow));
    }

    #[test]
    fn errors_name_the_line() {
        let groups = Groups::default();
        for (text, line, needle) in [
            ("allow *\t*\t*\n", 1, "tab-separated"),
            ("\n\nmaybe\t*\t*\t*\n", 3, "allow or deny"),
            ("allow\tstrangers\t*\t*\n", 1, "neither a caller id"),
            ("allow\t*\t*\tcountry\n", 1, "invalid fact filter"),
            ("policy default perhaps\n", 1, "policy default"),
            ("allow\t*\t*\t(a=1\n", 1, "-S"),
        ] {
            let err = Policy::parse(text, &groups).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
        assert!(Groups::parse("bad/name x\n").is_err());
    }

    #[test]
    fn authorizer_defaults() {
        let fixture = Fixture::new();
        let node = fixture.node();
        let mut policies = HashMap::new();
        policies.insert(
            "deploy".to_owned(),
            Policy::parse("allow\tclient=a\t*\t*\n", &Groups::default()).unwrap(),
        );
        let auth = Authorizer::new(policies, HashMap::new(), None);
        assert_eq!(auth.authorize("deploy", "client=a", "go", &node).decision, Decision::Allow);
        let denied = auth.authorize("deploy", "client=b", "go", &node);
        assert_eq!(denied.decision, Decision::Deny);
        assert_eq!(auth.authorize("rpcutil", "client=b", "ping", &node).decision, Decision::Allow);
        assert_eq!(auth.authorize("other", "client=b", "x", &node).decision, Decision::Deny);
        let mut defaults = HashMap::new();
        defaults.insert("other".to_owned(), Decision::Allow);
        let auth = Authorizer::new(HashMap::new(), defaults, Some(Decision::Deny));
        assert_eq!(auth.authorize("other", "client=b", "x", &node).decision, Decision::Allow);
        assert_eq!(auth.authorize("rpcutil", "client=b", "x", &node).decision, Decision::Deny);
    }
}
