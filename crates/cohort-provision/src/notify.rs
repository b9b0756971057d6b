//! Telling people: recipient URIs and the built-in senders. `mailto:` goes out over SMTP
//! (STARTTLS by default, optional login), `https://` and `http://` are webhooks (a JSON POST,
//! retried on connection errors and 5xx), `exec:` runs a local program with the subject and
//! the message as its two arguments (never through a shell), `xmpp:` is a chat message from
//! the `[notify.xmpp]` account (STARTTLS and login required; the `xmpp` cargo feature, on by
//! default). The provisioner sends directly, or through the one node that runs a
//! notifier agent (`sendmsg`, the `notify` DDL), which uses these same senders.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Who to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// `mailto:ADDRESS[,ADDRESS…]`.
    Mail(Vec<String>),
    /// `https://…` or `http://…`.
    Webhook(String),
    /// `xmpp:JID`.
    Xmpp(String),
    /// `exec:/absolute/program`.
    Exec(PathBuf),
}

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The URI is not one we know.
    #[error("{uri:?}: {message}")]
    Recipient {
        /// The URI.
        uri: String,
        /// What is wrong.
        message: String,
    },
    /// Sending failed.
    #[error("{uri}: {message}")]
    Send {
        /// The URI.
        uri: String,
        /// Why.
        message: String,
    },
}

impl Recipient {
    /// Parses a recipient URI.
    pub fn parse(uri: &str) -> Result<Recipient, NotifyError> {
        let bad = |message: &str| NotifyError::Recipient {
            uri: uri.to_owned(),
            message: message.to_owned(),
        };
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| bad("not a URI (mailto:, https://, xmpp:, exec:)"))?;
        match scheme {
            "mailto" => {
                let addresses: Vec<String> = rest.split(',').map(|a| a.trim().to_owned()).collect();
                if addresses.iter().any(|a| a.parse::<lettre::Address>().is_err()) {
                    return Err(bad("not a mail address"));
                }
                Ok(Recipient::Mail(addresses))
            }
            "https" | "http" => {
                let url =
                    reqwest::Url::parse(uri).map_err(|err| bad(&format!("not a URL: {err}")))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("a webhook URL needs a host"));
                }
                Ok(Recipient::Webhook(uri.to_owned()))
            }
            "xmpp" => {
                let jid = rest.trim_start_matches("//");
                match jid.split_once('@') {
                    Some((user, host))
                        if !user.is_empty()
                            && !host.is_empty()
                            && !jid.contains(char::is_whitespace) =>
                    {
                        Ok(Recipient::Xmpp(jid.to_owned()))
                    }
                    _ => Err(bad("not a JID (user@host)")),
                }
            }
            "exec" => {
                let path = PathBuf::from(rest);
                if !path.is_absolute() {
                    return Err(bad("exec: needs an absolute program path"));
                }
                Ok(Recipient::Exec(path))
            }
            other => {
                Err(bad(&format!("unknown protocol {other:?} (mailto, https, http, xmpp, exec)")))
            }
        }
    }
}

/// How STARTTLS/TLS is used towards the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text (a local relay on port 25).
    None,
}

/// `[notify.smtp]` / `[notify.smtp]` in `daemon.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Mail server host.
    pub server: String,
    /// Its port; default by `tls`: 587, 465 or 25.
    pub port: Option<u16>,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login name, if the server wants one.
    pub username: Option<String>,
    /// File holding the password (not the password: configs get shared).
    pub password_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// How long one message may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            server: "localhost".to_owned(),
            port: None,
            tls: SmtpTls::default(),
            username: None,
            password_file: None,
            from: "cohort@localhost".to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// `[notify.xmpp]`: the account messages are sent from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmppConfig {
    /// The sending JID (`user@domain`).
    pub jid: Option<String>,
    /// File holding its password.
    pub password_file: Option<PathBuf>,
    /// Where the server listens (`IP:PORT`, `HOST` or `HOST:PORT`); default: the domain's
    /// `_xmpp-client._tcp` SRV record, else the domain on port 5222.
    pub server: Option<String>,
    /// PEM certificates trusted besides the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// How long one message may take, connection and login included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for XmppConfig {
    fn default() -> XmppConfig {
        XmppConfig {
            jid: None,
            password_file: None,
            server: None,
            ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Something to say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// Subject line.
    pub subject: String,
    /// Body.
    pub message: String,
}

/// The built-in senders.
#[derive(Debug, Clone)]
pub struct Senders {
    smtp: SmtpConfig,
    #[cfg_attr(not(feature = "xmpp"), allow(dead_code))]
    xmpp: XmppConfig,
    http: reqwest::Client,
    /// Webhook attempts.
    pub webhook_attempts: u32,
    /// Wait before the second webhook attempt; doubled after.
    pub webhook_backoff: Duration,
}

pub(crate) fn read_secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|err| format!("cannot read {}: {err}", path.display()))
}

impl Senders {
    /// Senders using `smtp` and `xmpp` accounts.
    pub fn new(smtp: SmtpConfig, xmpp: XmppConfig) -> Senders {
        // One crypto provider for the whole process (ring); already there in the binary.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("cohort-provision/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Senders { smtp, xmpp, http, webhook_attempts: 3, webhook_backoff: Duration::from_secs(1) }
    }

