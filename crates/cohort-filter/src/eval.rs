//! Evaluating a filter against one node.
//!
//! Fact comparison: a missing fact never matches; an array fact matches `==`, `=~` and the
//! orderings when any element does, and `!=` when none equals the value (MCollective's "any
//! element differs" made `roles!=web` true for `[web, db]`); an object fact is compared by its
//! keys; ordering operators compare numerically when both sides are numbers and as text
//! otherwise; `==` also treats `2` and `2.0` as equal.

use std::cell::RefCell;
use std::collections::HashMap;

use cohort_proto::{Expr, FactFilter, FactOp, Filter};
use regex::Regex;
use serde_json::{Map, Value};

use crate::{FilterError, regex_body};

/// What a node knows about itself, as filters see it.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Its identity.
    pub identity: &'a str,
    /// Its facts; dotted paths reach into nested objects.
    pub facts: &'a Map<String, Value>,
    /// Its classes.
    pub classes: &'a [String],
    /// The agents it hosts.
    pub agents: &'a [String],
}

thread_local! {
    /// Compiled patterns: every node in a simulated fleet evaluates the same few, and compiling
    /// dominates evaluation otherwise. Bounded: cleared when full.
    static PATTERNS: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

fn with_regex<T>(pattern: &str, use_it: impl FnOnce(Option<&Regex>) -> T) -> T {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(pattern) {
            if cache.len() >= 256 {
                cache.clear();
            }
            cache.insert(pattern.to_owned(), Regex::new(pattern).ok());
        }
        use_it(cache.get(pattern).and_then(Option::as_ref))
    })
}

fn regex_matches(pattern: &str, text: &str) -> bool {
    with_regex(pattern, |regex| regex.is_some_and(|regex| regex.is_match(text)))
}

/// Exact, or regular expression when written `/.../`.
fn name_matches(want: &str, have: &str) -> bool {
    match regex_body(want) {
        Some(pattern) => regex_matches(pattern, have),
        None => want == have,
    }
}

/// Whether `node` is selected by `filter`. A pattern that does not compile matches nothing;
/// clients reject such filters before sending ([`validate`]).
pub fn matches(filter: &Filter, node: &Node<'_>) -> bool {
    filter.fact.iter().all(|fact| fact_matches(fact, node))
        && filter
            .class
            .iter()
            .all(|class| node.classes.iter().any(|have| name_matches(class, have)))
        && filter.agent.iter().all(|agent| node.agents.iter().any(|have| name_matches(agent, have)))
        && (filter.identity.is_empty()
            || filter.identity.iter().any(|want| name_matches(want, node.identity)))
        && filter.compound.iter().all(|expr| expr_matches(expr, node))
}

fn expr_matches(expr: &Expr, node: &Node<'_>) -> bool {
    match expr {
        Expr::And(a, b) => expr_matches(a, node) && expr_matches(b, node),
        Expr::Or(a, b) => expr_matches(a, node) || expr_matches(b, node),
        Expr::Not(a) => !expr_matches(a, node),
        Expr::Fact(fact) => fact_matches(fact, node),
        Expr::Class(class) => node.classes.iter().any(|have| name_matches(class, have)),
    }
}

/// The fact at `path`: a key as written first (fact files may use dotted keys), then a walk
/// through nested objects (and arrays, by index).
pub fn lookup<'a>(facts: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = facts.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = facts.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn fact_matches(filter: &FactFilter, node: &Node<'_>) -> bool {
    let Some(value) = lookup(node.facts, &filter.fact) else { return false };
    match value {
        Value::Null => false,
        Value::Array(items) if filter.op == FactOp::Ne => {
            !items.iter().any(|item| scalar_matches(item, FactOp::Eq, &filter.value))
        }
        Value::Array(items) => {
            items.iter().any(|item| scalar_matches(item, filter.op, &filter.value))
        }
        Value::Object(map) if filter.op == FactOp::Ne => {
            !map.keys().any(|key| compare_text(key, FactOp::Eq, &filter.value))
        }
        Value::Object(map) => map.keys().any(|key| compare_text(key, filter.op, &filter.value)),
        scalar => scalar_matches(scalar, filter.op, &filter.value),
    }
}

fn scalar_matches(value: &Value, op: FactOp, want: &str) -> bool {
    match value {
        Value::String(text) => compare_text(text, op, want),
        Value::Number(number) => compare_text(&number.to_string(), op, want),
        Value::Bool(flag) => compare_text(if *flag { "true" } else { "false" }, op, want),
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn compare_text(have: &str, op: FactOp, want: &str) -> bool {
    if op == FactOp::Match {
        return regex_matches(want, have);
    }
    let ordering = match (number(have), number(want)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => Some(have.cmp(want)),
    };
    let Some(ordering) = ordering else { return false };
    match op {
        FactOp::Eq => ordering.is_eq(),
        FactOp::Ne => !ordering.is_eq(),
        FactOp::Lt => ordering.is_lt(),
        FactOp::Gt => ordering.is_gt(),
        FactOp::Le => ordering.is_le(),
        FactOp::Ge => ordering.is_ge(),
        FactOp::Match => false,
    }
}

/// Checks every regular expression in `filter` compiles, so a bad one is reported before the
/// request is sent rather than silently matching nothing on every node.
pub fn validate(filter: &Filter) -> Result<(), FilterError> {
    let check = |pattern: &str| {
        Regex::new(pattern).map(|_| ()).map_err(|err| FilterError::Regex {
            pattern: pattern.to_owned(),
            reason: err.to_string(),
        })
    };
    let check_name = |name: &str| regex_body(name).map_or(Ok(()), check);
    for fact in &filter.fact {
        if fact.op == FactOp::Match {
            check(&fact.value)?;
        }
    }
    for name in filter.class.iter().chain(&filter.identity).chain(&filter.agent) {
        check_name(name)?;
    }
    fn walk(
        expr: &Expr,
        check: &dyn Fn(&str) -> Result<(), FilterError>,
    ) -> Result<(), FilterError> {
        match expr {
            Expr::And(a, b) | Expr::Or(a, b) => {
                walk(a, check)?;
                walk(b, check)
            }
            Expr::Not(a) => walk(a, check),
            Expr::Fact(fact) if fact.op == FactOp::Match => check(&fact.value),
            Expr::Fact(_) => Ok(()),
            Expr::Class(class) => regex_body(class).map_or(Ok(()), check),
        }
    }
    for expr in &filter.compound {
        walk(expr, &check)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
