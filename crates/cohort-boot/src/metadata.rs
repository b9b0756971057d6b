//! Instance metadata and user data from a datasource: EC2's metadata service with IMDSv2, or a
//! NoCloud seed directory.
//!
//! EC2, as cloud-init does it (reference/boot-ral-nagios.md §A.3): a session token from
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 21600`, sent as
//! `X-aws-ec2-metadata-token` on every request and fetched afresh after a 401; the newest dated
//! API version that answers (`2021-03-23`, `2018-09-24`, `2016-09-02`, else `2009-04-04`); never
//! a fallback to IMDSv1 when the token endpoint refuses (a 403 means the endpoint is disabled).
//! The meta-data tree is walked whole except IAM credentials, which are never fetched; a listed
//! leaf that 404s is skipped rather than aborting the walk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{Map, Value};

use crate::http::{FetchError, Http};

/// The metadata service's usual address.
pub const DEFAULT_EC2_URL: &str = "http://169.254.169.254";
/// API versions tried, newest first (cloud-init 22.4's list).
pub const API_VERSIONS: [&str; 3] = ["2021-03-23", "2018-09-24", "2016-09-02"];
/// The version every EC2-compatible service has.
pub const BASE_VERSION: &str = "2009-04-04";
const TOKEN_TTL: &str = "21600";

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An EC2-compatible metadata service.
    Ec2 {
        /// Base URL.
        url: String,
        /// API version used.
        version: String,
    },
    /// A NoCloud seed directory.
    NoCloud {
        /// The directory.
        dir: PathBuf,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ec2 { url, version } => write!(f, "ec2 ({url}, API {version})"),
            Source::NoCloud { dir } => write!(f, "nocloud ({})", dir.display()),
        }
    }
}

/// What a datasource provided.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Where from.
    pub source: Source,
    /// The meta-data tree: objects for directories, strings for leaves.
    pub tree: Map<String, Value>,
    /// Raw user data, if any.
    pub user_data: Option<Vec<u8>>,
}

impl Metadata {
    /// The instance id, which decides what "once per instance" means.
    pub fn instance_id(&self) -> Option<&str> {
        self.tree
            .get("instance-id")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
    }

    /// A leaf by path (`placement/availability-zone`).
    pub fn leaf(&self, path: &str) -> Option<&str> {
        let mut parts = path.split('/');
        let mut current = self.tree.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        current.as_str()
    }
}

/// Why no metadata could be had.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The token endpoint refused: IMDS is disabled or IMDSv2 is not allowed here.
    #[error(
        "metadata service at {url} refused a session token (HTTP {status}): its HTTP endpoint is disabled; not falling back to IMDSv1"
    )]
    Disabled {
        /// Base URL.
        url: String,
        /// The status it answered.
        status: u16,
    },
    /// The service could not be reached or kept failing.
    #[error("metadata service unavailable: {0}")]
    Unavailable(#[from] FetchError),
    /// The service answered but has no instance id.
    #[error("metadata service at {0} has no instance-id")]
    NoInstanceId(String),
    /// A NoCloud seed that is missing or malformed.
    #[error("NoCloud seed {path}: {message}")]
    Seed {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

struct Imds<'a> {
    http: &'a Http,
    base: String,
    token: Mutex<Option<String>>,
}

impl Imds<'_> {
    async fn fresh_token(&self) -> Result<String, MetadataError> {
        let url = format!("{}/latest/api/token", self.base);
        let response = self
            .http
            .retrying("the metadata service token", || async {
                self.http
                    .once(Method::PUT, &url, &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)])
                    .await
            })
            .await;
        let response = match response {
            Ok(response) => response,
            Err(FetchError::NotFound { .. }) => {
                return Err(MetadataError::Disabled { url: self.base.clone(), status: 404 });
            }
            Err(err) => return Err(err.into()),
        };
        if !(200..300).contains(&response.status) {
            return Err(MetadataError::Disabled {
                url: self.base.clone(),
                status: response.status,
            });
        }
        let token = String::from_utf8_lossy(&response.body).trim().to_owned();
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(token.clone());
        }
        Ok(token)
    }

    fn cached_token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|slot| slot.clone())
    }

    fn clear_token(&self) {
        if let Ok(mut slot) = self.token.lock() {
            *slot = None;
        }
    }

    /// GET `path` under the base URL; `None` for 404.
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        let url = format!("{}/{path}", self.base);
        loop {
            let token = match self.cached_token() {
                Some(token) => token,
                None => self.fresh_token().await?,
            };
            let result = self
                .http
                .retrying(&url, || async {
                    self.http
                        .once(Method::GET, &url, &[("X-aws-ec2-metadata-token", token.as_str())])
                        .await
                })
                .await;
            match result {
                Ok(response) if response.status == 401 => {
                    // The token expired (or the service restarted): get a new one and ask again.
                    tracing::info!("metadata token refused; refreshing it");
                    self.clear_token();
                    self.fresh_token().await?;
                }
                Ok(response) if (200..300).contains(&response.status) => {
                    return Ok(Some(response.body));
                }
                Ok(response) => {
                    return Err(MetadataError::Unavailable(FetchError::Status {
                        url,
                        status: response.status,
                    }));
                }
                Err(FetchError::NotFound { .. }) => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        }
    }

    async fn walk(
        &self,
        version: &str,
        prefix: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Map<String, Value>, MetadataError> {
        let mut out = Map::new();
        let Some(listing) = self.get(&format!("{version}/meta-data/{prefix}")).await? else {
            return Ok(out);
        };
        let listing = String::from_utf8_lossy(&listing).into_owned();
        let mut seen = BTreeSet::new();
        for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if *budget == 0 {
                tracing::warn!("metadata tree larger than expected; stopping the walk");
                break;
            }
            *budget -= 1;
            // `0=my-key` under public-keys: a directory named 0.
            let (name, is_dir) = match (line.strip_suffix('/'), line.split_once('=')) {
                (Some(dir), _) => (dir.to_owned(), true),
                (None, Some((index, _))) => (index.to_owned(), true),
                (None, None) => (line.to_owned(), false),
            };
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || !seen.insert(name.clone())
            {
                continue;
            }
            // IAM role credentials are secrets; they never leave the metadata service.
            if name == "security-credentials" {
                continue;
            }
            let path = format!("{prefix}{name}");
            if is_dir {
                if depth < 12 {
                    let child =
                        Box::pin(self.walk(version, &format!("{path}/"), depth + 1, budget))
                            .await?;
                    out.insert(name, Value::Object(child));
                }
            } else {
                match self.get(&format!("{version}/meta-data/{path}")).await? {
                    Some(value) => {
                        let text =
                            String::from_utf8_lossy(&value).trim_end_matches('\n').to_owned();
                        out.insert(name, Value::String(text));
                    }
                    None => {
                        tracing::warn!("metadata lists {path} but it is not there; skipping it")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Reads metadata and user data from the EC2-compatible service at `base`.
pub async fn ec2(http: &Http, base: &str) -> Result<Metadata, MetadataError> {
    let imds = Imds { http, base: base.trim_end_matches('/').to_owned(), token: Mutex::new(None) };
    imds.fresh_token().await?;
    let mut version = None;
    for candidate in API_VERSIONS {
        if imds.get(&format!("{candidate}/meta-data/instance-id")).await?.is_some() {
            version = Some(candidate);
            break;
        }
    }
    let version = match version {
        Some(version) => version,
        None if imds.get(&format!("{BASE_VERSION}/meta-data/instance-id")).await?.is_some() => {
            BASE_VERSION
        }
        None => return Err(MetadataError::NoInstanceId(base.to_owned())),
    };
    let mut budget = 5000;
    let tree = imds.walk(version, "", 0, &mut budget).await?;
    let user_data = imds.get(&format!("{version}/user-data")).await?;
    let metadata = Metadata {
        source: Source::Ec2 { url: imds.base.clone(), version: version.to_owned() },
        tree,
        user_data,
    };
    if metadata.instance_id().is_none() {
        return Err(MetadataError::NoInstanceId(base.to_owned()));
    }
    Ok(metadata)
}

/// Whether `dir` holds a NoCloud seed (both `meta-data` and `user-data`).
pub fn has_nocloud_seed(dir: &Path) -> bool {
    dir.join("meta-data").is_file() && dir.join("user-data").is_file()
}

/// Reads a NoCloud seed directory: `meta-data` (YAML map, `instance-id` required) and
/// `user-data`.
pub fn nocloud(dir: &Path) -> Result<Metadata, MetadataError> {
    let seed_err = |path: PathBuf, message: String| MetadataError::Seed { path, message };
    let meta_path = dir.join("meta-data");
    let user_path = dir.join("user-data");
    let meta_text = std::fs::read_to_string(&meta_path)
        .map_err(|err| seed_err(meta_path.clone(), err.to_string()))?;
    let user_data =
        std::fs::read(&user_path).map_err(|err| seed_err(user_path.clone(), err.to_string()))?;
    let value: Value = if meta_text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(&meta_text)
            .map_err(|err| seed_err(meta_path.clone(), err.to_string()))?
    };
    let Value::Object(raw) = value else {
        return Err(seed_err(meta_path, "meta-data must be a YAML map".to_owned()));
    };
    let tree = stringify(raw);
    let metadata = Metadata {
        source: Source::NoCloud { dir: dir.to_owned() },
        tree,
        user_data: Some(user_data),
    };
    if metadata.instance_id().is_none() {
        return Err(seed_err(meta_path, "no instance-id".to_owned()));
    }
    Ok(metadata)
}

/// Leaves as strings, as the metadata service gives them.
fn stringify(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Object(inner) => Value::Object(stringify(inner)),
                Value::String(text) => Value::String(text),
                Value::Null => Value::String(String::new()),
                Value::Array(items) => Value::String(
                    items
                        .iter()
                        .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                other => Value::String(other.to_string()),
            };
            (key, value)
        })
        .collect()
}
