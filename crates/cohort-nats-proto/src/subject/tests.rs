//! Table tests for the subject rules, plus a property test of the matcher against a recursive
//! definition of matching.

use super::*;
use proptest::prelude::*;

#[test]
fn patterns() {
    for ok in ["foo", "foo.bar", "foo.*", "foo.>", ">", "*", "*.*.>", "foo.b*r", "a.>b", "ü.ß"] {
        assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
    }
    for (bad, err) in [
        ("", SubjectError::Empty),
        ("foo..bar", SubjectError::EmptyToken),
        (".foo", SubjectError::EmptyToken),
        ("foo.", SubjectError::EmptyToken),
        ("fo o", SubjectError::Whitespace),
        ("foo\tbar", SubjectError::Whitespace),
        ("foo.>.bar", SubjectError::FullWildcardNotLast),
    ] {
        assert_eq!(validate_pattern(bad), Err(err), "{bad}");
    }
}

#[test]
fn publish_subjects() {
    assert_eq!(validate_publish("foo.*"), Err(SubjectError::Wildcard));
    assert_eq!(validate_publish("foo.>"), Err(SubjectError::Wildcard));
    assert_eq!(validate_publish("foo.>.x"), Err(SubjectError::Wildcard));
    assert_eq!(validate_publish("foo..x"), Err(SubjectError::EmptyToken));
    assert_eq!(validate_publish("a.b"), Ok(()));
}

#[track_caller]
fn check(pattern: &str, subject: &str, expect: bool) {
    assert_eq!(matches(pattern, subject), expect, "{pattern} vs {subject}");
}

#[test]
fn matching() {
    check("foo", "foo", true);
    check("foo", "foo.bar", false);
    check("foo.*", "foo.bar", true);
    check("foo.*", "foo", false);
    check("foo.*", "foo.bar.baz", false);
    check("foo.>", "foo.bar.baz", true);
    check("foo.>", "foo", false);
    check(">", "a", true);
    check(">", "a.b.c", true);
    check("*.b.>", "a.b.c", true);
    check("*.b.>", "a.c.c", false);
    check("foo.*", "foo.*", true);
    check("foo.bar", "foo.*", false);
}

/// A recursive definition of matching, written independently of the iterative one.
fn oracle(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let subject: Vec<&str> = subject.split('.').collect();
    oracle_tokens(&pattern, &subject)
}

fn oracle_tokens(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.first(), subject.first()) {
        (None, None) => true,
        (Some(&">"), Some(_)) => pattern.len() == 1,
        (Some(&"*"), Some(_)) => oracle_tokens(&pattern[1..], &subject[1..]),
        (Some(p), Some(s)) => p == s && oracle_tokens(&pattern[1..], &subject[1..]),
        _ => false,
    }
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c".to_owned())]
}

fn pattern_token() -> impl Strategy<Value = String> {
    prop_oneof![token(), Just("*".to_owned())]
}

proptest! {
    #[test]
    fn matcher_agrees_with_oracle(
        subject in prop::collection::vec(token(), 1..5),
        mut pattern in prop::collection::vec(pattern_token(), 1..5),
        tail in any::<bool>(),
    ) {
        if tail {
            pattern.push(">".to_owned());
        }
        let subject = subject.join(".");
        let pattern = pattern.join(".");
        prop_assert_eq!(matches(&pattern, &subject), oracle(&pattern, &subject));
    }
}

#[test]
fn subsets() {
    for (sub, pattern, expect) in [
        ("a.b", "a.b", true),
        ("a.b", "a.*", true),
        ("a.*", "a.*", true),
        ("a.*", "a.>", true),
        ("a.>", "a.>", true),
        ("a.>", "a.*", false),
        ("a.*", "a.b", false),
        ("a.b.c", "a.>", true),
        (">", "a.>", false),
        ("a", "a.>", false),
        ("*.b", "*.*", true),
    ] {
        assert_eq!(is_subset(sub, pattern), expect, "{sub} within {pattern}");
    }
}

proptest! {
    /// A subset pattern never matches a subject its superset does not.
    #[test]
    fn subset_is_sound(
        sub in prop::collection::vec(pattern_token(), 1..4),
        pattern in prop::collection::vec(pattern_token(), 1..4),
        subject in prop::collection::vec(token(), 1..5),
        sub_tail in any::<bool>(),
        pattern_tail in any::<bool>(),
    ) {
        let mut sub = sub;
        let mut pattern = pattern;
        if sub_tail { sub.push(">".to_owned()); }
        if pattern_tail { pattern.push(">".to_owned()); }
        let (sub, pattern, subject) = (sub.join("."), pattern.join("."), subject.join("."));
        if is_subset(&sub, &pattern) && matches(&sub, &subject) {
            prop_assert!(matches(&pattern, &subject));
        }
    }
}
