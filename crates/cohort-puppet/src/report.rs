//! Puppet's record of its last run: `last_run_summary.yaml` (counts and times) and, when
//! Puppet keeps it, `last_run_report.yaml` (log lines, and the resources by type). Pure: text in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The parts of `last_run_summary.yaml` Cohort reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Summary {
    /// `config` (the catalog version) and `puppet`.
    #[serde(default)]
    pub version: BTreeMap<String, serde_json::Value>,
    /// `total`, `changed`, `failed`, `out_of_sync`, `corrective_change`, …
    #[serde(default)]
    pub resources: BTreeMap<String, i64>,
    /// Seconds per phase and per resource type; `last_run` is when it completed.
    #[serde(default)]
    pub time: BTreeMap<String, f64>,
    /// `total` changes.
    #[serde(default)]
    pub changes: BTreeMap<String, i64>,
    /// `failure`, `success`, `total` events.
    #[serde(default)]
    pub events: BTreeMap<String, i64>,
}

/// Why a summary could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("last run summary: {0}")]
pub struct SummaryError(pub String);

impl Summary {
    /// Parses `last_run_summary.yaml`.
    pub fn parse(text: &str) -> Result<Summary, SummaryError> {
        serde_saphyr::from_str(text).map_err(|err| SummaryError(err.to_string()))
    }

    /// When the run completed (seconds since the epoch).
    pub fn last_run(&self) -> Option<i64> {
        #[allow(clippy::cast_possible_truncation)]
        self.time.get("last_run").map(|t| *t as i64)
    }

    /// A resource count, `-1` when the summary has none (a run that failed before applying).
    pub fn count(&self, name: &str) -> i64 {
        self.resources.get(name).copied().unwrap_or(-1)
    }

    /// The catalog version, as text.
    pub fn config_version(&self) -> String {
        match self.version.get("config") {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

/// One log line of the last run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Log {
    /// `notice`, `err`, `warning`, …
    #[serde(default)]
    pub level: String,
    /// The message.
    #[serde(default)]
    pub message: String,
    /// Where it came from (`/Stage[main]/Main/Exec[x]/returns`, `Facter`, `Puppet`).
    #[serde(default)]
    pub source: String,
    /// When.
    #[serde(default)]
    pub time: String,
}

#[derive(Debug, Deserialize)]
struct ResourceStatus {
    #[serde(default)]
    resource_type: String,
}

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(default)]
    logs: Vec<Log>,
    #[serde(default)]
    resource_statuses: BTreeMap<String, ResourceStatus>,
}

/// What the last run report holds that the summary does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportDetails {
    /// The run's log lines.
    pub logs: Vec<Log>,
    /// How many resources of each type the catalog had.
    pub type_distribution: BTreeMap<String, i64>,
}

/// Parses `last_run_report.yaml`; Puppet tags its document `!ruby/object:...`, which says
/// nothing we need, so the tag is dropped first.
pub fn parse_report(text: &str) -> Result<ReportDetails, SummaryError> {
    let body = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("--- !ruby/") => format!("---\n{rest}"),
        _ => text.to_owned(),
    };
    let report: Report =
        serde_saphyr::from_str(&body).map_err(|err| SummaryError(format!("report: {err}")))?;
    let mut type_distribution = BTreeMap::new();
    for status in report.resource_statuses.values() {
        *type_distribution.entry(status.resource_type.clone()).or_insert(0) += 1;
    }
    Ok(ReportDetails { logs: report.logs, type_distribution })
}

/// Counts per type from Puppet's `resources.txt` (`type[title]` lines), when there is no report.
pub fn type_distribution(resources_txt: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in resources_txt.lines() {
        if let Some((kind, _)) = line.split_once('[') {
            let mut name: Vec<char> = kind.chars().collect();
            if let Some(first) = name.first_mut() {
                *first = first.to_ascii_uppercase();
            }
            *out.entry(name.into_iter().collect::<String>()).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "---\nversion:\n  config: 1700000000\n  puppet: 7.23.0\nresources:\n  changed: 2\n  failed: 0\n  out_of_sync: 2\n  total: 9\ntime:\n  exec: 1.01\n  total: 2.77\n  config_retrieval: 0.0125\n  last_run: 1796227898\nchanges:\n  total: 2\nevents:\n  failure: 0\n  success: 2\n  total: 2\n";

    #[test]
    fn summary() {
        let summary = Summary::parse(SUMMARY).unwrap();
        assert_eq!(summary.last_run(), Some(1_796_227_898));
        assert_eq!(summary.count("total"), 9);
        assert_eq!(summary.count("corrective_change"), -1);
        assert_eq!(summary.config_version(), "1700000000");
        assert_eq!(summary.events["success"], 2);
        assert!(Summary::parse("- a list").is_err());
    }

    #[test]
    fn report_with_ruby_tag() {
        let report = "--- !ruby/object:Puppet::Transaction::Report\nhost: node1\nlogs:\n- level: notice\n  message: hi\n  source: Puppet\n  tags:\n  - notice\n  time: '2026-12-02T16:12:06+00:00'\n  file:\n  line:\nresource_statuses:\n  Notify[hello]:\n    title: hello\n    resource_type: Notify\n  Exec[a]:\n    resource_type: Exec\n  Exec[b]:\n    resource_type: Exec\n";
        let details = parse_report(report).unwrap();
        assert_eq!(details.logs[0].message, "hi");
        assert_eq!(details.type_distribution["Exec"], 2);
        assert_eq!(details.type_distribution["Notify"], 1);
        let counted = type_distribution("notify[hello]\nexec[a]\nexec[b]\n");
        assert_eq!(counted["Exec"], 2);
    }
}
