//! The trie must agree with the naive matcher of `cohort_nats_proto::subject` on random subjects
//! and patterns, including after removals.

use super::*;
use cohort_nats_proto::subject::matches;
use proptest::prelude::*;

impl Keyed for u32 {
    fn key(&self) -> u64 {
        u64::from(*self)
    }
}

fn sorted(mut ids: Vec<u32>) -> Vec<u32> {
    ids.sort_unstable();
    ids
}

#[test]
fn wildcards_and_groups() {
    let mut index = SubjectIndex::default();
    index.insert("foo.bar", None, 1);
    index.insert("foo.*", None, 2);
    index.insert("foo.>", None, 3);
    index.insert(">", None, 4);
    index.insert("foo.bar", Some("q"), 5);
    index.insert("foo.*", Some("q"), 6);
    index.insert("foo.bar.baz", None, 7);
    let found = index.matches("foo.bar");
    assert_eq!(sorted(found.plain.iter().map(|id| **id).collect()), [1, 2, 3, 4]);
    assert_eq!(found.groups.len(), 1, "same-named groups merge");
    assert_eq!(sorted(found.groups[0].1.iter().map(|id| **id).collect()), [5, 6]);
    assert!(index.matches("bar").groups.is_empty());
    assert_eq!(index.len(), 7);
}

#[test]
fn removal_prunes() {
    let mut index = SubjectIndex::default();
    for idx in 0..100 {
        index.insert(&format!("_INBOX.abc.{idx}"), None, idx);
    }
    for idx in 0..100 {
        assert_eq!(index.remove(&format!("_INBOX.abc.{idx}"), None, u64::from(idx)), Some(idx));
    }
    assert_eq!(index.remove("_INBOX.abc.1", None, 1), None);
    assert!(index.root.is_empty(), "{:?}", index.root);
    assert_eq!(index.len(), 0);
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
}

fn pattern() -> impl Strategy<Value = String> {
    (prop::collection::vec(prop_oneof![token(), Just("*".to_owned())], 1..4), any::<bool>())
        .prop_map(|(mut tokens, tail)| {
            if tail {
                tokens.push(">".to_owned());
            }
            tokens.join(".")
        })
}

proptest! {
    #[test]
    fn agrees_with_naive_matcher(
        patterns in prop::collection::vec((pattern(), prop::option::of(Just("q"))), 1..20),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        subjects in prop::collection::vec(prop::collection::vec(token(), 1..5), 1..10),
    ) {
        let mut index = SubjectIndex::default();
        let mut live: Vec<(u32, String, Option<&str>)> = Vec::new();
        for (id, (pattern, queue)) in patterns.iter().enumerate() {
            let id = u32::try_from(id).unwrap();
            index.insert(pattern, *queue, id);
            live.push((id, pattern.clone(), *queue));
        }
        for pick in removed {
            if live.is_empty() { break; }
            let (id, pattern, queue) = live.remove(pick.index(live.len()));
            prop_assert_eq!(index.remove(&pattern, queue, u64::from(id)), Some(id));
        }
        prop_assert_eq!(index.len(), live.len());
        for subject in subjects {
            let subject = subject.join(".");
            let found = index.matches(&subject);
            let mut got: Vec<u32> = found.plain.iter().map(|id| **id).collect();
            got.extend(found.groups.iter().flat_map(|(_, members)| members.iter().map(|id| **id)));
            let expect: Vec<u32> = live
                .iter()
                .filter(|(_, pattern, _)| matches(pattern, &subject))
                .map(|(id, _, _)| *id)
                .collect();
            prop_assert_eq!(sorted(got), sorted(expect), "subject {}", subject);
        }
    }
}

proptest! {
    /// Many subscriptions on one subject (an agent's broadcast subject in a large fleet), added
    /// and removed in any order, across the size where removal switches to the key map and back.
    #[test]
    fn many_on_one_subject(
        count in 1usize..200,
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
        readd in 0usize..60,
    ) {
        let mut index = SubjectIndex::default();
        let mut live: Vec<u32> = (0..u32::try_from(count).unwrap()).collect();
        for &id in &live {
            index.insert("cohort.broadcast.agent.rpcutil", None, id);
        }
        let mut next = u32::try_from(count).unwrap();
        for (step, pick) in order.iter().enumerate() {
            if live.is_empty() { break; }
            let id = live.swap_remove(pick.index(live.len()));
            prop_assert_eq!(index.remove("cohort.broadcast.agent.rpcutil", None, u64::from(id)), Some(id));
            prop_assert_eq!(index.remove("cohort.broadcast.agent.rpcutil", None, u64::from(id)), None);
            if step < readd {
                index.insert("cohort.broadcast.agent.rpcutil", None, next);
                live.push(next);
                next += 1;
            }
            let found = index.matches("cohort.broadcast.agent.rpcutil");
            let got: Vec<u32> = found.plain.iter().map(|id| **id).collect();
            prop_assert_eq!(sorted(got), sorted(live.clone()));
        }
        prop_assert_eq!(index.len(), live.len());
    }
}
