//! Facts and classes: the core facts the daemon gathers itself, fact files (YAML, JSON or
//! `key=value` lines) merged over them, and the classes file.
//!
//! Fact files are re-read when they change (see [`FactSource::refresh`]); a file that fails to
//! parse is reported and the last good facts stay in force, so a half-written file never leaves
//! a node with no facts. A file that had facts and now reads empty (truncated by a writer that
//! has not written yet) keeps its last facts for [`EMPTY_SETTLE`]; only a file that stays empty
//! that long loses them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a fact file that had facts may read empty before they are dropped.
pub const EMPTY_SETTLE: Duration = Duration::from_secs(10);

use serde_json::{Map, Value};

/// Facts and classes of a node at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Fact values by name (structured facts are nested objects).
    pub facts: Map<String, Value>,
    /// Classes.
    pub classes: Vec<String>,
}

/// A fact or class file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FactsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Parses one fact file by its extension: `.yaml`/`.yml`, `.json`, anything else as
/// `key=value` lines (`#` comments and blank lines skipped).
pub fn parse_fact_file(path: &Path, text: &str) -> Result<Map<String, Value>, FactsError> {
    let fail = |message: String| FactsError { path: path.to_owned(), message };
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let value: Value = match extension {
        "yaml" | "yml" => {
            if text.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                serde_saphyr::from_str(text).map_err(|err| fail(err.to_string()))?
            }
        }
        "json" => serde_json::from_str(text).map_err(|err| fail(err.to_string()))?,
        _ => {
            let mut map = Map::new();
            for (idx, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    return Err(fail(format!(
                        "line {}: expected key=value, got {line:?}",
                        idx + 1
                    )));
                };
                let key = key.trim();
                if key.is_empty() {
                    return Err(fail(format!("line {}: empty fact name", idx + 1)));
                }
                map.insert(key.to_owned(), Value::String(value.trim().to_owned()));
            }
            Value::Object(map)
        }
    };
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(fail(format!("facts must be a map of names to values, not {}", kind(&other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Parses a classes file: one class per line, blank lines and `#` comments skipped.
pub fn parse_classes(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Core facts gathered from the running system (Linux).
pub fn core_facts() -> Map<String, Value> {
    let mut facts = Map::new();
    let uname = nix::sys::utsname::uname().ok();
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default();
    let fqdn = fqdn(&hostname);
    let domain = fqdn.split_once('.').map(|(_, domain)| domain.to_owned()).unwrap_or_default();
    facts.insert("hostname".into(), Value::from(hostname.split('.').next().unwrap_or_default()));
    facts.insert("fqdn".into(), Value::from(fqdn.clone()));
    facts.insert("domain".into(), Value::from(domain));
    if let Some(uname) = &uname {
        facts.insert("kernel".into(), Value::from(uname.sysname().to_string_lossy().into_owned()));
        facts.insert(
            "kernelrelease".into(),
            Value::from(uname.release().to_string_lossy().into_owned()),
        );
        facts.insert(
            "architecture".into(),
            Value::from(uname.machine().to_string_lossy().into_owned()),
        );
    }
    facts.insert(
        "os".into(),
        os_facts(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
    );
    let processors = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    facts.insert("processors".into(), serde_json::json!({ "count": processors }));
    if let Some(total) =
        meminfo_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    {
        facts.insert("memory".into(), serde_json::json!({ "total_bytes": total }));
    }
    if let Some(uptime) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
    {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        facts.insert("uptime_seconds".into(), Value::from(uptime as u64));
    }
    facts.insert("networking".into(), networking());
    facts.insert("cohort_version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    facts
}

/// The host's fully qualified name, as facter finds it: the canonical name of the hostname.
fn fqdn(hostname: &str) -> String {
    if hostname.contains('.') {
        return hostname.to_owned();
    }
    let hints = dns_lookup::AddrInfoHints {
        flags: libc_ai_canonname(),
        ..dns_lookup::AddrInfoHints::default()
    };
    dns_lookup::getaddrinfo(Some(hostname), None, Some(hints))
        .ok()
        .and_then(|mut infos| infos.find_map(|info| info.ok().and_then(|info| info.canonname)))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| hostname.to_owned())
}

/// `AI_CANONNAME` (2 on Linux).
fn libc_ai_canonname() -> i32 {
    2
}

/// `os` facts from `/etc/os-release`.
pub fn os_facts(os_release: &str) -> Value {
    let mut fields = std::collections::BTreeMap::new();
    for line in os_release.lines() {
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.trim(), value.trim().trim_matches('"'));
        }
    }
    let id = fields.get("ID").copied().unwrap_or("linux");
    let like = fields.get("ID_LIKE").copied().unwrap_or_default();
    let family = if id == "debian" || like.contains("debian") {
        "Debian"
    } else if ["rhel", "fedora", "centos"].iter().any(|name| id == *name || like.contains(name)) {
        "RedHat"
    } else if id.contains("suse") || like.contains("suse") {
        "Suse"
    } else {
        "Linux"
    };
    let full = fields.get("VERSION_ID").copied().unwrap_or_default();
    let mut parts = full.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    serde_json::json!({
        "family": family,
        "name": fields.get("NAME").copied().unwrap_or(id),
        "id": id,
        "release": { "full": full, "major": major, "minor": minor },
    })
}

fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn networking() -> Value {
    let mut addresses = Vec::new();
    let mut interfaces = Map::new();
    if let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() {
        for ifaddr in ifaddrs {
            let Some(address) = ifaddr.address else { continue };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let entry = interfaces
                .entry(ifaddr.interface_name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(Value::from(ip.to_string()));
            }
            if !ip.is_loopback() {
                addresses.push(Value::from(ip.to_string()));
            }
        }
    }
    let primary =
        addresses.iter().find(|ip| ip.as_str().is_some_and(|ip| !ip.contains(':'))).cloned();
    serde_json::json!({ "ip": primary, "addresses": addresses, "interfaces": interfaces })
}

/// Where Puppet keeps its state, in the order looked at: Puppet 7 all-in-one packages, then
/// Debian's and older packages.
pub const PUPPET_STATE_DIRS: [&str; 3] =
    ["/opt/puppetlabs/puppet/cache/state", "/var/cache/puppet/state", "/var/lib/puppet/state"];

/// `puppet_enabled` and friends, from the first Puppet state directory that exists:
///
/// - `puppet_enabled`: `0` when the agent is disabled (`agent_disabled.lock` exists, as
///   `puppet agent --disable` writes it; or, on Puppet 0.25-2.7, `puppetdlock` exists and is
///   empty, as the original fact read it), else `1`;
/// - `puppet_disabled_message`: the reason given to `--disable` (Puppet 7 writes
///   `{"disabled_message": "..."}`), when disabled;
/// - `puppet_running`: `1` while a catalog run holds `agent_catalog_run.lock`, or an old
///   agent's `puppetdlock` holds the pid of a live process, else `0`;
/// - `puppet_state_dir`: the directory used.
///
/// No fact at all when no state directory exists: a node without Puppet is not "enabled".
pub fn puppet_facts(state_dirs: &[PathBuf]) -> Map<String, Value> {
    let mut facts = Map::new();
    let Some(dir) = state_dirs.iter().find(|dir| dir.is_dir()) else { return facts };
    let lock = dir.join("agent_disabled.lock");
    // Puppet 0.25-2.7: one lock file, empty when disabled, the agent's pid while it runs.
    let old_lock = std::fs::read_to_string(dir.join("puppetdlock")).ok();
    let old_disabled = old_lock.as_deref().is_some_and(|text| text.trim().is_empty());
    let old_running = old_lock
        .as_deref()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let disabled = lock.exists() || old_disabled;
    facts.insert("puppet_enabled".into(), Value::from(if disabled { "0" } else { "1" }));
    if disabled {
        let message = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|json| {
                json.get("disabled_message").and_then(Value::as_str).map(str::to_owned)
            })
            .unwrap_or_default();
        facts.insert("puppet_disabled_message".into(), Value::from(message));
    }
    let running = dir.join("agent_catalog_run.lock").exists() || old_running;
    facts.insert("puppet_running".into(), Value::from(if running { "1" } else { "0" }));
    facts.insert("puppet_state_dir".into(), Value::from(dir.display().to_string()));
    facts
}

/// Where a node's facts come from: core facts, then fact files in order, then a classes file;
/// remembers file modification times to notice changes.
#[derive(Debug)]
pub struct FactSource {
    core: Map<String, Value>,
    files: Vec<PathBuf>,
    classes: Option<PathBuf>,
    /// Where to look for a classes file when none is named, first existing wins.
    default_classes: Vec<PathBuf>,
    puppet_state_dirs: Vec<PathBuf>,
    provision: Option<cohort_provision::node::NodeSettings>,
    seen: Vec<Option<(SystemTime, u64)>>,
    current: Facts,
    /// Per fact file: its last parsed facts, and since when it has read empty after having
    /// some.
    last_good: Vec<Map<String, Value>>,
    empty_since: Vec<Option<Instant>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl FactSource {
    /// A source with the given core facts and files; call [`FactSource::refresh`] to load.
    pub fn new(
        core: Map<String, Value>,
        files: Vec<PathBuf>,
        classes: Option<PathBuf>,
    ) -> FactSource {
        FactSource {
            core,
            files,
            classes,
            default_classes: Vec::new(),
            puppet_state_dirs: Vec::new(),
            provision: None,
            seen: Vec::new(),
            current: Facts::default(),
            last_good: Vec::new(),
            empty_since: Vec::new(),
        }
    }

    /// Without a named classes file, reads the first of `candidates` that exists (Puppet's
    /// `classes.txt` in its state directories, as MCollective did), looked for at every
    /// refresh so a first Puppet run is noticed.
    pub fn with_default_classes(mut self, candidates: Vec<PathBuf>) -> FactSource {
        self.default_classes = candidates;
        self
    }

    /// Adds the `provision_disabled` fact of `[provision]` (when enabled), re-checked with the
    /// files like the others.
    pub fn with_provision(mut self, settings: cohort_provision::node::NodeSettings) -> FactSource {
        self.provision = Some(settings);
        self
    }

    /// Also derives the `puppet_*` facts from these state directories, re-checked with the
    /// files (so `puppet agent --disable` shows in discovery within a refresh).
    pub fn with_puppet(mut self, state_dirs: Vec<PathBuf>) -> FactSource {
        self.puppet_state_dirs = state_dirs;
        self
    }

    /// The facts in force.
    pub fn current(&self) -> &Facts {
        &self.current
    }

    /// Re-reads the files if any changed since the last look. Returns the errors met (each
    /// naming its file); on error the previous facts stay in force. `Ok(true)` when the facts
    /// changed.
    pub fn refresh(&mut self) -> Result<bool, Vec<FactsError>> {
        self.refresh_at(Instant::now())
    }

    /// [`FactSource::refresh`] at `now` (which decides whether an empty file has settled).
    pub fn refresh_at(&mut self, now: Instant) -> Result<bool, Vec<FactsError>> {
        let locks: Vec<PathBuf> = self
            .puppet_state_dirs
            .iter()
            .flat_map(|dir| {
                [
                    dir.clone(),
                    dir.join("agent_disabled.lock"),
                    dir.join("agent_catalog_run.lock"),
                    dir.join("puppetdlock"),
                ]
            })
            .chain(self.provision.iter().flat_map(cohort_provision::node::watched))
            .collect();
        let stamps: Vec<Option<(SystemTime, u64)>> = self
            .files
            .iter()
            .chain(self.classes.iter())
            .chain(self.default_classes.iter())
            .chain(locks.iter())
            .map(|path| stamp(path))
            .collect();
        let settling = self.empty_since.iter().any(Option::is_some);
        if !self.seen.is_empty() && stamps == self.seen && !settling {
            return Ok(false);
        }
        self.last_good.resize(self.files.len(), Map::new());
        self.empty_since.resize(self.files.len(), None);
        let mut errors = Vec::new();
        let mut facts = self.core.clone();
        facts.extend(puppet_facts(&self.puppet_state_dirs));
        if let Some(provision) = &self.provision {
            facts.extend(cohort_provision::node::facts(provision));
        }
        for (idx, path) in self.files.iter().enumerate() {
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() && !self.last_good[idx].is_empty() => {
                    let since = *self.empty_since[idx].get_or_insert(now);
                    if now.saturating_duration_since(since) < EMPTY_SETTLE {
                        facts.extend(self.last_good[idx].clone());
                    } else {
                        self.last_good[idx] = Map::new();
                        self.empty_since[idx] = None;
                    }
                }
                Ok(text) => match parse_fact_file(path, &text) {
                    Ok(map) => {
                        self.empty_since[idx] = None;
                        self.last_good[idx] = map.clone();
                        facts.extend(map);
                    }
                    Err(err) => errors.push(err),
                },
                Err(err) => {
                    errors.push(FactsError { path: path.clone(), message: err.to_string() })
                }
            }
        }
        let named = self.classes.clone();
        let classes_file =
            named.or_else(|| self.default_classes.iter().find(|path| path.is_file()).cloned());
        let classes = match &classes_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => parse_classes(&text),
                Err(err) => {
                    errors.push(FactsError { path: path.clone(), message: err.to_string() });
                    self.current.classes.clone()
                }
            },
            None => Vec::new(),
        };
        self.seen = stamps;
        if !errors.is_empty() {
            return Err(errors);
        }
        let next = Facts { facts, classes };
        let changed = next != self.current;
        self.current = next;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_formats() {
        let yaml = parse_fact_file(
            Path::new("f.yaml"),
            "country: uk\nos:\n  release:\n    major: \"12\"\ncpus: 4\n",
        )
        .unwrap();
        assert_eq!(yaml["os"]["release"]["major"], "12");
        assert_eq!(yaml["cpus"], 4);
        let json = parse_fact_file(Path::new("f.json"), r#"{"country": "fr"}"#).unwrap();
        assert_eq!(json["country"], "fr");
        let txt = parse_fact_file(Path::new("facts.txt"), "# comment\n\ncountry = de\nmotd=a=b\n")
            .unwrap();
        assert_eq!(txt["country"], "de");
        assert_eq!(txt["motd"], "a=b");
        let err = parse_fact_file(Path::new("facts.txt"), "country\n").unwrap_err().to_string();
        assert_eq!(err, "facts.txt: line 1: expected key=value, got \"country\"");
        let err = parse_fact_file(Path::new("f.yaml"), "- a\n- b\n").unwrap_err().to_string();
        assert!(err.contains("must be a map"), "{err}");
        assert!(parse_fact_file(Path::new("f.json"), "{").is_err());
        assert_eq!(parse_classes("role::web\n\n# x\n  base  \n"), ["role::web", "base"]);
    }

    #[test]
    fn puppet_lock_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let dirs = vec![dir.path().join("missing"), state.clone()];
        assert!(puppet_facts(&dirs).is_empty(), "no state dir, no facts");
        std::fs::create_dir_all(&state).unwrap();
        let facts = puppet_facts(&dirs);
        assert_eq!(
            (facts["puppet_enabled"].as_str(), facts["puppet_running"].as_str()),
            (Some("1"), Some("0"))
        );
        std::fs::write(
            state.join("agent_disabled.lock"),
            r#"{"disabled_message":"maintenance by alice"}"#,
        )
        .unwrap();
        std::fs::write(state.join("agent_catalog_run.lock"), "4242").unwrap();
        let facts = puppet_facts(&dirs);
        assert_eq!(facts["puppet_enabled"], "0");
        assert_eq!(facts["puppet_disabled_message"], "maintenance by alice");
        assert_eq!(facts["puppet_running"], "1");

        let mut source = FactSource::new(Map::new(), Vec::new(), None).with_puppet(dirs);
        assert!(source.refresh().unwrap());
        assert_eq!(source.current().facts["puppet_enabled"], "0");
        std::fs::remove_file(state.join("agent_disabled.lock")).unwrap();
        assert!(source.refresh().unwrap(), "enabling Puppet is noticed");
        assert_eq!(source.current().facts["puppet_enabled"], "1");
    }

    #[test]
    fn the_first_stock_classes_file_is_read_when_none_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let puppet7 = dir.path().join("opt/state/classes.txt");
        let old = dir.path().join("var/lib/puppet/state/classes.txt");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, "pki\nbacula::node\n").unwrap();
        let mut source = FactSource::new(Map::new(), Vec::new(), None)
            .with_default_classes(vec![puppet7.clone(), old.clone()]);
        source.refresh().unwrap();
        assert_eq!(source.current().classes, ["pki", "bacula::node"]);
        // Puppet 7's file appears (a first run): it comes first.
        std::fs::create_dir_all(puppet7.parent().unwrap()).unwrap();
        std::fs::write(&puppet7, "role::web\n").unwrap();
        assert!(source.refresh().unwrap());
        assert_eq!(source.current().classes, ["role::web"]);
        // A named file wins over the defaults.
        let mut named = FactSource::new(Map::new(), Vec::new(), Some(old.clone()))
            .with_default_classes(vec![puppet7]);
        named.refresh().unwrap();
        assert_eq!(named.current().classes, ["pki", "bacula::node"]);
    }

    #[test]
    fn old_puppetdlock() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_owned()];
        let lock = dir.path().join("puppetdlock");
        // Empty: `puppetd --disable` on Puppet 0.25-2.7.
        std::fs::write(&lock, "").unwrap();
        let facts = puppet_facts(&dirs);
        assert_eq!(
            (facts["puppet_enabled"].as_str(), facts["puppet_running"].as_str()),
            (Some("0"), Some("0"))
        );
        // A live pid: a run in progress, enabled.
        std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
        let facts = puppet_facts(&dirs);
        assert_eq!(
            (facts["puppet_enabled"].as_str(), facts["puppet_running"].as_str()),
            (Some("1"), Some("1"))
        );
        // A stale pid: neither.
        std::fs::write(&lock, "4194305\n").unwrap();
        let facts = puppet_facts(&dirs);
        assert_eq!(
            (facts["puppet_enabled"].as_str(), facts["puppet_running"].as_str()),
            (Some("1"), Some("0"))
        );
    }

    #[test]
    fn os_release() {
        let os = os_facts("ID=debian\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n");
        assert_eq!(os["family"], "Debian");
        assert_eq!(os["release"]["major"], "12");
        let os = os_facts("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n");
        assert_eq!(os["family"], "RedHat");
        assert_eq!(os["release"]["minor"], "3");
    }

    #[test]
    fn refresh_merges_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.yaml");
        let second = dir.path().join("b.json");
        let classes = dir.path().join("classes.txt");
        std::fs::write(&first, "country: uk\nrole: web\n").unwrap();
        std::fs::write(&second, r#"{"role": "db"}"#).unwrap();
        std::fs::write(&classes, "base\n").unwrap();
        let mut core = Map::new();
        core.insert("country".into(), "xx".into());
        core.insert("kernel".into(), "Linux".into());
        let mut source = FactSource::new(core, vec![first.clone(), second], Some(classes));
        assert!(source.refresh().unwrap());
        assert_eq!(source.current().facts["country"], "uk");
        assert_eq!(source.current().facts["role"], "db", "later file wins");
        assert_eq!(source.current().facts["kernel"], "Linux");
        assert_eq!(source.current().classes, ["base"]);
        assert!(!source.refresh().unwrap(), "unchanged files are not re-read");
        std::fs::write(&first, "country: [broken\n").unwrap();
        let errors = source.refresh().unwrap_err();
        assert!(errors[0].to_string().starts_with(&first.display().to_string()));
        assert_eq!(source.current().facts["country"], "uk", "last good facts stay");
        std::fs::write(&first, "country: fr\n").unwrap();
        assert!(source.refresh().unwrap());
        assert_eq!(source.current().facts["country"], "fr");
    }

    #[test]
    fn a_truncated_fact_file_keeps_its_facts_until_it_settles_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("facts.yaml");
        let other = dir.path().join("other.txt");
        std::fs::write(&file, "country: uk\nrole: web\n").unwrap();
        std::fs::write(&other, "rack=r1\n").unwrap();
        let mut source = FactSource::new(Map::new(), vec![file.clone(), other.clone()], None);
        let t0 = Instant::now();
        assert!(source.refresh_at(t0).unwrap());
        // Truncated by a writer that has not written yet: the facts stay.
        std::fs::write(&file, "").unwrap();
        assert!(!source.refresh_at(t0 + Duration::from_secs(1)).unwrap());
        assert_eq!(source.current().facts["country"], "uk");
        // Another file's change is still taken at once meanwhile.
        std::fs::write(&other, "rack=r2\n").unwrap();
        assert!(source.refresh_at(t0 + Duration::from_secs(2)).unwrap());
        assert_eq!(source.current().facts["rack"], "r2");
        assert_eq!(source.current().facts["role"], "web");
        // The writer finishes: the new content applies at once.
        std::fs::write(&file, "country: fr\n").unwrap();
        assert!(source.refresh_at(t0 + Duration::from_secs(3)).unwrap());
        assert_eq!(source.current().facts["country"], "fr");
        assert!(source.current().facts.get("role").is_none());
        // Emptied for good: after the settle time (no file change needed), the facts go.
        std::fs::write(&file, "\n").unwrap();
        let emptied = t0 + Duration::from_secs(4);
        assert!(!source.refresh_at(emptied).unwrap());
        assert!(!source.refresh_at(emptied + EMPTY_SETTLE / 2).unwrap());
        assert_eq!(source.current().facts["country"], "fr");
        assert!(source.refresh_at(emptied + EMPTY_SETTLE).unwrap());
        assert!(source.current().facts.get("country").is_none());
        assert_eq!(source.current().facts["rack"], "r2");
        assert!(!source.refresh_at(emptied + EMPTY_SETTLE * 2).unwrap(), "settled: quiet again");
    }
}
