//! What a node lets the resource agent touch (`[resource]` in daemon.toml), checked on the
//! node after the caller's authorization: a type allow-list or deny-list (default: allow
//! nothing, as the later MCollective agent did), name patterns per type, `exec` and `file`
//! only when named, and resources Puppet manages left alone. Pure: the caller reads Puppet's
//! `resources.txt` and hands it in.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// How `exec` runs commands when the resource names no provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecProvider {
    /// The program directly, no shell (Puppet's `posix`).
    #[default]
    Posix,
    /// `/bin/sh -c` (Puppet's `shell`).
    Shell,
}

/// Name patterns for one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamePatterns {
    /// Only titles matching one of these globs (empty: any).
    pub allow: Vec<String>,
    /// Never titles matching one of these globs.
    pub deny: Vec<String>,
}

/// The `[resource]` table of daemon.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceConfig {
    /// Types the agent may manage; every other type is refused. Not with `deny_types`.
    pub allow_types: Option<Vec<String>>,
    /// Types the agent may not manage. Not with `allow_types`.
    pub deny_types: Option<Vec<String>>,
    /// With `deny_types`: let `exec` run (with `allow_types` list it instead).
    pub allow_exec: bool,
    /// With `deny_types`: let `file` write (with `allow_types` list it instead).
    pub allow_file: bool,
    /// Manage resources Puppet manages too (Puppet would undo the change on its next run).
    pub allow_managed: bool,
    /// How `exec` runs when the resource names no provider.
    pub exec_provider: ExecProvider,
    /// Per-type title patterns: `[resource.names.user] allow = ["app-*"]`.
    pub names: BTreeMap<String, NamePatterns>,
    /// Puppet's list of the resources it manages; default: `resources.txt` in the first
    /// Puppet state directory that has one.
    pub puppet_resources: Option<PathBuf>,
    /// The `puppet` command used for types Cohort does not manage natively; default:
    /// `/opt/puppetlabs/bin/puppet` or `/usr/bin/puppet`, whichever exists.
    pub puppet: Option<PathBuf>,
}

/// A `[resource]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Both lists.
    #[error("[resource]: give allow_types or deny_types, not both")]
    BothLists,
    /// `allow_exec`/`allow_file` beside an allow-list.
    #[error("[resource]: {0} only applies with deny_types; with allow_types, list the type")]
    FlagWithAllowList(&'static str),
    /// A pattern that does not compile.
    #[error("[resource.names.{kind}]: pattern {pattern:?}: {why}")]
    Pattern {
        /// The type.
        kind: String,
        /// The pattern.
        pattern: String,
        /// The glob error.
        why: String,
    },
    /// A type name that cannot be one.
    #[error("[resource]: {0:?} is not a type name")]
    TypeName(String),
}

/// Why the node refuses a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

#[derive(Debug, Clone)]
enum TypeRule {
    Allow(HashSet<String>),
    Deny { types: HashSet<String>, exec: bool, file: bool },
}

#[derive(Debug, Clone)]
struct Names {
    allow: Option<GlobSet>,
    deny: GlobSet,
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Safety {
    types: TypeRule,
    names: BTreeMap<String, Names>,
    allow_managed: bool,
    /// The site's default exec provider.
    pub exec_provider: ExecProvider,
}

fn type_set(names: &[String]) -> Result<HashSet<String>, PolicyError> {
    names
        .iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower.split("::").all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if ok { Ok(lower) } else { Err(PolicyError::TypeName(name.clone())) }
        })
        .collect()
}

fn globs(kind: &str, patterns: &[String]) -> Result<GlobSet, PolicyError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|err| PolicyError::Pattern {
            kind: kind.to_owned(),
            pattern: pattern.clone(),
            why: err.kind().to_string(),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|err| PolicyError::Pattern {
        kind: kind.to_owned(),
        pattern: patterns.join(", "),
        why: err.to_string(),
    })
}

impl Safety {
    /// Compiles the `[resource]` table.
    pub fn new(config: &ResourceConfig) -> Result<Safety, PolicyError> {
        let types = match (&config.allow_types, &config.deny_types) {
            (Some(_), Some(_)) => return Err(PolicyError::BothLists),
            (Some(allow), None) => {
                if config.allow_exec {
                    return Err(PolicyError::FlagWithAllowList("allow_exec"));
                }
                if config.allow_file {
                    return Err(PolicyError::FlagWithAllowList("allow_file"));
                }
                TypeRule::Allow(type_set(allow)?)
            }
            (None, Some(deny)) => TypeRule::Deny {
                types: type_set(deny)?,
                exec: config.allow_exec,
                file: config.allow_file,
            },
            (None, None) => TypeRule::Allow(HashSet::new()),
        };
        let mut names = BTreeMap::new();
        for (kind, patterns) in &config.names {
            let allow =
                if patterns.allow.is_empty() { None } else { Some(globs(kind, &patterns.allow)?) };
            names.insert(
                kind.to_ascii_lowercase(),
                Names { allow, deny: globs(kind, &patterns.deny)? },
            );
        }
        Ok(Safety {
            types,
            names,
            allow_managed: config.allow_managed,
            exec_provider: config.exec_provider,
        })
    }

