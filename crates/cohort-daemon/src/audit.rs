//! The audit log: one JSON object per line for every request this node handled or refused.
//!
//! Unlike MCollective's, which recorded only requests that passed authorization (reference
//! mcollective.md §5.5), refusals are recorded too: an unsigned, forged, expired, replayed or
//! denied request is exactly what an investigation looks for. Inputs the DDL marks `sensitive`
//! are replaced by `"[redacted]"`. The file is created 0600, appended with one write per
//! record, and reopened on SIGHUP so logrotate can move it away.
//!
//! Nothing an attacker sizes reaches the disk unbounded: claimed text fields are cut at
//! [`FIELD_LIMIT`] bytes, and refusals of unverified traffic (which anyone on the bus can send)
//! are rate-limited by an [`AuditBudget`], the rest counted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// Authorized; the agent ran.
    Allow,
    /// Refused by policy; the agent did not run.
    Deny,
    /// Refused before authorization: unsigned, forged, expired, replayed, or not a request.
    Refused,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the node decided, RFC 3339 UTC.
    pub time: String,
    /// This node.
    pub node: String,
    /// The request id, when the message decoded that far.
    pub request_id: Option<String>,
    /// The request's own time, Unix milliseconds.
    pub request_time: Option<i64>,
    /// The caller: verified from its credential, or as claimed when `verified` is false.
    pub caller: Option<String>,
    /// Whether the caller was proven by a signature.
    pub verified: bool,
    /// The sending host, as claimed.
    pub sender: Option<String>,
    /// Agent asked for.
    pub agent: Option<String>,
    /// Action asked for.
    pub action: Option<String>,
    /// Inputs, with sensitive ones redacted.
    pub inputs: Option<Map<String, Value>>,
    /// Allow, deny or refused.
    pub decision: AuditDecision,
    /// The policy rule that decided, for allow and deny.
    pub rule: Option<String>,
    /// Why it was refused or denied.
    pub reason: Option<String>,
    /// Status code of the reply, when the agent ran or was denied.
    pub status: Option<u8>,
    /// Time spent on the request, milliseconds.
    pub duration_ms: Option<f64>,
}

impl AuditRecord {
    /// A record with only the decision and node filled in.
    pub fn new(node: &str, decision: AuditDecision, now: SystemTime) -> AuditRecord {
        AuditRecord {
            time: humantime::format_rfc3339_millis(now).to_string(),
            node: node.to_owned(),
            request_id: None,
            request_time: None,
            caller: None,
            verified: false,
            sender: None,
            agent: None,
            action: None,
            inputs: None,
            decision,
            rule: None,
            reason: None,
            status: None,
            duration_ms: None,
        }
    }
}

/// Longest claimed text (caller, sender, action, reason) copied into a record, in bytes.
pub const FIELD_LIMIT: usize = 256;

fn bounded(text: &mut Option<String>) {
    if let Some(text) = text
        && text.len() > FIELD_LIMIT
    {
        let mut end = FIELD_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…[cut]");
    }
}

impl AuditRecord {
    /// Cuts the claimed text fields at [`FIELD_LIMIT`] bytes.
    pub fn bound(&mut self) {
        for field in [
            &mut self.request_id,
            &mut self.caller,
            &mut self.sender,
            &mut self.agent,
            &mut self.action,
            &mut self.reason,
        ] {
            bounded(field);
        }
    }
}

/// A token bucket for audit lines about unverified traffic: `burst` at once, then `per_second`.
/// Pure: the time is passed in.
#[derive(Debug, Clone)]
pub struct AuditBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl AuditBudget {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32) -> AuditBudget {
        let burst = f64::from(burst.max(1));
        AuditBudget { per_second: f64::from(per_second), burst, tokens: burst, last: None }
    }

    /// Whether one more line may be written at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).min(Duration::from_secs(3600));
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Replaces the values of `sensitive` inputs.
pub fn redact(inputs: &Map<String, Value>, sensitive: &[&str]) -> Map<String, Value> {
    inputs
        .iter()
        .map(|(key, value)| {
            let value = if sensitive.contains(&key.as_str()) {
                Value::String("[redacted]".to_owned())
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect()
}

/// The open audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    /// Lines that could not be written (a full disk), for the metrics.
    errors: std::sync::atomic::AtomicU64,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(open(path)?),
            errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record, its claimed fields cut (see [`AuditRecord::bound`]). A failure is
    /// logged, never fatal to the request.
    pub fn write(&self, mut record: AuditRecord) {
        record.bound();
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = file.write_all(&line) {
            self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), "cannot write the audit log: {err}");
        }
    }

    /// Lines that could not be written since start.
    pub fn write_errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reopens the file by path (after log rotation moved it away).
    pub fn reopen(&self) {
        match open(&self.path) {
            Ok(fresh) => *self.file.lock().unwrap_or_else(PoisonError::into_inner) = fresh,
            Err(err) => tracing::error!(
                path = %self.path.display(),
                "cannot reopen the audit log, still writing to the old file: {err}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_a_rate() {
        let mut budget = AuditBudget::new(10, 5);
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| budget.take(t0)).count(), 5, "the burst");
        assert!(!budget.take(t0 + Duration::from_millis(50)), "half a token");
        assert!(budget.take(t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(!budget.take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| budget.take(later)).count(), 5, "refilled to the burst only");
    }

    #[test]
    fn claimed_fields_are_cut() {
        let mut record = AuditRecord::new("n1", AuditDecision::Refused, SystemTime::UNIX_EPOCH);
        record.sender = Some("é".repeat(1000));
        record.caller = Some("client=x".into());
        record.bound();
        let sender = record.sender.unwrap();
        assert!(sender.len() <= FIELD_LIMIT + 8 && sender.ends_with("…[cut]"), "{sender}");
        assert_eq!(record.caller.unwrap(), "client=x");
    }

    #[test]
    fn lines_redaction_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let mut record = AuditRecord::new("n1", AuditDecision::Allow, SystemTime::UNIX_EPOCH);
        let mut inputs = Map::new();
        inputs.insert("password".into(), Value::String("hunter2".into()));
        inputs.insert("user".into(), Value::String("bob".into()));
        record.inputs = Some(redact(&inputs, &["password"]));
        log.write(record);
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.reopen();
        log.write(AuditRecord::new("n1", AuditDecision::Refused, SystemTime::UNIX_EPOCH));
        let old = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        let line: Value = serde_json::from_str(old.trim()).unwrap();
        assert_eq!(line["inputs"]["password"], "[redacted]");
        assert_eq!(line["inputs"]["user"], "bob");
        assert_eq!(line["time"], "1970-01-01T00:00:00.000Z");
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("\"decision\":\"refused\""));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
