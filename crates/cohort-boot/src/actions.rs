//! The actions user data can ask for.
//!
//! Built in: `getactions` (install action scripts listed in a `list.txt`, with optional sha256
//! pins), `shell` (a command, with a timeout), `write_file`, and `cohort` (write the daemon's
//! configuration; enable and start it when systemd is present). Any other type runs the
//! installed script of that name with the action's parameters as JSON on stdin. Every process runs
//! in its own process group, killed whole on timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Layout;
use crate::http::Http;
use crate::layout::write_atomic;
use crate::userdata::Action;

/// What an action may use.
pub struct Context<'a> {
    /// Paths.
    pub layout: &'a Layout,
    /// HTTP with the boot's retry policy.
    pub http: &'a Http,
    /// The instance.
    pub instance_id: &'a str,
    /// `--require-checksums`: every `getactions` entry must pin a sha256.
    pub require_checksums: bool,
    /// The facts file as the running system sees it (for the daemon configuration).
    pub facts_file: &'a str,
}

/// Default time an action's process may run.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of an action's output is kept for `cohort boot status`.
const TAIL: usize = 4096;
/// Most output an action may write before it is stopped.
const OUTPUT_CAP: usize = 16 << 20;

fn param<'a>(action: &'a Action, key: &str) -> Option<&'a Value> {
    action.params.get(key)
}

fn string_param(action: &Action, key: &str) -> Result<Option<String>, String> {
    match param(action, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(format!("{}: `{key}` must be a string, not {other}", action.name)),
    }
}

fn required(action: &Action, key: &str) -> Result<String, String> {
    string_param(action, key)?
        .ok_or_else(|| format!("{}: `{key}` is required for a {} action", action.name, action.kind))
}

fn timeout_param(action: &Action) -> Result<Duration, String> {
    match param(action, "timeout") {
        None | Some(Value::Null) => Ok(DEFAULT_TIMEOUT),
        Some(value) => value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "{}: `timeout` must be a positive number of seconds, not {value}",
                    action.name
                )
            }),
    }
}

/// Runs one action. `Ok` carries the tail of its output; `Err` why it failed.
pub async fn run(ctx: &Context<'_>, action: &Action) -> Result<String, String> {
    match action.kind.as_str() {
        "getactions" => getactions(ctx, action).await,
        "shell" => {
            let command = required(action, "command")?;
            let mut process = tokio::process::Command::new("/bin/sh");
            process.arg("-c").arg(&command);
            run_process(ctx, process, None, timeout_param(action)?).await
        }
        "write_file" => write_file(ctx, action),
        "cohort" => cohort(ctx, action).await,
        other => {
            let script = ctx.layout.actions.join(other);
            if !is_executable(&script) {
                return Err(format!(
                    "no action named {other:?}: not built in, and no executable {} (install it with getactions)",
                    script.display()
                ));
            }
            let input = serde_json::to_vec(&action.params).map_err(|err| err.to_string())?;
            run_process(
                ctx,
                tokio::process::Command::new(&script),
                Some(input),
                timeout_param(action)?,
            )
            .await
        }
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| {
        meta.is_file() && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
    })
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    text.trim_end().to_owned()
}

async fn run_process(
    ctx: &Context<'_>,
    mut command: tokio::process::Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String, String> {
    command
        .env("COHORT_BOOT_ROOT", &ctx.layout.root)
        .env("COHORT_BOOT_USER_DATA", ctx.layout.user_data_cache())
        .env("COHORT_BOOT_METADATA", ctx.layout.metadata_cache())
        .env("COHORT_BOOT_INSTANCE_ID", ctx.instance_id)
        .env("COHORT_BOOT_FACTS", &ctx.layout.facts_file);
    let finished = cohort_exec::run(command, input, timeout, OUTPUT_CAP)
        .await
        .map_err(|err| err.to_string())?;
    let mut output = finished.stdout.clone();
    output.extend_from_slice(&finished.stderr);
    for line in String::from_utf8_lossy(&output).lines() {
        crate::log::info(&format!("  | {line}"));
    }
    if finished.status.success() {
        Ok(tail(&output))
    } else {
        let last = tail(&output).lines().last().map(|l| format!(": {l}")).unwrap_or_default();
        Err(format!("{}{last}", finished.describe_exit()))
    }
}

/// `base` + `name`, keeping a query string of `base` (ec2-boot-init dropped it).
fn join_url(base: &str, name: &str) -> String {
    let (path, query) = match base.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base, None),
    };
    let mut url = path.to_owned();
    if !url.ends_with('/') {
        url.push('/');
    }
    url.push_str(name);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Where an action list and its scripts are.
