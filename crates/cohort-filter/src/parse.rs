//! Parsing the simple filter flags: `-F fact=value`, `-W "class fact=value"`, `-C`, `-I`, `-A`.

use cohort_proto::{FactFilter, Filter};

use crate::statement::{find_operator, statement};
use crate::{FilterError, compound, regex_body};

/// The filter flags as typed, in the order given. [`FilterArgs::build`] parses them all. Also
/// read from configuration files (`[filter]` tables) under the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterArgs {
    /// `-W`: space-separated classes and fact expressions.
    pub with: Vec<String>,
    /// `-F`: fact expressions.
    pub fact: Vec<String>,
    /// `-C`: classes.
    pub class: Vec<String>,
    /// `-I`: identities.
    pub identity: Vec<String>,
    /// `-A`: agents.
    pub agent: Vec<String>,
    /// `-S`: compound expressions.
    pub compound: Vec<String>,
}

impl FilterArgs {
    /// Parses every flag into one filter, or names the first one that is wrong.
    pub fn build(&self) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for with in &self.with {
            let parsed = parse_with(with)?;
            filter.fact.extend(parsed.fact);
            filter.class.extend(parsed.class);
        }
        for fact in &self.fact {
            filter.fact.push(parse_fact(fact)?);
        }
        for (kind, values, target) in [
            ("class", &self.class, &mut filter.class),
            ("identity", &self.identity, &mut filter.identity),
            ("agent", &self.agent, &mut filter.agent),
        ] {
            for value in values {
                check_value(kind, value)?;
                target.push(value.clone());
            }
        }
        for expression in &self.compound {
            filter.compound.push(compound::parse_compound(expression)?);
        }
        crate::eval::validate(&filter)?;
        Ok(filter)
    }
}

fn check_value(kind: &'static str, value: &str) -> Result<(), FilterError> {
    let invalid = |reason: &str| FilterError::Value {
        kind,
        input: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.trim().is_empty() {
        return Err(invalid("empty"));
    }
    if regex_body(value).is_none() && value.chars().any(char::is_whitespace) {
        return Err(invalid("contains whitespace"));
    }
    Ok(())
}

/// Parses `-W`: each space-separated token that is a fact expression is a fact filter, anything
/// else a class.
pub fn parse_with(input: &str) -> Result<Filter, FilterError> {
    let mut filter = Filter::default();
    for token in input.split_whitespace() {
        if find_operator(token).is_some() {
            filter.fact.push(parse_fact(token)?);
        } else {
            filter.class.push(token.to_owned());
        }
    }
    Ok(filter)
}

/// Parses one fact expression: `fact==value`, `fact=value`, `fact!=value`, `fact<value`,
/// `fact>value`, `fact<=value` (or `=<`), `fact>=value` (or `=>`), `fact=~regex`, or
/// `fact=/regex/`. Spaces around the operator are allowed.
pub fn parse_fact(input: &str) -> Result<FactFilter, FilterError> {
    let invalid =
        |reason: &str| FilterError::Fact { input: input.to_owned(), reason: reason.to_owned() };
    let Some((at, len, op)) = find_operator(input) else {
        return Err(invalid("expected fact<op>value with op one of == = != < > <= >= =~"));
    };
    let fact = input[..at].trim();
    let value = input[at + len..].trim();
    if fact.is_empty() {
        return Err(invalid("missing fact name"));
    }
    if fact.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '!' | '=' | '~')) {
        return Err(invalid("the fact name has spaces or operator characters in it"));
    }
    if value.is_empty() {
        return Err(invalid("missing value"));
    }
    Ok(statement(fact, op, value, regex_body(value).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_proto::FactOp;

    #[track_caller]
    fn check(input: &str, fact: &str, op: FactOp, value: &str) {
        assert_eq!(
            parse_fact(input).unwrap(),
            FactFilter { fact: fact.into(), op, value: value.into() },
            "{input}"
        );
    }

    #[test]
    fn fact_forms() {
        check("country=uk", "country", FactOp::Eq, "uk");
        check("country==uk", "country", FactOp::Eq, "uk");
        check("country != uk", "country", FactOp::Ne, "uk");
        check("cpus>=2", "cpus", FactOp::Ge, "2");
        check("cpus=>2", "cpus", FactOp::Ge, "2");
        check("cpus=<2", "cpus", FactOp::Le, "2");
        check("cpus<=2", "cpus", FactOp::Le, "2");
        check("cpus<2", "cpus", FactOp::Lt, "2");
        check("cpus>2", "cpus", FactOp::Gt, "2");
        check("host=~^web", "host", FactOp::Match, "^web");
        check("host=~/^web/", "host", FactOp::Match, "^web");
        check("path=/^\\/srv\\/www/", "path", FactOp::Match, "^\\/srv\\/www");
        check("os.release.major=12", "os.release.major", FactOp::Eq, "12");
        check("motd=a=b", "motd", FactOp::Eq, "a=b");
    }

    #[test]
    fn fact_errors() {
        for bad in ["country", "=uk", "country=", "a b=c", ""] {
            let err = parse_fact(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid fact filter {bad:?}")), "{err}");
        }
    }

    #[test]
    fn with_splits_classes_and_facts() {
        let filter = parse_with("role::web country=uk /^profile/").unwrap();
        assert_eq!(filter.class, ["role::web", "/^profile/"]);
        assert_eq!(filter.fact.len(), 1);
    }

    #[test]
    fn build_all_flags() {
        let args = FilterArgs {
            with: vec!["web country=uk".into()],
            fact: vec!["cpus>=2".into()],
            class: vec!["base".into()],
            identity: vec!["web1".into(), "/^db/".into()],
            agent: vec!["rpcutil".into()],
            compound: vec!["a=1 and b".into()],
        };
        let filter = args.build().unwrap();
        assert_eq!(filter.class, ["web", "base"]);
        assert_eq!(filter.fact.len(), 2);
        assert_eq!(filter.identity.len(), 2);
        assert_eq!(filter.compound.len(), 1);
        let bad = FilterArgs { identity: vec!["/[unclosed/".into()], ..FilterArgs::default() };
        assert!(matches!(bad.build(), Err(FilterError::Regex { .. })));
        let bad = FilterArgs { class: vec!["".into()], ..FilterArgs::default() };
        assert!(matches!(bad.build(), Err(FilterError::Value { kind: "class", .. })));
    }
}
