//! Each node's progress, durable: an embedded redb database (one table, node name to the
//! [`Progress`] as JSON), written in a committed transaction after every change, so a
//! provisioner killed at any point resumes every node at the step it reached. redb locks the
//! file, so two provisioners cannot share one store by mistake (several provisioners on one
//! collective each have their own, and the node's lease keeps them apart).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::progress::Progress;

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("progress store {path}: {message}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A record cannot be read back (written by an incompatible version).
    #[error("progress store {path}: the record of {node} is unreadable: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The node.
        node: String,
        /// Why.
        message: String,
    },
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path`; its directory must exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let failed = |message: String| StoreError::Database { path: path.to_owned(), message };
        let db = Database::create(path).map_err(|err| failed(err.to_string()))?;
        let store = Store { db, path: path.to_owned() };
        // Create the table so readers never meet its absence.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn failed(&self, err: impl std::fmt::Display) -> StoreError {
        StoreError::Database { path: self.path.clone(), message: err.to_string() }
    }

    fn write(
        &self,
        work: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.failed(e))?;
        {
            let mut table = tx.open_table(NODES).map_err(|e| self.failed(e))?;
            work(&mut table).map_err(|e| self.failed(e))?;
        }
        tx.commit().map_err(|e| self.failed(e))
    }

    /// The provisioner's name for node leases: made by `make` the first time and kept in the
    /// store, so a restarted provisioner still owns the locks it took (a new name would find
    /// its own nodes "locked by another").
    pub fn owner(&self, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        {
            let tx = self.db.begin_read().map_err(|e| self.failed(e))?;
            if let Ok(table) = tx.open_table(META)
                && let Some(owner) = table.get("owner").map_err(|e| self.failed(e))?
            {
                return Ok(owner.value().to_owned());
            }
        }
        let owner = make();
        let tx = self.db.begin_write().map_err(|e| self.failed(e))?;
        {
            let mut table = tx.open_table(META).map_err(|e| self.failed(e))?;
            table.insert("owner", owner.as_str()).map_err(|e| self.failed(e))?;
        }
        tx.commit().map_err(|e| self.failed(e))?;
        Ok(owner)
    }

    /// Saves a node's progress (durably, before returning).
    pub fn put(&self, progress: &Progress) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(progress).map_err(|e| self.failed(e))?;
        self.write(|table| table.insert(progress.node.as_str(), bytes.as_slice()).map(|_| ()))
    }

    /// Removes a node; true if it was there.
    pub fn remove(&self, node: &str) -> Result<bool, StoreError> {
        let mut found = false;
        self.write(|table| {
            found = table.remove(node)?.is_some();
            Ok(())
        })?;
        Ok(found)
    }

    fn decode(&self, node: &str, bytes: &[u8]) -> Result<Progress, StoreError> {
        serde_json::from_slice(bytes).map_err(|err| StoreError::Record {
            path: self.path.clone(),
            node: node.to_owned(),
            message: err.to_string(),
        })
    }

    /// One node's progress.
    pub fn get(&self, node: &str) -> Result<Option<Progress>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = tx.open_table(NODES).map_err(|e| self.failed(e))?;
        match table.get(node).map_err(|e| self.failed(e))? {
            Some(bytes) => Ok(Some(self.decode(node, bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Every node, by name.
    pub fn all(&self) -> Result<Vec<Progress>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = tx.open_table(NODES).map_err(|e| self.failed(e))?;
        let mut nodes = Vec::new();
        for item in table.iter().map_err(|e| self.failed(e))? {
            let (key, value) = item.map_err(|e| self.failed(e))?;
            nodes.push(self.decode(key.value(), value.value())?);
        }
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::State;

    #[test]
    fn progress_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut p = Progress::new("n1", 5);
            p.step = 3;
            p.signed = true;
            store.put(&p).unwrap();
            store.put(&Progress::new("n0", 6)).unwrap();
            assert_eq!(store.owner(|| "first".into()).unwrap(), "first");
            assert!(Store::open(&path).is_err(), "one process at a time");
        }
        let store = Store::open(&path).unwrap();
        let all = store.all().unwrap();
        assert_eq!(all.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["n0", "n1"]);
        let n1 = store.get("n1").unwrap().unwrap();
        assert_eq!((n1.step, n1.signed, n1.state), (3, true, State::Queued));
        assert_eq!(store.owner(|| "again".into()).unwrap(), "first", "kept across reopening");
        assert!(store.remove("n1").unwrap());
        assert!(!store.remove("n1").unwrap());
        assert_eq!(store.get("n1").unwrap(), None);
    }

    #[test]
    fn an_unusable_path_is_named() {
        let err = Store::open(Path::new("/nonexistent/dir/p.redb")).unwrap_err().to_string();
        assert!(err.starts_with("progress store /nonexistent/dir/p.redb: "), "{err}");
    }
}
