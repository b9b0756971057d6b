//! Aggregate summaries over all replies to one action: `summary` (value counts), `average`,
//! `sum` and `boolean_summary`. A failing aggregate is reported as failed with its reason; the
//! others still compute (reference/mcollective.md §3.4).
//!
//! New functions are added to [`FUNCTIONS`], the one list of them.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{ActionDdl, AggregateDdl};

/// The result of one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Aggregate function.
    pub function: String,
    /// Output summarized.
    pub output: String,
    /// The output's `display_as` label.
    pub display_as: String,
    /// The lines MCollective prints for it (without indentation), or why it failed.
    #[serde(flatten)]
    pub result: SummaryResult,
}

/// What an aggregate computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryResult {
    /// Distinct values with how many replies had each, most frequent first.
    Counts(Vec<(String, u64)>),
    /// One number (average, sum).
    Number(f64),
    /// The aggregate could not be computed.
    Failed(String),
}

type Function = fn(&AggregateDdl, &str, &[&Value]) -> SummaryResult;

/// Every aggregate function, by name.
pub(crate) const FUNCTIONS: &[(&str, Function)] = &[
    ("summary", summary),
    ("boolean_summary", boolean_summary),
    ("average", average),
    ("sum", sum),
    ("nagios_states", nagios_states),
];

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn count(values: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for value in values {
        match counts.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

fn summary(_: &AggregateDdl, _: &str, values: &[&Value]) -> SummaryResult {
    // Arrays count per element, as in MCollective.
    let flat = values.iter().flat_map(|value| match value {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    });
    SummaryResult::Counts(count(flat))
}

fn boolean_summary(aggregate: &AggregateDdl, _: &str, values: &[&Value]) -> SummaryResult {
    let options = aggregate.args.get(1).and_then(Value::as_object);
    let label = |key: &str, fallback: &str| {
        options.and_then(|o| o.get(key)).and_then(Value::as_str).unwrap_or(fallback).to_owned()
    };
    let (yes, no) = (label("true", "true"), label("false", "false"));
    let mut labels = Vec::new();
    for value in values {
        match value {
            Value::Bool(true) => labels.push(yes.clone()),
            Value::Bool(false) => labels.push(no.clone()),
            Value::Null => {}
            other => return SummaryResult::Failed(format!("{} is not a boolean", text(other))),
        }
    }
    SummaryResult::Counts(count(labels.into_iter()))
}

/// Nagios exit codes counted as OK/WARNING/CRITICAL/UNKNOWN, all four always shown; anything
/// that is not 0-3 (or missing) counts as UNKNOWN (the original crashed on it).
fn nagios_states(_: &AggregateDdl, _: &str, values: &[&Value]) -> SummaryResult {
    let mut counts = [0u64; 4];
    for value in values {
        let idx = match value.as_i64() {
            Some(code @ 0..=3) => usize::try_from(code).unwrap_or(3),
            _ => 3,
        };
        counts[idx] += 1;
    }
    SummaryResult::Counts(
        ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
            .iter()
            .zip(counts)
            .map(|(label, n)| ((*label).to_owned(), n))
            .collect(),
    )
}

fn numbers(output: &str, values: &[&Value]) -> Result<Vec<f64>, String> {
    values
        .iter()
        .filter(|value| !value.is_null())
        .map(|value| match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is out of range")),
            Value::String(s) => {
                s.trim().parse().map_err(|_| format!("{output} value {s:?} is not a number"))
            }
            other => Err(format!("{output} value {other} is not a number")),
        })
        .collect()
}

fn average(_: &AggregateDdl, output: &str, values: &[&Value]) -> SummaryResult {
    match numbers(output, values) {
        Ok(numbers) if numbers.is_empty() => SummaryResult::Failed("no values".into()),
        #[allow(clippy::cast_precision_loss)]
        Ok(numbers) => SummaryResult::Number(numbers.iter().sum::<f64>() / numbers.len() as f64),
        Err(err) => SummaryResult::Failed(err),
    }
}

fn sum(_: &AggregateDdl, output: &str, values: &[&Value]) -> SummaryResult {
    match numbers(output, values) {
        Ok(numbers) => SummaryResult::Number(numbers.iter().sum()),
        Err(err) => SummaryResult::Failed(err),
    }
}

/// Computes every aggregate of `action` over the data of the successful replies.
pub fn summarize<'a>(
    action: &ActionDdl,
    replies: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Vec<Summary> {
    let replies: Vec<&Map<String, Value>> = replies.into_iter().collect();
    let mut out = Vec::new();
    for aggregate in &action.aggregate {
        let output = aggregate.args.first().and_then(Value::as_str).unwrap_or_default().to_owned();
        let display_as =
            action.output.get(&output).map(|o| o.display_as.clone()).filter(|d| !d.is_empty());
        let values: Vec<&Value> = replies.iter().filter_map(|data| data.get(&output)).collect();
        let result = match FUNCTIONS.iter().find(|(name, _)| *name == aggregate.function) {
            Some((_, function)) => function(aggregate, &output, &values),
            None => {
                SummaryResult::Failed(format!("unknown aggregate function {}", aggregate.function))
            }
        };
        out.push(Summary {
            function: aggregate.function.clone(),
            display_as: display_as.unwrap_or_else(|| output.clone()),
            output,
            result,
        });
    }
    out.sort_by(|a, b| a.output.cmp(&b.output));
    out
}

impl Summary {
    /// The result lines as MCollective prints them (the caller indents them).
    pub fn lines(&self) -> Vec<String> {
        match &self.result {
            SummaryResult::Counts(counts) => {
                let width =
                    counts.iter().map(|(value, _)| value.chars().count()).max().unwrap_or(0);
                counts.iter().map(|(value, n)| format!("{value:>width$} = {n}")).collect()
            }
            SummaryResult::Number(n) if self.function == "average" => {
                vec![format!("Average of {}: {n:.6}", self.output)]
            }
            SummaryResult::Number(n) => vec![format!("Sum of {}: {n:.6}", self.output)],
            SummaryResult::Failed(reason) => {
                vec![format!("  Could not compute summary - {reason}")]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentDdl;

    #[test]
    fn summaries() {
        let ddl = AgentDdl::from_json(
            r#"{"metadata": {"name": "t", "description": "", "timeout": 1}, "actions": [{"action": "a",
                "output": {"country": {"display_as": "Country"}, "load": {"display_as": "Load"},
                           "enabled": {"display_as": "Enabled"}, "roles": {"display_as": "Roles"}},
                "aggregate": [{"function": "summary", "args": ["country"]},
                              {"function": "average", "args": ["load"]},
                              {"function": "sum", "args": ["load"]},
                              {"function": "summary", "args": ["roles"]},
                              {"function": "boolean_summary", "args": ["enabled", {"true": "on", "false": "off"}]},
                              {"function": "nagios_states", "args": ["country"]},
                              {"function": "no_such_function", "args": ["country"]}]}]}"#,
        )
        .unwrap();
        let replies: Vec<Map<String, Value>> = [
            r#"{"country": "uk", "load": 1, "enabled": true, "roles": ["web", "db"]}"#,
            r#"{"country": "uk", "load": "2", "enabled": false, "roles": ["web"]}"#,
            r#"{"country": "fr", "load": 3.0, "enabled": true, "roles": []}"#,
        ]
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
        let summaries = summarize(ddl.action("a").unwrap(), &replies);
        let rendered: Vec<(String, Vec<String>)> = summaries
            .iter()
            .map(|s| (format!("{}({})", s.function, s.output), s.lines()))
            .collect();
        assert_eq!(
            rendered,
            [
                ("summary(country)".to_owned(), vec!["uk = 2".to_owned(), "fr = 1".to_owned()]),
                (
                    "nagios_states(country)".to_owned(),
                    vec![
                        "      OK = 0".to_owned(),
                        " WARNING = 0".to_owned(),
                        "CRITICAL = 0".to_owned(),
                        " UNKNOWN = 3".to_owned()
                    ]
                ),
                (
                    "no_such_function(country)".to_owned(),
                    vec![
                        "  Could not compute summary - unknown aggregate function no_such_function"
                            .to_owned()
                    ]
                ),
                (
                    "boolean_summary(enabled)".to_owned(),
                    vec![" on = 2".to_owned(), "off = 1".to_owned()]
                ),
                ("average(load)".to_owned(), vec!["Average of load: 2.000000".to_owned()]),
                ("sum(load)".to_owned(), vec!["Sum of load: 6.000000".to_owned()]),
                ("summary(roles)".to_owned(), vec!["web = 2".to_owned(), " db = 1".to_owned()]),
            ]
        );
    }
}
