//! Files, directories and symlinks (Puppet's `posix` file provider): state from `lstat` and
//! the content's sha256; content replaced atomically (optionally backed up beside it first,
//! optionally checked by `validate_cmd` before it goes live), mode and owner set on the
//! temporary file so the final name never shows the old owner with new content.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::change::{Change, State, checksum};
use crate::model::{Desired, Value};

use super::{Env, ProviderError, write_atomic};

/// Puppet's `2026-09-23 17:59:01 +0000`.
fn time_text(secs: i64) -> String {
    let utc = super::accounts::utc_text(secs);
    format!("{} +0000", utc.trim_end_matches('Z').replace('T', " "))
}

pub(super) fn retrieve(path: &str) -> Result<State, ProviderError> {
    let mut state = State::new();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            state.insert("ensure".into(), "absent".into());
            return Ok(state);
        }
        Err(err) => return Err(ProviderError(format!("cannot stat {path}: {err}"))),
    };
    let kind = meta.file_type();
    let ensure = if kind.is_symlink() {
        "link"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_file() {
        "file"
    } else {
        "unknown"
    };
    state.insert("ensure".into(), ensure.into());
    state.insert("type".into(), ensure.into());
    state.insert("owner".into(), Value::Int(i64::from(meta.uid())));
    state.insert("group".into(), Value::Int(i64::from(meta.gid())));
    state.insert("mode".into(), format!("{:04o}", meta.mode() & 0o7777).into());
    state.insert("mtime".into(), time_text(meta.mtime()).into());
    state.insert("ctime".into(), time_text(meta.ctime()).into());
    if kind.is_symlink() {
        let target = std::fs::read_link(path)
            .map_err(|err| ProviderError(format!("cannot read link {path}: {err}")))?;
        state.insert("target".into(), target.display().to_string().into());
    } else if kind.is_file() {
        let content = std::fs::read(path)
            .map_err(|err| ProviderError(format!("cannot read {path}: {err}")))?;
        state.insert("content".into(), checksum(&content).into());
    }
    Ok(state)
}

/// Owner and group names become ids (the state shows ids, as Puppet's does); a `source`
/// becomes the content it holds.
pub(super) fn resolve(desired: &mut Desired) {
    if let Some(Value::Text(name)) = desired.should.get("owner")
        && let Ok(Some(user)) = nix::unistd::User::from_name(name)
    {
        let uid = i64::from(user.uid.as_raw());
        desired.should.insert("owner".into(), Value::Int(uid));
    }
    if let Some(Value::Text(name)) = desired.should.get("group")
        && let Ok(Some(group)) = nix::unistd::Group::from_name(name)
    {
        let gid = i64::from(group.gid.as_raw());
        desired.should.insert("group".into(), Value::Int(gid));
    }
    if let Some(source) = desired.param("source").map(str::to_owned) {
        let path = source.strip_prefix("file://").unwrap_or(&source);
        if let Ok(content) = std::fs::read_to_string(path) {
            desired.should.insert("content".into(), content.into());
        }
    }
}

fn id(value: Option<&Value>, what: &str) -> Result<Option<u32>, String> {
    match value {
        None => Ok(None),
        Some(Value::Int(n)) => {
            u32::try_from(*n).map(Some).map_err(|_| format!("{what} {n} is out of range"))
        }
        Some(other) => Err(format!("Could not find {what} {}", other.flat())),
    }
}

fn mode_of(desired: &Desired) -> Option<u32> {
    desired.should.get("mode").and_then(|m| u32::from_str_radix(&m.flat(), 8).ok())
}