#[derive(Debug, PartialEq, Eq)]
enum ListAt {
    /// The list at `list`, the scripts under `base`.
    Known {
        /// The list's URL.
        list: String,
        /// The scripts' directory URL.
        base: String,
    },
    /// `url` names a directory (the list is `url/list.txt`) or the list itself: the first is
    /// tried, and on "not found" the second.
    Either {
        /// `url/list.txt`, scripts under `url`.
        in_dir: (String, String),
        /// `url` itself, scripts beside it.
        as_file: (String, String),
    },
}

/// Where the list is: `url/<list>` with `list:`; `url/list.txt` when the path ends in `/`; the
/// file `url` names when its last segment has an extension (the original documentation's
/// `url: http://your.net/path/to/actions/list.txt`); otherwise either, directory first. The
/// query string stays on every URL.
fn list_at(url: &str, list: Option<&str>) -> ListAt {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let known = |list: String| ListAt::Known { list, base: url.to_owned() };
    if let Some(list) = list {
        return known(join_url(url, list));
    }
    if path.ends_with('/') {
        return known(join_url(url, "list.txt"));
    }
    let beside = (url.to_owned(), parent_url(url));
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        return ListAt::Known { list: beside.0, base: beside.1 };
    }
    ListAt::Either { in_dir: (join_url(url, "list.txt"), url.to_owned()), as_file: beside }
}

/// The directory of the file `url` names, with its query: `http://h/a/list.txt?q` →
/// `http://h/a/?q`.
fn parent_url(url: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let dir = match path.rfind('/') {
        Some(at) => &path[..=at],
        None => path,
    };
    match query {
        Some(query) => format!("{dir}?{query}"),
        None => dir.to_owned(),
    }
}

/// One entry of `list.txt`: `name` or `name sha256:<hex>`.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    sha256: Option<String>,
}

fn parse_list(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let name = parts.next().unwrap_or_default().to_owned();
        if name.starts_with('.')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("list line {}: {name:?} is not a plain file name", idx + 1));
        }
        let sha256 = match parts.next() {
            None => None,
            Some(pin) => match pin.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
                    Some(hex.to_ascii_lowercase())
                }
                _ => {
                    return Err(format!(
                        "list line {}: {pin:?} is not sha256:<64 hex digits>",
                        idx + 1
                    ));
                }
            },
        };
        if parts.next().is_some() {
            return Err(format!("list line {}: expected `name [sha256:<hex>]`", idx + 1));
        }
        entries.push(Entry { name, sha256 });
    }
    Ok(entries)
}

