//! Desired against current: which properties are out of sync, and the change events in
//! Puppet's words (`created`, `comment changed 'a' to 'b'`, `current_value 'x', should be 'y'
//! (noop)`, `change from .. to .. failed: ..`). Pure: the providers read the current state and
//! carry the changes out; the rules of what counts as a change live here, once.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::Digest;

use crate::model::{Desired, Kind, Role, Shape, Value, reference_name};

/// A resource's current state: `ensure` plus the properties it has, as the provider read them.
pub type State = BTreeMap<String, Value>;

/// One property out of sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The property.
    pub property: String,
    /// What it is; `None` when the system has no value for it.
    pub is: Option<Value>,
    /// What it should be.
    pub should: Value,
    /// Whether its values are secrets.
    pub sensitive: bool,
}

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made.
    Done,
    /// Would have been made (noop).
    Noop,
    /// Could not be made, and why.
    Failed(String),
}

/// A change event, as Puppet logs it under `puppet resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The property.
    pub property: String,
    /// Puppet's message.
    pub message: String,
    /// `success`, `noop` or `failure`.
    pub status: &'static str,
}

impl Event {
    /// The log line without its level: `/User[rip]/comment: defined 'comment' as 'Foo'`.
    pub fn line(&self, reference: &str) -> String {
        format!("/{reference}/{}: {}", self.property, self.message)
    }
}

/// `{sha256}<hex>` of file content, as Puppet shows and compares content.
pub fn checksum(content: &[u8]) -> String {
    format!("{{sha256}}{}", hex::encode(sha2::Sha256::digest(content)))
}

/// Whether `ensure` as it is satisfies `ensure` as asked.
fn ensure_insync(kind: Kind, is: &str, should: &str) -> bool {
    match (kind, should) {
        (Kind::Package, "present") => !kind.is_absent(is),
        (Kind::Package, "absent") => kind.is_absent(is),
        (Kind::File, "present") => is != "absent",
        (Kind::Mount, "defined") => matches!(is, "mounted" | "unmounted"),
        _ => is == should,
    }
}

/// What `should` becomes for a set-valued property under minimum membership: everything the
/// system has plus what was asked.
fn union(is: &[String], should: &[String]) -> Vec<String> {
    let mut all = is.to_vec();
    for item in should {
        if !all.contains(item) {
            all.push(item.clone());
        }
    }
    all
}

fn inclusive(desired: &Desired) -> bool {
    match desired.kind {
        Kind::User => desired.param("membership") == Some("inclusive"),
        Kind::Group => desired.flag("auth_membership", false),
        _ => true,
    }
}

/// The properties of `desired` out of sync with `current`, in sync order. When `ensure` is out
/// of sync only it is returned (the others follow from creating or removing); a resource that
/// is absent and not asked to exist has nothing to sync.
pub fn changes(desired: &Desired, current: &State) -> Vec<Change> {
    let kind = desired.kind;
    let spec = kind.spec();
    let is_ensure = current.get("ensure").map(Value::flat);
    if let (Some(should), Some(is)) = (desired.ensure(), is_ensure.as_deref())
        && !ensure_insync(kind, is, should)
    {
        return vec![Change {
            property: "ensure".into(),
            is: Some(Value::Text(is.to_owned())),
            should: Value::Text(should.to_owned()),
            sensitive: false,
        }];
    }
    if is_ensure.as_deref().is_some_and(|is| kind.is_absent(is)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for attr in spec.properties() {
        if attr.name == "ensure" {
            continue;
        }
        let Some(should) = desired.should.get(attr.name) else { continue };
        let is = current.get(attr.name);
        let mut should = should.clone();
        let insync = match (attr.shape, is) {
            (Shape::Set, Some(is)) => {
                let (is, want) = (is.items(), should.items());
                if inclusive(desired) {
                    let mut a = is.clone();
                    let mut b = want.clone();
                    a.sort();
                    b.sort();
                    a == b
                } else {
                    let sync = want.iter().all(|item| is.contains(item));
                    if !sync {
                        should = Value::List(union(&is, &want));
                    }
                    sync
                }
            }
            (_, Some(is)) => property_insync(desired, attr.name, is, &should),
            // Nothing there is what `absent` asks for.
            (_, None) => should.flat() == "absent" || cron_star(kind, attr.name, &should),
        };
        if !insync {
            out.push(Change {
                property: attr.name.to_owned(),
                is: is.cloned(),
                should,
                sensitive: attr.sensitive,
            });
        }
    }
    out
}

/// A cron time field of `*` is the same as none.
fn cron_star(kind: Kind, property: &str, should: &Value) -> bool {
    kind == Kind::Cron
        && matches!(property, "minute" | "hour" | "monthday" | "month" | "weekday")
        && should.items() == ["*"]
}

fn property_insync(desired: &Desired, property: &str, is: &Value, should: &Value) -> bool {
    match (desired.kind, property) {
        (Kind::File, "content") => {
            if !desired.flag("replace", true) {
                return true;
            }
            checksum(should.flat().as_bytes()) == is.flat()
        }
        (Kind::Exec, "returns") => is.flat() != "notrun",
        _ => match (is, should) {
            (Value::List(a), Value::List(b)) => a == b,
            (a, b) => a.flat() == b.flat(),
        },
    }
}

/// The joiner of Puppet's list properties, which show the current value joined and bare and
/// the wanted one joined and quoted (`host_aliases changed web1 www to 'web1'`).
fn list_delimiter(kind: Kind, property: &str) -> Option<&'static str> {
    match (kind, property) {
        (Kind::User, "groups") | (Kind::Group, "members") => Some(","),
        (Kind::Host, "host_aliases") => Some(" "),
        _ => None,
    }
}

