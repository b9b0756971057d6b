//! The subscription index: which subscriptions receive a message published to a subject.
//!
//! Design: a trie over subject tokens with two wildcard edges per node (`*` and `>`), as in
//! nats-server's sublist. Matching walks one path per literal token plus the wildcard edges, so
//! its cost grows with subject depth and the number of *matching* subscriptions, never with the
//! total number of subscriptions. Results borrow from the index (the caller holds the read lock
//! while delivering), so routing a message to a thousand subscribers clones nothing.
//!
//! A result cache (nats-server keeps one) is deliberately absent: the fan-out benchmark shows
//! the walk is not where the time goes (docs/PERFORMANCE.md).
//!
//! The index is generic over what a subscription is so the property test can use plain numbers;
//! each stored value has a unique key ([`Keyed`]) by which it is removed.

use std::collections::HashMap;

/// A value stored in the index, with a key unique among all values stored.
pub(crate) trait Keyed {
    /// The unique key.
    fn key(&self) -> u64;
}

/// The plain subscriptions of one subject. A subject every node of a fleet subscribes to (an
/// agent's broadcast subject) holds one entry per node, and a linear search per removal made
/// tearing down N connections cost N² (about 0.6 s of broker CPU at 10,000 nodes): from
/// [`INDEXED_FROM`] entries on, a map from key to position makes removal O(1). Below that, the
/// search is cheaper than the map (most subjects, a node's own or a reply inbox, hold one).
#[derive(Debug)]
struct Members<T> {
    items: Vec<T>,
    at: Option<HashMap<u64, usize>>,
}

/// Entries from which a subject's plain subscriptions are indexed by key (and below half of
/// which the index is dropped again, so churn at the boundary does not rebuild it each time).
const INDEXED_FROM: usize = 32;

impl<T: Keyed> Members<T> {
    fn push(&mut self, value: T) {
        if let Some(at) = &mut self.at {
            at.insert(value.key(), self.items.len());
        }
        self.items.push(value);
        if self.at.is_none() && self.items.len() >= INDEXED_FROM {
            self.at = Some(self.items.iter().enumerate().map(|(i, v)| (v.key(), i)).collect());
        }
    }

    fn remove(&mut self, key: u64) -> Option<T> {
        let position = match &mut self.at {
            Some(at) => at.remove(&key)?,
            None => self.items.iter().position(|v| v.key() == key)?,
        };
        let value = self.items.swap_remove(position);
        if let (Some(at), Some(moved)) = (&mut self.at, self.items.get(position)) {
            at.insert(moved.key(), position);
        }
        if self.items.len() < INDEXED_FROM / 2 {
            self.at = None;
        }
        Some(value)
    }
}

impl<T> Default for Members<T> {
    fn default() -> Members<T> {
        Members { items: Vec::new(), at: None }
    }
}

/// One trie node: the subscriptions whose subject ends here, and the edges below it.
#[derive(Debug)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    full: Option<Box<Node<T>>>,
    plain: Members<T>,
    /// Queue groups, by name; few per node in practice, so a list beats a map.
    groups: Vec<(Box<str>, Vec<T>)>,
}

impl<T> Default for Node<T> {
    fn default() -> Node<T> {
        Node {
            literal: HashMap::new(),
            star: None,
            full: None,
            plain: Members::default(),
            groups: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.plain.items.is_empty()
            && self.groups.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.full.is_none()
    }
}

/// Subscriptions matched by one subject, borrowed from the index.
#[derive(Debug)]
pub(crate) struct Matches<'a, T> {
    /// Every one of these receives the message.
    pub(crate) plain: Vec<&'a T>,
    /// One member of each group receives the message. Groups of the same name found under
    /// different patterns (`foo.*` and `foo.bar`, both in group `q`) are merged, as nats-server
    /// does, so a message still reaches one member only.
    pub(crate) groups: Vec<(&'a str, Vec<&'a T>)>,
}

/// The trie. Subjects given to it must be valid (checked by the caller).
#[derive(Debug)]
pub(crate) struct SubjectIndex<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for SubjectIndex<T> {
    fn default() -> SubjectIndex<T> {
        SubjectIndex { root: Node::default(), len: 0 }
    }
}

impl<T: Keyed> SubjectIndex<T> {
    /// Number of subscriptions stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds a subscription to `subject`, in queue group `queue` if given.
    pub(crate) fn insert(&mut self, subject: &str, queue: Option<&str>, value: T) {
        let mut node = &mut self.root;
        for token in subject.split('.') {
            node = match token {
                "*" => node.star.get_or_insert_with(Box::default),
                ">" => node.full.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        match queue {
            None => node.plain.push(value),
            Some(queue) => match node.groups.iter_mut().find(|(name, _)| &**name == queue) {
                Some((_, members)) => members.push(value),
                None => node.groups.push((queue.into(), vec![value])),
            },
        }
        self.len += 1;
    }

    /// Removes the subscription with `key` under `subject`/`queue`, and prunes nodes left empty
    /// so a churn of unique inbox subjects does not leak memory.
    pub(crate) fn remove(&mut self, subject: &str, queue: Option<&str>, key: u64) -> Option<T> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let removed = remove_at(&mut self.root, &tokens, queue, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The subscriptions that receive a message published to `subject`.
    pub(crate) fn matches<'a>(&'a self, subject: &str) -> Matches<'a, T> {
        let mut out = Matches { plain: Vec::new(), groups: Vec::new() };
        collect(&self.root, subject.split('.'), &mut out);
        out
    }
}

fn remove_at<T: Keyed>(
    node: &mut Node<T>,
    tokens: &[&str],
    queue: Option<&str>,
    key: u64,
) -> Option<T> {
    let Some((token, rest)) = tokens.split_first() else {
        return match queue {
            None => node.plain.remove(key),
            Some(queue) => {
                let group = node.groups.iter().position(|(name, _)| &**name == queue)?;
                let members = &mut node.groups[group].1;
                // Keep members in order: picking a member is random, but order keeps tests
                // and debugging output stable.
                let at = members.iter().position(|member| member.key() == key)?;
                let value = members.remove(at);
                if members.is_empty() {
                    node.groups.swap_remove(group);
                }
                Some(value)
            }
        };
    };
    match *token {
        "*" | ">" => {
            let slot = if *token == "*" { &mut node.star } else { &mut node.full };
            let child = slot.as_deref_mut()?;
            let removed = remove_at(child, rest, queue, key);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
        literal => {
            let child = node.literal.get_mut(literal)?;
            let removed = remove_at(child, rest, queue, key);
            if child.is_empty() {
                node.literal.remove(literal);
            }
            removed
        }
    }
}

fn collect<'a, T>(
    node: &'a Node<T>,
    mut tokens: std::str::Split<'_, char>,
    out: &mut Matches<'a, T>,
) {
    let Some(token) = tokens.next() else {
        add(node, out);
        return;
    };
    if let Some(full) = &node.full {
        add(full, out);
    }
    if let Some(star) = &node.star {
        collect(star, tokens.clone(), out);
    }
    if let Some(child) = node.literal.get(token) {
        collect(child, tokens, out);
    }
}

fn add<'a, T>(node: &'a Node<T>, out: &mut Matches<'a, T>) {
    out.plain.extend(node.plain.items.iter());
    for (name, members) in &node.groups {
        match out.groups.iter_mut().find(|(found, _)| *found == &**name) {
            Some((_, merged)) => merged.extend(members.iter()),
            None => out.groups.push((name, members.iter().collect())),
        }
    }
}

#[cfg(test)]
mod tests;
