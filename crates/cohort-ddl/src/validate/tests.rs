//! Validation of every type and validator against a test DDL.

use super::*;
use crate::AgentDdl;

const DDL: &str = r#"{
  "metadata": {"name": "test", "description": "test agent", "timeout": 5},
  "actions": [{
    "action": "run",
    "input": {
      "name": {"prompt": "Name", "type": "string", "optional": false, "validation": "^[a-z]+$", "maxlength": 8},
      "cmd": {"prompt": "Cmd", "type": "string", "optional": true, "validation": "shellsafe"},
      "ip": {"prompt": "IP", "type": "string", "optional": true, "validation": "ipv4address"},
      "count": {"prompt": "Count", "type": "integer", "optional": true, "default": 3},
      "ratio": {"prompt": "Ratio", "type": "float", "optional": true},
      "force": {"prompt": "Force", "type": "boolean", "optional": true},
      "mode": {"prompt": "Mode", "type": "list", "optional": true, "list": ["fast", "slow"]},
      "opts": {"prompt": "Opts", "type": "hash", "optional": true},
      "items": {"prompt": "Items", "type": "array", "optional": true}
    },
    "output": {"out": {"description": "Output", "display_as": "Output", "default": ""}}
  }]
}"#;

fn run(data: &str) -> Result<Map<String, Value>, InputError> {
    let ddl = AgentDdl::from_json(DDL).unwrap();
    let mut data: Map<String, Value> = serde_json::from_str(data).unwrap();
    validate_inputs(ddl.action("run").unwrap(), &mut data).map(|()| data)
}

#[track_caller]
fn check_err(data: &str, code: StatusCode, message: &str) {
    let err = run(data).unwrap_err();
    assert_eq!(err.code, code, "{data}: {err}");
    assert!(err.message.contains(message), "{data}: {}", err.message);
}

#[test]
fn valid_inputs_get_defaults() {
    let data = run(
        r#"{"name": "web", "force": true, "mode": "fast", "ratio": 1, "opts": {}, "items": []}"#,
    )
    .unwrap();
    assert_eq!(data["count"], 3);
}

#[test]
fn invalid_inputs() {
    check_err("{}", StatusCode::MissingData, "missing required input \"name\"");
    check_err(r#"{"name": "web", "nope": 1}"#, StatusCode::InvalidData, "unknown input \"nope\"");
    check_err(r#"{"name": "WEB"}"#, StatusCode::InvalidData, "value should match ^[a-z]+$");
    check_err(r#"{"name": "abcdefghij"}"#, StatusCode::InvalidData, "longer than 8");
    check_err(r#"{"name": 5}"#, StatusCode::InvalidData, "value should be a string");
    check_err(
        r#"{"name": "a", "cmd": "ls; rm -rf /"}"#,
        StatusCode::InvalidData,
        "should not have ; in it",
    );
    check_err(
        r#"{"name": "a", "cmd": "a && b"}"#,
        StatusCode::InvalidData,
        "should not have && in it",
    );
    check_err(r#"{"name": "a", "ip": "300.1.1.1"}"#, StatusCode::InvalidData, "ipv4 address");
    check_err(r#"{"name": "a", "count": "3"}"#, StatusCode::InvalidData, "should be a integer");
    check_err(r#"{"name": "a", "count": 1.5}"#, StatusCode::InvalidData, "should be a integer");
    check_err(r#"{"name": "a", "force": "yes"}"#, StatusCode::InvalidData, "should be a boolean");
    check_err(r#"{"name": "a", "mode": "medium"}"#, StatusCode::InvalidData, "one of fast, slow");
    check_err(r#"{"name": "a", "opts": []}"#, StatusCode::InvalidData, "should be a hash");
}

#[test]
fn converting_command_line_text() {
    let ddl = AgentDdl::from_json(DDL).unwrap();
    let action = ddl.action("run").unwrap();
    let convert = |name: &str, text: &str| convert_argument(name, &action.input[name], text);
    assert_eq!(convert("force", "yes").unwrap(), Value::Bool(true));
    assert_eq!(convert("force", "0").unwrap(), Value::Bool(false));
    assert!(convert("force", "maybe").is_err());
    assert_eq!(convert("count", "42").unwrap(), Value::from(42));
    assert!(convert("count", "4.2").is_err());
    assert_eq!(convert("ratio", "0.5").unwrap(), Value::from(0.5));
    assert_eq!(convert("opts", r#"{"a":1}"#).unwrap()["a"], 1);
    assert_eq!(convert("name", "42").unwrap(), Value::from("42"));
}

#[test]
fn broken_ddls_are_refused() {
    let cases = [
        (r#"{"metadata": {"name": "Bad", "description": "", "timeout": 1}}"#, "lowercase"),
        (r#"{"metadata": {"name": "a", "description": "", "timeout": 0}}"#, "timeout"),
        (
            r#"{"metadata": {"name": "a", "description": "", "timeout": 1}, "actions": [{"action": "x", "input": {"i": {"type": "string", "validation": "(["}}}]}"#,
            "input \"i\"",
        ),
        (
            r#"{"metadata": {"name": "a", "description": "", "timeout": 1}, "actions": [{"action": "x", "input": {"i": {"type": "list"}}}]}"#,
            "list",
        ),
        (
            r#"{"metadata": {"name": "a", "description": "", "timeout": 1}, "actions": [{"action": "x", "aggregate": [{"function": "summary", "args": ["nope"]}]}]}"#,
            "unknown output",
        ),
        (
            r#"{"metadata": {"name": "a", "description": "", "timeout": 1}, "actions": [{"action": "x"}, {"action": "x"}]}"#,
            "twice",
        ),
        (r#"{"metadata": {"name": "a"}}"#, "missing field"),
    ];
    for (text, expect) in cases {
        let err = AgentDdl::from_json(text).unwrap_err().to_string();
        assert!(err.contains(expect), "{text}: {err}");
    }
}

#[test]
fn extra_inputs_are_checked_against_their_spec() {
    let ddl = AgentDdl::from_json(
        r#"{"metadata": {"name": "open", "description": "d", "timeout": 5},
            "actions": [{"action": "apply",
              "input": {"type": {"prompt": "T", "type": "string", "optional": false}},
              "extra_input": {"prompt": "A", "type": "string", "optional": true, "maxlength": 5}}]}"#,
    )
    .unwrap();
    let action = ddl.action("apply").unwrap();
    let mut data: Map<String, Value> =
        serde_json::from_str(r#"{"type": "user", "comment": "short"}"#).unwrap();
    validate_inputs(action, &mut data).unwrap();
    let mut long: Map<String, Value> =
        serde_json::from_str(r#"{"type": "user", "comment": "far too long"}"#).unwrap();
    let err = validate_inputs(action, &mut long).unwrap_err();
    assert!(err.message.contains("\"comment\"") && err.message.contains("longer than 5"), "{err}");
    let mut number: Map<String, Value> =
        serde_json::from_str(r#"{"type": "user", "uid": 5}"#).unwrap();
    assert!(validate_inputs(action, &mut number).unwrap_err().message.contains("\"uid\""));
    let bad = r#"{"metadata": {"name": "open", "description": "d", "timeout": 5},
        "actions": [{"action": "apply", "extra_input": {"type": "string", "validation": "("}}]}"#;
    assert!(AgentDdl::from_json(bad).unwrap_err().to_string().contains("(extra)"));
}
