//! Providers: reading a resource's current state from the system and carrying out the changes
//! [`crate::change::changes`] decided, one module per family (accounts, packages, services,
//! files, exec, the parsed files). Commands run through `cohort-exec` (own process group, a
//! deadline, output capped); files are replaced atomically (temporary file, fsync, rename).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::change::{Change, State};
use crate::model::{Desired, Kind};
use crate::policy::ExecProvider;

mod accounts;
pub(crate) mod exec;
mod file;
mod package;
mod parsed_files;
mod service;

/// What providers need to know about where they run.
#[derive(Debug, Clone)]
pub struct Env {
    /// Exec provider when a resource names none.
    pub exec_provider: ExecProvider,
    /// Longest any one command may run (the agent's own deadline caps everything).
    pub command_timeout: Duration,
}

impl Default for Env {
    fn default() -> Env {
        Env { exec_provider: ExecProvider::Posix, command_timeout: Duration::from_secs(300) }
    }
}

/// A failure reading state or listing instances.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// The provider name shown for `desired` (`useradd`, `apt`, `systemd`, `parsed`, …).
pub fn provider_name(kind: Kind, asked: Option<&str>, env: &Env) -> &'static str {
    match kind {
        Kind::User => "useradd",
        Kind::Group => "groupadd",
        Kind::Package => match asked {
            Some("dpkg") => "dpkg",
            _ => "apt",
        },
        Kind::Service => service::provider(),
        Kind::File => "posix",
        Kind::Exec => match (asked, env.exec_provider) {
            (Some("shell"), _) | (None, ExecProvider::Shell) => "shell",
            _ => "posix",
        },
        Kind::Mailalias => "aliases",
        Kind::Cron => "crontab",
        Kind::Host | Kind::SshAuthorizedKey | Kind::Mount => "parsed",
    }
}

/// Brings `desired` into the system's terms before comparing: names to ids where the system
/// stores ids, `latest` to the candidate version, a `source` to its content.
pub async fn resolve(desired: &mut Desired, env: &Env) {
    match desired.kind {
        Kind::User => accounts::resolve_user(desired),
        Kind::File => file::resolve(desired),
        Kind::Package => package::resolve(desired, env).await,
        _ => {}
    }
}

/// The current state of the resource `desired` names.
pub async fn retrieve(desired: &Desired, env: &Env) -> Result<State, ProviderError> {
    match desired.kind {
        Kind::User => accounts::retrieve_user(&desired.name),
        Kind::Group => accounts::retrieve_group(&desired.name),
        Kind::Package => package::retrieve(&desired.name, env).await,
        Kind::Service => service::retrieve(desired, env).await,
        Kind::File => file::retrieve(&desired.name),
        Kind::Exec => exec::retrieve(desired, env).await,
        Kind::Host | Kind::Mailalias | Kind::SshAuthorizedKey | Kind::Mount | Kind::Cron => {
            parsed_files::retrieve(desired, env).await
        }
    }
}

/// Every instance of `kind` on the system, by title.
pub async fn instances(kind: Kind, env: &Env) -> Result<Vec<(String, State)>, ProviderError> {
    match kind {
        Kind::User => accounts::users(),
        Kind::Group => accounts::groups(),
        Kind::Package => package::instances(env).await,
        Kind::Service => service::instances(env).await,
        Kind::File => Err(ProviderError(
            "Listing all file instances is not supported. Please specify a file or directory, e.g. cohort resource file /etc".into(),
        )),
        Kind::Exec => Ok(Vec::new()),
        Kind::Host | Kind::Mailalias | Kind::SshAuthorizedKey | Kind::Mount | Kind::Cron => {
            parsed_files::instances(kind, env).await
        }
    }
}

