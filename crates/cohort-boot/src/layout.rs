//! Where the boot helper reads and writes, all below one root (`/` in production, a temporary
//! directory in tests).

use std::path::{Path, PathBuf};

/// Every path the boot helper uses.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The root everything is under.
    pub root: PathBuf,
    /// Cache of user data and metadata, per-instance semaphores and the status record.
    pub spool: PathBuf,
    /// Installed action scripts (by `getactions`, or baked into the image).
    pub actions: PathBuf,
    /// The `key=value` facts file `cohort daemon --facts` reads.
    pub facts_file: PathBuf,
    /// The message of the day.
    pub motd: PathBuf,
    /// NoCloud seed directory (`user-data`, `meta-data`).
    pub seed: PathBuf,
    /// The daemon configuration the `cohort` action writes.
    pub daemon_config: PathBuf,
}

impl Layout {
    /// The standard layout under `root`, with the facts file at `facts_file` (absolute, taken
    /// relative to the root).
    pub fn new(root: &Path, facts_file: &Path) -> Layout {
        let under = |path: &str| under_root(root, path);
        Layout {
            root: root.to_owned(),
            spool: under("/var/lib/cohort/boot"),
            actions: under("/etc/cohort/boot/actions"),
            facts_file: under(&facts_file.to_string_lossy()),
            motd: under("/etc/motd"),
            seed: under("/var/lib/cloud/seed/nocloud"),
            daemon_config: under("/etc/cohort/daemon.toml"),
        }
    }

    /// A path the user gave, as an absolute path in the real system, moved under the root.
    pub fn under_root(&self, path: &str) -> PathBuf {
        under_root(&self.root, path)
    }

    /// Cached raw user data.
    pub fn user_data_cache(&self) -> PathBuf {
        self.spool.join("user-data.raw")
    }

    /// Cached metadata, as JSON.
    pub fn metadata_cache(&self) -> PathBuf {
        self.spool.join("meta-data.json")
    }

    /// Semaphores of one instance.
    pub fn semaphores(&self, instance_id: &str) -> PathBuf {
        self.spool.join("instances").join(instance_id.replace('/', "_")).join("sem")
    }

    /// The record of the last boot.
    pub fn status_file(&self) -> PathBuf {
        self.spool.join("status.json")
    }
}

fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Writes `bytes` to `path` atomically (temporary file, then rename) with `mode`, creating the
/// parent directories. A crash never leaves a half-written file behind.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    // The umask may have narrowed the mode at creation; set it exactly.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}
