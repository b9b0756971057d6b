//! Golden examples: every message kind in `test_data/wire/` must decode, and re-encode to the
//! same JSON value. A change that breaks one is a wire-format change: bump [`VERSION`].

use super::*;
use crate::filter::{Expr, FactFilter, FactOp};

fn golden(name: &str) -> String {
    let path = format!("{}/test_data/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn round_trips<T: Serialize + serde::de::DeserializeOwned>(
    name: &str,
    decode: fn(&[u8]) -> Result<T, WireError>,
) -> T {
    let text = golden(name);
    let message = decode(text.as_bytes()).unwrap_or_else(|err| panic!("{name}: {err}"));
    let again: Value = serde_json::to_value(&message).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, original, "{name} does not round-trip");
    message
}

#[test]
fn request() {
    let request = round_trips("request.json", Request::from_bytes);
    assert_eq!(request.agent.as_str(), "rpcutil");
    assert_eq!(
        request.filter.fact[0],
        FactFilter { fact: "country".into(), op: FactOp::Eq, value: "uk".into() }
    );
    assert!(matches!(request.filter.compound[0], Expr::Or(_, _)));
}

#[test]
fn discovery_request() {
    let request = round_trips("discovery_request.json", Request::from_bytes);
    assert_eq!(request.agent.as_str(), DISCOVERY_AGENT);
}

#[test]
fn replies() {
    let ok = round_trips("reply.json", Reply::from_bytes);
    assert_eq!(ok.status, StatusCode::Ok);
    let failed = round_trips("reply_failed.json", Reply::from_bytes);
    assert_eq!(failed.status, StatusCode::InvalidData);
    assert_eq!(failed.status.label(), "Invalid Request Data");
}

#[test]
fn registration() {
    let registration = round_trips("registration.json", Registration::from_bytes);
    assert_eq!(registration.collectives[0].as_str(), "cohort");
}

#[test]
fn refuses_other_protocols_and_versions() {
    let text = golden("reply.json")
        .replace("\"version\":1", "\"version\":2")
        .replace("\"version\": 1", "\"version\": 2");
    let err = Reply::from_bytes(text.as_bytes()).unwrap_err();
    assert!(matches!(err, WireError::Protocol { version: 2, .. }), "{err}");
    let text = golden("reply.json").replace("\"status\": 0", "\"status\": 9");
    assert!(Reply::from_bytes(text.as_bytes()).is_err());
    assert!(Request::from_bytes(b"not json").is_err());
    let text = golden("request.json").replace("\"rpcutil\"", "\"Bad Agent\"");
    assert!(Request::from_bytes(text.as_bytes()).is_err());
}

#[test]
fn status_codes() {
    for code in 0..=5 {
        assert_eq!(u64::from(StatusCode::from_code(code).code()), code);
    }
    assert_eq!(StatusCode::from_code(77), StatusCode::UnknownError);
}
