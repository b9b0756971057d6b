//! Running the `cohort` binary as a child process, and stopping it by its PID.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary, with no colour, no standard input, and a discovery history of this test run's
/// own (never the user's `~/.cache`) for configurations that do not name one.
pub fn cohort() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cohort"));
    let cache =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-{}", std::process::id()));
    command.env("NO_COLOR", "1").env("XDG_CACHE_HOME", cache).stdin(Stdio::null());
    command
}

/// A running `cohort` child whose stderr goes to a file, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub stderr: tempfile::NamedTempFile,
}

impl Daemon {
    pub fn spawn(mut command: Command) -> Daemon {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = command.stdout(Stdio::null()).stderr(stderr.reopen().unwrap()).spawn().unwrap();
        Daemon { child, stderr }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Sends a signal by PID with the `kill` utility.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An executable file at `path` (mode 0755) holding `text`: an agent, a stand-in command.
pub fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Whether the slow tests run (`COHORT_SLOW_TESTS=1`, as CI sets it); when they do not, says so
/// on stderr with what the skipped test does (`what`: "run the partition test").
pub fn slow_tests(what: &str) -> bool {
    let on = std::env::var_os("COHORT_SLOW_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 to {what}");
    }
    on
}
