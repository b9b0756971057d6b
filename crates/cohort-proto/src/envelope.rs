//! The JSON envelopes: requests, replies and registration messages.
//!
//! Every envelope starts with `protocol` (a fixed id) and `version`, so a node or client can
//! refuse what it does not understand instead of misreading it. Times are Unix milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::filter::Filter;
use crate::ids::{AgentName, Collective, Identity, RequestId};

/// Protocol id carried by every envelope.
pub const PROTOCOL: &str = "io.cohort.rpc";
/// Envelope version this build writes and reads.
pub const VERSION: u32 = 1;
/// The pseudo-agent every node answers for discovery.
pub const DISCOVERY_AGENT: &str = "discovery";

/// The longest TTL, in seconds, nodes accept and the client sends by default (`max_ttl`): a
/// request can be replayed only within its TTL, and every live id costs the node memory.
pub const DEFAULT_MAX_TTL_SECS: u32 = 300;

/// A request from a caller to the nodes that match its filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// Always [`VERSION`] for this build.
    pub version: u32,
    /// Unique id; replies carry it back.
    pub id: RequestId,
    /// Host the request was sent from.
    pub sender: String,
    /// Who asked, as `kind=name` (`user=alice`).
    pub caller: String,
    /// Collective the request was sent in.
    pub collective: Collective,
    /// Target agent.
    pub agent: AgentName,
    /// Creation time, Unix milliseconds.
    pub time: i64,
    /// Seconds after `time` when nodes must ignore the request.
    pub ttl: u32,
    /// Which nodes should act.
    pub filter: Filter,
    /// What to do.
    pub body: RpcBody,
    /// Where replies go, when not to the caller's own reply subject
    /// (`C.reply.<caller-hash>.<id>`). Signed with the rest, so a secure node refuses the
    /// request from a message asking replies anywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// How a secure node is to prove its reply is its own: signed (anyone trusting the issuer
    /// can check it), or authenticated with a key only this caller and the node share, which
    /// costs both far less once they have met. Signed with the rest of the request.
    #[serde(default, skip_serializing_if = "ReplyProof::is_signature")]
    pub reply_proof: ReplyProof,
}

/// How a secure node proves a reply is its own (see `docs/security.md`, "Reply proofs").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyProof {
    /// An Ed25519 signature by the node's key: a client checks it with nothing but the
    /// issuer's key (about 15 µs batched), and so can anyone who is shown the reply.
    #[default]
    Signature,
    /// An HMAC-SHA256 under a key the node and the caller derive from their own keys (X25519
    /// agreement on their Ed25519 keys, once per pair, ~32 µs each side): about 1 µs per reply
    /// after that. For clients that call the same nodes again and again.
    Mac,
}

impl ReplyProof {
    /// Whether this is the default, [`ReplyProof::Signature`] (left out of the wire form).
    pub fn is_signature(&self) -> bool {
        *self == ReplyProof::Signature
    }
}

/// The action and its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcBody {
    /// Action name.
    pub action: String,
    /// Inputs, by name.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// False for fire-and-forget requests: nodes act but do not reply.
    #[serde(default = "yes")]
    pub process_results: bool,
}

fn yes() -> bool {
    true
}

/// A node's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// Always [`VERSION`] for this build.
    pub version: u32,
    /// The request answered.
    pub request_id: RequestId,
    /// The node answering.
    pub sender: Identity,
    /// Agent that handled it.
    pub agent: AgentName,
    /// Action that handled it.
    pub action: String,
    /// Reply time, Unix milliseconds.
    pub time: i64,
    /// Outcome.
    pub status: StatusCode,
    /// Human-readable outcome; `OK` on success.
    pub status_message: String,
    /// Outputs, by name.
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// Periodic announcement of a node, on `C.registration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// Always [`VERSION`] for this build.
    pub version: u32,
    /// The node.
    pub identity: Identity,
    /// Collectives it belongs to; the first is its main one.
    pub collectives: Vec<Collective>,
    /// Agents it hosts.
    pub agents: Vec<AgentName>,
    /// Its facts.
    pub facts: Map<String, Value>,
    /// Its classes.
    pub classes: Vec<String>,
    /// Send time, Unix milliseconds.
    pub time: i64,
}

/// Status of a reply, as in MCollective's SimpleRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusCode {
    /// 0: the action ran and succeeded.
    Ok,
    /// 1: the action ran but could not complete, or the request was refused.
    Aborted,
    /// 2: the agent has no such action.
    UnknownAction,
    /// 3: a required input was missing.
    MissingData,
    /// 4: an input was invalid.
    InvalidData,
    /// 5: anything else went wrong (the agent crashed, timed out, or answered nonsense).
    UnknownError,
}

impl StatusCode {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            StatusCode::Ok => 0,
            StatusCode::Aborted => 1,
            StatusCode::UnknownAction => 2,
            StatusCode::MissingData => 3,
            StatusCode::InvalidData => 4,
            StatusCode::UnknownError => 5,
        }
    }

    /// The code for a number; anything out of range is [`StatusCode::UnknownError`].
    pub fn from_code(code: u64) -> StatusCode {
        match code {
            0 => StatusCode::Ok,
            1 => StatusCode::Aborted,
            2 => StatusCode::UnknownAction,
            3 => StatusCode::MissingData,
            4 => StatusCode::InvalidData,
            _ => StatusCode::UnknownError,
        }
    }

    /// The label MCollective clients print next to a failed node (empty for OK).
    pub fn label(self) -> &'static str {
        match self {
            StatusCode::Ok => "",
            StatusCode::Aborted => "Request Aborted",
            StatusCode::UnknownAction => "Unknown Action",
            StatusCode::MissingData => "Missing Request Data",
            StatusCode::InvalidData => "Invalid Request Data",
            StatusCode::UnknownError => "Unknown Request Status",
        }
    }
}

impl Serialize for StatusCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StatusCode, D::Error> {
        let code = u8::deserialize(deserializer)?;
        if code > 5 {
            return Err(serde::de::Error::custom(format!("status code {code} is not 0-5")));
        }
        Ok(StatusCode::from_code(u64::from(code)))
    }
}

/// Why bytes from the bus are not a message this build accepts.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the expected shape.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// Another protocol, or a version this build does not speak.
    #[error("unsupported protocol {protocol:?} version {version}")]
    Protocol {
        /// Protocol id found.
        protocol: String,
        /// Version found.
        version: u32,
    },
}

fn check_protocol(protocol: &str, version: u32) -> Result<(), WireError> {
    if protocol != PROTOCOL || version != VERSION {
        return Err(WireError::Protocol { protocol: protocol.to_owned(), version });
    }
    Ok(())
}

macro_rules! codec {
    ($name:ident) => {
        impl $name {
            /// Encodes as compact JSON.
            pub fn to_bytes(&self) -> Vec<u8> {
                // Maps with string keys and plain values always serialize.
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Decodes and checks the protocol id and version.
            pub fn from_bytes(bytes: &[u8]) -> Result<$name, WireError> {
                let message: $name = serde_json::from_slice(bytes)?;
                check_protocol(&message.protocol, message.version)?;
                Ok(message)
            }
        }
    };
}

codec!(Request);
codec!(Reply);
codec!(Registration);

/// Milliseconds since the Unix epoch of a `SystemTime`, for the envelope `time` fields.
pub fn now_ms(now: std::time::SystemTime) -> i64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
