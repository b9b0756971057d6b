//! Broker configuration: the TOML file `cohort broker --config` reads, its defaults (those of
//! nats-server) and its validation.
//!
//! Parsing and validation are pure: [`Config::from_toml`] names the offending key in its error,
//! and nothing is bound or opened until [`crate::Broker::bind`]. Unknown keys are refused so a
//! typo (`max_paylaod`) cannot silently leave a limit at its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cohort_nats_proto::subject;
use serde::Deserialize;

/// Everything the broker can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to accept client connections on.
    pub listen: SocketAddr,
    /// Name reported in `INFO`.
    pub server_name: Option<String>,
    /// Largest message payload (headers included) accepted, in bytes.
    pub max_payload: usize,
    /// Longest control line accepted, in bytes.
    pub max_control_line: usize,
    /// Most client connections open at once; more are refused with an error.
    pub max_connections: usize,
    /// Most bytes queued for one client before it is disconnected as a slow consumer.
    pub max_pending: usize,
    /// Most subscriptions one connection may hold; more are refused (`-ERR 'maximum
    /// subscriptions exceeded'`, the connection kept), so one client cannot grow the broker's
    /// memory without bound.
    pub max_subscriptions: usize,
    /// Most connections one user (nkey or name) may have open at once, as a nats-server
    /// account limit: more are refused (`-ERR 'maximum account active connections
    /// exceeded'`).
    pub max_user_connections: usize,
    /// Most subscriptions one user may hold over all its connections; more are refused
    /// (`-ERR 'maximum subscriptions exceeded'`, the connection kept). With
    /// `max_subscriptions`, this bounds what one credential can make the broker hold however
    /// many connections it opens.
    pub max_user_subscriptions: usize,
    /// How long one write to a client may take before it is disconnected as a slow consumer.
    #[serde(with = "humantime_serde")]
    pub write_deadline: Duration,
    /// How often the server PINGs each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Unanswered PINGs after which a client is dropped as stale.
    pub max_pings_out: u32,
    /// How long a client has to send a valid `CONNECT` (and finish TLS) after connecting.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// How long shutdown waits for clients' queued messages to be written.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Serve Prometheus metrics over HTTP on this address.
    pub metrics: Option<SocketAddr>,
    /// TLS on the client listener.
    pub tls: Option<TlsConfig>,
    /// Client authentication and permissions.
    pub authorization: Option<Authorization>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            server_name: None,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_connections: 64 * 1024,
            max_pending: 64 * 1024 * 1024,
            max_subscriptions: 10_000,
            max_user_connections: 1024,
            max_user_subscriptions: 100_000,
            write_deadline: Duration::from_secs(10),
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            auth_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            metrics: None,
            tls: None,
            authorization: None,
        }
    }
}

/// Certificate and key for the listener, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How clients authenticate: one shared token, or a list of users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    /// A token every client must present (`auth_token`).
    pub token: Option<String>,
    /// Users with a password or an nkey, each with optional permissions.
    pub users: Vec<User>,
}

/// One user: a name and password, or an nkey (its public key, `U...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// Name sent as `user` in `CONNECT`.
    pub user: Option<String>,
    /// Password sent as `pass` in `CONNECT`.
    pub password: Option<String>,
    /// Public user nkey; the client proves it holds the seed by signing the server's nonce.
    pub nkey: Option<String>,
    /// What this user may publish and subscribe to; everything when absent.
    pub permissions: Option<Permissions>,
    /// Unix time (seconds) past which the user is refused, and a connected one disconnected
    /// with `-ERR 'User Authentication Expired'` (within a second): a credential's end of
    /// validity, enforced without waiting for a reload.
    pub expires: Option<i64>,
}

/// Publish and subscribe permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish: SubjectRules,
    /// Subjects the user may subscribe to.
    pub subscribe: SubjectRules,
}