async fn getactions(ctx: &Context<'_>, action: &Action) -> Result<String, String> {
    let url = required(action, "url")?;
    let list_name = string_param(action, "list")?;
    let fetch = |list_url: String| async move {
        crate::log::info(&format!("fetching action list {list_url}"));
        ctx.http.get(&list_url).await
    };
    let (list, base) = match list_at(&url, list_name.as_deref()) {
        ListAt::Known { list, base } => (fetch(list).await.map_err(|err| err.to_string())?, base),
        ListAt::Either { in_dir, as_file } => match fetch(in_dir.0).await {
            Ok(list) => (list, in_dir.1),
            Err(crate::http::FetchError::NotFound { .. }) => {
                (fetch(as_file.0).await.map_err(|err| err.to_string())?, as_file.1)
            }
            Err(err) => return Err(err.to_string()),
        },
    };
    let entries = parse_list(&String::from_utf8_lossy(&list))?;
    if ctx.require_checksums
        && let Some(entry) = entries.iter().find(|e| e.sha256.is_none())
    {
        return Err(format!("{}: no sha256 pin, and --require-checksums is set", entry.name));
    }
    // Everything is fetched and verified before anything is installed: a bad list installs nothing.
    let mut fetched = Vec::new();
    for entry in &entries {
        let script_url = join_url(&base, &entry.name);
        let body = ctx.http.get(&script_url).await.map_err(|err| err.to_string())?;
        if let Some(want) = &entry.sha256 {
            let got = hex::encode(Sha256::digest(&body));
            if &got != want {
                return Err(format!(
                    "{}: sha256 mismatch: expected {want}, got {got}; nothing installed",
                    entry.name
                ));
            }
        }
        fetched.push((entry.name.clone(), body));
    }
    let mut installed = Vec::new();
    for (name, body) in fetched {
        let path = ctx.layout.actions.join(&name);
        write_atomic(&path, &body, 0o755).map_err(|err| format!("{}: {err}", path.display()))?;
        installed.push(name);
    }
    Ok(format!("installed {} action script(s): {}", installed.len(), installed.join(", ")))
}

fn write_file(ctx: &Context<'_>, action: &Action) -> Result<String, String> {
    let path = required(action, "path")?;
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(format!("{}: `path` must be absolute without '..', not {path:?}", action.name));
    }
    let content = string_param(action, "content")?.unwrap_or_default();
    let mode_text = string_param(action, "mode")?.unwrap_or_else(|| "0644".to_owned());
    let mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| {
            format!("{}: `mode` must be octal like 0640, not {mode_text:?}", action.name)
        })?;
    let target = ctx.layout.under_root(&path);
    let owner = string_param(action, "owner")?.map(|owner| resolve_owner(&owner)).transpose()?;
    write_atomic(&target, content.as_bytes(), mode)
        .map_err(|err| format!("{}: {err}", target.display()))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(&target, Some(uid), gid)
            .map_err(|err| format!("{}: chown: {err}", target.display()))?;
    }
    Ok(format!("wrote {path} ({} bytes, mode {mode:04o})", content.len()))
}

fn resolve_owner(owner: &str) -> Result<(nix::unistd::Uid, Option<nix::unistd::Gid>), String> {
    let (user, group) = match owner.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (owner, None),
    };
    let user = nix::unistd::User::from_name(user)
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("owner: no user {user:?}"))?;
    let gid = match group {
        Some(group) => Some(
            nix::unistd::Group::from_name(group)
                .map_err(|err| err.to_string())?
                .ok_or_else(|| format!("owner: no group {group:?}"))?
                .gid,
        ),
        None => Some(user.gid),
    };
    Ok((user.uid, gid))
}

