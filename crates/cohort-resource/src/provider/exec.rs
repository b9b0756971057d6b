//! `exec`: a command run when its guards say so (`creates`, `unless`, `onlyif`,
//! `refreshonly`), with Puppet's rules: guards run even under noop; `posix` runs the program
//! directly, without a shell, and refuses shell syntax with a message naming `provider=shell`;
//! `shell` runs `/bin/sh -c`; `returns` lists the exit codes that mean success; `tries` and
//! `try_sleep` retry; `timeout` bounds each try.

use std::path::Path;
use std::time::Duration;

use crate::change::State;
use crate::model::{Desired, Value, shell_syntax};
use crate::policy::ExecProvider;

use super::{Env, ProviderError, Ran, finish};

fn uses_shell(desired: &Desired, env: &Env) -> bool {
    match desired.provider.as_deref() {
        Some("shell") => true,
        Some(_) => false,
        None => env.exec_provider == ExecProvider::Shell,
    }
}

/// The words that run `line` as the resource says (shell or not, umask), before any change of
/// user.
fn argv(desired: &Desired, line: &str, env: &Env) -> Result<Vec<String>, String> {
    let umask = desired.param("umask");
    if uses_shell(desired, env) {
        let script = match umask {
            Some(mask) => format!("umask {mask}; {line}"),
            None => line.to_owned(),
        };
        return Ok(vec!["/bin/sh".into(), "-c".into(), script]);
    }
    if let Some(token) = shell_syntax(line) {
        return Err(format!(
            "'{line}' uses shell syntax ({token}) and the posix provider runs commands without a shell; use provider=shell"
        ));
    }
    let mut words = shlex::split(line).ok_or_else(|| format!("'{line}' has unbalanced quotes"))?;
    let Some(program) = words.first_mut() else {
        return Err("the command is empty".into());
    };
    if !program.starts_with('/') {
        *program = desired
            .list("path")
            .iter()
            .map(|dir| Path::new(dir).join(&*program))
            .find(|candidate| candidate.is_file())
            .map(|found| found.display().to_string())
            .ok_or_else(|| format!("Could not find command '{program}'"))?;
    }
    Ok(match umask {
        // A fixed trampoline: the words are passed as arguments, never parsed by the shell.
        Some(mask) => {
            let mut trampoline = vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("umask {mask} && exec \"$@\""),
                "sh".into(),
            ];
            trampoline.extend(words);
            trampoline
        }
        None => words,
    })
}

/// The process for `line`, set up as the resource says (user, group, cwd, environment, path,
/// umask), or why it cannot run. Another user or group is taken with `setpriv`, so the command
/// gets that user's supplementary groups, not root's.
fn prepare(desired: &Desired, line: &str, env: &Env) -> Result<tokio::process::Command, String> {
    let mut words = argv(desired, line, env)?;
    let group = match desired.param("group") {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => group.gid.as_raw(),
                _ => return Err(format!("Could not find group {name}")),
            },
        }),
    };
    let user = match desired.param("user") {
        None => None,
        Some(name) => {
            let found = match name.parse::<u32>() {
                Ok(uid) => {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()
                }
                Err(_) => nix::unistd::User::from_name(name).ok().flatten(),
            };
            Some(found.ok_or_else(|| format!("Could not find user {name}"))?)
        }
    };
    let mut privileges: Vec<String> = Vec::new();
    if let Some(user) = &user {
        let gid = group.unwrap_or(user.gid.as_raw());
        privileges.extend(["--reuid".into(), user.uid.as_raw().to_string()]);
        privileges.extend(["--regid".into(), gid.to_string(), "--init-groups".into()]);
    } else if let Some(gid) = group {
        privileges.extend(["--regid".into(), gid.to_string(), "--clear-groups".into()]);
    }
    if !privileges.is_empty() {
        let mut wrapped = vec!["/usr/bin/setpriv".to_owned()];
        wrapped.extend(privileges);
        wrapped.push("--".into());
        wrapped.append(&mut words);
        words = wrapped;
    }
    let mut command = tokio::process::Command::new(&words[0]);
    command.args(&words[1..]);
    let path = desired.list("path").join(":");
    if !path.is_empty() {
        command.env("PATH", path);
    }
    if let Some(user) = &user {
        command.env("HOME", &user.dir).env("USER", &user.name).env("LOGNAME", &user.name);
    }
    for pair in desired.list("environment") {
        if let Some((name, value)) = pair.split_once('=') {
            command.env(name, value);
        }
    }
    if let Some(dir) = desired.param("cwd") {
        command.current_dir(dir);
    }
    Ok(command)
}