    /// Whether the node lets resources of `type_name` be read or managed at all.
    pub fn check_type(&self, type_name: &str) -> Result<(), Refusal> {
        let lower = type_name.to_ascii_lowercase();
        let allowed = match &self.types {
            TypeRule::Allow(types) => types.contains(&lower),
            TypeRule::Deny { types, exec, file } => {
                !types.contains(&lower) && (lower != "exec" || *exec) && (lower != "file" || *file)
            }
        };
        if allowed {
            return Ok(());
        }
        let how = match &self.types {
            TypeRule::Allow(types) if types.is_empty() => {
                "no resource types are allowed (set allow_types in daemon.toml [resource])"
                    .to_owned()
            }
            TypeRule::Allow(_) => "it is not in allow_types (daemon.toml [resource])".to_owned(),
            TypeRule::Deny { types, .. } if types.contains(&lower) => {
                "it is in deny_types (daemon.toml [resource])".to_owned()
            }
            TypeRule::Deny { .. } => {
                format!(
                    "{lower} must be allowed explicitly (allow_{lower} in daemon.toml [resource])"
                )
            }
        };
        Err(Refusal(format!("resource type '{lower}' is not allowed on this node: {how}")))
    }

    /// Whether the node lets `type_name[title]` be managed: type, name patterns, and Puppet's
    /// own resources (`managed`: whether Puppet's `resources.txt` lists it).
    pub fn check(&self, type_name: &str, title: &str, managed: bool) -> Result<(), Refusal> {
        self.check_type(type_name)?;
        let lower = type_name.to_ascii_lowercase();
        let reference = crate::change::reference(&lower, title);
        if let Some(names) = self.names.get(&lower) {
            if names.deny.is_match(title) {
                return Err(Refusal(format!(
                    "{reference} is refused by [resource.names.{lower}] deny on this node"
                )));
            }
            if let Some(allow) = &names.allow
                && !allow.is_match(title)
            {
                return Err(Refusal(format!(
                    "{reference} does not match [resource.names.{lower}] allow on this node"
                )));
            }
        }
        if managed && !self.allow_managed {
            return Err(Refusal(format!(
                "Puppet is managing the resource '{reference}', refusing to create conflicting states"
            )));
        }
        Ok(())
    }
}

/// The resources Puppet's last catalog held, from its `resources.txt` (`user[rip]` lines).
#[derive(Debug, Clone, Default)]
pub struct PuppetResources {
    entries: HashSet<(String, String)>,
}

impl PuppetResources {
    /// Parses `resources.txt`.
    pub fn parse(text: &str) -> PuppetResources {
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let (kind, rest) = line.split_once('[')?;
                let title = rest.strip_suffix(']')?;
                Some((kind.to_ascii_lowercase(), title.to_owned()))
            })
            .collect();
        PuppetResources { entries }
    }

    /// Whether Puppet manages `type_name[title]`.
    pub fn manages(&self, type_name: &str, title: &str) -> bool {
        self.entries.contains(&(type_name.to_ascii_lowercase(), title.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ResourceConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn default_allows_nothing() {
        let safety = Safety::new(&ResourceConfig::default()).unwrap();
        let err = safety.check("user", "rip", false).unwrap_err();
        assert!(err.0.contains("no resource types are allowed"), "{err}");
    }

    #[test]
    fn allow_list_and_deny_list() {
        let allow = Safety::new(&config("allow_types = ['user', 'Package']")).unwrap();
        allow.check("user", "rip", false).unwrap();
        allow.check("package", "x", false).unwrap();
        assert!(allow.check("exec", "/bin/true", false).unwrap_err().0.contains("allow_types"));
        let deny = Safety::new(&config("deny_types = ['service']")).unwrap();
        deny.check("user", "rip", false).unwrap();
        assert!(deny.check("service", "ssh", false).unwrap_err().0.contains("deny_types"));
        let exec = deny.check("exec", "/bin/true", false).unwrap_err();
        assert!(exec.0.contains("allow_exec"), "{exec}");
        assert!(deny.check("file", "/tmp/x", false).unwrap_err().0.contains("allow_file"));
        let open =
            Safety::new(&config("deny_types = []\nallow_exec = true\nallow_file = true")).unwrap();
        open.check("exec", "/bin/true", false).unwrap();
        open.check("file", "/tmp/x", false).unwrap();
    }

    #[test]
    fn configuration_errors() {
        let both = config("allow_types = ['user']\ndeny_types = ['exec']");
        assert_eq!(Safety::new(&both).unwrap_err(), PolicyError::BothLists);
        let flag = config("allow_types = ['user']\nallow_exec = true");
        assert!(matches!(Safety::new(&flag), Err(PolicyError::FlagWithAllowList("allow_exec"))));
        let bad = config("allow_types = ['user']\n[names.user]\ndeny = ['[']");
        assert!(Safety::new(&bad).unwrap_err().to_string().contains("[resource.names.user]"));
        assert!(matches!(
            Safety::new(&config("allow_types = ['us er']")),
            Err(PolicyError::TypeName(_))
        ));
    }

    #[test]
    fn name_patterns_deny_wins() {
        let safety = Safety::new(&config(
            "allow_types = ['user']\n[names.user]\nallow = ['app-*', 'root']\ndeny = ['root']",
        ))
        .unwrap();
        safety.check("user", "app-web", false).unwrap();
        assert!(safety.check("user", "root", false).unwrap_err().0.contains("deny"));
        assert!(safety.check("user", "bob", false).unwrap_err().0.contains("allow"));
    }

    #[test]
    fn puppet_managed_resources_are_refused_unless_allowed() {
        let managed = PuppetResources::parse("user[rip]\nfile[/etc/motd]\nclass[main]\n");
        assert!(managed.manages("User", "rip"));
        assert!(!managed.manages("user", "bob"));
        let safety = Safety::new(&config("allow_types = ['user']")).unwrap();
        assert_eq!(
            safety.check("user", "rip", managed.manages("user", "rip")).unwrap_err().0,
            "Puppet is managing the resource 'User[rip]', refusing to create conflicting states"
        );
        let allowed = Safety::new(&config("allow_types = ['user']\nallow_managed = true")).unwrap();
        allowed.check("user", "rip", true).unwrap();
    }
}
