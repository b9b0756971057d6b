//! A cgroup v2 directory of its own for one child, so that everything it starts dies with
//! it: a process group is left by any grandchild that calls `setsid`, a cgroup cannot be left
//! without privileges. The child is started by a shell that moves itself into the cgroup and
//! then `exec`s the program, so the program runs inside from its first instruction, with no
//! window in which it could fork outside (and no `unsafe` pre-exec hook on our side).
//!
//! Used where available: a cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on hybrid systems) and this process may create a directory under
//! its own cgroup (root, or a systemd unit with `Delegate=yes`). Elsewhere callers get `None`
//! and rely on the process group alone.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One child's cgroup; removed (its processes killed first) on [`Cgroup::remove`] or drop.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Cgroup {
    /// A new, empty cgroup under this process's own, or `None` when there is no cgroup v2
    /// hierarchy or no right to create one there.
    pub fn create() -> Option<Cgroup> {
        // Where this process lives does not change while it runs: read once, not per child.
        static OWN: OnceLock<Option<PathBuf>> = OnceLock::new();
        let own = OWN.get_or_init(|| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            own_dir(&mountinfo, &membership)
        });
        let own = own.as_ref()?;
        let name =
            format!("cohort-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = own.join(name);
        std::fs::create_dir(&dir).ok()?;
        Some(Cgroup { dir })
    }

    /// The directory, for logs and tests.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command that runs `program` inside this cgroup: `/bin/sh` writes its own PID to
    /// `cgroup.procs` and `exec`s the program. Arguments, environment and directory are the
    /// caller's to add, as to any command. Should the move fail, the program still runs (in
    /// its process group only).
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"{ echo $$ > "$0/cgroup.procs"; } 2>/dev/null; exec "$@""#)
            .arg(&self.dir)
            .arg(program);
        command
    }

    /// Kills every process in the cgroup: `cgroup.kill` (Linux 5.14+), else each PID listed.
    pub fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Kills what is left and removes the directory, waiting up to a second for the killed
    /// processes to be gone (the kernel refuses to remove a cgroup that still has some); past
    /// that, drop makes a last attempt.
    pub async fn remove(self) {
        for _ in 0..50 {
            self.kill();
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // After `remove` this finds nothing; otherwise (a cancelled run) it is the last chance.
        if self.dir.exists() {
            self.kill();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// This process's cgroup v2 directory: the `cgroup2` mount point from `mountinfo` joined with
/// the `0::` line of `/proc/self/cgroup`.
fn own_dir(mountinfo: &str, membership: &str) -> Option<PathBuf> {
    let mount = mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let fstype = fs.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let path = membership.lines().find_map(|line| line.strip_prefix("0::"))?;
    let relative = path.trim().trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return None;
    }
    Some(if relative.is_empty() { mount } else { mount.join(relative) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_and_own_path() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      35 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(own_dir(hybrid, "4:memory:/x\n0::/\n"), Some("/sys/fs/cgroup/unified".into()));
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_dir(unified, "0::/system.slice/cohort-daemon.service\n"),
            Some("/sys/fs/cgroup/system.slice/cohort-daemon.service".into())
        );
        assert_eq!(
            own_dir("35 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n", "0::/\n"),
            None
        );
        assert_eq!(own_dir(unified, "4:memory:/x\n"), None);
        assert_eq!(own_dir(unified, "0::/../etc\n"), None);
    }
}
