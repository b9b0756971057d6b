//! The parsed-file types: `host` (`/etc/hosts`), `mailalias` (`/etc/aliases`),
//! `ssh_authorized_key` (`~user/.ssh/authorized_keys`), `mount` (`/etc/fstab`, plus mounting
//! when `ensure => mounted`/`unmounted` asks) and `cron` (the user's crontab, through
//! `crontab`). Each apply reads the file once, edits it with [`crate::parsed`] (untouched lines
//! kept byte for byte) and writes it once, atomically.

use std::path::{Path, PathBuf};

use crate::change::{Change, State};
use crate::model::{Desired, Kind, Value};
use crate::parsed::{
    AliasRecord, Aliases, AuthorizedKeys, CRON_FIELDS, CronRecord, Crontab, Document, Fstab,
    FstabRecord, HostRecord, Hosts, KeyRecord,
};

use super::{Env, ProviderError, checked, command, read_or_empty, write_atomic};

/// Where a resource's record lives.
enum Place {
    File(PathBuf),
    Crontab(String),
}

fn home_of(user: &str) -> Result<nix::unistd::User, String> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found),
        _ => Err(format!("Could not find user {user}")),
    }
}

fn place(desired: &Desired) -> Result<Place, String> {
    if desired.kind == Kind::Cron {
        let user = desired.param("target").or(desired.param("user")).unwrap_or("root");
        return Ok(Place::Crontab(user.to_owned()));
    }
    if let Some(target) = desired.param("target") {
        return Ok(Place::File(PathBuf::from(target)));
    }
    Ok(Place::File(match desired.kind {
        Kind::Host => PathBuf::from("/etc/hosts"),
        Kind::Mailalias => PathBuf::from("/etc/aliases"),
        Kind::Mount => PathBuf::from("/etc/fstab"),
        _ => {
            let user = desired.param("user").unwrap_or("root");
            home_of(user)?.dir.join(".ssh/authorized_keys")
        }
    }))
}

async fn read(place: &Place, env: &Env) -> Result<String, ProviderError> {
    match place {
        Place::File(path) => read_or_empty(path),
        Place::Crontab(user) => {
            let ran =
                command("crontab", &["-l", "-u", user], None, env).await.map_err(ProviderError)?;
            match ran.code {
                Some(0) => Ok(ran.stdout),
                // "no crontab for <user>"
                _ if ran.stderr.contains("no crontab") => Ok(String::new()),
                _ => Err(ProviderError(format!("crontab -l -u {user}: {}", ran.stderr.trim()))),
            }
        }
    }
}

async fn write(desired: &Desired, place: &Place, text: &str, env: &Env) -> Result<(), String> {
    match place {
        Place::Crontab(user) => {
            let ran =
                command("crontab", &["-u", user, "-"], Some(text.as_bytes().to_vec()), env).await?;
            if ran.code == Some(0) {
                Ok(())
            } else {
                Err(format!("crontab -u {user}: {}", ran.stderr.trim()))
            }
        }
        Place::File(path) if desired.kind == Kind::SshAuthorizedKey => {
            let owner = match desired.param("user") {
                Some(user) => {
                    let user = home_of(user)?;
                    Some((user.uid.as_raw(), user.gid.as_raw()))
                }
                None => None,
            };
            if let Some(dir) = path.parent()
                && !dir.exists()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|err| err.to_string())?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                        .map_err(|err| err.to_string())?;
                }
            }
            let mode = if path.exists() { None } else { Some(0o600) };
            write_atomic(path, text.as_bytes(), mode, owner)
        }
        Place::File(path) => write_atomic(path, text.as_bytes(), None, None),
    }
}

fn target_text(place: &Place) -> String {
    match place {
        Place::File(path) => path.display().to_string(),
        Place::Crontab(user) => user.clone(),
    }
}

fn absent() -> State {
    let mut state = State::new();
    state.insert("ensure".into(), "absent".into());
    state
}

/// Mount points in `/proc/mounts`.
fn mounted(name: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|text| {
            text.lines().any(|line| {
                line.split_whitespace().nth(1).map(|p| p.replace("\\040", " "))
                    == Some(name.to_owned())
            })
        })
        .unwrap_or(false)
}

fn state_in(kind: Kind, text: &str, name: &str) -> Option<State> {
    match kind {
        Kind::Host => Document::<Hosts>::parse(text).find(name).map(HostRecord::state),
        Kind::Mailalias => Document::<Aliases>::parse(text).find(name).map(AliasRecord::state),
        Kind::SshAuthorizedKey => {
            Document::<AuthorizedKeys>::parse(text).find(name).map(KeyRecord::state)
        }
        Kind::Cron => Document::<Crontab>::parse(text).find(name).map(CronRecord::state),
        Kind::Mount => Document::<Fstab>::parse(text).find(name).map(|record| {
            let mut state = record.state();
            let ensure = if mounted(name) { "mounted" } else { "unmounted" };
            state.insert("ensure".into(), ensure.into());
            state
        }),
        _ => None,
    }
}

