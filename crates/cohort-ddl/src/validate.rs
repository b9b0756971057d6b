//! Input validation (node and client) and conversion of command-line `key=value` text.
//!
//! Status codes: a missing required input is 3 (missing data); an unknown input, a value of the
//! wrong type, or one failing its validation is 4 (invalid data). MCollective reported both as
//! 4; the split keeps each code meaning what its name says (docs/protocol.md).

use cohort_proto::StatusCode;
use serde_json::{Map, Number, Value};

use crate::model::{ActionDdl, InputDdl, InputType, is_named_validator};

/// Why inputs were refused, with the status code a node replies with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// 3 for a missing input, 4 for an invalid one.
    pub code: StatusCode,
    /// What is wrong, naming the input.
    pub message: String,
}

fn invalid(message: String) -> InputError {
    InputError { code: StatusCode::InvalidData, message }
}

/// Checks `data` against the action's inputs and fills in defaults for absent ones.
pub fn validate_inputs(
    action: &ActionDdl,
    data: &mut Map<String, Value>,
) -> Result<(), InputError> {
    for (name, value) in data.iter() {
        if action.input.contains_key(name) {
            continue;
        }
        match &action.extra_input {
            Some(extra) => check_value(name, extra, value)?,
            None => {
                return Err(invalid(format!(
                    "unknown input {name:?} for action {}",
                    action.action
                )));
            }
        }
    }
    for (name, input) in &action.input {
        match data.get(name) {
            None | Some(Value::Null) => {
                if let Some(default) = &input.default {
                    data.insert(name.clone(), default.clone());
                } else if !input.optional {
                    return Err(InputError {
                        code: StatusCode::MissingData,
                        message: format!(
                            "missing required input {name:?} for action {}",
                            action.action
                        ),
                    });
                } else {
                    data.remove(name);
                }
            }
            Some(value) => check_value(name, input, value)?,
        }
    }
    Ok(())
}

fn check_value(name: &str, input: &InputDdl, value: &Value) -> Result<(), InputError> {
    let wrong_type =
        || invalid(format!("input {name:?}: value should be a {}", input.kind.as_str()));
    match input.kind {
        InputType::String => {
            let Value::String(text) = value else { return Err(wrong_type()) };
            check_string(name, input, text)
        }
        InputType::Integer => {
            (value.is_i64() || value.is_u64()).then_some(()).ok_or_else(wrong_type)
        }
        InputType::Float | InputType::Number => value.as_f64().map(|_| ()).ok_or_else(wrong_type),
        InputType::Boolean => value.as_bool().map(|_| ()).ok_or_else(wrong_type),
        InputType::Hash => value.as_object().map(|_| ()).ok_or_else(wrong_type),
        InputType::Array => value.as_array().map(|_| ()).ok_or_else(wrong_type),
        InputType::List => {
            let allowed = input.list.as_deref().unwrap_or_default();
            if allowed.contains(value) {
                Ok(())
            } else {
                let names: Vec<String> = allowed.iter().map(display).collect();
                Err(invalid(format!("input {name:?}: value should be one of {}", names.join(", "))))
            }
        }
        InputType::Any => Ok(()),
    }
}

fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn check_string(name: &str, input: &InputDdl, text: &str) -> Result<(), InputError> {
    if let Some(max) = input.maxlength.filter(|max| *max > 0)
        && text.chars().count() as u64 > max
    {
        return Err(invalid(format!("input {name:?}: longer than {max} character(s)")));
    }
    let Some(validation) = input.validation.as_deref() else { return Ok(()) };
    let message = if is_named_validator(validation) {
        named_validator(validation, text)
    } else {
        match regex_matches(validation, text) {
            Ok(true) => None,
            Ok(false) => Some(format!("value should match {validation}")),
            Err(err) => Some(format!("validation regex does not compile: {err}")),
        }
    };
    match message {
        Some(message) => Err(invalid(format!("input {name:?}: {message}"))),
        None => Ok(()),
    }
}

thread_local! {
    /// Compiled validation patterns: a node validates the same few on every request, and
    /// compiling dominated request handling before this cache. Bounded: cleared when full.
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, Result<regex::Regex, String>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn regex_matches(pattern: &str, text: &str) -> Result<bool, String> {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(pattern) {
            if cache.len() >= 256 {
                cache.clear();
            }
            cache.insert(
                pattern.to_owned(),
                regex::Regex::new(pattern).map_err(|err| err.to_string()),
            );
        }
        match cache.get(pattern) {
            Some(Ok(regex)) => Ok(regex.is_match(text)),
            Some(Err(err)) => Err(err.clone()),
            None => Ok(false),
        }
    })
}

fn named_validator(validator: &str, text: &str) -> Option<String> {
    match validator {
        "shellsafe" => {
            for bad in ["`", "$", ";", "|", "&&", ">", "<", "\n", "\r"] {
                if text.contains(bad) {
                    return Some(format!("value should not have {} in it", bad.escape_debug()));
                }
            }
            None
        }
        "ipv4address" => text
            .parse::<std::net::Ipv4Addr>()
            .is_err()
            .then(|| "value should be an ipv4 address".into()),
        "ipv6address" => text
            .parse::<std::net::Ipv6Addr>()
            .is_err()
            .then(|| "value should be an ipv6 address".into()),
        "ipaddress" => text
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| "value should be an ip address".into()),
        "boolean" => parse_bool(text).is_none().then(|| "value should be a boolean".into()),
        _ => Some(format!("unknown validator {validator}")),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Converts a command-line `key=value` text to the input's type, as `mco rpc` did: booleans
/// from `true/t/yes/y/1` and `false/f/no/n/0`, numbers, JSON for hashes and arrays.
pub fn convert_argument(name: &str, input: &InputDdl, text: &str) -> Result<Value, InputError> {
    let wrong = |what: &str| invalid(format!("input {name:?}: {text:?} is not {what}"));
    Ok(match input.kind {
        InputType::String => Value::String(text.to_owned()),
        InputType::Boolean => Value::Bool(parse_bool(text).ok_or_else(|| wrong("a boolean"))?),
        InputType::Integer => {
            Value::Number(text.trim().parse::<i64>().map_err(|_| wrong("an integer"))?.into())
        }
        InputType::Float | InputType::Number => {
            if let Ok(whole) = text.trim().parse::<i64>() {
                Value::Number(whole.into())
            } else {
                let float = text.trim().parse::<f64>().map_err(|_| wrong("a number"))?;
                Value::Number(Number::from_f64(float).ok_or_else(|| wrong("a finite number"))?)
            }
        }
        InputType::Hash | InputType::Array => {
            let value: Value = serde_json::from_str(text).map_err(|_| wrong("JSON"))?;
            value
        }
        InputType::List => {
            let allowed = input.list.as_deref().unwrap_or_default();
            allowed
                .iter()
                .find(|candidate| display(candidate) == text)
                .cloned()
                .unwrap_or_else(|| Value::String(text.to_owned()))
        }
        InputType::Any => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
    })
}

#[cfg(test)]
mod tests;
