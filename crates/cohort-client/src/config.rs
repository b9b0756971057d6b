//! Client configuration: `client.toml` and the `COHORT_*` environment, resolved with the
//! command line's overrides (flags > environment > file > defaults), so every tool built on
//! this crate finds the same brokers, keys and discovery settings as `cohort` does.
//!
//! The file: the path given, else `$COHORT_CONFIG`, else `~/.config/cohort/client.toml`, else
//! `/etc/cohort/client.toml` (the first that exists). Keys: `brokers`, `collective`,
//! `discovery_timeout`, `discovery_window` (formerly `discovery_quiet`), `discovery_history`
//! (a path, or `false`), `timeout`, `ttl`, `max_ttl`, `agents_dir`, `connect_timeout`, and the security
//! keys `key`, `credential`, `issuers`, `revocations`, `tls_ca`. Relative paths are relative to
//! the file. Unknown keys are an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cohort_proto::Collective;
use serde::Deserialize;

use crate::history::History;
use crate::{ClientOptions, ClientSecurity, DiscoveryOptions};

/// Why the client configuration cannot be used. Each names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid client configuration.
    #[error("invalid client config {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        reason: String,
    },
    /// `COHORT_CONFIG` names something that is not a file.
    #[error("COHORT_CONFIG names {0}, which is not a file")]
    Environment(PathBuf),
    /// A setting has a value it cannot have.
    #[error("{key} must be {expected}, not {value}")]
    Value {
        /// The flag or key.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        value: String,
    },
    /// Only one of `key` and `credential` was given.
    #[error("the client config needs both `key` and `credential`, or neither")]
    HalfCredential,
    /// A key, credential or issuer file cannot be used.
    #[error("{context}: {source}")]
    Keys {
        /// What was being loaded.
        context: &'static str,
        /// Why it failed.
        source: cohort_keystore::KeystoreError,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClientFile {
    brokers: Vec<String>,
    collective: Option<Collective>,
    discovery_timeout: Option<f64>,
    #[serde(alias = "discovery_quiet")]
    discovery_window: Option<f64>,
    discovery_history: Option<HistorySetting>,
    timeout: Option<f64>,
    ttl: Option<u32>,
    max_ttl: Option<u32>,
    agents_dir: Option<PathBuf>,
    connect_timeout: Option<f64>,
    key: Option<PathBuf>,
    credential: Option<PathBuf>,
    issuers: Vec<String>,
    revocations: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

/// `discovery_history = "PATH"`, or `false` for none.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum HistorySetting {
    Enabled(bool),
    Path(PathBuf),
}

/// What the command line says, overriding the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The configuration file (`-c`).
    pub config: Option<PathBuf>,
    /// Broker URLs (`--broker`).
    pub brokers: Vec<String>,
    /// Collective (`-T`).
    pub collective: Option<Collective>,
    /// `--dt`, in seconds.
    pub discovery_timeout: Option<f64>,
    /// `--discovery-window`, in seconds.
    pub discovery_window: Option<f64>,
    /// `-t`, in seconds.
    pub timeout: Option<f64>,
    /// `--ttl`, in seconds.
    pub ttl: Option<u32>,
}

/// Resolved client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Broker URLs, tried in turn.
    pub brokers: Vec<String>,
    /// The collective addressed.
    pub collective: Collective,
    /// `--dt`.
    pub discovery_timeout: Duration,
    /// `--discovery-window`.
    pub discovery_window: Duration,
    /// The discovery history file, if any.
    pub history: Option<PathBuf>,
    /// `-t`, when given.
    pub timeout: Option<Duration>,
    /// Request TTL in seconds.
    pub ttl: u32,
    /// Where external agents' DDLs are.
    pub agents_dir: Option<PathBuf>,
    /// How long to try to reach a broker.
    pub connect_timeout: Duration,
    /// Signing, verification and TLS.
    pub security: ClientSecurity,
}

fn seconds(key: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).ok_or(ConfigError::Value {
        key,
        expected: "a positive number of seconds",
        value: value.to_string(),
    })
}

/// The request TTL, at least 1 s and at most `max_ttl` (nodes refuse longer; default 300 s).
fn ttl(ttl: u32, max_ttl: Option<u32>) -> Result<u32, ConfigError> {
    let max = max_ttl.unwrap_or(cohort_proto::DEFAULT_MAX_TTL_SECS);
    if (1..=max).contains(&ttl) {
        return Ok(ttl);
    }
    Err(ConfigError::Value {
        key: "--ttl",
        expected: "between 1 and max_ttl seconds (nodes refuse longer TTLs; default 300)",
        value: ttl.to_string(),
    })
}

