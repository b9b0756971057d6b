//! The filter a request carries, as data. Parsing the command-line forms into it and evaluating
//! it against a node live in `cohort-filter`; this is only the wire shape.
//!
//! Semantics (reference/mcollective.md §1.3, with its bugs fixed): an empty filter matches
//! every node; facts, classes, agents and compound expressions are ANDed; identities are ORed
//! (any one matching is enough). A class, identity or agent written `/.../` is a regular
//! expression; anything else is compared exactly.

use serde::{Deserialize, Serialize};

/// Which nodes a request is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Fact comparisons; all must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fact: Vec<FactFilter>,
    /// Puppet classes the node must have; all must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub class: Vec<String>,
    /// Identities; the node's must match at least one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity: Vec<String>,
    /// Agents the node must host; all must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent: Vec<String>,
    /// Compound expressions (`-S`); all must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compound: Vec<Expr>,
}

impl Filter {
    /// True when the filter selects every node.
    pub fn is_empty(&self) -> bool {
        self.fact.is_empty()
            && self.class.is_empty()
            && self.identity.is_empty()
            && self.agent.is_empty()
            && self.compound.is_empty()
    }
}

/// One fact comparison: `fact op value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactFilter {
    /// Fact name; dots address structured facts (`os.release.major`).
    pub fact: String,
    /// Comparison.
    pub op: FactOp,
    /// Right-hand side, as text; a regular expression for `=~`.
    pub value: String,
}

/// Fact comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactOp {
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Regular-expression match.
    #[serde(rename = "=~")]
    Match,
}

impl FactOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            FactOp::Eq => "==",
            FactOp::Ne => "!=",
            FactOp::Lt => "<",
            FactOp::Gt => ">",
            FactOp::Le => "<=",
            FactOp::Ge => ">=",
            FactOp::Match => "=~",
        }
    }
}

/// A compound (`-S`) expression tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// Does not hold.
    Not(Box<Expr>),
    /// A fact comparison.
    Fact(FactFilter),
    /// The node has a class (exact, or `/regex/`).
    Class(String),
}