pub(super) async fn retrieve(desired: &Desired, env: &Env) -> Result<State, ProviderError> {
    let place = place(desired).map_err(ProviderError)?;
    let text = read(&place, env).await?;
    let mut state = match state_in(desired.kind, &text, &desired.name) {
        Some(state) => state,
        None if desired.kind == Kind::Mount && mounted(&desired.name) => {
            let mut state = State::new();
            state.insert("ensure".into(), "ghost".into());
            state
        }
        None => absent(),
    };
    match (&place, desired.kind) {
        (Place::Crontab(user), Kind::Cron) => {
            state.insert("user".into(), user.clone().into());
        }
        (_, Kind::SshAuthorizedKey) => {
            if let Some(user) = desired.param("user") {
                state.insert("user".into(), user.into());
            }
        }
        _ => {}
    }
    state.insert("target".into(), target_text(&place).into());
    Ok(state)
}

pub(super) async fn instances(
    kind: Kind,
    env: &Env,
) -> Result<Vec<(String, State)>, ProviderError> {
    let places: Vec<(Place, Option<String>)> = match kind {
        Kind::SshAuthorizedKey | Kind::Cron => {
            let passwd = read_or_empty(Path::new("/etc/passwd"))?;
            passwd
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    let (user, home) = (fields.first()?, fields.get(5)?);
                    Some(if kind == Kind::Cron {
                        (Place::Crontab((*user).to_owned()), Some((*user).to_owned()))
                    } else {
                        (
                            Place::File(Path::new(home).join(".ssh/authorized_keys")),
                            Some((*user).to_owned()),
                        )
                    })
                })
                .filter(|(place, _)| match place {
                    Place::File(path) => path.is_file(),
                    Place::Crontab(user) => {
                        Path::new("/var/spool/cron/crontabs").join(user).is_file()
                    }
                })
                .collect()
        }
        Kind::Host => vec![(Place::File("/etc/hosts".into()), None)],
        Kind::Mailalias => vec![(Place::File("/etc/aliases".into()), None)],
        Kind::Mount => vec![(Place::File("/etc/fstab".into()), None)],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (place, user) in places {
        let text = read(&place, env).await?;
        let target = target_text(&place);
        let mut add = |title: String, mut state: State| {
            state.insert("target".into(), target.clone().into());
            if let Some(user) = &user {
                state.insert("user".into(), user.clone().into());
            }
            out.push((title, state));
        };
        match kind {
            Kind::Host => Document::<Hosts>::parse(&text)
                .records()
                .for_each(|r| add(r.name.clone(), r.state())),
            Kind::Mailalias => Document::<Aliases>::parse(&text)
                .records()
                .for_each(|r| add(r.name.clone(), r.state())),
            Kind::SshAuthorizedKey => Document::<AuthorizedKeys>::parse(&text)
                .records()
                .filter(|r| !r.name.is_empty())
                .for_each(|r| add(r.name.clone(), r.state())),
            Kind::Mount => Document::<Fstab>::parse(&text).records().for_each(|r| {
                let mut state = r.state();
                state.insert(
                    "ensure".into(),
                    if mounted(&r.name) { "mounted" } else { "unmounted" }.into(),
                );
                add(r.name.clone(), state)
            }),
            Kind::Cron => {
                let mut unnamed = 0;
                for record in Document::<Crontab>::parse(&text).records() {
                    let title = match &record.name {
                        Some(name) => name.clone(),
                        None => {
                            unnamed += 1;
                            record.unmanaged_title(unnamed)
                        }
                    };
                    add(title, record.state());
                }
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The should value of `property`, else the current one.
fn pick(desired: &Desired, current: Option<&State>, property: &str) -> Option<Value> {
    desired.should.get(property).or_else(|| current.and_then(|c| c.get(property))).cloned()
}

fn need(value: Option<Value>, property: &str, desired: &Desired) -> Result<String, String> {
    value.map(|v| v.flat()).ok_or_else(|| format!("{} needs '{property}'", desired.reference()))
}

fn apply_to_text(desired: &Desired, text: &str, removing: bool) -> Result<String, String> {
    let name = desired.name.as_str();
    let current = state_in(desired.kind, text, name);
    let current = current.as_ref();
    let list =
        |property: &str| pick(desired, current, property).map(|v| v.items()).unwrap_or_default();
    Ok(match desired.kind {
        Kind::Host => {
            let mut doc = Document::<Hosts>::parse(text);
            if removing {
                doc.remove(name);
            } else {
                doc.set(HostRecord {
                    ip: need(pick(desired, current, "ip"), "ip", desired)?,
                    name: name.to_owned(),
                    aliases: list("host_aliases"),
                    comment: pick(desired, current, "comment")
                        .map(|v| v.flat())
                        .filter(|c| !c.is_empty()),
                });
            }
            doc.render()
        }
        Kind::Mailalias => {
            let mut doc = Document::<Aliases>::parse(text);
            if removing {
                doc.remove(name);
            } else {
                let file = desired.should.get("file").map(Value::flat);
                let recipients = if file.is_some() { Vec::new() } else { list("recipient") };
                if file.is_none() && recipients.is_empty() {
                    return Err(format!("{} needs 'recipient'", desired.reference()));
                }
                doc.set(AliasRecord { name: name.to_owned(), recipients, file });
            }
            doc.render()
        }
        Kind::SshAuthorizedKey => {
            let mut doc = Document::<AuthorizedKeys>::parse(text);
            if removing {
                doc.remove(name);
            } else {
                doc.set(KeyRecord {
                    options: list("options"),
                    key_type: need(pick(desired, current, "type"), "type", desired)?,
                    key: need(pick(desired, current, "key"), "key", desired)?,
                    name: name.to_owned(),
                });
            }
            doc.render()
        }
        Kind::Mount => {
            let mut doc = Document::<Fstab>::parse(text);
            if removing {
                doc.remove(name);
            } else {
                let field = |property: &str, default: &str| {
                    pick(desired, current, property)
                        .map_or_else(|| default.to_owned(), |v| v.flat())
                };
                doc.set(FstabRecord {
                    device: need(pick(desired, current, "device"), "device", desired)?,
                    name: name.to_owned(),
                    fstype: need(pick(desired, current, "fstype"), "fstype", desired)?,
                    options: field("options", "defaults"),
                    dump: field("dump", "0"),
                    pass: field("pass", "0"),
                });
            }
            doc.render()
        }
        Kind::Cron => {
            let mut doc = Document::<Crontab>::parse(text);
            if removing {
                doc.remove(name);
            } else {
                let special = pick(desired, current, "special").map(|v| v.flat());
                let mut times: [Vec<String>; 5] = Default::default();
                if special.is_none() {
                    for (slot, field) in times.iter_mut().zip(CRON_FIELDS) {
                        *slot = pick(desired, current, field)
                            .map(|v| v.items())
                            .unwrap_or_else(|| vec!["*".into()]);
                    }
                }
                doc.set(CronRecord {
                    name: Some(name.to_owned()),
                    environment: list("environment"),
                    special,
                    times,
                    command: need(pick(desired, current, "command"), "command", desired)?,
                });
            }
            doc.render()
        }
        _ => text.to_owned(),
    })
}

pub(super) async fn sync(
    desired: &Desired,
    current: &State,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let result = sync_all(desired, current, changes, env).await;
    changes.iter().map(|_| result.clone()).collect()
}

async fn sync_all(
    desired: &Desired,
    current: &State,
    changes: &[Change],
    env: &Env,
) -> Result<(), String> {
    let place = place(desired)?;
    let text = read(&place, env).await.map_err(|err| err.0)?;
    let should_ensure = changes
        .iter()
        .find(|c| c.property == "ensure")
        .map(|c| c.should.flat())
        .or_else(|| desired.ensure().map(str::to_owned));
    let removing = should_ensure.as_deref() == Some("absent");
    let is_mounted = desired.kind == Kind::Mount && mounted(&desired.name);
    if desired.kind == Kind::Mount
        && is_mounted
        && matches!(should_ensure.as_deref(), Some("absent" | "unmounted"))
    {
        checked("umount", &[&desired.name], env).await?;
    }
    let new_text = apply_to_text(desired, &text, removing)?;
    if new_text != text {
        write(desired, &place, &new_text, env).await?;
    }
    let was = current.get("ensure").map(Value::flat).unwrap_or_default();
    if desired.kind == Kind::Mount
        && should_ensure.as_deref() == Some("mounted")
        && was != "mounted"
    {
        checked("mount", &[&desired.name], env).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(kind: Kind, title: &str, attrs: &[(&str, serde_json::Value)]) -> Desired {
        let attrs = attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Desired::build(kind, title, &attrs).unwrap()
    }

    #[test]
    fn host_edit_keeps_other_fields() {
        let text = "# mine\n10.0.0.7 web1 www # front\n";
        let change = desired(Kind::Host, "web1", &[("ip", json!("10.0.0.8"))]);
        assert_eq!(
            apply_to_text(&change, text, false).unwrap(),
            "# mine\n10.0.0.8\tweb1\twww\t# front\n"
        );
        let new = desired(Kind::Host, "db1", &[("ensure", json!("present"))]);
        assert!(apply_to_text(&new, text, false).unwrap_err().contains("needs 'ip'"));
        let gone = desired(Kind::Host, "web1", &[("ensure", json!("absent"))]);
        assert_eq!(apply_to_text(&gone, text, true).unwrap(), "# mine\n");
    }

    #[test]
    fn cron_new_job_defaults_to_every_minute_fields() {
        let job =
            desired(Kind::Cron, "tick", &[("command", json!("/bin/true")), ("hour", json!("2"))]);
        assert_eq!(
            apply_to_text(&job, "", false).unwrap(),
            "# Puppet Name: tick\n* 2 * * * /bin/true\n"
        );
    }
}
