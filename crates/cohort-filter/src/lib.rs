//! The filter language: turning what an operator types (`-W`, `-F`, `-C`, `-I`, `-A`, `-S`) into
//! a [`cohort_proto::Filter`], and deciding whether a node matches one.
//!
//! Semantics follow MCollective (reference/mcollective.md §1.3-1.4) with its bugs fixed
//! (§10): several `-I` are ORed and any one match is enough; slashes inside a regular expression
//! are kept (only the enclosing pair is removed); `!=` works inside `-S`; an unparsable filter is
//! an error before anything is sent, naming the filter and the position.
//!
//! Pure: no I/O. A node describes itself with a [`Node`] view.

mod compound;
mod eval;
mod parse;
mod statement;

pub use compound::parse_compound;
pub use eval::{Node, lookup, matches, validate};
pub use parse::{FilterArgs, parse_fact, parse_with};

/// A filter that cannot be used, with what was typed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A fact expression that is not `fact<op>value`.
    #[error("invalid fact filter {input:?}: {reason}")]
    Fact {
        /// What was typed.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A compound (`-S`) expression that does not parse.
    #[error("invalid -S filter {input:?} at column {column}: {reason}")]
    Compound {
        /// What was typed.
        input: String,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A `/regex/` that does not compile.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The regex engine's complaint.
        reason: String,
    },
    /// A value that is empty or otherwise unusable.
    #[error("invalid {kind} filter {input:?}: {reason}")]
    Value {
        /// `class`, `identity` or `agent`.
        kind: &'static str,
        /// What was typed.
        input: String,
        /// What is wrong.
        reason: String,
    },
}

/// `Some(pattern)` when `value` is written `/pattern/`. Only the enclosing slashes are removed:
/// MCollective stripped every slash, breaking patterns like `/^web\/1/`.
pub(crate) fn regex_body(value: &str) -> Option<&str> {
    value.strip_prefix('/').and_then(|rest| rest.strip_suffix('/')).filter(|_| value.len() >= 2)
}