/// Carries out `changes` (out of sync, ensure first and alone when it is out of sync), one
/// result per change, each failure saying why in Puppet's words.
pub async fn sync(
    desired: &Desired,
    current: &State,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    match desired.kind {
        Kind::User => accounts::sync_user(desired, current, changes, env).await,
        Kind::Group => accounts::sync_group(desired, changes, env).await,
        Kind::Package => package::sync(desired, changes, env).await,
        Kind::Service => service::sync(desired, current, changes, env).await,
        Kind::File => file::sync(desired, current, changes, env).await,
        Kind::Exec => vec![exec::run(desired, env).await.0],
        Kind::Host | Kind::Mailalias | Kind::SshAuthorizedKey | Kind::Mount | Kind::Cron => {
            parsed_files::sync(desired, current, changes, env).await
        }
    }
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `program args…` (no shell) with a deadline; `Err` only when it could not run at all.
pub(crate) async fn command(
    program: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
    env: &Env,
) -> Result<Ran, String> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env("LC_ALL", "C").env("DEBIAN_FRONTEND", "noninteractive");
    finish(command, stdin, env.command_timeout).await
}

pub(crate) async fn finish(
    command: tokio::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Ran, String> {
    match cohort_exec::run(command, stdin, timeout, 16 * 1024 * 1024).await {
        Ok(done) => Ok(Ran {
            code: done.status.code(),
            stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        }),
        Err(cohort_exec::ExecError::TimedOut(after)) => {
            Err(format!("Command exceeded timeout ({} s)", after.as_secs()))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// Runs a command that starts a daemon (`/etc/init.d/x start`), which it leaves running, and
/// that must succeed.
pub(crate) async fn detached(program: &str, args: &[&str], env: &Env) -> Result<String, String> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env("LC_ALL", "C");
    let ran = match cohort_exec::run_detaching(command, env.command_timeout, 64 * 1024).await {
        Ok(done) => Ran {
            code: done.status.code(),
            stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
            stderr: String::new(),
        },
        Err(cohort_exec::ExecError::TimedOut(after)) => {
            return Err(format!("Command exceeded timeout ({} s)", after.as_secs()));
        }
        Err(err) => return Err(err.to_string()),
    };
    succeeded(program, args, ran)
}

/// Runs a command that must succeed; the error is Puppet's `Execution of '…' returned N: …`.
pub(crate) async fn checked(program: &str, args: &[&str], env: &Env) -> Result<String, String> {
    let ran = command(program, args, None, env).await?;
    succeeded(program, args, ran)
}

fn succeeded(program: &str, args: &[&str], ran: Ran) -> Result<String, String> {
    if ran.code == Some(0) {
        return Ok(ran.stdout);
    }
    let line = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let said = if ran.stderr.trim().is_empty() { ran.stdout.trim() } else { ran.stderr.trim() };
    Err(match ran.code {
        Some(code) => format!("Execution of '{line}' returned {code}: {said}"),
        None => format!("Execution of '{line}' was killed by a signal: {said}"),
    })
}

/// Replaces `path` with `content` atomically: a temporary file beside it, written, given
/// `mode` and owner (or the old file's), synced, renamed over it. Nothing half-written is ever
/// visible at `path`.
pub(crate) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let old = std::fs::metadata(path).ok();
    let mut temp = tempfile::Builder::new()
        .prefix(".cohort-")
        .tempfile_in(dir)
        .map_err(|err| format!("cannot create a temporary file in {}: {err}", dir.display()))?;
    temp.write_all(content)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    let mode = mode.or(old.as_ref().map(|m| m.mode() & 0o7777)).unwrap_or(0o644);
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(|err| format!("cannot set the mode of {}: {err}", path.display()))?;
    let owner = owner.or(old.as_ref().map(|m| (m.uid(), m.gid())));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(temp.path(), Some(uid), Some(gid))
            .map_err(|err| format!("cannot set the owner of {}: {err}", path.display()))?;
    }
    temp.persist(path)
        .map_err(|err| format!("cannot replace {}: {}", path.display(), err.error))?;
    Ok(())
}

/// A file's text, empty when it does not exist.
pub(crate) fn read_or_empty(path: &Path) -> Result<String, ProviderError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(ProviderError(format!("cannot read {}: {err}", path.display()))),
    }
}

/// The `puppet` command, when one is installed (a configured path that does not exist means
/// Puppet is not installed).
pub fn find_puppet(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return path.is_file().then(|| path.to_owned());
    }
    ["/opt/puppetlabs/bin/puppet", "/usr/bin/puppet"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}
