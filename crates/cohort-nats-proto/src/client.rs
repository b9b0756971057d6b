//! Parser for the operations a client sends: `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`,
//! `PONG`.
//!
//! Design: [`Parser::parse`] takes the connection's read buffer, consumes at most one operation
//! from its front and returns it; `Ok(None)` means the buffer holds only part of one and the
//! caller should read more. Payloads are split off the buffer as [`Bytes`] so routing can share
//! them between subscribers. Every error is fatal for the connection (the byte stream can no
//! longer be trusted to be in step), and each maps to the `-ERR` text nats-server sends.
//!
//! Control lines end at `\n`, with an optional `\r` before it; a payload must be followed by
//! exactly `\r\n`. Operation names are case-insensitive. Subject *validity* is not checked here:
//! an invalid `SUB` subject is a recoverable `-ERR` that the broker decides on.

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;

/// One operation sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`.
    Connect(Box<Connect>),
    /// `PUB` or `HPUB`: a message to route.
    Pub(Publish),
    /// `SUB subject [queue] sid`.
    Sub {
        /// Subject pattern, possibly with wildcards.
        subject: String,
        /// Queue group, if any.
        queue: Option<String>,
        /// Client-chosen subscription id.
        sid: String,
    },
    /// `UNSUB sid [max]`.
    Unsub {
        /// Subscription id.
        sid: String,
        /// Unsubscribe after this many messages in total have been delivered.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// A published message, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Literal subject (validity is checked by the broker).
    pub subject: String,
    /// Reply subject, if any.
    pub reply: Option<String>,
    /// `Some(n)` for `HPUB`: the first `n` bytes of `payload` are the header block.
    pub header_len: Option<usize>,
    /// Headers (for `HPUB`) followed by the body, without the trailing `\r\n`.
    pub payload: Bytes,
}

/// The fields of `CONNECT` the broker acts on; unknown fields are ignored, as nats-server does.
///
/// Omitted `verbose`, `pedantic` and `echo` default to `true`, as in nats-server; every real
/// client sends them explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Connect {
    /// Acknowledge every operation with `+OK`.
    pub verbose: bool,
    /// Strict subject checks on publish.
    pub pedantic: bool,
    /// Client insists on TLS.
    pub tls_required: bool,
    /// Token authentication.
    pub auth_token: Option<String>,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub pass: Option<String>,
    /// Client's name, for logs.
    pub name: Option<String>,
    /// Client library language.
    pub lang: Option<String>,
    /// Client library version.
    pub version: Option<String>,
    /// Protocol level the client speaks.
    pub protocol: Option<i64>,
    /// Deliver the client's own messages back to it.
    pub echo: bool,
    /// Public nkey (`U...`) for nkey authentication.
    pub nkey: Option<String>,
    /// Signature of the server nonce, base64url without padding.
    pub sig: Option<String>,
    /// User JWT (decentralized auth; not supported by our broker, refused if required).
    pub jwt: Option<String>,
    /// Client can receive `HMSG`.
    pub headers: bool,
    /// Client wants a 503 status message when a request reaches nobody.
    pub no_responders: bool,
}

impl Default for Connect {
    fn default() -> Connect {
        Connect {
            verbose: true,
            pedantic: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: None,
            echo: true,
            nkey: None,
            sig: None,
            jwt: None,
            headers: false,
            no_responders: false,
        }
    }
}

/// Why the byte stream was refused. Each is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An operation name the protocol does not have.
    #[error("Unknown Protocol Operation")]
    UnknownOperation,
    /// A control line longer than the configured maximum.
    #[error("maximum control line exceeded")]
    ControlLineTooLong,
    /// A `PUB`/`HPUB` announcing more than the maximum payload.
    #[error("Maximum Payload Violation")]
    MaxPayload,
    /// Wrong number or form of arguments for an operation.
    #[error("Invalid Arguments for {0}")]
    Arguments(&'static str),
    /// The bytes after a payload were not `\r\n`: the announced size was wrong.
    #[error("Unknown Protocol Operation")]
    PayloadTerminator,
    /// `CONNECT` whose argument is not the expected JSON object.
    #[error("Invalid CONNECT JSON")]
    ConnectJson,
}

impl ParseError {
    /// The text for the `-ERR '...'` line sent before closing.
    pub fn server_message(&self) -> String {
        self.to_string()
    }
}

/// Where the parser is inside the byte stream.
#[derive(Debug)]
enum State {
    /// Expecting a control line.
    Line,
    /// A `PUB`/`HPUB` control line was read; waiting for `size` bytes plus `\r\n`.
    Payload { subject: String, reply: Option<String>, header_len: Option<usize>, size: usize },
}

/// Incremental parser for one connection.
#[derive(Debug)]
pub struct Parser {
    max_control_line: usize,
    max_payload: usize,
    state: State,
}

impl Parser {
    /// A parser enforcing the given limits (nats-server's defaults are 4096 and 1 MiB).
    pub fn new(max_control_line: usize, max_payload: usize) -> Parser {
        Parser { max_control_line, max_payload, state: State::Line }
    }

