//! The record of the last boot (`<spool>/status.json`), and its rendering for
//! `cohort boot status`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How one action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Ran and succeeded.
    Ok,
    /// Ran and failed.
    Failed,
    /// Already ran for this instance (semaphore present).
    Skipped,
    /// Not reached: an earlier action failed and stopped the run.
    NotRun,
}

/// One action's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Its semaphore name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Outcome.
    pub status: ActionStatus,
    /// How long it ran.
    pub duration_ms: u64,
    /// The last lines of its output.
    pub output_tail: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The instance, when metadata was had.
    pub instance_id: Option<String>,
    /// Where metadata came from.
    pub datasource: String,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    pub finished: String,
    /// Whether the boot succeeded.
    pub ok: bool,
    /// Why it failed, if it failed outside an action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every action of the user data, in order.
    pub actions: Vec<ActionRecord>,
}

/// Reads the last boot's record, if any.
pub fn load(path: &Path) -> Result<Option<BootRecord>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| format!("{}: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// Saves a boot record (0600: action output may be sensitive).
pub fn save(path: &Path, record: &BootRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::layout::write_atomic(path, &bytes, 0o600)
}

/// The record as text.
pub fn render(record: &BootRecord) -> String {
    let mut text = format!(
        "Last boot: {} ({} to {})\nInstance:  {}\nSource:    {}\n",
        if record.ok { "ok" } else { "FAILED" },
        record.started,
        record.finished,
        record.instance_id.as_deref().unwrap_or("-"),
        record.datasource,
    );
    if let Some(error) = &record.error {
        text.push_str(&format!("Error:     {error}\n"));
    }
    if !record.actions.is_empty() {
        text.push_str("\nActions:\n");
    }
    for action in &record.actions {
        let status = match action.status {
            ActionStatus::Ok => "ok",
            ActionStatus::Failed => "failed",
            ActionStatus::Skipped => "skipped",
            ActionStatus::NotRun => "not run",
        };
        text.push_str(&format!(
            "  {:<24} {:<12} {:<8} {:>7} ms\n",
            action.name, action.kind, status, action.duration_ms
        ));
        if let Some(error) = &action.error {
            text.push_str(&format!("      error: {error}\n"));
        }
        for line in action.output_tail.lines() {
            text.push_str(&format!("      | {line}\n"));
        }
    }
    text
}
