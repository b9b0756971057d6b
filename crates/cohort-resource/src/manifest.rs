//! Showing resources the way `puppet resource` does: the manifest form (`user { 'root':`,
//! `ensure` first then alphabetical, `=>` aligned, a trailing comma on every line), and the
//! YAML/JSON form `{type: {title: {attr: value}}}`. Pure.

use std::collections::BTreeMap;

use crate::change::State;
#[cfg(test)]
use crate::model::Value;
use crate::model::quote;

/// One resource as shown: its type, title and attributes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shown {
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Title.
    pub title: String,
    /// Attributes, secrets already redacted.
    pub attributes: State,
}

/// The manifest form of one resource.
pub fn manifest(shown: &Shown) -> String {
    let mut names: Vec<&String> = shown.attributes.keys().collect();
    names.sort_by_key(|name| (name.as_str() != "ensure", name.as_str()));
    let width = names.iter().map(|name| name.len()).max().unwrap_or(0);
    let mut out = format!("{} {{ {}:\n", shown.type_name, quote(&shown.title));
    for name in names {
        let value = &shown.attributes[name];
        out.push_str(&format!("  {name:<width$} => {},\n", value.puppet()));
    }
    out.push_str("}\n");
    out
}

/// The YAML/JSON document `{type: {title: {attr: value}}}` of several resources of one type.
pub fn document(shown: &[Shown]) -> BTreeMap<String, BTreeMap<String, State>> {
    let mut out: BTreeMap<String, BTreeMap<String, State>> = BTreeMap::new();
    for resource in shown {
        out.entry(resource.type_name.clone())
            .or_default()
            .insert(resource.title.clone(), resource.attributes.clone());
    }
    out
}

/// The attributes `puppet resource TYPE TITLE attr=...` prints after applying: the ones given,
/// plus `ensure` and `provider`.
pub fn given_only(state: &State, given: &[String]) -> State {
    state
        .iter()
        .filter(|(name, _)| {
            name.as_str() == "ensure" || name.as_str() == "provider" || given.contains(name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_form_matches_puppet_resource() {
        let attributes: State = [
            ("uid", Value::Int(0)),
            ("ensure", Value::from("present")),
            ("password_warn_days", Value::Int(7)),
            ("provider", Value::from("useradd")),
            ("groups", Value::List(vec!["ssl-cert".into()])),
            ("comment", Value::from("root")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let shown = Shown { type_name: "user".into(), title: "root".into(), attributes };
        assert_eq!(
            manifest(&shown),
            "user { 'root':\n  ensure             => 'present',\n  comment            => 'root',\n  groups             => ['ssl-cert'],\n  password_warn_days => 7,\n  provider           => 'useradd',\n  uid                => 0,\n}\n"
        );
        let doc = document(&[shown]);
        assert_eq!(doc["user"]["root"]["uid"], Value::Int(0));
    }

    #[test]
    fn given_only_keeps_ensure_and_provider() {
        let state: State =
            [("ensure", "present"), ("provider", "parsed"), ("ip", "1.2.3.4"), ("comment", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect();
        let kept = given_only(&state, &["ip".to_owned()]);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["ensure", "ip", "provider"]);
    }
}
