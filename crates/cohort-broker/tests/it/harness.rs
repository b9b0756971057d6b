//! Starting either broker with the same abstract setup, and raw-socket helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cohort_broker::config::{Authorization, Permissions, SubjectRules, TlsConfig, User};
use cohort_broker::{Broker, Config, RunningBroker};
use cohort_test_support::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which server a conformance test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cohort,
    Nats,
}

/// Broker features a test needs, translated for each server.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub token: Option<String>,
    pub users: Vec<TestUser>,
    pub max_payload: Option<usize>,
    pub tls: Option<TestTls>,
}

#[derive(Debug, Clone, Default)]
pub struct TestUser {
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey: Option<String>,
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TestTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl TestTls {
    /// A self-signed CA and a server certificate for 127.0.0.1 and localhost.
    pub fn generate() -> TestTls {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "cohort test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TestTls {
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            ca: write("ca.pem", ca_cert.pem()),
            _dir: std::sync::Arc::new(dir),
        }
    }
}

/// A running server of either kind.
pub enum Server {
    Cohort(Option<RunningBroker>, Box<Config>),
    Nats(NatsServer, String),
}

impl Server {
    pub async fn start(kind: Kind, setup: &Setup) -> Server {
        match kind {
            Kind::Cohort => {
                let config = cohort_config(setup);
                let broker = Broker::bind(config.clone()).await.unwrap();
                let mut config = config;
                config.listen = broker.local_addr();
                Server::Cohort(Some(broker.spawn()), Box::new(config))
            }
            Kind::Nats => {
                let text = nats_config(setup);
                Server::Nats(NatsServer::start(&text), text)
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Cohort(_, config) => config.listen,
            Server::Nats(server, _) => server.addr(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// Stops the server; [`Server::restart`] brings it back on the same address.
    pub async fn stop(&mut self) {
        match self {
            Server::Cohort(running, _) => {
                if let Some(running) = running.take() {
                    running.shutdown().await;
                }
            }
            Server::Nats(server, _) => server.stop(),
        }
    }

    pub async fn restart(&mut self) {
        match self {
            Server::Cohort(running, config) => {
                let broker = Broker::bind((**config).clone()).await.unwrap();
                *running = Some(broker.spawn());
            }
            Server::Nats(server, text) => {
                *server = NatsServer::start_on(text, server.addr().port());
            }
        }
    }
}

fn cohort_config(setup: &Setup) -> Config {
    let mut config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    if let Some(max_payload) = setup.max_payload {
        config.max_payload = max_payload;
    }
    if let Some(tls) = &setup.tls {
        config.tls = Some(TlsConfig { cert: tls.cert.clone(), key: tls.key.clone() });
    }
    if setup.token.is_some() || !setup.users.is_empty() {
        config.authorization = Some(Authorization {
            token: setup.token.clone(),
            users: setup
                .users
                .iter()
                .map(|user| User {
                    user: user.user.clone(),
                    password: user.password.clone(),
                    nkey: user.nkey.clone(),
                    permissions: user.has_permissions().then(|| Permissions {
                        publish: SubjectRules {
                            allow: user.publish_allow.clone(),
                            deny: user.publish_deny.clone(),
                        },
                        subscribe: SubjectRules {
                            allow: user.subscribe_allow.clone(),
                            deny: user.subscribe_deny.clone(),
                        },
                    }),
                    expires: None,
                })
                .collect(),
        });
    }
    config
}

impl TestUser {
    fn has_permissions(&self) -> bool {
        !(self.publish_allow.is_empty()
            && self.publish_deny.is_empty()
            && self.subscribe_allow.is_empty()
            && self.subscribe_deny.is_empty())
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn nats_config(setup: &Setup) -> String {
    let mut text = String::new();
    if let Some(max_payload) = setup.max_payload {
        text.push_str(&format!("max_payload: {max_payload}\n"));
    }
    if let Some(tls) = &setup.tls {
        text.push_str(&format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            tls.cert.display().to_string(),
            tls.key.display().to_string()
        ));
    }
    if let Some(token) = &setup.token {
        text.push_str(&format!("authorization {{ token: {token:?} }}\n"));
    }
    if !setup.users.is_empty() {
        text.push_str("authorization {\n  users = [\n");
        for user in &setup.users {
            let mut fields = Vec::new();
            if let Some(name) = &user.user {
                fields.push(format!("user: {name:?}"));
            }
            if let Some(password) = &user.password {
                fields.push(format!("password: {password:?}"));
            }
            if let Some(nkey) = &user.nkey {
                fields.push(format!("nkey: {nkey:?}"));
            }
            if user.has_permissions() {
                fields.push(format!(
                    "permissions: {{ publish: {{ allow: {}, deny: {} }}, subscribe: {{ allow: {}, deny: {} }} }}",
                    list(&user.publish_allow),
                    list(&user.publish_deny),
                    list(&user.subscribe_allow),
                    list(&user.subscribe_deny),
                ));
            }
            text.push_str(&format!("    {{ {} }}\n", fields.join(", ")));
        }
        text.push_str("  ]\n}\n");
    }
    text
}

/// A raw protocol session: connects, reads INFO, and lets a test write bytes and read replies.
pub struct Raw {
    pub stream: TcpStream,
    pub info: String,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut info = Vec::new();
        let mut byte = [0u8; 1];
        while !info.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            info.push(byte[0]);
        }
        Raw { stream, info: String::from_utf8(info).unwrap() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads until `want` has been seen, the peer closes, or `timeout` passes. Returns the
    /// text read, with `<EOF>` appended when the peer closed.
    pub async fn read_until(&mut self, want: &str, timeout: Duration) -> String {
        self.read_while(|out| !out.contains(want), timeout).await
    }

    /// Reads until at least `len` bytes arrived (`<EOF>` counting as five), or `timeout`.
    pub async fn read_at_least(&mut self, len: usize, timeout: Duration) -> String {
        self.read_while(|out| out.len() < len, timeout).await
    }

    async fn read_while(&mut self, more: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            if !more(&String::from_utf8_lossy(&out)) {
                break;
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    out.extend_from_slice(b"<EOF>");
                    break;
                }
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends `input`, then reads until the broker closes the connection or `timeout` passes.
    pub async fn transcript(&mut self, input: &[u8], timeout: Duration) -> String {
        self.send(input).await;
        self.read_until("<never>", timeout).await
    }
}

/// Returns once the server has processed everything `client` sent before: a message to a
/// private subject makes a round trip, and a server handles one connection's operations in
/// order. (async-nats' `flush` only empties the client's buffer.) Use it after subscribing on
/// one connection and before publishing from another.
pub async fn settle(client: &async_nats::Client) {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut marker = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, bytes::Bytes::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), marker.next())
        .await
        .expect("settle round trip timed out")
        .unwrap();
}

/// Like [`settle`], for a client that cannot hear itself (no echo) or may not use inboxes:
/// it subscribes to `<prefix>.<unique>` and `helper` publishes there until it hears it.
pub async fn settle_via(client: &async_nats::Client, helper: &async_nats::Client, prefix: &str) {
    use futures::StreamExt;
    let subject = format!("{prefix}.{}", client.new_inbox().replace('.', "_"));
    let mut marker = client.subscribe(subject.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        helper.publish(subject.clone(), bytes::Bytes::new()).await.unwrap();
        helper.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(50), marker.next()).await.is_ok() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "settle_via timed out");
    }
}

/// Runs each listed async scenario against both servers, as two tests.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod cohort {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Kind::Cohort).await;
                }
            )*
        }
        mod nats_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Kind::Nats).await;
                }
            )*
        }
    };
}
pub(crate) use both;