    /// Consumes at most one operation from the front of `buf`.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, ParseError> {
        if let State::Line = self.state {
            let window = buf.len().min(self.max_control_line + 2);
            let Some(newline) = memchr::memchr(b'\n', &buf[..window]) else {
                if !plausible_start(buf) {
                    return Err(ParseError::UnknownOperation);
                }
                if buf.len() > self.max_control_line + 1 {
                    return Err(ParseError::ControlLineTooLong);
                }
                return Ok(None);
            };
            let line = buf.split_to(newline + 1);
            let mut line = &line[..newline];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > self.max_control_line {
                return Err(ParseError::ControlLineTooLong);
            }
            // `None` means a PUB/HPUB line: the state now waits for its payload.
            if let Some(op) = self.control_line(line)? {
                return Ok(Some(op));
            }
        }
        let State::Payload { size, .. } = self.state else {
            return Ok(None);
        };
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(ParseError::PayloadTerminator);
        }
        let payload = buf.split_to(size).freeze();
        buf.advance(2);
        let State::Payload { subject, reply, header_len, .. } =
            std::mem::replace(&mut self.state, State::Line)
        else {
            return Ok(None);
        };
        Ok(Some(ClientOp::Pub(Publish { subject, reply, header_len, payload })))
    }

    /// Interprets one control line. Returns `None` after a `PUB`/`HPUB` line, whose operation is
    /// complete only with its payload.
    fn control_line(&mut self, line: &[u8]) -> Result<Option<ClientOp>, ParseError> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::UnknownOperation)?;
        let line = line.trim_start_matches([' ', '\t']);
        let (name, rest) = match line.find([' ', '\t']) {
            Some(at) => (&line[..at], &line[at..]),
            None => (line, ""),
        };
        let args: Vec<&str> = rest.split([' ', '\t']).filter(|arg| !arg.is_empty()).collect();
        let owned = |arg: &&str| (*arg).to_owned();
        match name.to_ascii_uppercase().as_str() {
            "PING" => Ok(Some(ClientOp::Ping)),
            "PONG" => Ok(Some(ClientOp::Pong)),
            "CONNECT" => {
                let connect: Connect =
                    serde_json::from_str(rest.trim()).map_err(|_| ParseError::ConnectJson)?;
                Ok(Some(ClientOp::Connect(Box::new(connect))))
            }
            "SUB" => match args.as_slice() {
                [subject, sid] => Ok(Some(ClientOp::Sub {
                    subject: owned(subject),
                    queue: None,
                    sid: owned(sid),
                })),
                [subject, queue, sid] => Ok(Some(ClientOp::Sub {
                    subject: owned(subject),
                    queue: Some(owned(queue)),
                    sid: owned(sid),
                })),
                _ => Err(ParseError::Arguments("SUB")),
            },
            "UNSUB" => match args.as_slice() {
                [sid] => Ok(Some(ClientOp::Unsub { sid: owned(sid), max: None })),
                [sid, max] => {
                    let max = max.parse().map_err(|_| ParseError::Arguments("UNSUB"))?;
                    Ok(Some(ClientOp::Unsub { sid: owned(sid), max: Some(max) }))
                }
                _ => Err(ParseError::Arguments("UNSUB")),
            },
            "PUB" => {
                let (subject, reply, size) = match args.as_slice() {
                    [subject, size] => (owned(subject), None, *size),
                    [subject, reply, size] => (owned(subject), Some(owned(reply)), *size),
                    _ => return Err(ParseError::Arguments("PUB")),
                };
                let size = self.size(size, "PUB")?;
                self.state = State::Payload { subject, reply, header_len: None, size };
                Ok(None)
            }
            "HPUB" => {
                let (subject, reply, header_len, size) = match args.as_slice() {
                    [subject, header_len, size] => (owned(subject), None, *header_len, *size),
                    [subject, reply, header_len, size] => {
                        (owned(subject), Some(owned(reply)), *header_len, *size)
                    }
                    _ => return Err(ParseError::Arguments("HPUB")),
                };
                let size = self.size(size, "HPUB")?;
                let header_len: usize =
                    header_len.parse().map_err(|_| ParseError::Arguments("HPUB"))?;
                if header_len > size {
                    return Err(ParseError::Arguments("HPUB"));
                }
                self.state = State::Payload { subject, reply, header_len: Some(header_len), size };
                Ok(None)
            }
            _ => Err(ParseError::UnknownOperation),
        }
    }

    fn size(&self, text: &str, op: &'static str) -> Result<usize, ParseError> {
        let size: u64 = text.parse().map_err(|_| ParseError::Arguments(op))?;
        if size > self.max_payload as u64 {
            return Err(ParseError::MaxPayload);
        }
        usize::try_from(size).map_err(|_| ParseError::MaxPayload)
    }
}

const OPERATIONS: [&[u8]; 7] = [b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"CONNECT"];

/// Whether an unfinished control line can still become a known operation, so that garbage is
/// refused at once instead of after `max_control_line` bytes of it.
fn plausible_start(buf: &[u8]) -> bool {
    let start = buf.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(buf.len());
    let rest = &buf[start..];
    let (name, complete) = match rest.iter().position(|b| matches!(b, b' ' | b'\t' | b'\r')) {
        Some(end) => (&rest[..end], true),
        None => (&rest[..rest.len().min(8)], false),
    };
    OPERATIONS.iter().any(|op| {
        if complete {
            op.eq_ignore_ascii_case(name)
        } else {
            op.len() >= name.len() && op[..name.len()].eq_ignore_ascii_case(name)
        }
    })
}

#[cfg(test)]
mod tests;
