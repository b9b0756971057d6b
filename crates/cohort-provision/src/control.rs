//! Talking to a running provisioner: `cohort provision status|retry|forget` while the daemon
//! holds the store (redb allows one process). One JSON line each way over a Unix socket next to
//! the store, mode 0600, so only its owner can ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Command;
use crate::progress::Progress;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Every node's progress.
    Status,
    /// Try a failed node again.
    Retry {
        /// The node.
        node: String,
    },
    /// Drop a node's record.
    Forget {
        /// The node.
        node: String,
    },
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether it was done.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// For `status`.
    #[serde(default)]
    pub nodes: Vec<Progress>,
}

/// The control socket of the store at `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// Largest request line read.
const MAX_LINE: u64 = 64 * 1024;

/// Serves requests on `path`, passing them to the driver through `commands`.
pub fn serve(
    path: &Path,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let commands = commands.clone();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), answer(stream, commands)).await;
            });
        }
    }))
}

async fn answer(
    stream: tokio::net::UnixStream,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE)).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(err) => {
            Response { ok: false, message: format!("bad request: {err}"), nodes: Vec::new() }
        }
        Ok(request) => ask_driver(request, &commands).await,
    };
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

async fn ask_driver(request: Request, commands: &mpsc::Sender<Command>) -> Response {
    let gone = || Response {
        ok: false,
        message: "the provisioner is stopping".to_owned(),
        nodes: Vec::new(),
    };
    let done = |answer: Result<String, String>| match answer {
        Ok(message) => Response { ok: true, message, nodes: Vec::new() },
        Err(message) => Response { ok: false, message, nodes: Vec::new() },
    };
    match request {
        Request::Status => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Status(tx)).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(nodes) => Response { ok: true, message: String::new(), nodes },
                Err(_) => gone(),
            }
        }
        Request::Retry { node } | Request::Forget { node } if node.is_empty() => {
            done(Err("no node named".to_owned()))
        }
        Request::Retry { node } => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Retry(node, tx)).await.is_err() {
                return gone();
            }
            rx.await.map_or_else(|_| gone(), done)
        }
        Request::Forget { node } => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Forget(node, tx)).await.is_err() {
                return gone();
            }
            rx.await.map_or_else(|_| gone(), done)
        }
    }
}

/// Asks the provisioner listening on `path`. `Err` when none listens there.
pub async fn ask(path: &Path, request: &Request) -> std::io::Result<Response> {
    let work = async {
        let mut stream = tokio::net::UnixStream::connect(path).await?;
        let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
        text.push('\n');
        stream.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the provisioner did not answer within 30 s",
        ))
    })
}
