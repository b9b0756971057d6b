//! Subject rules: which strings are valid subjects for publishing and for subscribing, and
//! whether a subscription pattern matches a published subject.
//!
//! A subject is a `.`-separated list of non-empty tokens without whitespace. In a subscription a
//! token that is exactly `*` matches any one token, and a last token that is exactly `>` matches
//! one or more tokens. `*` or `>` inside a longer token (`b*r`) is an ordinary character, as in
//! nats-server. [`matches`] is the naive reference matcher: the broker's subscription index must
//! agree with it (a property test checks that) and permission lists use it directly.

/// Why a subject was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject is empty.
    #[error("empty subject")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("empty token")]
    EmptyToken,
    /// A space, tab, carriage return or line feed.
    #[error("whitespace in subject")]
    Whitespace,
    /// `>` used before the last token.
    #[error("'>' is only allowed as the last token")]
    FullWildcardNotLast,
    /// A wildcard in a subject that must be literal.
    #[error("wildcard in a subject that must be literal")]
    Wildcard,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Checks a subject that may contain wildcards (the subject of a `SUB`, or a permission entry).
pub fn validate_pattern(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if token.bytes().any(is_space) {
            return Err(SubjectError::Whitespace);
        }
        if token == ">" && tokens.peek().is_some() {
            return Err(SubjectError::FullWildcardNotLast);
        }
    }
    Ok(())
}

/// Checks a subject a message is published to in pedantic mode: a valid subject without
/// wildcard tokens. (Without pedantic mode nats-server checks nothing and routes `foo.*` as a
/// literal subject; the broker does the same.)
pub fn validate_publish(subject: &str) -> Result<(), SubjectError> {
    validate_pattern(subject).map_err(|err| match err {
        SubjectError::FullWildcardNotLast => SubjectError::Wildcard,
        other => other,
    })?;
    if !is_literal(subject) {
        return Err(SubjectError::Wildcard);
    }
    Ok(())
}

/// True when no token of `subject` is a wildcard.
pub fn is_literal(subject: &str) -> bool {
    subject.split('.').all(|token| token != "*" && token != ">")
}

/// Checks a queue group name: non-empty, no whitespace.
pub fn validate_queue(queue: &str) -> Result<(), SubjectError> {
    if queue.is_empty() {
        return Err(SubjectError::Empty);
    }
    if queue.bytes().any(is_space) {
        return Err(SubjectError::Whitespace);
    }
    Ok(())
}

/// Whether the subscription `pattern` receives messages published to `subject`.
///
/// Both are assumed valid; tokens of `subject` are compared literally, so a wildcard published
/// without pedantic mode only reaches patterns that match it token by token.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return pattern_tokens.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// Whether every subject that `sub` can match is also matched by `pattern`: a subscription to
/// `sub` can then receive nothing that `pattern` would not. Permission checks use this, so that
/// an allow entry `a.*` does not let a client subscribe to `a.>`.
pub fn is_subset(sub: &str, pattern: &str) -> bool {
    let mut sub_tokens = sub.split('.');
    let mut pattern_tokens = pattern.split('.');
    loop {
        match (pattern_tokens.next(), sub_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return pattern_tokens.next().is_none(),
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(_), Some("*")) => return false,
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