/// Which side of a change a value is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Is,
    Should,
}

/// How a value appears in a message.
fn shown(desired: &Desired, property: &str, value: Option<&Value>, side: Side) -> String {
    if let (Some(value), Some(delimiter)) = (value, list_delimiter(desired.kind, property)) {
        let joined = value.items().join(delimiter);
        return if side == Side::Is { joined } else { crate::model::quote(&joined) };
    }
    // Cron's environment shows bare, as Puppet's cron type does.
    if let (Some(value), Kind::Cron, "environment") = (value, desired.kind, property) {
        return value.items().join(",");
    }
    match value {
        None => "'absent'".to_owned(),
        Some(value) if desired.kind == Kind::File && property == "content" => {
            let text = value.flat();
            if text.starts_with("{sha256}") {
                crate::model::quote(&text)
            } else {
                crate::model::quote(&checksum(text.as_bytes()))
            }
        }
        Some(value) => value.puppet(),
    }
}

/// The message for `change` ending as `outcome`, in Puppet's words.
pub fn message(desired: &Desired, change: &Change, outcome: &Outcome) -> String {
    let (is, should) = if change.sensitive {
        ("[redacted]".to_owned(), "[redacted]".to_owned())
    } else {
        (
            shown(desired, &change.property, change.is.as_ref(), Side::Is),
            shown(desired, &change.property, Some(&change.should), Side::Should),
        )
    };
    match outcome {
        Outcome::Noop => format!("current_value {is}, should be {should} (noop)"),
        Outcome::Failed(why) => format!("change from {is} to {should} failed: {why}"),
        Outcome::Done => done_message(desired, change, &is, &should),
    }
}

fn done_message(desired: &Desired, change: &Change, is: &str, should: &str) -> String {
    let kind = desired.kind;
    let property = change.property.as_str();
    if kind == Kind::Exec && property == "returns" {
        return "executed successfully".to_owned();
    }
    if change.sensitive {
        return "changed [redacted] to [redacted]".to_owned();
    }
    if property == "ensure" {
        let was_absent = change.is.as_ref().is_none_or(|is| kind.is_absent(&is.flat()));
        let to_absent = kind.is_absent(&change.should.flat());
        if kind == Kind::File
            && was_absent
            && change.should.flat() != "directory"
            && change.should.flat() != "link"
            && let Some(content) = desired.should.get("content")
        {
            let sum = shown(desired, "content", Some(content), Side::Should);
            return format!("defined content as {sum}");
        }
        if kind == Kind::Package && change.should.flat() == "purged" {
            return "purged".to_owned();
        }
        if kind == Kind::Mount && was_absent {
            return "defined 'ensure' as 'defined'".to_owned();
        }
        return match (was_absent, to_absent, kind) {
            // A package goes from `purged` to a version: Puppet says created.
            (true, false, _) => "created".to_owned(),
            (false, true, _) => "removed".to_owned(),
            _ => format!("ensure changed {is} to {should}"),
        };
    }
    if kind == Kind::File && property == "content" {
        return format!("content changed {is} to {should}");
    }
    // Puppet's user type splits the wanted groups back into a list for this one message.
    let list_shown;
    let should = if kind == Kind::User && property == "groups" {
        list_shown = Value::List(change.should.items()).puppet();
        list_shown.as_str()
    } else {
        should
    };
    match &change.is {
        None => format!("defined '{property}' as {should}"),
        Some(_) => format!("{property} changed {is} to {should}"),
    }
}