/// Writes the content asked (or keeps what is there), validated and backed up as asked.
async fn write_content(desired: &Desired, current: &State, env: &Env) -> Result<(), String> {
    let path = Path::new(&desired.name);
    let content = match desired.should.get("content") {
        Some(content) => content.flat().into_bytes(),
        None if current.get("ensure").map(Value::flat).as_deref() == Some("file") => {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?
        }
        None => {
            if let Some(source) = desired.param("source") {
                return Err(format!("Could not read source {source}"));
            }
            Vec::new()
        }
    };
    if let Some(validate) = desired.param("validate_cmd") {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let staged = tempfile::Builder::new()
            .prefix(".cohort-validate-")
            .tempfile_in(dir)
            .map_err(|err| format!("cannot stage {}: {err}", path.display()))?;
        std::fs::write(staged.path(), &content).map_err(|err| err.to_string())?;
        let marker = desired.param("validate_replacement").unwrap_or("%");
        let line = validate.replace(marker, &staged.path().display().to_string());
        let mut command = tokio::process::Command::new("/bin/sh");
        command.arg("-c").arg(&line);
        let ran = super::finish(command, None, env.command_timeout).await?;
        if ran.code != Some(0) {
            return Err(format!(
                "Execution of '{line}' returned {}: {}",
                ran.code.unwrap_or(-1),
                ran.stderr.trim()
            ));
        }
    }
    if let Some(suffix) = desired.param("backup").filter(|b| *b != "false")
        && current.get("ensure").map(Value::flat).as_deref() == Some("file")
    {
        if !suffix.starts_with('.') {
            return Err(format!(
                "backup => '{suffix}' names a filebucket; only suffixes such as '.puppet-bak' are supported"
            ));
        }
        let backup = format!("{}{suffix}", desired.name);
        std::fs::copy(path, &backup).map_err(|err| format!("cannot back up to {backup}: {err}"))?;
    }
    let owner =
        match (id(desired.should.get("owner"), "user")?, id(desired.should.get("group"), "group")?)
        {
            (None, None) => None,
            (uid, gid) => {
                let meta = std::fs::metadata(path).ok();
                Some((
                    uid.or(meta.as_ref().map(MetadataExt::uid)).unwrap_or(0),
                    gid.or(meta.as_ref().map(MetadataExt::gid)).unwrap_or(0),
                ))
            }
        };
    write_atomic(path, &content, mode_of(desired), owner)
}

fn remove(path: &Path, current: &State, force: bool) -> Result<(), String> {
    match current.get("ensure").map(Value::flat).as_deref() {
        Some("directory") if force => std::fs::remove_dir_all(path),
        Some("directory") => {
            return Err(format!(
                "Could not remove directory {}: not forced (force => true)",
                path.display()
            ));
        }
        _ => std::fs::remove_file(path),
    }
    .map_err(|err| format!("cannot remove {}: {err}", path.display()))
}

async fn ensure(desired: &Desired, current: &State, should: &str, env: &Env) -> Result<(), String> {
    let path = Path::new(&desired.name);
    let is = current.get("ensure").map(Value::flat).unwrap_or_default();
    let force = desired.flag("force", false);
    if should == "absent" {
        return remove(path, current, force);
    }
    if is != "absent" {
        // Replacing one kind of thing with another.
        if is == "directory" && !force {
            return Err(format!(
                "Could not set '{should}' on ensure: Is a directory; use force => true to replace it"
            ));
        }
        if should != "file" || is != "link" {
            remove(path, current, force)?;
        }
    }
    if let Some(parent) = path.parent()
        && !parent.is_dir()
    {
        return Err(format!(
            "Cannot create {}; parent directory {} does not exist",
            path.display(),
            parent.display()
        ));
    }
    match should {
        "directory" => {
            std::fs::create_dir(path)
                .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
            if let Some(mode) = mode_of(desired) {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|err| err.to_string())?;
            }
            chown(desired, path)
        }
        "link" => {
            let target = desired.should.get("target").map(Value::flat).unwrap_or_default();
            let temp = path.with_file_name(format!(
                ".cohort-link-{}",
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ));
            let _ = std::fs::remove_file(&temp);
            std::os::unix::fs::symlink(&target, &temp)
                .and_then(|()| std::fs::rename(&temp, path))
                .map_err(|err| format!("cannot link {} to {target}: {err}", path.display()))?;
            chown(desired, path)
        }
        _ => {
            let empty = State::new();
            write_content(desired, if is == "file" { current } else { &empty }, env).await
        }
    }
}

fn chown(desired: &Desired, path: &Path) -> Result<(), String> {
    let uid = id(desired.should.get("owner"), "user")?;
    let gid = id(desired.should.get("group"), "group")?;
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, uid, gid)
        .map_err(|err| format!("cannot chown {}: {err}", path.display()))
}

pub(super) async fn sync(
    desired: &Desired,
    current: &State,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let path = Path::new(&desired.name);
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let result = match change.property.as_str() {
            "ensure" => ensure(desired, current, &change.should.flat(), env).await,
            "content" => write_content(desired, current, env).await,
            "target" => ensure(desired, current, "link", env).await,
            "mode" => match mode_of(desired) {
                Some(mode) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|err| format!("cannot chmod {}: {err}", path.display())),
                None => Err("invalid mode".into()),
            },
            "owner" => id(Some(&change.should), "user").and_then(|uid| {
                std::os::unix::fs::lchown(path, uid, None).map_err(|err| err.to_string())
            }),
            "group" => id(Some(&change.should), "group").and_then(|gid| {
                std::os::unix::fs::lchown(path, None, gid).map_err(|err| err.to_string())
            }),
            other => Err(format!("cannot manage {other}")),
        };
        results.push(result);
    }
    results
}
