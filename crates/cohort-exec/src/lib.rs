//! Running one child process the way every part of Cohort needs it: in its own process group,
//! with input on stdin, stdout and stderr drained together (so neither pipe can fill and stall
//! it), a cap on stdout, and a deadline after which the whole group is killed, grandchildren
//! included. After it exits the group is killed too, so nothing it left in the background lingers.
//!
//! Used by external agents, the nrpe agent, the boot helper's actions and the resource
//! providers; [`run_detaching`] is the variant for commands meant to leave a daemon running.
//! [`run_in`] also kills a [`Cgroup`] the child was started in ([`Cgroup::command`]), which
//! catches what left the process group with `setsid`.

mod cgroup;

pub use cgroup::Cgroup;

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A process that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (the last part, if it wrote a lot).
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

impl Finished {
    /// `exited with status 3`, `was killed by signal 9`.
    pub fn describe_exit(&self) -> String {
        match (self.status.code(), std::os::unix::process::ExitStatusExt::signal(&self.status)) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended abnormally".to_owned(),
        }
    }
}

/// Why a process did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("cannot start: {0}")]
    Spawn(std::io::Error),
    /// It ran past its deadline and was killed with its process group.
    #[error("timed out after {0:?} and was killed")]
    TimedOut(Duration),
    /// It wrote more than the cap to stdout and was killed.
    #[error("output exceeds {0} bytes")]
    OutputTooLarge(usize),
    /// Waiting for it failed.
    #[error("waiting for it: {0}")]
    Wait(std::io::Error),
}

/// Most stderr kept.
const STDERR_CAP: u64 = 64 * 1024;

