//! Users and groups: state read from `/etc/passwd`, `/etc/shadow` and `/etc/group` (local
//! accounts, what `useradd` manages), changes made with `useradd`/`usermod`/`userdel`, `chage`,
//! `groupadd`/`groupmod`/`groupdel` and `gpasswd`, as Puppet's useradd and groupadd providers do.

use crate::change::{Change, State};
use crate::model::{Desired, Value};

use super::{Env, ProviderError, checked};

const PASSWD: &str = "/etc/passwd";
const SHADOW: &str = "/etc/shadow";
const GROUP: &str = "/etc/group";

fn read(path: &str) -> Result<String, ProviderError> {
    super::read_or_empty(std::path::Path::new(path))
}

/// The fields of `name`'s line in a colon-separated account file.
fn entry<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (shadow's expiry field).
pub(crate) fn date_of_day(days: i64) -> String {
    utc_text(days.saturating_mul(86_400)).get(..10).unwrap_or_default().to_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (before it: the epoch).
pub(crate) fn utc_text(secs: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A user's state from the three files' text.
pub(crate) fn user_state(name: &str, passwd: &str, shadow: &str, group: &str) -> State {
    let mut state = State::new();
    let Some(fields) = entry(passwd, name).filter(|f| f.len() >= 7) else {
        state.insert("ensure".into(), "absent".into());
        return state;
    };
    state.insert("ensure".into(), "present".into());
    let int = |text: &str| text.parse::<i64>().ok().map(Value::Int);
    if let Some(uid) = int(fields[2]) {
        state.insert("uid".into(), uid);
    }
    if let Some(gid) = int(fields[3]) {
        state.insert("gid".into(), gid);
    }
    state.insert("comment".into(), fields[4].into());
    state.insert("home".into(), fields[5].into());
    state.insert("shell".into(), fields[6].into());
    if let Some(shadow) = entry(shadow, name).filter(|f| f.len() >= 8) {
        state.insert("password".into(), shadow[1].into());
        for (field, property) in
            [(3, "password_min_age"), (4, "password_max_age"), (5, "password_warn_days")]
        {
            if let Some(value) = int(shadow[field]) {
                state.insert(property.into(), value);
            }
        }
        // No expiry is left out, as Puppet shows it.
        if let Ok(days) = shadow[7].parse::<i64>() {
            state.insert("expiry".into(), date_of_day(days).into());
        }
    }
    let groups: Vec<String> = group
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let members = fields.get(3)?;
            members.split(',').any(|m| m == name).then(|| fields[0].to_owned())
        })
        .collect();
    if !groups.is_empty() {
        state.insert("groups".into(), Value::List(groups));
    }
    state
}

pub(super) fn retrieve_user(name: &str) -> Result<State, ProviderError> {
    Ok(user_state(name, &read(PASSWD)?, &read(SHADOW)?, &read(GROUP)?))
}

pub(super) fn users() -> Result<Vec<(String, State)>, ProviderError> {
    let (passwd, shadow, group) = (read(PASSWD)?, read(SHADOW)?, read(GROUP)?);
    let mut out: Vec<(String, State)> = passwd
        .lines()
        .filter_map(|line| {
            line.split(':').next().filter(|n| !n.is_empty() && !n.starts_with(['+', '-', '#']))
        })
        .map(|name| (name.to_owned(), user_state(name, &passwd, &shadow, &group)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A group's state from `/etc/group` text.
pub(crate) fn group_state(name: &str, group: &str) -> State {
    let mut state = State::new();
    let Some(fields) = entry(group, name).filter(|f| f.len() >= 3) else {
        state.insert("ensure".into(), "absent".into());
        return state;
    };
    state.insert("ensure".into(), "present".into());
    if let Ok(gid) = fields[2].parse::<i64>() {
        state.insert("gid".into(), Value::Int(gid));
    }
    let members: Vec<String> = fields
        .get(3)
        .map(|m| m.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if !members.is_empty() {
        state.insert("members".into(), Value::List(members));
    }
    state
}

pub(super) fn retrieve_group(name: &str) -> Result<State, ProviderError> {
    Ok(group_state(name, &read(GROUP)?))
}

pub(super) fn groups() -> Result<Vec<(String, State)>, ProviderError> {
    let group = read(GROUP)?;
    let mut out: Vec<(String, State)> = group
        .lines()
        .filter_map(|line| {
            line.split(':').next().filter(|n| !n.is_empty() && !n.starts_with(['+', '-', '#']))
        })
        .map(|name| (name.to_owned(), group_state(name, &group)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A primary group given by name becomes its gid (the system stores gids); an unknown name is
/// left as it is and fails when synced, naming the group.
pub(super) fn resolve_user(desired: &mut Desired) {
    if let Some(Value::Text(name)) = desired.should.get("gid")
        && let Ok(Some(group)) = nix::unistd::Group::from_name(name)
    {
        let gid = i64::from(group.gid.as_raw());
        desired.should.insert("gid".into(), Value::Int(gid));
    }
}

fn flag_for(property: &str) -> Option<&'static str> {
    Some(match property {
        "comment" => "-c",
        "home" => "-d",
        "uid" => "-u",
        "gid" => "-g",
        "shell" => "-s",
        "password" => "-p",
        "groups" => "-G",
        "expiry" => "-e",
        _ => return None,
    })
}

fn age_flag(property: &str) -> Option<&'static str> {
    Some(match property {
        "password_min_age" => "-m",
        "password_max_age" => "-M",
        "password_warn_days" => "-W",
        _ => return None,
    })
}

fn value_arg(property: &str, value: &Value) -> String {
    match (property, value) {
        ("expiry", Value::Text(text)) if text == "absent" => String::new(),
        (_, value) => value.flat(),
    }
}

fn group_exists(name: &str) -> Result<(), String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!("Could not find group {name}")),
    }
}

pub(super) async fn sync_user(
    desired: &Desired,
    _current: &State,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let result = match change.property.as_str() {
            "ensure" if change.should.flat() == "absent" => {
                let mut args = Vec::new();
                if desired.flag("managehome", false) {
                    args.push("-r");
                }
                args.push(desired.name.as_str());
                checked("userdel", &args, env).await.map(drop)
            }
            "ensure" => create_user(desired, env).await,
            property => modify_user(desired, property, &change.should, env).await,
        };
        results.push(result);
    }
    results
}

async fn modify_user(
    desired: &Desired,
    property: &str,
    should: &Value,
    env: &Env,
) -> Result<(), String> {
    if let ("gid", Value::Text(name)) = (property, should) {
        group_exists(name)?;
    }
    let name = desired.name.as_str();
    if let Some(flag) = flag_for(property) {
        checked("usermod", &[flag, &value_arg(property, should), name], env).await.map(drop)
    } else if let Some(flag) = age_flag(property) {
        checked("chage", &[flag, &should.flat(), name], env).await.map(drop)
    } else {
        Err(format!("cannot manage {property}"))
    }
}

async fn create_user(desired: &Desired, env: &Env) -> Result<(), String> {
    let mut args: Vec<String> = Vec::new();
    for property in ["comment", "home", "gid", "groups", "password", "shell", "uid", "expiry"] {
        if let Some(value) = desired.should.get(property)
            && let Some(flag) = flag_for(property)
        {
            if property == "gid"
                && let Value::Text(name) = value
            {
                group_exists(name)?;
            }
            args.push(flag.to_owned());
            args.push(value_arg(property, value));
        }
    }
    args.push(if desired.flag("managehome", false) { "-m" } else { "-M" }.to_owned());
    if desired.flag("allowdupe", false) {
        args.push("-o".to_owned());
    }
    if desired.flag("system", false) {
        args.push("-r".to_owned());
    }
    args.push(desired.name.clone());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    checked("useradd", &refs, env)
        .await
        .map_err(|err| format!("Could not create user {}: {err}", desired.name))?;
    for property in ["password_min_age", "password_max_age", "password_warn_days"] {
        if let (Some(value), Some(flag)) = (desired.should.get(property), age_flag(property)) {
            checked("chage", &[flag, &value.flat(), &desired.name], env).await?;
        }
    }
    Ok(())
}

pub(super) async fn sync_group(
    desired: &Desired,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let name = desired.name.as_str();
        let result = match change.property.as_str() {
            "ensure" if change.should.flat() == "absent" => {
                checked("groupdel", &[name], env).await.map(drop)
            }
            "ensure" => {
                let mut args: Vec<String> = Vec::new();
                if let Some(gid) = desired.should.get("gid") {
                    args.extend(["-g".to_owned(), gid.flat()]);
                }
                if desired.flag("allowdupe", false) {
                    args.push("-o".to_owned());
                }
                if desired.flag("system", false) {
                    args.push("-r".to_owned());
                }
                args.push(name.to_owned());
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                match checked("groupadd", &refs, env).await {
                    Ok(_) => match desired.should.get("members") {
                        Some(members) => set_members(name, members, env).await,
                        None => Ok(()),
                    },
                    Err(err) => Err(format!("Could not create group {name}: {err}")),
                }
            }
            "gid" => checked("groupmod", &["-g", &change.should.flat(), name], env).await.map(drop),
            "members" => set_members(name, &change.should, env).await,
            other => Err(format!("cannot manage {other}")),
        };
        results.push(result);
    }
    results
}

async fn set_members(group: &str, members: &Value, env: &Env) -> Result<(), String> {
    checked("gpasswd", &["-M", &members.items().join(","), group], env).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nrip:x:1001:1001:R I P:/home/rip:/bin/sh\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\nrip:$1$xxx:19000:1:90:7::20000:\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:syslog,rip\nrip:x:1001:\nssl-cert:x:110:rip\n";

    #[test]
    fn user_state_from_files() {
        let state = user_state("rip", PASSWD, SHADOW, GROUP);
        assert_eq!(state["uid"], Value::Int(1001));
        assert_eq!(state["comment"], Value::from("R I P"));
        assert_eq!(state["password"], Value::from("$1$xxx"));
        assert_eq!(state["password_max_age"], Value::Int(90));
        assert_eq!(state["expiry"], Value::from("2024-10-04"));
        assert_eq!(state["groups"], Value::List(vec!["adm".into(), "ssl-cert".into()]));
        let root = user_state("root", PASSWD, SHADOW, GROUP);
        assert!(!root.contains_key("expiry"));
        assert!(!root.contains_key("groups"));
        assert_eq!(
            user_state("nobody-here", PASSWD, SHADOW, GROUP)["ensure"],
            Value::from("absent")
        );
    }

    #[test]
    fn group_state_from_file() {
        let adm = group_state("adm", GROUP);
        assert_eq!(adm["gid"], Value::Int(4));
        assert_eq!(adm["members"], Value::List(vec!["syslog".into(), "rip".into()]));
        assert!(!group_state("root", GROUP).contains_key("members"));
    }

    #[test]
    fn dates() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(19_000), "2022-01-08");
        assert_eq!(date_of_day(-1), "1970-01-01");
    }
}
