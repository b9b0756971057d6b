//! The node's provisioning lock as a lease: who holds it and until when. The original's lock
//! was a timestamp file that nothing ever removed, so a node whose provisioning failed stayed
//! locked forever; a lease runs out, so a crashed provisioner's lock frees itself, and the
//! holder renews it at every step. Pure rules over the lock file's text.

use serde::{Deserialize, Serialize};

/// What the lock file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The provisioner holding it.
    pub owner: String,
    /// Unix milliseconds when it runs out.
    pub expires_ms: i64,
}

/// The answer to `lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locking {
    /// Taken or renewed: write this.
    Granted(Lock),
    /// Held by someone else.
    Held(Lock),
}

/// Reads a lock file's text; unreadable text counts as no lock (a torn write of a lock whose
/// owner is gone must not lock the node forever).
pub fn read(text: Option<&str>) -> Option<Lock> {
    serde_json::from_str(text?).ok()
}

/// `owner` asks for the lock for `ttl_ms` at `now_ms`.
pub fn lock(current: Option<Lock>, owner: &str, ttl_ms: i64, now_ms: i64) -> Locking {
    match current {
        Some(held) if held.owner != owner && held.expires_ms > now_ms => Locking::Held(held),
        _ => Locking::Granted(Lock {
            owner: owner.to_owned(),
            expires_ms: now_ms.saturating_add(ttl_ms),
        }),
    }
}

/// Whether `owner` may remove the lock: it is theirs, it ran out, or there is none.
pub fn may_unlock(current: Option<&Lock>, owner: &str, now_ms: i64) -> Result<(), Lock> {
    match current {
        Some(held) if held.owner != owner && held.expires_ms > now_ms => Err(held.clone()),
        _ => Ok(()),
    }
}

/// The lock in force at `now_ms` (an expired one is no lock).
pub fn in_force(current: Option<Lock>, now_ms: i64) -> Option<Lock> {
    current.filter(|held| held.expires_ms > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_exclusive_renewable_and_runs_out() {
        let Locking::Granted(mine) = lock(None, "p1", 1000, 0) else { panic!() };
        assert_eq!(mine.expires_ms, 1000);
        assert_eq!(lock(Some(mine.clone()), "p2", 1000, 999), Locking::Held(mine.clone()));
        let Locking::Granted(renewed) = lock(Some(mine.clone()), "p1", 1000, 500) else { panic!() };
        assert_eq!(renewed.expires_ms, 1500);
        let Locking::Granted(taken) = lock(Some(renewed.clone()), "p2", 1000, 1500) else {
            panic!()
        };
        assert_eq!(taken.owner, "p2", "an expired lease is free");
        assert_eq!(in_force(Some(taken.clone()), 2500), None);
        assert_eq!(may_unlock(Some(&taken), "p1", 1600), Err(taken.clone()));
        assert_eq!(may_unlock(Some(&taken), "p2", 1600), Ok(()));
        assert_eq!(may_unlock(Some(&taken), "p1", 2500), Ok(()));
    }

    #[test]
    fn torn_lock_files_are_no_lock() {
        assert_eq!(read(Some("{\"owner\": \"p")), None);
        assert_eq!(read(None), None);
        assert_eq!(read(Some("{\"owner\":\"p\",\"expires_ms\":5}")).unwrap().owner, "p");
    }
}
