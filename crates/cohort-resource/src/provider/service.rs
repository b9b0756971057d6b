//! Services: `systemd` where systemd runs (`/run/systemd/system` exists), otherwise Debian
//! init scripts (Puppet's `debian` provider): status from `systemctl is-active` or the init
//! script's `status` (or the resource's own `status` command, or a process matching
//! `pattern` when `hasstatus => false`), enablement from `systemctl is-enabled` or the
//! `/etc/rc?.d` start links, changes with `systemctl` or the script and `update-rc.d`.

use std::path::Path;

use crate::change::{Change, State};
use crate::model::Desired;

use super::{Env, ProviderError, checked, command, detached};

fn systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub(super) fn provider() -> &'static str {
    if systemd() { "systemd" } else { "debian" }
}

fn unit(name: &str) -> String {
    if name.contains('.') { name.to_owned() } else { format!("{name}.service") }
}

fn script(name: &str) -> String {
    format!("/etc/init.d/{name}")
}

async fn sh(line: &str, env: &Env) -> Result<super::Ran, String> {
    command("/bin/sh", &["-c", line], None, env).await
}

/// Whether a process whose command line contains `pattern` runs (`hasstatus => false`).
fn process_running(pattern: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    let me = std::process::id().to_string();
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let pid = name.to_string_lossy();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            return false;
        }
        std::fs::read(entry.path().join("cmdline"))
            .map(|raw| {
                let line: String = String::from_utf8_lossy(&raw).replace('\0', " ");
                line.contains(pattern)
            })
            .unwrap_or(false)
    })
}

async fn running(desired: &Desired, env: &Env) -> Result<bool, ProviderError> {
    let name = &desired.name;
    if let Some(status) = desired.param("status") {
        return Ok(sh(status, env).await.map_err(ProviderError)?.code == Some(0));
    }
    if !desired.flag("hasstatus", true) {
        let pattern = desired.param("pattern").or(desired.param("binary")).unwrap_or(name);
        return Ok(process_running(pattern));
    }
    if systemd() {
        let ran = command("systemctl", &["is-active", "--quiet", &unit(name)], None, env)
            .await
            .map_err(ProviderError)?;
        return Ok(ran.code == Some(0));
    }
    let script = script(name);
    if !Path::new(&script).is_file() {
        return Ok(false);
    }
    let ran = command(&script, &["status"], None, env).await.map_err(ProviderError)?;
    Ok(ran.code == Some(0))
}

fn rc_enabled(name: &str) -> bool {
    (2..=5).any(|level| {
        std::fs::read_dir(format!("/etc/rc{level}.d"))
            .map(|dir| {
                dir.flatten().any(|entry| {
                    let file = entry.file_name().to_string_lossy().into_owned();
                    file.starts_with('S')
                        && file.trim_start_matches(|c: char| c == 'S' || c.is_ascii_digit()) == name
                })
            })
            .unwrap_or(false)
    })
}

/// `enable` from what `systemctl is-enabled` prints, as Puppet's systemd provider reads it.
pub(crate) fn systemd_enable(word: &str) -> &'static str {
    match word {
        "enabled" | "enabled-runtime" | "alias" | "static" | "indirect" | "generated"
        | "transient" => "true",
        "masked" | "masked-runtime" => "mask",
        _ => "false",
    }
}

async fn enabled(name: &str, env: &Env) -> Result<String, ProviderError> {
    if systemd() {
        let ran = command("systemctl", &["is-enabled", &unit(name)], None, env)
            .await
            .map_err(ProviderError)?;
        return Ok(systemd_enable(ran.stdout.trim()).to_owned());
    }
    Ok(if rc_enabled(name) { "true" } else { "false" }.to_owned())
}

pub(super) async fn retrieve(desired: &Desired, env: &Env) -> Result<State, ProviderError> {
    let mut state = State::new();
    let ensure = if running(desired, env).await? { "running" } else { "stopped" };
    state.insert("ensure".into(), ensure.into());
    state.insert("enable".into(), enabled(&desired.name, env).await?.into());
    Ok(state)
}

