//! Debian packages (Puppet's `apt` and `dpkg` providers): state from `dpkg-query`, `latest`
//! from `apt-cache policy`, changes with `apt-get` (or `dpkg -i` from a `.deb` source), holds
//! with `apt-mark`. A package never installed is `purged`; one removed with its configuration
//! left is `absent`, as Puppet reports them.

use crate::change::{Change, State};
use crate::model::{Desired, Value};

use super::{Env, ProviderError, checked, command};

/// State from one `dpkg-query` line: `<status words> <version>`.
pub(crate) fn state_of(status_line: &str) -> State {
    let mut state = State::new();
    let words: Vec<&str> = status_line.split_whitespace().collect();
    let (ensure, mark) = match words.as_slice() {
        [want, _, "installed", version, ..] => ((*version).to_owned(), *want == "hold"),
        [want, _, "config-files", ..] => ("absent".to_owned(), *want == "hold"),
        [
            want,
            _,
            "half-installed" | "unpacked" | "half-configured" | "triggers-awaited"
            | "triggers-pending",
            ..,
        ] => ("absent".to_owned(), *want == "hold"),
        _ => ("purged".to_owned(), false),
    };
    // A package that was never installed has no mark, as Puppet shows it.
    if ensure != "purged" {
        state.insert("mark".into(), if mark { "hold" } else { "none" }.into());
    }
    state.insert("ensure".into(), ensure.into());
    state
}

const FORMAT: &str = "${Status} ${Version}\\n";

pub(super) async fn retrieve(name: &str, env: &Env) -> Result<State, ProviderError> {
    let ran = command("dpkg-query", &["-W", "--showformat", FORMAT, name], None, env)
        .await
        .map_err(ProviderError)?;
    // Exit 1 with "no packages found": never installed.
    Ok(state_of(ran.stdout.lines().next().unwrap_or_default()))
}

pub(super) async fn instances(env: &Env) -> Result<Vec<(String, State)>, ProviderError> {
    let out =
        checked("dpkg-query", &["-W", "--showformat", "${Package} ${Status} ${Version}\\n"], env)
            .await
            .map_err(ProviderError)?;
    let mut list: Vec<(String, State)> = out
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(' ')?;
            let state = state_of(rest);
            let ensure = state.get("ensure").map(Value::flat).unwrap_or_default();
            (ensure != "purged").then(|| (name.to_owned(), state))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list.dedup_by(|a, b| a.0 == b.0);
    Ok(list)
}

/// The candidate version from `apt-cache policy` output.
pub(crate) fn candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

/// `latest` becomes the candidate version, so the comparison (and the message) is between
/// versions, as Puppet's is.
pub(super) async fn resolve(desired: &mut Desired, env: &Env) {
    if desired.ensure() != Some("latest") {
        return;
    }
    if let Ok(ran) = command("apt-cache", &["policy", &desired.name], None, env).await
        && let Some(version) = candidate(&ran.stdout)
    {
        desired.should.insert("ensure".into(), Value::Text(version));
    }
}

async fn install(desired: &Desired, should: &str, env: &Env) -> Result<(), String> {
    let options = desired.list("install_options");
    let source = desired.param("source").map(|s| s.strip_prefix("file://").unwrap_or(s).to_owned());
    if desired.provider.as_deref() == Some("dpkg") {
        let Some(source) = source else {
            return Err("the dpkg provider installs from a source (.deb path)".into());
        };
        let mut args: Vec<&str> = vec!["--force-confold"];
        args.extend(options.iter().map(String::as_str));
        args.extend(["-i", source.as_str()]);
        return checked("dpkg", &args, env).await.map(drop);
    }
    if should == "latest" {
        return Err(format!("no candidate version of {} is known to apt", desired.name));
    }
    let target = match (&source, should) {
        (Some(source), _) => source.clone(),
        (None, "present") => desired.name.clone(),
        (None, version) => format!("{}={version}", desired.name),
    };
    let mut args: Vec<&str> = vec!["-q", "-y", "-o", "DPkg::Options::=--force-confold"];
    args.extend(options.iter().map(String::as_str));
    args.extend(["install", target.as_str()]);
    checked("apt-get", &args, env).await.map(drop)
}

async fn uninstall(desired: &Desired, purge: bool, env: &Env) -> Result<(), String> {
    let options = desired.list("uninstall_options");
    let name = desired.name.as_str();
    if desired.provider.as_deref() == Some("dpkg") {
        let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
        args.extend([if purge { "--purge" } else { "--remove" }, name]);
        return checked("dpkg", &args, env).await.map(drop);
    }
    let mut args: Vec<&str> = vec!["-q", "-y"];
    args.extend(options.iter().map(String::as_str));
    args.extend([if purge { "purge" } else { "remove" }, name]);
    checked("apt-get", &args, env).await.map(drop)
}

pub(super) async fn sync(
    desired: &Desired,
    changes: &[Change],
    env: &Env,
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let result = match (change.property.as_str(), change.should.flat().as_str()) {
            ("ensure", "absent") => uninstall(desired, false, env).await,
            ("ensure", "purged") => uninstall(desired, true, env).await,
            ("ensure", should) => install(desired, should, env).await,
            ("mark", "hold") => checked("apt-mark", &["hold", &desired.name], env).await.map(drop),
            ("mark", _) => checked("apt-mark", &["unhold", &desired.name], env).await.map(drop),
            (other, _) => Err(format!("cannot manage {other}")),
        };
        results.push(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_states() {
        assert_eq!(
            state_of("install ok installed 5.2.15-2+b8")["ensure"],
            Value::from("5.2.15-2+b8")
        );
        let held = state_of("hold ok installed 1.0");
        assert_eq!(held["mark"], Value::from("hold"));
        assert_eq!(state_of("deinstall ok config-files 1.0")["ensure"], Value::from("absent"));
        assert_eq!(state_of("")["ensure"], Value::from("purged"));
        assert_eq!(state_of("unknown ok not-installed ")["ensure"], Value::from("purged"));
    }

    #[test]
    fn candidate_version() {
        let policy =
            "bash:\n  Installed: 5.2.15-2+b8\n  Candidate: 5.2.15-2+b13\n  Version table:\n";
        assert_eq!(candidate(policy).as_deref(), Some("5.2.15-2+b13"));
        assert_eq!(candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"), None);
    }
}