/// Attributes worth showing for a resource: its state with any secret replaced.
pub fn redact(kind: Kind, state: &State) -> State {
    state
        .iter()
        .map(|(name, value)| {
            let sensitive = kind.spec().attr(name).is_some_and(|attr| attr.sensitive);
            let value = if sensitive { Value::Text("[redacted]".into()) } else { value.clone() };
            (name.clone(), value)
        })
        .collect()
}

/// Whether `name` is a property of `kind` (as opposed to a parameter or unknown).
pub fn is_property(kind: Kind, name: &str) -> bool {
    kind.spec().attr(name).is_some_and(|attr| attr.role == Role::Property)
}

/// `User[rip]` for a type name and title.
pub fn reference(type_name: &str, title: &str) -> String {
    format!("{}[{title}]", reference_name(type_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(kind: Kind, title: &str, attrs: &[(&str, serde_json::Value)]) -> Desired {
        let attrs = attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Desired::build(kind, title, &attrs).unwrap()
    }

    fn state(pairs: &[(&str, Value)]) -> State {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn messages(desired: &Desired, current: &State, outcome: &Outcome) -> Vec<String> {
        changes(desired, current)
            .iter()
            .map(|change| format!("{}: {}", change.property, message(desired, change, outcome)))
            .collect()
    }

    #[test]
    fn created_and_removed() {
        let user = desired(
            Kind::User,
            "foo",
            &[("ensure", json!("present")), ("comment", json!("Foo User"))],
        );
        let absent = state(&[("ensure", "absent".into())]);
        assert_eq!(messages(&user, &absent, &Outcome::Done), ["ensure: created"]);
        let gone = desired(Kind::User, "foo", &[("ensure", json!("absent"))]);
        let present = state(&[("ensure", "present".into()), ("comment", "x".into())]);
        assert_eq!(messages(&gone, &present, &Outcome::Done), ["ensure: removed"]);
        assert!(changes(&gone, &absent).is_empty());
    }

    #[test]
    fn absent_without_ensure() {
        // Types whose ensure has no default manage nothing that is absent.
        let mount = desired(Kind::Mount, "/mnt/x", &[("options", json!("noatime"))]);
        assert!(changes(&mount, &state(&[("ensure", "absent".into())])).is_empty());
        // Plainly ensurable types default to present once a property is managed (Puppet's
        // `defaultto { :present if @resource.managed? }`), packages always.
        let absent = state(&[("ensure", "absent".into())]);
        let user = desired(Kind::User, "foo", &[("comment", json!("Foo User"))]);
        assert_eq!(messages(&user, &absent, &Outcome::Done), ["ensure: created"]);
        let host = desired(Kind::Host, "db1", &[("ip", json!("10.0.0.5"))]);
        assert_eq!(messages(&host, &absent, &Outcome::Done), ["ensure: created"]);
        let package = desired(Kind::Package, "p", &[]);
        assert_eq!(package.ensure(), Some("present"));
        let bare = desired(Kind::User, "foo", &[]);
        assert_eq!(bare.ensure(), None);
    }

    #[test]
    fn list_properties_show_like_puppet() {
        let host = desired(Kind::Host, "web1", &[("host_aliases", json!("web1"))]);
        let current = state(&[
            ("ensure", "present".into()),
            ("host_aliases", Value::List(vec!["web1".into(), "www".into()])),
        ]);
        assert_eq!(
            messages(&host, &current, &Outcome::Done),
            ["host_aliases: host_aliases changed web1 www to 'web1'"]
        );
    }

    #[test]
    fn ensure_first_then_properties_in_order() {
        let svc = desired(
            Kind::Service,
            "x",
            &[("ensure", json!("running")), ("enable", json!("false"))],
        );
        let stopped = state(&[("ensure", "stopped".into()), ("enable", "true".into())]);
        assert_eq!(
            messages(&svc, &stopped, &Outcome::Done),
            ["ensure: ensure changed 'stopped' to 'running'"]
        );
        let running = state(&[("ensure", "running".into()), ("enable", "true".into())]);
        assert_eq!(
            messages(&svc, &running, &Outcome::Done),
            ["enable: enable changed 'true' to 'false'"]
        );
    }

    #[test]
    fn defined_changed_and_numbers_bare() {
        let user =
            desired(Kind::User, "foo", &[("comment", json!("Foo User")), ("uid", json!(1005))]);
        let current = state(&[("ensure", "present".into()), ("uid", Value::Int(1001))]);
        assert_eq!(
            messages(&user, &current, &Outcome::Done),
            ["uid: uid changed 1001 to 1005", "comment: defined 'comment' as 'Foo User'"]
        );
    }

    #[test]
    fn noop_and_failure_wording() {
        let host = desired(Kind::Host, "web1", &[("ip", json!("10.0.0.8"))]);
        let current = state(&[("ensure", "present".into()), ("ip", "10.0.0.7".into())]);
        assert_eq!(
            messages(&host, &current, &Outcome::Noop),
            ["ip: current_value '10.0.0.7', should be '10.0.0.8' (noop)"]
        );
        assert_eq!(
            messages(&host, &current, &Outcome::Failed("boom".into())),
            ["ip: change from '10.0.0.7' to '10.0.0.8' failed: boom"]
        );
    }

    #[test]
    fn sensitive_is_redacted_everywhere() {
        let user = desired(Kind::User, "rip", &[("password", json!("$1$new"))]);
        let current = state(&[("ensure", "present".into()), ("password", "$1$old".into())]);
        for (outcome, want) in [
            (Outcome::Done, "password: changed [redacted] to [redacted]"),
            (Outcome::Noop, "password: current_value [redacted], should be [redacted] (noop)"),
            (
                Outcome::Failed("x".into()),
                "password: change from [redacted] to [redacted] failed: x",
            ),
        ] {
            let got = messages(&user, &current, &outcome);
            assert_eq!(got, [want]);
            assert!(!got[0].contains("$1$"));
        }
        let shown = redact(Kind::User, &current);
        assert_eq!(shown["password"], Value::from("[redacted]"));
    }

    #[test]
    fn groups_minimum_and_inclusive() {
        let current = state(&[
            ("ensure", "present".into()),
            ("groups", Value::List(vec!["ssl-cert".into()])),
        ]);
        let minimum = desired(Kind::User, "u", &[("groups", json!("adm"))]);
        assert_eq!(
            messages(&minimum, &current, &Outcome::Noop),
            ["groups: current_value ssl-cert, should be 'ssl-cert,adm' (noop)"]
        );
        assert_eq!(
            messages(&minimum, &current, &Outcome::Done),
            ["groups: groups changed ssl-cert to ['ssl-cert', 'adm']"]
        );
        let subset = desired(Kind::User, "u", &[("groups", json!("ssl-cert"))]);
        assert!(changes(&subset, &current).is_empty());
        let exact = desired(
            Kind::User,
            "u",
            &[("groups", json!("adm")), ("membership", json!("inclusive"))],
        );
        assert_eq!(changes(&exact, &current)[0].should, Value::List(vec!["adm".into()]));
    }

    #[test]
    fn file_content_by_checksum_and_replace() {
        let file = desired(
            Kind::File,
            "/tmp/a",
            &[("ensure", json!("file")), ("content", json!("hello\n"))],
        );
        let absent = state(&[("ensure", "absent".into())]);
        let sum = checksum(b"hello\n");
        assert_eq!(
            messages(&file, &absent, &Outcome::Done),
            [format!("ensure: defined content as '{sum}'")]
        );
        let same = state(&[("ensure", "file".into()), ("content", sum.clone().into())]);
        assert!(changes(&file, &same).is_empty());
        let other = checksum(b"bye\n");
        let differs = state(&[("ensure", "file".into()), ("content", other.clone().into())]);
        assert_eq!(
            messages(&file, &differs, &Outcome::Done),
            [format!("content: content changed '{other}' to '{sum}'")]
        );
        let keep = desired(
            Kind::File,
            "/tmp/a",
            &[("content", json!("hello\n")), ("replace", json!("false"))],
        );
        assert!(changes(&keep, &differs).is_empty());
        let mode = desired(Kind::File, "/tmp/a", &[("mode", json!("600"))]);
        let current = state(&[("ensure", "file".into()), ("mode", "0644".into())]);
        assert_eq!(
            messages(&mode, &current, &Outcome::Done),
            ["mode: mode changed '0644' to '0600'"]
        );
    }

    #[test]
    fn exec_wording() {
        let exec = desired(Kind::Exec, "/bin/true", &[]);
        let notrun = state(&[("returns", "notrun".into())]);
        assert_eq!(messages(&exec, &notrun, &Outcome::Done), ["returns: executed successfully"]);
        assert_eq!(
            messages(&exec, &notrun, &Outcome::Noop),
            ["returns: current_value 'notrun', should be ['0'] (noop)"]
        );
        let guarded = state(&[("returns", Value::List(vec!["0".into()]))]);
        assert!(changes(&exec, &guarded).is_empty());
    }

    #[test]
    fn package_ensure_rules() {
        let present = desired(Kind::Package, "p", &[("ensure", json!("installed"))]);
        let installed = state(&[("ensure", "1.0-1".into())]);
        assert!(changes(&present, &installed).is_empty());
        let purged = state(&[("ensure", "purged".into())]);
        assert_eq!(messages(&present, &purged, &Outcome::Done), ["ensure: created"]);
        let absent = desired(Kind::Package, "p", &[("ensure", json!("absent"))]);
        assert!(changes(&absent, &purged).is_empty());
        assert_eq!(messages(&absent, &installed, &Outcome::Done), ["ensure: removed"]);
        let purge = desired(Kind::Package, "p", &[("ensure", json!("purged"))]);
        assert_eq!(messages(&purge, &installed, &Outcome::Done), ["ensure: purged"]);
        let pinned = desired(Kind::Package, "p", &[("ensure", json!("2.0-1"))]);
        assert_eq!(
            messages(&pinned, &installed, &Outcome::Done),
            ["ensure: ensure changed '1.0-1' to '2.0-1'"]
        );
    }

    #[test]
    fn group_members_mailalias_and_keys() {
        let group = desired(Kind::Group, "ops", &[("members", json!("alice,bob"))]);
        let current =
            state(&[("ensure", "present".into()), ("members", Value::List(vec!["alice".into()]))]);
        assert_eq!(
            messages(&group, &current, &Outcome::Done),
            ["members: members changed alice to 'alice,bob'"]
        );
        let all = state(&[
            ("ensure", "present".into()),
            ("members", Value::List(vec!["bob".into(), "alice".into(), "carol".into()])),
        ]);
        assert!(changes(&group, &all).is_empty(), "minimum membership is a subset");
        let alias = desired(Kind::Mailalias, "team", &[("recipient", json!("carol"))]);
        let current = state(&[
            ("ensure", "present".into()),
            ("recipient", Value::List(vec!["alice".into(), "bob".into()])),
        ]);
        assert_eq!(
            messages(&alias, &current, &Outcome::Done),
            ["recipient: recipient changed ['alice', 'bob'] to ['carol']"]
        );
        let key = desired(
            Kind::SshAuthorizedKey,
            "alice@laptop",
            &[("type", json!("ssh-ed25519")), ("key", json!("AAAA")), ("user", json!("alice"))],
        );
        let absent = state(&[("ensure", "absent".into())]);
        assert_eq!(messages(&key, &absent, &Outcome::Done), ["ensure: created"]);
        let other = state(&[
            ("ensure", "present".into()),
            ("type", "ssh-rsa".into()),
            ("key", "BBBB".into()),
        ]);
        assert_eq!(
            messages(&key, &other, &Outcome::Noop),
            [
                "type: current_value 'ssh-rsa', should be 'ssh-ed25519' (noop)",
                "key: current_value 'BBBB', should be 'AAAA' (noop)"
            ]
        );
    }

    #[test]
    fn mount_and_cron_specials() {
        let mount = desired(
            Kind::Mount,
            "/mnt/x",
            &[
                ("ensure", json!("defined")),
                ("device", json!("/dev/sdb1")),
                ("fstype", json!("ext4")),
            ],
        );
        assert_eq!(
            messages(&mount, &state(&[("ensure", "absent".into())]), &Outcome::Done),
            ["ensure: defined 'ensure' as 'defined'"]
        );
        let in_fstab = state(&[
            ("ensure", "unmounted".into()),
            ("device", "/dev/sdb1".into()),
            ("fstype", "ext4".into()),
        ]);
        assert!(changes(&mount, &in_fstab).is_empty());
        let cron =
            desired(Kind::Cron, "job", &[("command", json!("/bin/true")), ("minute", json!("*"))]);
        let current = state(&[("ensure", "present".into()), ("command", "/bin/true".into())]);
        assert!(changes(&cron, &current).is_empty());
    }
}
