//! What the Puppet agent on a node is doing, from Puppet's own files: the disable lock
//! (`agent_disabled.lock`, JSON `{"disabled_message": ...}`), the catalog run lock (the pid of
//! the run applying a catalog), the daemon's pid file and the last run's time. Pure: the caller
//! reads the files, says which pids are alive and gives the time.

use serde::{Deserialize, Serialize};

/// The files' contents as read (`None`: the file does not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// `agent_disabled_lockfile`.
    pub disabled_lock: Option<String>,
    /// `agent_catalog_run_lockfile`.
    pub run_lock: Option<String>,
    /// The agent daemon's `pidfile`.
    pub pidfile: Option<String>,
    /// `time.last_run` of the last run summary (seconds since the epoch).
    pub last_run: Option<i64>,
}

/// One word for what the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activity {
    /// Disabled with `puppet agent --disable` (or Cohort's `disable`).
    #[serde(rename = "disabled")]
    Disabled,
    /// A run is applying a catalog.
    #[serde(rename = "applying a catalog")]
    Applying,
    /// The daemon runs and waits for its next run.
    #[serde(rename = "idling")]
    Idling,
    /// No daemon, no run.
    #[serde(rename = "stopped")]
    Stopped,
}

impl Activity {
    /// The word MCollective's puppet agent used.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Disabled => "disabled",
            Activity::Applying => "applying a catalog",
            Activity::Idling => "idling",
            Activity::Stopped => "stopped",
        }
    }
}

/// The agent's status, as the `status` action reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// A run is applying a catalog now.
    pub applying: bool,
    /// The daemon runs and is not applying.
    pub idling: bool,
    /// Not disabled.
    pub enabled: bool,
    /// The agent daemon runs.
    pub daemon_present: bool,
    /// When the last run completed (seconds since the epoch; 0: never).
    pub lastrun: i64,
    /// Seconds since then (0 when never).
    pub since_lastrun: i64,
    /// One word (`disabled`, `applying a catalog`, `idling`, `stopped`).
    pub status: Activity,
    /// Why it was disabled (empty when enabled or no reason was given).
    pub disable_message: String,
    /// `Currently idling; last completed run 9 minutes 11 seconds ago`.
    pub message: String,
}

/// The reason in a disable lock; an empty or unreadable lock (Puppet before 3) has none.
pub fn disable_message(lock: &str) -> String {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        disabled_message: String,
    }
    serde_json::from_str::<Lock>(lock).map(|l| l.disabled_message).unwrap_or_default()
}

/// The pid a lock or pid file holds.
pub fn pid_in(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// `9 minutes 11 seconds`, `1 day 2 hours`, `0 seconds`: the two largest units that are not zero.
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let units = [("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)];
    let mut parts = Vec::new();
    let mut left = seconds;
    for (name, size) in units {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        return "0 seconds".to_owned();
    }
    parts.truncate(2);
    parts.join(" ")
}

/// The status from the files, `alive(pid)` and the time now (seconds since the epoch). A lock
/// whose process is gone is stale and means nothing (a crashed run must not block runs forever).
pub fn status(files: &Files, alive: impl Fn(u32) -> bool, now: i64) -> Status {
    let enabled = files.disabled_lock.is_none();
    let applying = files.run_lock.as_deref().and_then(pid_in).is_some_and(&alive);
    let daemon_present = files.pidfile.as_deref().and_then(pid_in).is_some_and(&alive);
    let idling = daemon_present && !applying;
    let activity = if !enabled {
        Activity::Disabled
    } else if applying {
        Activity::Applying
    } else if idling {
        Activity::Idling
    } else {
        Activity::Stopped
    };
    let lastrun = files.last_run.unwrap_or(0);
    let since_lastrun = if lastrun > 0 { (now - lastrun).max(0) } else { 0 };
    let when = if lastrun > 0 {
        format!("{} ago", human_duration(since_lastrun))
    } else {
        "never".to_owned()
    };
    Status {
        applying,
        idling,
        enabled,
        daemon_present,
        lastrun,
        since_lastrun,
        status: activity,
        disable_message: files.disabled_lock.as_deref().map(disable_message).unwrap_or_default(),
        message: format!("Currently {}; last completed run {when}", activity.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        Files { last_run: Some(1_000), ..Files::default() }
    }

    #[test]
    fn stopped_idling_applying_disabled() {
        let stopped = status(&files(), |_| true, 1_551);
        assert_eq!(stopped.status, Activity::Stopped);
        assert_eq!(
            stopped.message,
            "Currently stopped; last completed run 9 minutes 11 seconds ago"
        );
        assert_eq!(stopped.since_lastrun, 551);
        let idle =
            status(&Files { pidfile: Some("42\n".into()), ..files() }, |pid| pid == 42, 1_000);
        assert!(idle.daemon_present && idle.idling && !idle.applying);
        assert_eq!(idle.status, Activity::Idling);
        let applying = Files { pidfile: Some("42".into()), run_lock: Some("43".into()), ..files() };
        let applying = status(&applying, |_| true, 1_000);
        assert!(applying.applying && !applying.idling);
        assert_eq!(applying.status.as_str(), "applying a catalog");
        let disabled = Files {
            disabled_lock: Some(r#"{"disabled_message":"upgrade in progress"}"#.into()),
            ..files()
        };
        let disabled = status(&disabled, |_| true, 1_000);
        assert!(!disabled.enabled);
        assert_eq!(disabled.disable_message, "upgrade in progress");
        assert_eq!(disabled.message, "Currently disabled; last completed run 0 seconds ago");
    }

    #[test]
    fn stale_locks_and_never_run() {
        let stale = Files {
            run_lock: Some("43".into()),
            pidfile: Some("42".into()),
            last_run: None,
            ..Files::default()
        };
        let status = status(&stale, |_| false, 5);
        assert!(!status.applying && !status.daemon_present);
        assert_eq!(status.message, "Currently stopped; last completed run never");
        assert_eq!(status.lastrun, 0);
        assert_eq!(disable_message(""), "");
        assert_eq!(pid_in("garbage"), None);
        assert_eq!(pid_in("0"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0 seconds");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(3_661), "1 hour 1 minute");
        assert_eq!(human_duration(90_061), "1 day 1 hour");
        assert_eq!(human_duration(-5), "0 seconds");
    }
}
