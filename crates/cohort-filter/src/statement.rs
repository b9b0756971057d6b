//! The one operator table and the one statement normaliser, shared by `-F`, `-W`, `-S` and
//! the policy files, so an operator means the same wherever it is written: `=>` is `>=` and
//! `=<` is `<=` in a compound expression too, and a value written `/re/` is a regex match.

use cohort_proto::{FactFilter, FactOp};

use crate::regex_body;

/// Operators in the order they must be tried: longer ones first, so `<=` is not read as `<`
/// and `=~` not as `=`.
const OPERATORS: [(&str, FactOp); 10] = [
    ("=>", FactOp::Ge),
    ("=<", FactOp::Le),
    ("<=", FactOp::Le),
    (">=", FactOp::Ge),
    ("!=", FactOp::Ne),
    ("==", FactOp::Eq),
    ("=~", FactOp::Match),
    ("<", FactOp::Lt),
    (">", FactOp::Gt),
    ("=", FactOp::Eq),
];

/// The operator `input` starts with, and its length.
pub(crate) fn operator_at(input: &str) -> Option<(usize, FactOp)> {
    OPERATORS.iter().find(|(text, _)| input.starts_with(text)).map(|(text, op)| (text.len(), *op))
}

/// The first operator in `input` and where it is: `(start, len, op)`.
pub(crate) fn find_operator(input: &str) -> Option<(usize, usize, FactOp)> {
    input
        .char_indices()
        .find_map(|(at, _)| operator_at(&input[at..]).map(|(len, op)| (at, len, op)))
}

/// A fact statement with its value normalised: equality with a value written as a regex
/// (`fact=/re/`) is a match, and a match's value loses its slashes. `regex` says whether the
/// value was written as a regex (a quoted `"/x/"` in a compound expression is not one).
pub(crate) fn statement(fact: &str, mut op: FactOp, value: &str, regex: bool) -> FactFilter {
    let mut value = value.to_owned();
    if op == FactOp::Eq && regex {
        op = FactOp::Match;
    }
    if op == FactOp::Match
        && let Some(body) = regex_body(&value)
    {
        value = body.to_owned();
    }
    FactFilter { fact: fact.to_owned(), op, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_compound, parse_fact, parse_with};
    use cohort_proto::Expr;

    /// The statement `-S` reads from `text`.
    fn compound(text: &str) -> FactFilter {
        match parse_compound(text) {
            Ok(Expr::Fact(fact)) => fact,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn every_operator_means_the_same_in_every_filter() {
        for (text, op) in OPERATORS {
            let written = format!("cpus{text}2");
            let fact = parse_fact(&written).unwrap();
            assert_eq!((fact.op, fact.value.as_str()), (op, "2"), "-F {written}");
            let with = parse_with(&written).unwrap();
            assert_eq!(with.fact, vec![fact.clone()], "-W {written}");
            assert_eq!(compound(&written), fact, "-S {written}");
            assert_eq!(compound(&format!("cpus {text} 2")), fact, "-S with spaces {written}");
        }
    }

    #[test]
    fn regex_values_agree() {
        let expected = FactFilter { fact: "os".into(), op: FactOp::Match, value: "deb".into() };
        assert_eq!(parse_fact("os=/deb/").unwrap(), expected);
        assert_eq!(parse_fact("os=~/deb/").unwrap(), expected);
        assert_eq!(compound("os=/deb/"), expected);
        assert_eq!(compound("os=~/deb/"), expected);
        // Quoted, it is a literal in a compound expression.
        assert_eq!(compound("os=\"/deb/\"").op, FactOp::Eq);
    }
}