pub(super) async fn instances(env: &Env) -> Result<Vec<(String, State)>, ProviderError> {
    let names: Vec<String> = if systemd() {
        let out = checked(
            "systemctl",
            &["list-unit-files", "--type=service", "--no-legend", "--no-pager"],
            env,
        )
        .await
        .map_err(ProviderError)?;
        out.lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|unit| !unit.contains('@'))
            .map(|unit| unit.to_owned())
            .collect()
    } else {
        const NOT_SERVICES: &[&str] = &["README", "skeleton", "rc", "rcS", "functions"];
        let mut names: Vec<String> = std::fs::read_dir("/etc/init.d")
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !NOT_SERVICES.contains(&n.as_str()) && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let desired = Desired::build(crate::model::Kind::Service, &name, &Default::default())
            .map_err(|err| ProviderError(err.to_string()))?;
        out.push((name, retrieve(&desired, env).await?));
    }
    Ok(out)
}

async fn start_stop(desired: &Desired, start: bool, env: &Env) -> Result<(), String> {
    let name = &desired.name;
    let verb = if start { "start" } else { "stop" };
    // Started daemons stay; only the command itself is waited for.
    let result = if let Some(line) = desired.param(verb) {
        detached("/bin/sh", &["-c", line], env).await
    } else if systemd() {
        checked("systemctl", &[verb, &unit(name)], env).await
    } else {
        let script = script(name);
        if !Path::new(&script).is_file() {
            return Err(format!("Could not find init script for '{name}'"));
        }
        detached(&script, &[verb], env).await
    };
    result.map(drop).map_err(|err| format!("Could not {verb} Service[{name}]: {err}"))
}

async fn set_enable(name: &str, should: &str, env: &Env) -> Result<(), String> {
    if systemd() {
        let unit = unit(name);
        let verbs: &[&str] = match should {
            "true" => &["unmask", "enable"],
            "false" => &["unmask", "disable"],
            "mask" => &["mask"],
            _ => return Err(format!("enable => {should} is not supported by systemd here")),
        };
        for verb in verbs {
            checked("systemctl", &[verb, &unit], env).await?;
        }
        return Ok(());
    }
    if !Path::new(&script(name)).is_file() {
        return Err(format!("Could not find init script for '{name}'"));
    }
    match should {
        "true" => {
            checked("update-rc.d", &[name, "defaults"], env).await?;
            checked("update-rc.d", &[name, "enable"], env).await.map(drop)
        }
        "false" => {
            checked("update-rc.d", &[name, "defaults"], env).await?;
            checked("update-rc.d", &[name, "disable"], env).await.map(drop)
        }
        other => Err(format!("enable => {other} needs systemd; this node runs init scripts")),
    }
}

/// Starts or stops, then, as Puppet's service ensure does, brings enablement along without an
/// event of its own.
async fn ensure(
    desired: &Desired,
    current: &State,
    running: bool,
    env: &Env,
) -> Result<(), String> {
    start_stop(desired, running, env).await?;
    let should = desired.should.get("enable").map(|v| v.flat());
    match should {
        Some(enable) if current.get("enable").map(|v| v.flat()).as_ref() != Some(&enable) => {
            set_enable(&desired.name, &enable, env).await
        }
        _ => Ok(()),
    }
}

pub(super) async fn sync(
    desired: &Desired,
    current: &State,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let should = change.should.flat();
        let result = match change.property.as_str() {
            "ensure" => ensure(desired, current, should == "running", env).await,
            "enable" => set_enable(&desired.name, &should, env).await,
            other => Err(format!("cannot manage {other}")),
        };
        results.push(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_enablement_words() {
        assert_eq!(systemd_enable("enabled"), "true");
        assert_eq!(systemd_enable("static"), "true");
        assert_eq!(systemd_enable("masked"), "mask");
        assert_eq!(systemd_enable("disabled"), "false");
        assert_eq!(systemd_enable(""), "false");
        assert_eq!(unit("ssh"), "ssh.service");
        assert_eq!(unit("getty@tty1.service"), "getty@tty1.service");
    }
}