fn read_file(path: &Path) -> Result<ClientFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let mut file: ClientFile = toml::from_str(&text)
        .map_err(|err| ConfigError::Parse { path: path.to_owned(), reason: err.to_string() })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for entry in [&mut file.key, &mut file.credential, &mut file.revocations, &mut file.tls_ca] {
        if let Some(relative) = entry.as_mut().filter(|p| p.is_relative()) {
            *relative = base.join(&*relative);
        }
    }
    if let Some(HistorySetting::Path(history)) = &mut file.discovery_history
        && history.is_relative()
    {
        *history = base.join(&*history);
    }
    // An entry is an issuer key (`O…`) or a file holding one; a file name, even without a
    // slash (`issuer.pub` next to this file), is relative to this file.
    for issuer in &mut file.issuers {
        let key = cohort_security::PublicKey::parse(cohort_security::KeyKind::Issuer, issuer);
        if key.is_err() && Path::new(issuer.as_str()).is_relative() {
            *issuer = base.join(issuer.as_str()).display().to_string();
        }
    }
    Ok(file)
}

/// Signing and verification settings from the client file.
fn client_security(file: &ClientFile) -> Result<ClientSecurity, ConfigError> {
    let signer = match (&file.key, &file.credential) {
        (Some(key), Some(credential)) => {
            Some(cohort_keystore::read_signer(key, credential).map_err(|source| {
                ConfigError::Keys { context: "cannot load the client key", source }
            })?)
        }
        (None, None) => None,
        _ => return Err(ConfigError::HalfCredential),
    };
    let trust = if file.issuers.is_empty() {
        None
    } else {
        let trust =
            cohort_keystore::read_trust(&file.issuers, file.revocations.as_deref()).map_err(
                |source| ConfigError::Keys { context: "cannot load the trusted issuers", source },
            )?;
        Some(Arc::new(trust))
    };
    Ok(ClientSecurity { signer, trust, tls_ca: file.tls_ca.clone(), reply_keys: None })
}

