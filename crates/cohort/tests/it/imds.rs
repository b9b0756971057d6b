//! A real HTTP metadata service for the boot tests: an EC2-like tree behind IMDSv2 tokens that
//! expire, with faults to switch on (the token endpoint disabled, the first N requests failing,
//! slow answers), plus an action-script server. Every request is logged for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub instance_id: String,
    pub user_data: Option<Vec<u8>>,
    /// 403 on the token endpoint.
    pub disabled: bool,
    /// How long a token stays valid.
    pub token_ttl: Duration,
    /// Answer 503 to this many requests first.
    pub fail_first: usize,
    /// Wait this long before every answer.
    pub delay: Duration,
    /// Only this API version exists (besides `latest`).
    pub versions: Vec<String>,
    /// Files under /actions/.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            instance_id: "i-0123456789abcdef0".into(),
            user_data: None,
            disabled: false,
            token_ttl: Duration::from_secs(21600),
            fail_first: 0,
            delay: Duration::ZERO,
            versions: vec![
                "2009-04-04".into(),
                "2016-09-02".into(),
                "2018-09-24".into(),
                "2021-03-23".into(),
            ],
            files: BTreeMap::new(),
        }
    }
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    tokens: BTreeMap<String, Instant>,
    served: usize,
    log: Vec<Logged>,
}

#[derive(Clone)]
pub struct Imds {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl Imds {
    pub fn start(behaviour: Behaviour) -> Imds {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inner = Arc::new(Mutex::new(Inner { behaviour, ..Inner::default() }));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Imds { inner, addr, _runtime: Arc::new(runtime) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn change(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.inner.lock().unwrap().behaviour);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.inner.lock().unwrap().log.clone()
    }
}

const TREE: &[(&str, &str)] = &[
    (
        "meta-data/",
        "ami-id\ninstance-id\ninstance-type\nlocal-hostname\npublic-hostname\nplacement/\npublic-keys/\niam/\nbroken-leaf",
    ),
    ("meta-data/ami-id", "ami-0abcdef1234567890"),
    ("meta-data/instance-type", "m6i.large"),
    ("meta-data/local-hostname", "ip-10-0-0-12.eu-west-1.compute.internal"),
    ("meta-data/public-hostname", "ec2-203-0-113-12.eu-west-1.compute.amazonaws.com"),
    ("meta-data/placement/", "availability-zone"),
    ("meta-data/placement/availability-zone", "eu-west-1b"),
    ("meta-data/public-keys/", "0=ops-key"),
    ("meta-data/public-keys/0/", "openssh-key"),
    ("meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAC3Nza ops@example"),
    ("meta-data/iam/", "info\nsecurity-credentials/"),
    (
        "meta-data/iam/info",
        "{\"Code\": \"Success\", \"InstanceProfileArn\": \"arn:aws:iam::1:instance-profile/web\"}",
    ),
    ("meta-data/iam/security-credentials/", "web-role"),
    ("meta-data/iam/security-credentials/web-role", "{\"SecretAccessKey\": \"do-not-leak\"}"),
];

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token =
        headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (delay, fail) = {
        let mut inner = inner.lock().unwrap();
        inner.log.push(Logged {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            token: token.clone(),
        });
        inner.served += 1;
        (inner.behaviour.delay, inner.served <= inner.behaviour.fail_first)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let mut inner = inner.lock().unwrap();
    let behaviour = inner.behaviour.clone();
    let path = uri.path().trim_start_matches('/').to_owned();
    if let Some(name) = path.strip_prefix("actions/") {
        return match behaviour.files.get(name) {
            Some(body) => (StatusCode::OK, body.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, "no such file").into_response(),
        };
    }
    if path == "latest/api/token" {
        if method != Method::PUT {
            return (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
        }
        if behaviour.disabled {
            return (StatusCode::FORBIDDEN, "IMDS disabled").into_response();
        }
        let Some(ttl) = headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|t| (1..=21600).contains(t))
        else {
            return (StatusCode::BAD_REQUEST, "missing or bad TTL").into_response();
        };
        let _ = ttl;
        let token = format!("token-{}", inner.tokens.len() + 1);
        inner.tokens.insert(token.clone(), Instant::now() + behaviour.token_ttl);
        return (StatusCode::OK, token).into_response();
    }
    // IMDSv2 only: every other request needs a live token.
    match token.as_ref().and_then(|t| inner.tokens.get(t)) {
        Some(expiry) if *expiry > Instant::now() => {}
        _ => return (StatusCode::UNAUTHORIZED, "401 - Unauthorized").into_response(),
    }
    let Some((version, rest)) = path.split_once('/') else {
        return (StatusCode::NOT_FOUND, "").into_response();
    };
    if version != "latest" && !behaviour.versions.iter().any(|v| v == version) {
        return (StatusCode::NOT_FOUND, "").into_response();
    }
    if rest == "user-data" {
        return match &behaviour.user_data {
            Some(data) => (StatusCode::OK, Bytes::from(data.clone())).into_response(),
            None => (StatusCode::NOT_FOUND, "").into_response(),
        };
    }
    if rest == "meta-data/instance-id" {
        return (StatusCode::OK, behaviour.instance_id.clone()).into_response();
    }
    match TREE.iter().find(|(key, _)| *key == rest) {
        Some((_, body)) => (StatusCode::OK, (*body).to_owned()).into_response(),
        None => (StatusCode::NOT_FOUND, "").into_response(),
    }
}