/// Runs `command` (whose program, arguments, environment and directory the caller set).
pub async fn run(
    command: tokio::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Finished, ExecError> {
    run_in(command, None, stdin, timeout, max_stdout).await
}

/// [`run`], for a command made by [`Cgroup::command`]: at the end (exit, deadline or output
/// cap) everything in `cgroup` is killed too, and the cgroup removed in the background.
pub async fn run_in(
    command: tokio::process::Command,
    cgroup: Option<Cgroup>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Finished, ExecError> {
    let result = run_group(command, stdin, timeout, max_stdout).await;
    if let Some(cgroup) = cgroup {
        // Everything in it dies now; the directory goes once the kernel lets it (a cgroup
        // whose processes just died cannot be removed at once), off the caller's path: the
        // removal took longer than a short agent itself.
        cgroup.kill();
        tokio::spawn(cgroup.remove());
    }
    result
}

async fn run_group(
    mut command: tokio::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Finished, ExecError> {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = spawn(&mut command).await?;
    let pgid = child.id();
    let input = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
            // The child may exit without reading its input; that is its business.
            let _ = pipe.write_all(&bytes).await;
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(stdout) = stdout {
                let _ = stdout.take(max_stdout as u64 + 1).read_to_end(&mut out).await;
            }
            // Over the cap: stop it now rather than wait for it to block on a full pipe.
            if out.len() > max_stdout {
                kill_group(pgid);
            }
        };
        let read_err = async {
            if let Some(stderr) = stderr {
                let _ = stderr.take(STDERR_CAP).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (out, err, status)
    };
    let Ok((stdout, stderr, status)) = tokio::time::timeout(timeout, work).await else {
        kill_group(pgid);
        return Err(ExecError::TimedOut(timeout));
    };
    // Whatever it started in the background dies with its group.
    kill_group(pgid);
    if stdout.len() > max_stdout {
        return Err(ExecError::OutputTooLarge(max_stdout));
    }
    let status = status.map_err(ExecError::Wait)?;
    Ok(Finished { stdout, stderr, status })
}

/// Runs a command that may leave a daemon behind (an init script's `start`): output goes to
/// a temporary file rather than a pipe, so a daemon that keeps the descriptors open cannot hold
/// us up; only the command itself is waited for, and what it started is left running. At the
/// deadline the command's process group is killed, as with [`run`]. Output is capped at
/// `max_output` bytes (the rest is dropped, not an error).
pub async fn run_detaching(
    mut command: tokio::process::Command,
    timeout: Duration,
    max_output: usize,
) -> Result<Finished, ExecError> {
    let out = tempfile::tempfile().map_err(ExecError::Spawn)?;
    let err = out.try_clone().map_err(ExecError::Spawn)?;
    let mut reader = out.try_clone().map_err(ExecError::Spawn)?;
    command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0).kill_on_drop(false);
    let mut child = spawn(&mut command).await?;
    let pgid = child.id();
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(ExecError::Wait)?,
        Err(_) => {
            kill_group(pgid);
            return Err(ExecError::TimedOut(timeout));
        }
    };
    use std::io::{Read, Seek};
    let mut output = Vec::new();
    let _ = reader.seek(std::io::SeekFrom::Start(0));
    let _ = reader.take(max_output as u64).read_to_end(&mut output);
    Ok(Finished { stdout: output, stderr: Vec::new(), status })
}

/// Starts the child, retrying briefly on `ETXTBSY`: an executable just written (an installed
/// agent or boot action) can be "busy" while another thread's fork still holds the writing
/// descriptor for the instant before that child's exec closes it.
async fn spawn(command: &mut tokio::process::Command) -> Result<tokio::process::Child, ExecError> {
    const ETXTBSY: i32 = 26;
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(err) if err.raw_os_error() == Some(ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            result => return result.map_err(ExecError::Spawn),
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command.arg("-c").arg(script);
        command
    }

    #[tokio::test]
    async fn output_status_and_input() {
        let done = run(
            sh("cat; echo err >&2; exit 4"),
            Some(b"in".to_vec()),
            Duration::from_secs(5),
            1024,
        )
        .await
        .unwrap();
        assert_eq!(done.stdout, b"in");
        assert_eq!(done.stderr, b"err\n");
        assert_eq!(done.describe_exit(), "exited with status 4");
    }

    #[tokio::test]
    async fn deadline_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let err = run(sh(&script), None, Duration::from_millis(300), 1024).await.unwrap_err();
        assert!(matches!(err, ExecError::TimedOut(_)), "{err}");
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("grandchild {pid} survived");
    }

    /// Waits until `pid` is gone (or a zombie); false if it still runs after 2 s.
    fn dies(pid: &str) -> bool {
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[tokio::test]
    async fn a_grandchild_that_left_the_group_dies_with_the_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cgroup = Cgroup::create().expect(
            "no cgroup v2 directory could be created under this process's cgroup (root on a \
             system with cgroup2 mounted is needed for this test)",
        );
        let cgroup_dir = cgroup.dir().to_owned();
        let mut command = cgroup.command(Path::new("/bin/sh"));
        command
            .arg("-c")
            .arg(format!("setsid sleep 300 & echo $! > {}; sleep 300", pidfile.display()));
        let err = run_in(command, Some(cgroup), None, Duration::from_millis(500), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::TimedOut(_)), "{err}");
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        let escaped = dies(&pid);
        if !escaped {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(escaped, "the setsid grandchild {pid} survived the timeout");
        let removed = async {
            while cgroup_dir.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let removed = tokio::time::timeout(Duration::from_secs(5), removed).await;
        assert!(removed.is_ok(), "{} left behind", cgroup_dir.display());

        // Without the cgroup, the same grandchild escapes the process group: the reason for it.
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!("setsid sleep 300 & echo $! > {}; sleep 300", pidfile.display()));
        let _ = run(command, None, Duration::from_millis(500), 1024).await;
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        let died = dies(&pid);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(!died, "the process group alone caught a setsid grandchild");
    }

    #[tokio::test]
    async fn detaching_leaves_the_daemon_and_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The daemon keeps stdout open; a pipe would make us wait for it.
        let script = format!("echo starting; sleep 300 & echo $! > {}", pidfile.display());
        let started = std::time::Instant::now();
        let done = run_detaching(sh(&script), Duration::from_secs(10), 1024).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(done.stdout, b"starting\n");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(alive, "the daemon was killed");
        let err = run_detaching(sh("sleep 30"), Duration::from_millis(200), 10).await.unwrap_err();
        assert!(matches!(err, ExecError::TimedOut(_)));
    }

    #[tokio::test]
    async fn output_cap() {
        let err = run(sh("yes"), None, Duration::from_secs(5), 4096).await.unwrap_err();
        assert!(matches!(err, ExecError::OutputTooLarge(4096)), "{err}");
    }

    #[tokio::test]
    async fn missing_program() {
        let err = run(
            tokio::process::Command::new("/nonexistent/program"),
            None,
            Duration::from_secs(1),
            10,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ExecError::Spawn(_)));
    }
}