    /// Sends `message` to `recipient`; returns what was done.
    pub async fn send(&self, recipient: &Recipient, message: &Message) -> Result<String, String> {
        match recipient {
            Recipient::Mail(to) => self.mail(to, message).await,
            Recipient::Webhook(url) => self.webhook(url, message).await,
            Recipient::Exec(program) => exec(program, message).await,
            #[cfg(feature = "xmpp")]
            Recipient::Xmpp(jid) => crate::xmpp::send(&self.xmpp, jid, message).await,
            #[cfg(not(feature = "xmpp"))]
            Recipient::Xmpp(jid) => Err(format!(
                "cannot send to xmpp:{jid}: this build of Cohort was made without the xmpp feature; use a notifier agent, mailto:, a webhook or exec:"
            )),
        }
    }

    async fn mail(&self, to: &[String], message: &Message) -> Result<String, String> {
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let smtp = &self.smtp;
        let mut builder = lettre::Message::builder()
            .from(
                smtp.from
                    .parse()
                    .map_err(|err| format!("notify smtp.from {:?}: {err}", smtp.from))?,
            )
            .subject(message.subject.clone());
        for address in to {
            builder = builder.to(address.parse().map_err(|err| format!("{address:?}: {err}"))?);
        }
        let email = builder
            .body(message.message.clone())
            .map_err(|err| format!("cannot build the mail: {err}"))?;
        let transport = match smtp.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.server),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.server),
            SmtpTls::None => {
                Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.server))
            }
        }
        .map_err(|err| format!("smtp {}: {err}", smtp.server))?;
        let port = smtp.port.unwrap_or(match smtp.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let mut transport = transport.port(port).timeout(Some(smtp.timeout));
        if let Some(user) = &smtp.username {
            let password = match &smtp.password_file {
                Some(path) => read_secret(path)?,
                None => String::new(),
            };
            transport = transport.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user.clone(), password),
            );
        }
        let response =
            transport.build().send(email).await.map_err(|err| {
                format!("mail to {} via {}:{port}: {err}", to.join(","), smtp.server)
            })?;
        Ok(format!("mailed {} ({})", to.join(","), response.code()))
    }

    async fn webhook(&self, url: &str, message: &Message) -> Result<String, String> {
        let mut last = String::new();
        for attempt in 0..self.webhook_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.webhook_backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
            match self.http.post(url).json(message).send().await {
                Ok(response) if response.status().is_success() => {
                    return Ok(format!("posted to {url} ({})", response.status().as_u16()));
                }
                Ok(response) if response.status().is_server_error() => {
                    last = format!("{url} answered {}", response.status());
                }
                Ok(response) => return Err(format!("{url} answered {}", response.status())),
                Err(err) => last = format!("{url}: {err}"),
            }
        }
        Err(format!("{last} (after {} attempts)", self.webhook_attempts.max(1)))
    }
}

async fn exec(program: &std::path::Path, message: &Message) -> Result<String, String> {
    let mut command = tokio::process::Command::new(program);
    command.arg(&message.subject).arg(&message.message);
    let done = cohort_exec::run(command, None, Duration::from_secs(60), 64 * 1024)
        .await
        .map_err(|err| format!("{}: {err}", program.display()))?;
    if done.status.success() {
        Ok(format!("ran {}", program.display()))
    } else {
        Err(format!(
            "{} {}: {}",
            program.display(),
            done.describe_exit(),
            String::from_utf8_lossy(&done.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_parse_or_say_why() {
        assert_eq!(
            Recipient::parse("mailto:ops@example.com,b@example.com").unwrap(),
            Recipient::Mail(vec!["ops@example.com".into(), "b@example.com".into()])
        );
        assert_eq!(
            Recipient::parse("https://hooks.example.com/x").unwrap(),
            Recipient::Webhook("https://hooks.example.com/x".into())
        );
        assert_eq!(
            Recipient::parse("xmpp://ops@chat.example.com").unwrap(),
            Recipient::Xmpp("ops@chat.example.com".into())
        );
        assert_eq!(
            Recipient::parse("exec:/usr/local/bin/page").unwrap(),
            Recipient::Exec("/usr/local/bin/page".into())
        );
        for (uri, why) in [
            ("boxcar://x", "unknown protocol \"boxcar\""),
            ("mailto:not an address", "not a mail address"),
            ("exec:page", "exec: needs an absolute program path"),
            ("xmpp:nobody", "not a JID"),
            ("ops", "not a URI"),
        ] {
            let err = Recipient::parse(uri).unwrap_err().to_string();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }

    #[tokio::test]
    async fn exec_gets_subject_and_message_as_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("note");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nprintf '%s|%s' \"$1\" \"$2\" > {}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let message = Message { subject: "New Node".into(), message: "a; $(reboot) `x`".into() };
        let senders = Senders::new(SmtpConfig::default(), XmppConfig::default());
        senders.send(&Recipient::Exec(script), &message).await.unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "New Node|a; $(reboot) `x`");
    }
}
