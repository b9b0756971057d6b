//! The retrying HTTP client: metadata, action lists and scripts, and `cohort boot fetch`.
//!
//! Transient failures (connection refused, timeouts, 5xx, 429) are retried with exponential
//! backoff and jitter, within a number of attempts and one overall deadline; a 404 is an answer
//! ("not there"), never retried; other 4xx are answers too, returned to the caller. Every request
//! has its own timeout. URLs are used whole: query strings are kept (ec2-boot-init dropped them).

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// 404.
    #[error("{url}: not found (404)")]
    NotFound {
        /// What was asked.
        url: String,
    },
    /// Any other non-success status that is not worth retrying.
    #[error("{url}: HTTP {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// Connection refused, reset, timed out, or 5xx: worth another try.
    #[error("{url}: {reason}")]
    Transient {
        /// What was asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The overall deadline passed.
    #[error("{what}: gave up after {waited:?} ({last})")]
    Deadline {
        /// What was being fetched.
        what: String,
        /// How long it tried.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
}

impl FetchError {
    fn is_transient(&self) -> bool {
        matches!(self, FetchError::Transient { .. })
    }
}

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Attempts after the first.
    pub retries: usize,
    /// First backoff delay; doubles each time, with jitter, up to `max_delay`.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Everything one operation may take, retries included.
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            request_timeout: Duration::from_secs(5),
            retries: 6,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            total: Duration::from_secs(120),
        }
    }
}

/// A response worth looking at.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status (2xx, or a 4xx the caller handles).
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// HTTP client with the retry policy.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl Http {
    /// A client; fails only if TLS cannot be set up.
    pub fn new(policy: RetryPolicy) -> Result<Http, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout)
            .user_agent(concat!("cohort-boot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| FetchError::Transient { url: String::new(), reason: err.to_string() })?;
        Ok(Http { client, policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// One request, no retry. 2xx and 4xx come back as responses; 404 as
    /// [`FetchError::NotFound`]; anything else as transient.
    pub async fn once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, FetchError> {
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let transient = |reason: String| FetchError::Transient { url: url.to_owned(), reason };
        let response = request.send().await.map_err(|err| transient(describe(&err)))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound { url: url.to_owned() });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(transient(format!("HTTP {}", status.as_u16())));
        }
        let body = response.bytes().await.map_err(|err| transient(describe(&err)))?;
        Ok(Response { status: status.as_u16(), body: body.to_vec() })
    }

    /// Runs `operation` until it succeeds, fails for good, runs out of retries, or the overall
    /// deadline passes.
    pub async fn retrying<T, F, Fut>(&self, what: &str, operation: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_jitter()
            .with_max_times(self.policy.retries);
        let last = std::sync::Mutex::new(String::new());
        let attempt =
            operation.retry(backoff).when(FetchError::is_transient).notify(|err, delay| {
                tracing::warn!("{err}; retrying in {delay:.1?}");
                if let Ok(mut last) = last.lock() {
                    *last = err.to_string();
                }
            });
        match tokio::time::timeout(self.policy.total, attempt).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Deadline {
                what: what.to_owned(),
                waited: self.policy.total,
                last: last.lock().map(|l| l.clone()).unwrap_or_default(),
            }),
        }
    }

    /// GET with retries; 2xx only.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.retrying(url, || async {
            let response = self.once(Method::GET, url, &[]).await?;
            if (200..300).contains(&response.status) {
                Ok(response.body)
            } else {
                Err(FetchError::Status { url: url.to_owned(), status: response.status })
            }
        })
        .await
    }
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    if err.is_connect() {
        return "cannot connect".to_owned();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}