/// An allow list (empty means everything) and a deny list that overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectRules {
    /// Patterns allowed; an empty list allows every subject.
    pub allow: Vec<String>,
    /// Patterns refused even when allowed.
    pub deny: Vec<String>,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has a key of the wrong type or name.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_payload == 0 {
            return Err(invalid("max_payload", "must be at least 1"));
        }
        if self.max_control_line < 64 {
            return Err(invalid("max_control_line", "must be at least 64"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.max_subscriptions == 0 {
            return Err(invalid("max_subscriptions", "must be at least 1"));
        }
        if self.max_user_connections == 0 {
            return Err(invalid("max_user_connections", "must be at least 1"));
        }
        if self.max_user_subscriptions == 0 {
            return Err(invalid("max_user_subscriptions", "must be at least 1"));
        }
        if self.max_pending < self.max_payload {
            return Err(invalid("max_pending", "must be at least max_payload"));
        }
        for (key, value) in [
            ("write_deadline", self.write_deadline),
            ("ping_interval", self.ping_interval),
            ("auth_timeout", self.auth_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.max_pings_out == 0 {
            return Err(invalid("max_pings_out", "must be at least 1"));
        }
        if let Some(auth) = &self.authorization {
            auth.validate()?;
        }
        Ok(())
    }
}

impl Authorization {
    /// Checks the token and users (each with a credential, permissions well-formed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.token, self.users.is_empty()) {
            (Some(_), false) => {
                return Err(invalid("authorization", "set either token or users, not both"));
            }
            (None, true) => {
                return Err(invalid("authorization", "set token or at least one user"));
            }
            (Some(token), true) if token.is_empty() => {
                return Err(invalid("authorization.token", "must not be empty"));
            }
            _ => {}
        }
        let mut names = std::collections::BTreeSet::new();
        for (idx, user) in self.users.iter().enumerate() {
            let key = format!("authorization.users[{idx}]");
            match (&user.user, &user.password, &user.nkey) {
                (Some(name), Some(_), None) => {
                    if !names.insert(name.clone()) {
                        return Err(invalid(format!("{key}.user"), format!("{name:?} twice")));
                    }
                }
                (None, None, Some(nkey)) => {
                    let valid =
                        nkey.starts_with('U') && nkeys::KeyPair::from_public_key(nkey).is_ok();
                    if !valid {
                        return Err(invalid(
                            format!("{key}.nkey"),
                            format!("{nkey:?} is not a public user nkey (U...)"),
                        ));
                    }
                    if !names.insert(nkey.clone()) {
                        return Err(invalid(format!("{key}.nkey"), "the same nkey twice"));
                    }
                }
                _ => {
                    return Err(invalid(
                        key,
                        "a user needs either `user` and `password`, or `nkey` alone",
                    ));
                }
            }
            if let Some(perms) = &user.permissions {
                for (kind, rules) in [("publish", &perms.publish), ("subscribe", &perms.subscribe)]
                {
                    for (list, patterns) in [("allow", &rules.allow), ("deny", &rules.deny)] {
                        for pattern in patterns {
                            subject::validate_pattern(pattern).map_err(|err| {
                                invalid(
                                    format!("{key}.permissions.{kind}.{list}"),
                                    format!("{pattern:?}: {err}"),
                                )
                            })?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_nats_server() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.max_payload, 1_048_576);
        assert_eq!(config.max_control_line, 4096);
        assert_eq!(config.ping_interval, Duration::from_secs(120));
        assert_eq!(config.max_pings_out, 2);
    }

    #[test]
    fn full_file() {
        let config = Config::from_toml(
            r#"
            listen = "127.0.0.1:5222"
            max_payload = 2048
            ping_interval = "30s"
            [tls]
            cert = "/etc/cohort/broker.pem"
            key = "/etc/cohort/broker.key"
            [[authorization.users]]
            user = "alice"
            password = "secret"
            permissions.publish.allow = ["a.>"]
            permissions.subscribe.deny = ["a.hidden"]
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 5222);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        let auth = config.authorization.unwrap();
        assert_eq!(auth.users[0].permissions.as_ref().unwrap().publish.allow, ["a.>"]);
    }

    #[track_caller]
    fn check_err(text: &str, expect: &str) {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(expect), "{err:?} does not contain {expect:?}");
    }

    #[test]
    fn errors_name_the_key() {
        check_err("max_paylaod = 5", "max_paylaod");
        check_err("max_payload = 0", "max_payload: must be at least 1");
        check_err("ping_interval = \"soon\"", "string \"soon\", expected a duration");
        check_err(
            "[authorization]\ntoken = \"x\"\n[[authorization.users]]\nuser=\"a\"\npassword=\"b\"",
            "not both",
        );
        check_err("[[authorization.users]]\nuser = \"a\"", "authorization.users[0]");
        check_err("[[authorization.users]]\nnkey = \"SUAB\"", "authorization.users[0].nkey");
        check_err(
            "[[authorization.users]]\nuser=\"a\"\npassword=\"b\"\npermissions.publish.allow=[\"a..b\"]",
            "authorization.users[0].permissions.publish.allow: \"a..b\": empty token",
        );
    }
}