fn string_list(action: &Action, key: &str) -> Result<Option<Vec<String>>, String> {
    match param(action, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(one)) => Ok(Some(vec![one.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{}: `{key}` must be a list of strings", action.name))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => {
            Err(format!("{}: `{key}` must be a list of strings, not {other}", action.name))
        }
    }
}

async fn cohort(ctx: &Context<'_>, action: &Action) -> Result<String, String> {
    let brokers = string_list(action, "brokers")?.filter(|b| !b.is_empty()).ok_or_else(|| {
        format!(
            "{}: `brokers` (a list of broker URLs) is required for a cohort action",
            action.name
        )
    })?;
    let mut config = Map::new();
    config.insert("brokers".into(), Value::from(brokers));
    if let Some(identity) = string_param(action, "identity")? {
        config.insert("identity".into(), Value::from(identity));
    }
    let collectives =
        string_list(action, "collectives")?.unwrap_or_else(|| vec!["cohort".to_owned()]);
    config.insert("collectives".into(), Value::from(collectives));
    let facts = string_list(action, "facts")?.unwrap_or_else(|| vec![ctx.facts_file.to_owned()]);
    config.insert("facts".into(), Value::from(facts));
    for key in ["classes", "agents_dir", "registration_interval"] {
        if let Some(value) = string_param(action, key)? {
            config.insert(key.into(), Value::from(value));
        }
    }
    // The daemon's [security] table, passed through (the daemon checks it when it starts).
    match param(action, "security") {
        None | Some(Value::Null) => {}
        Some(Value::Object(table)) => {
            config.insert("security".into(), Value::Object(table.clone()));
        }
        Some(other) => {
            return Err(format!(
                "{}: `security` must be a map of the daemon's [security] keys, not {other}",
                action.name
            ));
        }
    }
    let text = toml::to_string(&config).map_err(|err| err.to_string())?;
    let path = &ctx.layout.daemon_config;
    write_atomic(
        path,
        format!("# Written by cohort boot for instance {}.\n{text}", ctx.instance_id).as_bytes(),
        0o644,
    )
    .map_err(|err| format!("{}: {err}", path.display()))?;
    let mut output = format!("wrote {}", path.display());
    if ctx.layout.under_root("/run/systemd/system").is_dir() {
        let mut command = tokio::process::Command::new("systemctl");
        command.args(["enable", "--now", "cohort-daemon.service"]);
        let started = run_process(ctx, command, None, Duration::from_secs(120)).await?;
        output.push_str(&format!("; enabled and started cohort-daemon.service {started}"));
    } else {
        output.push_str("; systemd not running here, daemon not started");
    }
    Ok(output)
}

/// The semaphore file of `action` for this instance.
pub fn semaphore(layout: &Layout, instance_id: &str, action: &Action) -> PathBuf {
    layout.semaphores(instance_id).join(&action.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing() {
        let pin = "a".repeat(64);
        let text = format!("# actions\n\npuppet\nmonitoring.sh sha256:{pin}\n");
        assert_eq!(
            parse_list(&text).unwrap(),
            [
                Entry { name: "puppet".into(), sha256: None },
                Entry { name: "monitoring.sh".into(), sha256: Some(pin) }
            ]
        );
        assert!(parse_list("../etc/passwd\n").unwrap_err().contains("line 1"));
        assert!(parse_list(".hidden\n").is_err());
        assert!(parse_list("x sha256:abc\n").unwrap_err().contains("64 hex"));
        assert!(parse_list("x y z\n").is_err());
    }

    #[test]
    fn urls_keep_query_strings() {
        let known = |list: &str, base: &str| ListAt::Known { list: list.into(), base: base.into() };
        // The original documentation's form: the URL names the list file.
        assert_eq!(
            list_at("http://your.net/path/to/actions/list.txt", None),
            known("http://your.net/path/to/actions/list.txt", "http://your.net/path/to/actions/")
        );
        assert_eq!(
            list_at("https://h/a/list.txt?sig=x", None),
            known("https://h/a/list.txt?sig=x", "https://h/a/?sig=x")
        );
        assert_eq!(list_at("http://h/a/", None), known("http://h/a/list.txt", "http://h/a/"));
        assert_eq!(list_at("http://h/a", Some("l.txt")), known("http://h/a/l.txt", "http://h/a"));
        assert_eq!(
            list_at("http://h/a?s=1", None),
            ListAt::Either {
                in_dir: ("http://h/a/list.txt?s=1".into(), "http://h/a?s=1".into()),
                as_file: ("http://h/a?s=1".into(), "http://h/?s=1".into()),
            }
        );
        assert_eq!(join_url("http://h/actions", "list.txt"), "http://h/actions/list.txt");
        assert_eq!(join_url("http://h/actions/", "list.txt"), "http://h/actions/list.txt");
        assert_eq!(join_url("https://h/a?sig=x&e=1", "list.txt"), "https://h/a/list.txt?sig=x&e=1");
    }
}
