//! Encoder for what a server sends: `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`.
//!
//! Functions append to a caller-owned buffer so the broker can batch many frames into one
//! write. The message header is written separately from the payload so the same payload bytes
//! can follow many headers without being copied into intermediate frames.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`, the verbose-mode acknowledgement.
pub const OK: &[u8] = b"+OK\r\n";

/// The `INFO` object a server sends when a client connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Unique id of this server instance.
    pub server_id: String,
    /// Human-readable name.
    pub server_name: String,
    /// Server version.
    pub version: String,
    /// Protocol level: 1 means the server supports dynamic INFO and headers.
    pub proto: u32,
    /// Host the listener is bound to.
    pub host: String,
    /// Port the listener is bound to.
    pub port: u16,
    /// Headers (`HPUB`/`HMSG`) are supported.
    pub headers: bool,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Id of this connection.
    pub client_id: u64,
    /// Address the client connected from.
    pub client_ip: String,
    /// The client must authenticate in `CONNECT`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// The client must upgrade to TLS before anything else.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    /// Nonce to sign for nkey authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Appends `INFO {json}\r\n`.
pub fn encode_info(info: &Info, out: &mut BytesMut) {
    out.put_slice(b"INFO ");
    // Serializing a struct of strings, integers and booleans into memory cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    out.put_slice(&json);
    out.put_slice(b"\r\n");
}

/// Appends `-ERR 'message'\r\n`.
pub fn encode_err(message: &str, out: &mut BytesMut) {
    out.put_slice(b"-ERR '");
    out.put_slice(message.as_bytes());
    out.put_slice(b"'\r\n");
}

/// Appends the control line of a `MSG` (when `header_len` is `None`) or `HMSG`. The payload
/// (`payload_len` bytes, headers included) and its `\r\n` are the caller's to append.
pub fn encode_msg_header(
    subject: &str,
    sid: &str,
    reply: Option<&str>,
    header_len: Option<usize>,
    payload_len: usize,
    out: &mut BytesMut,
) {
    let mut itoa = itoa_buf();
    out.put_slice(if header_len.is_some() { b"HMSG " } else { b"MSG " });
    out.put_slice(subject.as_bytes());
    out.put_u8(b' ');
    out.put_slice(sid.as_bytes());
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply.as_bytes());
        out.put_u8(b' ');
    }
    if let Some(header_len) = header_len {
        out.put_slice(fmt_usize(header_len, &mut itoa));
        out.put_u8(b' ');
    }
    out.put_slice(fmt_usize(payload_len, &mut itoa));
    out.put_slice(b"\r\n");
}

/// Upper bound of the bytes [`encode_msg_header`] writes, for buffer accounting.
pub fn msg_header_len(subject: &str, sid: &str, reply: Option<&str>) -> usize {
    // "HMSG " + 3 spaces + two 20-digit numbers + CRLF, rounded up.
    subject.len() + sid.len() + reply.map_or(0, |reply| reply.len() + 1) + 52
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_usize(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The header block of the status message nats-server sends when a request reaches no
/// subscriber: status 503 plus the subject that had no responders.
pub fn no_responders_headers(subject: &str) -> Vec<u8> {
    format!("NATS/1.0 503\r\nNats-Subject: {subject}\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_headers() {
        let mut out = BytesMut::new();
        encode_msg_header("foo.bar", "7", None, None, 5, &mut out);
        encode_msg_header("foo", "12", Some("_INBOX.x"), None, 0, &mut out);
        encode_msg_header("foo", "1", Some("r"), Some(18), 20, &mut out);
        encode_msg_header("foo", "1", None, Some(35), 35, &mut out);
        assert_eq!(
            &out[..],
            b"MSG foo.bar 7 5\r\nMSG foo 12 _INBOX.x 0\r\nHMSG foo 1 r 18 20\r\nHMSG foo 1 35 35\r\n"
        );
        let big = msg_header_len("foo.bar", "123", Some("reply"));
        let mut out = BytesMut::new();
        encode_msg_header("foo.bar", "123", Some("reply"), Some(usize::MAX), usize::MAX, &mut out);
        assert!(out.len() <= big, "{} > {big}", out.len());
    }

    #[test]
    fn no_responders_matches_nats_server() {
        // Byte for byte what nats-server 2.15 sends (35 bytes, as in its HMSG line).
        let headers = no_responders_headers("foo");
        assert_eq!(headers, b"NATS/1.0 503\r\nNats-Subject: foo\r\n\r\n");
        assert_eq!(headers.len(), 35);
    }

    #[test]
    fn info_skips_unset_fields() {
        let mut out = BytesMut::new();
        encode_info(&Info { proto: 1, headers: true, ..Info::default() }, &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("INFO {") && text.ends_with("}\r\n"));
        assert!(!text.contains("auth_required") && !text.contains("nonce"));
        let mut out = BytesMut::new();
        let info = Info { auth_required: true, nonce: Some("abc".into()), ..Info::default() };
        encode_info(&info, &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("\"auth_required\":true") && text.contains("\"nonce\":\"abc\""));
    }
}
