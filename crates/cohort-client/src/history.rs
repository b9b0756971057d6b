//! How many nodes earlier discoveries found, per broker, collective and filter: the evidence
//! that lets discovery tell a finished fleet from a paused one (the client's `ending` rule).
//!
//! One small JSON file (by default `$XDG_CACHE_HOME/cohort/discovery.json`, else
//! `~/.cache/cohort/discovery.json`), rewritten atomically (a temporary file renamed over it)
//! after each discovery, so concurrent commands never see half a file; the last writer wins,
//! which at worst loses one count. It holds at most [`MAX_RECORDS`] records, the oldest
//! dropped first. A file that cannot be read is reported once and treated as empty: losing
//! the history costs one slow discovery per filter, never a wrong answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cohort_proto::{Collective, Filter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Records kept at most.
pub const MAX_RECORDS: usize = 1_000;

/// Why the history file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading, writing or renaming the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a discovery history.
    #[error("{path} is not a discovery history: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The key of one discovery: brokers, collective and filter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// The key of a discovery with `filter` in `collective` over `brokers` (in any order).
    pub fn new(brokers: &[String], collective: &Collective, filter: &Filter) -> Key {
        let mut brokers: Vec<&str> = brokers.iter().map(String::as_str).collect();
        brokers.sort_unstable();
        let mut hash = Sha256::new();
        hash.update(brokers.join(",").as_bytes());
        hash.update(b"\n");
        hash.update(collective.as_str().as_bytes());
        hash.update(b"\n");
        hash.update(serde_json::to_vec(filter).unwrap_or_default());
        Key(hex::encode(&hash.finalize()[..16]))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Record {
    /// Nodes found.
    count: usize,
    /// When, in seconds since the epoch (to drop the oldest first).
    at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    records: BTreeMap<String, Record>,
}

const VERSION: u32 = 1;

/// The history file and what was in it when it was opened.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    records: Mutex<BTreeMap<String, Record>>,
}

impl History {
    /// The default location: `$XDG_CACHE_HOME/cohort/discovery.json`, else
    /// `$HOME/.cache/cohort/discovery.json`; `None` without either.
    pub fn default_path() -> Option<PathBuf> {
        let xdg =
            std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()).map(PathBuf::from);
        let home = || {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        };
        xdg.or_else(home).map(|dir| dir.join("cohort").join("discovery.json"))
    }

    /// Opens the history at `path`. A missing file is an empty history; an unreadable one is
    /// an empty history and the error, for the caller to report.
    pub fn open(path: &Path) -> (History, Option<HistoryError>) {
        let (records, error) = match read(path) {
            Ok(records) => (records, None),
            Err(err) => (BTreeMap::new(), Some(err)),
        };
        (History { path: path.to_owned(), records: Mutex::new(records) }, error)
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The count the last discovery with `key` found.
    pub fn expected(&self, key: &Key) -> Option<usize> {
        let records = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        records.get(&key.0).map(|record| record.count)
    }

    /// Records that the discovery with `key` found `count` nodes at `now` (seconds since the
    /// epoch). Re-reads the file first, so counts other commands recorded meanwhile are kept.
    pub fn record(&self, key: &Key, count: usize, now: u64) -> Result<(), HistoryError> {
        let mut records = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(current) = read(&self.path) {
            *records = current;
        }
        if records.get(&key.0).is_some_and(|record| record.count == count && record.at + 60 > now) {
            // Unchanged and recent: spare the disk a write per command.
            return Ok(());
        }
        records.insert(key.0.clone(), Record { count, at: now });
        while records.len() > MAX_RECORDS {
            let oldest = records.iter().min_by_key(|(_, record)| record.at).map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => records.remove(&oldest),
                None => break,
            };
        }
        write(&self.path, &records)
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, Record>, HistoryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(HistoryError::Io { path: path.to_owned(), source }),
    };
    let file: File = serde_json::from_str(&text)
        .map_err(|err| HistoryError::Format { path: path.to_owned(), reason: err.to_string() })?;
    if file.version != VERSION {
        return Err(HistoryError::Format {
            path: path.to_owned(),
            reason: format!("version {} (this cohort writes version {VERSION})", file.version),
        });
    }
    Ok(file.records)
}

fn write(path: &Path, records: &BTreeMap<String, Record>) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = File { version: VERSION, records: records.clone() };
    let text = serde_json::to_string(&file).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        io(err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(filter: &str) -> Key {
        let mut f = Filter::default();
        f.class.push(filter.to_owned());
        Key::new(
            &["nats://b:4222".into(), "nats://a:4222".into()],
            &Collective::new("c").unwrap(),
            &f,
        )
    }

    #[test]
    fn counts_survive_a_reopen_and_keys_tell_filters_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/discovery.json");
        let (history, error) = History::open(&path);
        assert!(error.is_none());
        assert_eq!(history.expected(&key("web")), None);
        history.record(&key("web"), 7, 1_000).unwrap();
        history.record(&key("db"), 3, 1_000).unwrap();
        let (again, error) = History::open(&path);
        assert!(error.is_none());
        assert_eq!(again.expected(&key("web")), Some(7));
        assert_eq!(again.expected(&key("db")), Some(3));
        // Broker order does not matter.
        let mut f = Filter::default();
        f.class.push("web".to_owned());
        let swapped = Key::new(
            &["nats://a:4222".into(), "nats://b:4222".into()],
            &Collective::new("c").unwrap(),
            &f,
        );
        assert_eq!(again.expected(&swapped), Some(7));
    }

    #[test]
    fn another_commands_record_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.json");
        let (one, _) = History::open(&path);
        let (two, _) = History::open(&path);
        one.record(&key("web"), 7, 1_000).unwrap();
        two.record(&key("db"), 3, 1_000).unwrap();
        let (three, _) = History::open(&path);
        assert_eq!(three.expected(&key("web")), Some(7));
        assert_eq!(three.expected(&key("db")), Some(3));
    }

    #[test]
    fn a_broken_file_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.json");
        std::fs::write(&path, "{not json").unwrap();
        let (history, error) = History::open(&path);
        let error = error.unwrap().to_string();
        assert!(error.contains("discovery.json is not a discovery history"), "{error}");
        assert_eq!(history.expected(&key("web")), None);
        history.record(&key("web"), 2, 5).unwrap();
        assert_eq!(History::open(&path).0.expected(&key("web")), Some(2));
    }

    #[test]
    fn the_oldest_records_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.json");
        let (history, _) = History::open(&path);
        for n in 0..=MAX_RECORDS {
            history.record(&key(&format!("c{n}")), n, n as u64).unwrap();
        }
        let (again, _) = History::open(&path);
        assert_eq!(again.expected(&key("c0")), None);
        assert_eq!(again.expected(&key("c1")), Some(1));
        assert_eq!(again.expected(&key(&format!("c{MAX_RECORDS}"))), Some(MAX_RECORDS));
    }
}
