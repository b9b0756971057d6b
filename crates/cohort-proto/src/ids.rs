//! Identifier newtypes. Each is validated on construction so it is always safe to use as a
//! subject token: identities, collectives and agent names become parts of NATS subjects.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    rule: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    rule: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() || value.len() > 255 || !value.chars().all(ok) {
        return Err(IdError { kind, value: value.to_owned(), rule });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<$name, IdError> {
                let value = value.into();
                check($kind, &value, $rule, $ok)?;
                Ok($name(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<$name, IdError> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<$name, IdError> {
                $name::new(value)
            }
        }
    };
}

id_type!(
    /// A node's identity, normally its FQDN: letters, digits, `_`, `-` and `.`.
    Identity,
    "identity",
    "use letters, digits, '_', '-' and '.'",
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
);
id_type!(
    /// A collective (or sub-collective) name: letters, digits, `_` and `-`.
    Collective,
    "collective",
    "use letters, digits, '_' and '-'",
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
);
id_type!(
    /// An agent name: lowercase letters, digits and `_`.
    AgentName,
    "agent name",
    "use lowercase letters, digits and '_'",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
);
id_type!(
    /// A request id: 32 lowercase hex digits.
    RequestId,
    "request id",
    "use 32 lowercase hex digits",
    |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c)
);

impl RequestId {
    /// A request id from 16 random bytes (the caller supplies the randomness).
    pub fn from_random(bytes: [u8; 16]) -> RequestId {
        RequestId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Identity::new("web1.example.com").is_ok());
        assert!(Identity::new("web 1").is_err());
        assert!(Identity::new("a.*").is_err());
        assert!(Identity::new("").is_err());
        assert!(Collective::new("eu-west_1").is_ok());
        assert!(Collective::new("eu.west").is_err());
        assert!(AgentName::new("rpcutil").is_ok());
        assert!(AgentName::new("RpcUtil").is_err());
        let err = Identity::new("a>b").unwrap_err().to_string();
        assert_eq!(err, "invalid identity \"a>b\": use letters, digits, '_', '-' and '.'");
        let id = RequestId::from_random([0xab; 16]);
        assert_eq!(id.as_str().len(), 32);
        assert!(RequestId::new(id.as_str()).is_ok());
        assert!(serde_json::from_str::<Identity>("\"bad name\"").is_err());
    }
}
