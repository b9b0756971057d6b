//! The master's side: Puppet's CA through `puppetserver ca`, what the built-in `puppetca` agent
//! runs. `list --all --format json` is the one source of what the CA holds; `sign` refuses a
//! name that already has a certificate (so a provisioner that resumes can never have a name
//! signed twice), `clean` reports a name the CA never heard of as such.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::node::object;

/// `[puppetca]` in `daemon.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSettings {
    /// Whether this node offers the `puppetca` agent (masters; off by default).
    pub enabled: bool,
    /// `puppetserver`; default `/opt/puppetlabs/bin/puppetserver` or `/usr/bin/puppetserver`.
    pub command: Option<PathBuf>,
    /// Given to every `puppetserver ca` action (`--config FILE`).
    pub extra_args: Vec<String>,
    /// How long one `puppetserver ca` call may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for CaSettings {
    fn default() -> CaSettings {
        CaSettings {
            enabled: false,
            command: None,
            extra_args: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What the CA holds, names sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    /// Waiting to be signed.
    pub requests: Vec<String>,
    /// Signed.
    pub signed: Vec<String>,
    /// Revoked.
    pub revoked: Vec<String>,
}

impl Listing {
    /// Where `certname` stands: `signed`, `awaiting signature`, `revoked` or `not found`.
    pub fn status(&self, certname: &str) -> &'static str {
        let has = |names: &[String]| names.iter().any(|n| n == certname);
        if has(&self.signed) {
            "signed"
        } else if has(&self.requests) {
            "awaiting signature"
        } else if has(&self.revoked) {
            "revoked"
        } else {
            "not found"
        }
    }
}

#[derive(Deserialize)]
struct Entry {
    name: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    requested: Vec<Entry>,
    #[serde(default)]
    signed: Vec<Entry>,
    #[serde(default)]
    revoked: Vec<Entry>,
}

/// Reads `puppetserver ca list --all --format json`.
pub fn parse_listing(text: &str) -> Result<Listing, String> {
    let raw: Raw = serde_json::from_str(text.trim())
        .map_err(|err| format!("cannot read puppetserver ca list output: {err}"))?;
    let names = |entries: Vec<Entry>| {
        let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
        names.sort();
        names
    };
    Ok(Listing {
        requests: names(raw.requested),
        signed: names(raw.signed),
        revoked: names(raw.revoked),
    })
}

/// A certname Puppet accepts: lowercase letters, digits, `.`, `-`, `_`, not starting with `-`
/// or `.`, at most 255 bytes. Checked before anything reaches a command line.
pub fn check_certname(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(format!("invalid certname {name:?}: lowercase letters, digits, '.', '-' and '_' only"))
    }
}

/// The master side.
#[derive(Debug, Clone)]
pub struct PuppetCa {
    settings: CaSettings,
}

impl PuppetCa {
    /// The CA as `settings` say.
    pub fn new(settings: CaSettings) -> PuppetCa {
        PuppetCa { settings }
    }

    async fn ca(&self, args: &[&str]) -> Result<(bool, String), String> {
        let program = match &self.settings.command {
            Some(path) => Some(path.clone()),
            None => ["/opt/puppetlabs/bin/puppetserver", "/usr/bin/puppetserver"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        }
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            "puppetserver is not installed on this node ([puppetca] command)".to_owned()
        })?;
        let mut command = tokio::process::Command::new(program);
        command
            .arg("ca")
            .args(args)
            .args(&self.settings.extra_args)
            .env_clear()
            .env("PATH", "/opt/puppetlabs/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .env("LANG", "C.UTF-8");
        let done = cohort_exec::run(command, None, self.settings.timeout, 16 * 1024 * 1024)
            .await
            .map_err(|err| {
            format!("puppetserver ca {}: {err}", args.first().copied().unwrap_or(""))
        })?;
        let mut text = String::from_utf8_lossy(&done.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&done.stderr));
        Ok((done.status.success(), text))
    }

    /// What the CA holds.
    pub async fn list(&self) -> Result<Listing, String> {
        let (ok, text) = self.ca(&["list", "--all", "--format", "json"]).await?;
        // It exits 1 when there is nothing to list, with the JSON still printed.
        match parse_listing(&text) {
            Ok(listing) => Ok(listing),
            Err(_) if !ok => Err(format!("puppetserver ca list failed: {}", text.trim())),
            Err(err) => Err(err),
        }
    }

    /// Where `certname` stands.
    pub async fn status(&self, certname: &str) -> Result<Map<String, Value>, String> {
        check_certname(certname)?;
        let listing = self.list().await?;
        Ok(object(json!({"certname": certname, "status": listing.status(certname)})))
    }

    /// Signs `certname`'s waiting request; refuses a name already signed.
    pub async fn sign(&self, certname: &str) -> Result<Map<String, Value>, String> {
        check_certname(certname)?;
        match self.list().await?.status(certname) {
            "signed" => {
                return Err(format!(
                    "Already have a cert for {certname} not attempting to sign again"
                ));
            }
            "awaiting signature" => {}
            _ => return Err(format!("No certificate request for {certname} to sign")),
        }
        let (ok, text) = self.ca(&["sign", "--certname", certname]).await?;
        if !ok {
            return Err(format!(
                "puppetserver ca sign --certname {certname} failed: {}",
                text.trim()
            ));
        }
        Ok(object(json!({"certname": certname, "status": "signed", "output": text.trim()})))
    }

    /// Revokes and removes everything the CA has for `certname`.
    pub async fn clean(&self, certname: &str) -> Result<Map<String, Value>, String> {
        check_certname(certname)?;
        if self.list().await?.status(certname) == "not found" {
            return Err(format!("Could not find any certs to delete for {certname}"));
        }
        let (ok, text) = self.ca(&["clean", "--certname", certname]).await?;
        if !ok {
            return Err(format!(
                "puppetserver ca clean --certname {certname} failed: {}",
                text.trim()
            ));
        }
        Ok(object(json!({"certname": certname, "output": text.trim()})))
    }

    /// Revokes `certname`'s certificate.
    pub async fn revoke(&self, certname: &str) -> Result<Map<String, Value>, String> {
        check_certname(certname)?;
        let (ok, text) = self.ca(&["revoke", "--certname", certname]).await?;
        if !ok {
            return Err(format!(
                "puppetserver ca revoke --certname {certname} failed: {}",
                text.trim()
            ));
        }
        Ok(object(json!({"certname": certname, "output": text.trim()})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_status() {
        let text = r#"{"requested":[{"name":"n2","fingerprint":"AA"}],"signed":[{"name":"puppet"},{"name":"n1"}],"revoked":[{"name":"old"}]}"#;
        let listing = parse_listing(text).unwrap();
        assert_eq!(listing.signed, ["n1", "puppet"]);
        assert_eq!(
            ["n1", "n2", "old", "n9"].map(|n| listing.status(n)),
            ["signed", "awaiting signature", "revoked", "not found"]
        );
        assert!(parse_listing("No certificates to list").unwrap_err().starts_with("cannot read"));
    }

    #[test]
    fn certnames_are_checked() {
        assert!(check_certname("web-1.example.com").is_ok());
        for bad in ["", "-all", "Web1", "a b", "x;y", ".hidden", &"a".repeat(256)] {
            assert!(check_certname(bad).is_err(), "{bad}");
        }
    }
}