fn timeout(desired: &Desired, env: &Env) -> Duration {
    match desired.params.get("timeout") {
        Some(Value::Int(secs)) if *secs > 0 => {
            Duration::from_secs(u64::try_from(*secs).unwrap_or(u64::MAX)).min(env.command_timeout)
        }
        _ => env.command_timeout,
    }
}

async fn run_once(desired: &Desired, line: &str, env: &Env) -> Result<Ran, String> {
    let command = prepare(desired, line, env)?;
    finish(command, None, timeout(desired, env)).await
}

/// `returns` as the state has it: `notrun` when the command is due, the expected codes when a
/// guard says it need not run (so it compares in sync).
pub(super) async fn retrieve(desired: &Desired, env: &Env) -> Result<State, ProviderError> {
    let due = || {
        let mut state = State::new();
        state.insert("returns".into(), "notrun".into());
        state
    };
    let satisfied = || {
        let mut state = State::new();
        let should =
            desired.should.get("returns").cloned().unwrap_or(Value::List(vec!["0".into()]));
        state.insert("returns".into(), should);
        state
    };
    // Shell syntax under posix is refused before any guard runs.
    prepare(desired, &desired.name, env).map_err(ProviderError)?;
    if desired.flag("refreshonly", false) {
        return Ok(satisfied());
    }
    if desired.list("creates").iter().any(|path| Path::new(path).exists()) {
        return Ok(satisfied());
    }
    for check in desired.list("unless") {
        let ran = run_once(desired, &check, env).await.map_err(ProviderError)?;
        if ran.code == Some(0) {
            return Ok(satisfied());
        }
    }
    for check in desired.list("onlyif") {
        let ran = run_once(desired, &check, env).await.map_err(ProviderError)?;
        if ran.code != Some(0) {
            return Ok(satisfied());
        }
    }
    Ok(due())
}

/// Runs the command (with its retries): how it ended, in Puppet's words on failure, and the
/// output lines `logoutput` asks to show (`true`: always; `on_failure`, the default: when it
/// failed; `false`: never).
pub(crate) async fn run(desired: &Desired, env: &Env) -> (Result<(), String>, Vec<String>) {
    let returns: Vec<i32> = desired
        .should
        .get("returns")
        .map(Value::items)
        .unwrap_or_else(|| vec!["0".into()])
        .iter()
        .filter_map(|code| code.parse().ok())
        .collect();
    let tries = match desired.params.get("tries") {
        Some(Value::Int(n)) if *n > 1 => *n,
        _ => 1,
    };
    let sleep = match desired.params.get("try_sleep") {
        Some(Value::Int(n)) if *n > 0 => Duration::from_secs(u64::try_from(*n).unwrap_or(0)),
        _ => Duration::ZERO,
    };
    let logoutput = desired.param("logoutput").unwrap_or("on_failure");
    let lines = |ran: &Ran| -> Vec<String> {
        format!("{}{}", ran.stdout, ran.stderr).lines().map(str::to_owned).collect()
    };
    let mut last = (Err("not run".to_owned()), Vec::new());
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(sleep).await;
        }
        let ran = match run_once(desired, &desired.name, env).await {
            Ok(ran) => ran,
            Err(err) => {
                last = (Err(err), Vec::new());
                continue;
            }
        };
        if ran.code.is_some_and(|code| returns.contains(&code)) {
            let shown = if logoutput == "true" { lines(&ran) } else { Vec::new() };
            return (Ok(()), shown);
        }
        let codes: Vec<String> = returns.iter().map(i32::to_string).collect();
        let ended = ran
            .code
            .map_or_else(|| "was killed by a signal".to_owned(), |c| format!("returned {c}"));
        let shown = if logoutput == "false" { Vec::new() } else { lines(&ran) };
        last = (
            Err(format!("'{}' {ended} instead of one of [{}]", desired.name, codes.join(","))),
            shown,
        );
    }
    last
}
