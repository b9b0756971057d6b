//! Filter evaluation against a fixture node, one line per case.

use super::*;
use crate::{FilterArgs, parse_compound};

fn facts() -> Map<String, Value> {
    serde_json::from_str(
        r#"{
            "country": "uk",
            "cpus": 4,
            "load": "0.75",
            "puppet_enabled": true,
            "roles": ["web", "db"],
            "os": {"family": "Debian", "release": {"major": "12", "full": "12.5"}},
            "mounts": {"/": {}, "/srv": {}},
            "flat.dotted": "yes",
            "nothing": null
        }"#,
    )
    .unwrap()
}

fn node_matches(filter: &Filter) -> bool {
    let facts = facts();
    let classes = vec!["role::web".to_owned(), "profile::base".to_owned()];
    let agents = vec!["rpcutil".to_owned(), "discovery".to_owned()];
    let node =
        Node { identity: "web1.example.com", facts: &facts, classes: &classes, agents: &agents };
    matches(filter, &node)
}

#[track_caller]
fn fact(expr: &str, expect: bool) {
    let filter = FilterArgs { fact: vec![expr.into()], ..FilterArgs::default() }.build().unwrap();
    assert_eq!(node_matches(&filter), expect, "-F {expr}");
}

#[track_caller]
fn compound(expr: &str, expect: bool) {
    let filter = Filter { compound: vec![parse_compound(expr).unwrap()], ..Filter::default() };
    assert_eq!(node_matches(&filter), expect, "-S {expr}");
}

#[track_caller]
fn identity(values: &[&str], expect: bool) {
    let filter = FilterArgs {
        identity: values.iter().map(|v| (*v).to_owned()).collect(),
        ..FilterArgs::default()
    }
    .build()
    .unwrap();
    assert_eq!(node_matches(&filter), expect, "-I {values:?}");
}

#[test]
fn empty_filter_matches_everything() {
    assert!(node_matches(&Filter::default()));
}

#[test]
fn facts_compare() {
    fact("country=uk", true);
    fact("country=us", false);
    fact("country!=us", true);
    fact("cpus>2", true);
    fact("cpus>=4", true);
    fact("cpus<4", false);
    fact("cpus==4.0", true);
    fact("cpus>10", false); // numeric, not "4" > "10" as text
    fact("load<1", true);
    fact("country=/^u/", true);
    fact("country=~k$", true);
    fact("missing=anything", false);
    fact("missing!=anything", false);
    fact("nothing=null", false);
    fact("puppet_enabled=true", true);
    fact("os.family=Debian", true);
    fact("os.release.major>=12", true);
    fact("os.release.major<12", false);
    fact("os.release.minor=1", false);
    fact("flat.dotted=yes", true);
    fact("roles=db", true);
    fact("roles!=web", false);
    fact("roles!=cache", true);
    fact("mounts=/srv", true);
    fact("country>t", true); // text ordering when not numbers
}

#[test]
fn classes_agents_identities() {
    let build = |args: FilterArgs| args.build().unwrap();
    assert!(node_matches(&build(FilterArgs {
        class: vec!["role::web".into()],
        ..FilterArgs::default()
    })));
    assert!(!node_matches(&build(FilterArgs {
        class: vec!["role::db".into()],
        ..FilterArgs::default()
    })));
    assert!(node_matches(&build(FilterArgs {
        class: vec!["/^profile::/".into()],
        ..FilterArgs::default()
    })));
    assert!(!node_matches(&build(FilterArgs {
        class: vec!["role::web".into(), "role::db".into()],
        ..FilterArgs::default()
    })));
    assert!(node_matches(&build(FilterArgs {
        agent: vec!["rpcutil".into()],
        ..FilterArgs::default()
    })));
    assert!(!node_matches(&build(FilterArgs {
        agent: vec!["nrpe".into()],
        ..FilterArgs::default()
    })));
    assert!(node_matches(&build(FilterArgs {
        with: vec!["role::web country=uk".into()],
        ..FilterArgs::default()
    })));
    assert!(!node_matches(&build(FilterArgs {
        with: vec!["role::web country=fr".into()],
        ..FilterArgs::default()
    })));
}

#[test]
fn identities_are_ored() {
    identity(&["web1.example.com"], true);
    identity(&["web2.example.com"], false);
    identity(&["web2.example.com", "web1.example.com"], true);
    // MCollective excluded a node matched by two -I entries; any match is enough here.
    identity(&["/web/", "web1.example.com"], true);
    identity(&["/^web\\d\\.example/"], true);
    // Slashes inside the pattern are part of it (MCollective stripped them all).
    identity(&["/web1.example.com\\/x/"], false);
}

#[test]
fn compound_expressions() {
    compound("country=uk and role::web", true);
    compound("country=uk and role::db", false);
    compound("country=fr or role::web", true);
    compound("not role::db", true);
    compound("!role::web", false);
    compound("country!=fr", true);
    compound("(country=fr or cpus>=4) and /^profile/", true);
    compound("os.release.major>=12 and not (roles=cache)", true);
    compound("cpus > 8 or country = 'uk'", true);
}

#[test]
fn bad_regex_is_reported_and_never_matches() {
    let filter = Filter { class: vec!["/[/".into()], ..Filter::default() };
    assert!(matches!(validate(&filter), Err(FilterError::Regex { .. })));
    assert!(!node_matches(&filter));
}