/// The file to read when none is given: `$COHORT_CONFIG`, the user's, the system's.
fn default_file() -> Result<ClientFile, ConfigError> {
    let env = std::env::var_os("COHORT_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = &env
        && !path.is_file()
    {
        return Err(ConfigError::Environment(path.clone()));
    }
    let home =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/cohort/client.toml"));
    let candidates = env.into_iter().chain(home).chain([PathBuf::from("/etc/cohort/client.toml")]);
    match candidates.into_iter().find(|path| path.is_file()) {
        Some(path) => read_file(&path),
        None => Ok(ClientFile::default()),
    }
}

impl ClientConfig {
    /// Resolves the configuration: `overrides` > `COHORT_BROKER` > the file > defaults.
    pub fn resolve(overrides: &Overrides) -> Result<ClientConfig, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => default_file()?,
        };
        let env_brokers: Vec<String> = std::env::var("COHORT_BROKER")
            .ok()
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        ClientConfig::from_parts(overrides, file, env_brokers)
    }

    /// Resolves from the file alone (no environment): for self-contained callers such as
    /// `cohort demo`, whose fleet must not be swapped for whatever `COHORT_BROKER` names.
    pub fn from_file(path: &Path) -> Result<ClientConfig, ConfigError> {
        let overrides = Overrides { config: Some(path.to_owned()), ..Overrides::default() };
        ClientConfig::from_parts(&overrides, read_file(path)?, Vec::new())
    }

    fn from_parts(
        overrides: &Overrides,
        file: ClientFile,
        env_brokers: Vec<String>,
    ) -> Result<ClientConfig, ConfigError> {
        let security = client_security(&file)?;
        let brokers = if !overrides.brokers.is_empty() {
            overrides.brokers.clone()
        } else if !env_brokers.is_empty() {
            env_brokers
        } else if !file.brokers.is_empty() {
            file.brokers
        } else {
            vec!["nats://127.0.0.1:4222".to_owned()]
        };
        let collective = match (&overrides.collective, file.collective) {
            (Some(target), _) => target.clone(),
            (None, Some(collective)) => collective,
            (None, None) => {
                Collective::new("cohort").unwrap_or_else(|_| unreachable!("valid name"))
            }
        };
        let discovery_timeout =
            seconds("--dt", overrides.discovery_timeout.or(file.discovery_timeout).unwrap_or(2.0))?;
        let discovery_window = seconds(
            "--discovery-window",
            overrides.discovery_window.or(file.discovery_window).unwrap_or(0.05),
        )?;
        let history = match file.discovery_history {
            Some(HistorySetting::Path(path)) => Some(path),
            Some(HistorySetting::Enabled(false)) => None,
            Some(HistorySetting::Enabled(true)) | None => History::default_path(),
        };
        let timeout =
            overrides.timeout.or(file.timeout).map(|t| seconds("--timeout", t)).transpose()?;
        Ok(ClientConfig {
            brokers,
            collective,
            discovery_timeout,
            discovery_window,
            history,
            timeout,
            ttl: ttl(overrides.ttl.or(file.ttl).unwrap_or(60), file.max_ttl)?,
            agents_dir: file.agents_dir,
            connect_timeout: seconds("connect_timeout", file.connect_timeout.unwrap_or(5.0))?,
            security,
        })
    }

    /// Discovery options from these settings (the count to expect comes from the history).
    pub fn discovery(&self) -> DiscoveryOptions {
        DiscoveryOptions {
            collective: self.collective.clone(),
            timeout: self.discovery_timeout,
            limit: self.discovery_timeout,
            window: self.discovery_window.min(self.discovery_timeout),
            ttl: self.ttl,
            expect: None,
        }
    }

    /// Connection options for `caller` (`user=alice`) on host `sender`, with the history
    /// opened. Also returns the warnings to show: an unreadable history, unsigned requests.
    pub fn client_options(&self, caller: String, sender: String) -> (ClientOptions, Vec<String>) {
        let mut warnings = Vec::new();
        if self.security.signer.is_none() {
            warnings.push(
                "no credential configured (key and credential in the client config): requests \
                 are unsigned, and only insecure (lab) nodes will answer them"
                    .to_owned(),
            );
        }
        let history = self.history.as_ref().map(|path| {
            let (history, error) = History::open(path);
            if let Some(error) = error {
                warnings.push(format!("ignoring the discovery history: {error}"));
            }
            Arc::new(history)
        });
        let options = ClientOptions {
            brokers: self.brokers.clone(),
            caller,
            sender,
            connect_timeout: self.connect_timeout,
            security: self.security.clone(),
            history,
            lost_grace: crate::DEFAULT_LOST_GRACE,
        };
        (options, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn flags_beat_the_file_and_paths_are_relative_to_it() {
        let (dir, path) = write(
            "brokers = [\"nats://a:1\"]\ndiscovery_timeout = 3\ndiscovery_quiet = 0.2\n\
             discovery_history = \"state/history.json\"\n",
        );
        let overrides = Overrides {
            config: Some(path.clone()),
            discovery_timeout: Some(1.5),
            ..Overrides::default()
        };
        let config =
            ClientConfig::from_parts(&overrides, read_file(&path).unwrap(), Vec::new()).unwrap();
        assert_eq!(config.brokers, ["nats://a:1"]);
        assert_eq!(config.discovery_timeout, Duration::from_millis(1500));
        assert_eq!(config.discovery_window, Duration::from_millis(200));
        assert_eq!(config.history, Some(dir.path().join("state/history.json")));
        let from_env = ClientConfig::from_parts(
            &overrides,
            read_file(&path).unwrap(),
            vec!["nats://e:2".into()],
        )
        .unwrap();
        assert_eq!(from_env.brokers, ["nats://e:2"]);
    }

    #[test]
    fn an_issuer_file_name_is_relative_to_the_file_and_a_key_stays_a_key() {
        let key = cohort_security::SecretKey::generate(cohort_security::KeyKind::Issuer, [3; 32]);
        let public = key.public().as_str().to_owned();
        let (dir, path) = write(&format!("issuers = [\"issuer.pub\", \"{public}\"]\n"));
        let file = read_file(&path).unwrap();
        assert_eq!(file.issuers, [dir.path().join("issuer.pub").display().to_string(), public]);
    }

    #[test]
    fn the_history_can_be_turned_off() {
        let (_dir, path) = write("discovery_history = false\n");
        assert_eq!(ClientConfig::from_file(&path).unwrap().history, None);
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        let (_dir, path) = write("discovery_window = -1\n");
        let err = ClientConfig::from_file(&path).unwrap_err().to_string();
        assert_eq!(err, "--discovery-window must be a positive number of seconds, not -1");
        let (_dir, path) = write("brokerz = []\n");
        let err = ClientConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("client.toml") && err.contains("brokerz"), "{err}");
        let (_dir, path) = write("key = \"k\"\n");
        assert!(matches!(ClientConfig::from_file(&path), Err(ConfigError::HalfCredential)));
        let (_dir, path) = write("ttl = 301\n");
        let err = ClientConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.starts_with("--ttl must be between 1 and max_ttl seconds"), "{err}");
        let (_dir, path) = write("ttl = 3600\nmax_ttl = 3600\n");
        assert_eq!(ClientConfig::from_file(&path).unwrap().ttl, 3600);
    }
}
