//! The resource model: the types we manage natively, the attributes Puppet 7 gives each (which
//! are properties, compared and reported, and which are parameters, steering how), and the
//! validation that turns `attr=value` text into a [`Desired`] resource or an error naming the
//! attribute and the value at fault. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An attribute value: a word, a number, or a list (Puppet's three shapes in manifests).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A whole number: uids, gids, ages, `pass`.
    Int(i64),
    /// Text.
    Text(String),
    /// An ordered list of words.
    List(Vec<String>),
}

impl Value {
    /// Text of a word value, `None` for numbers and lists.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The value as one string: numbers in decimal, lists comma-joined.
    pub fn flat(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Text(text) => text.clone(),
            Value::List(items) => items.join(","),
        }
    }

    /// The items of a list; a word is a list of one.
    pub fn items(&self) -> Vec<String> {
        match self {
            Value::List(items) => items.clone(),
            other => vec![other.flat()],
        }
    }

    /// The value as Puppet displays it in manifests and change messages: `'text'`, `5`,
    /// `['a', 'b']`.
    pub fn puppet(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Text(text) => quote(text),
            Value::List(items) => {
                let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
                format!("[{}]", quoted.join(", "))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

/// Single-quotes `text` the way Puppet writes strings.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The resource types Cohort manages without Puppet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Local users (useradd).
    User,
    /// Local groups (groupadd).
    Group,
    /// Debian packages (apt, dpkg).
    Package,
    /// Services (systemd, or Debian init scripts).
    Service,
    /// Files, directories and symlinks.
    File,
    /// Commands, run when their guards say so.
    Exec,
    /// `/etc/hosts` entries.
    Host,
    /// `/etc/aliases` entries.
    Mailalias,
    /// Crontab entries.
    Cron,
    /// `authorized_keys` entries.
    SshAuthorizedKey,
    /// `/etc/fstab` entries (and mounting, when asked).
    Mount,
}

impl Kind {
    /// Every native type.
    pub const ALL: [Kind; 11] = [
        Kind::Cron,
        Kind::Exec,
        Kind::File,
        Kind::Group,
        Kind::Host,
        Kind::Mailalias,
        Kind::Mount,
        Kind::Package,
        Kind::Service,
        Kind::SshAuthorizedKey,
        Kind::User,
    ];

    /// The type by its Puppet name (`user`, `ssh_authorized_key`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|kind| kind.name() == lower)
    }

    /// The Puppet name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Package => "package",
            Kind::Service => "service",
            Kind::File => "file",
            Kind::Exec => "exec",
            Kind::Host => "host",
            Kind::Mailalias => "mailalias",
            Kind::Cron => "cron",
            Kind::SshAuthorizedKey => "ssh_authorized_key",
            Kind::Mount => "mount",
        }
    }

    /// The attributes this type takes.
    pub fn spec(self) -> &'static Spec {
        match self {
            Kind::User => &USER,
            Kind::Group => &GROUP,
            Kind::Package => &PACKAGE,
            Kind::Service => &SERVICE,
            Kind::File => &FILE,
            Kind::Exec => &EXEC,
            Kind::Host => &HOST,
            Kind::Mailalias => &MAILALIAS,
            Kind::Cron => &CRON,
            Kind::SshAuthorizedKey => &SSH_AUTHORIZED_KEY,
            Kind::Mount => &MOUNT,
        }
    }

    /// Whether an `ensure` value means the resource is not there.
    pub fn is_absent(self, ensure: &str) -> bool {
        match self {
            Kind::Package => matches!(ensure, "absent" | "purged"),
            Kind::Service => false,
            _ => ensure == "absent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type name as Puppet writes it in a resource reference: `User`, `Ssh_authorized_key`.
pub fn reference_name(type_name: &str) -> String {
    type_name
        .split("::")
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("::")
}

/// Whether an attribute is compared and synced, or only steers how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Part of the resource's state.
    Property,
    /// How to manage it.
    Parameter,
}

/// The shape an attribute's value takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Text.
    Text,
    /// A whole number (given as digits).
    Int,
    /// A whole number or a name (uid/gid given either way).
    IntOrName,
    /// `true` or `false`.
    Bool,
    /// An ordered list; text is split on commas.
    List,
    /// A list whose order does not matter.
    Set,
}

/// One attribute of a type.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Name.
    pub name: &'static str,
    /// Property or parameter.
    pub role: Role,
    /// Value shape.
    pub shape: Shape,
    /// Whether its value is a secret, shown as `[redacted]`.
    pub sensitive: bool,
}

const fn prop(name: &'static str, shape: Shape) -> Attr {
    Attr { name, role: Role::Property, shape, sensitive: false }
}

const fn param(name: &'static str, shape: Shape) -> Attr {
    Attr { name, role: Role::Parameter, shape, sensitive: false }
}

/// What a type takes.
#[derive(Debug)]
pub struct Spec {
    /// The attribute that names the resource (`name`, `path`, `command`).
    pub namevar: &'static str,
    /// `ensure` values accepted, each with the one it means (aliases).
    pub ensure: &'static [(&'static str, &'static str)],
    /// Whether any other `ensure` value is accepted (a package version, a link target).
    pub ensure_free: bool,
    /// Attributes managed, properties in the order Puppet syncs them.
    pub attrs: &'static [Attr],
    /// Attributes Puppet 7 has that no Linux provider supports, refused by name.
    pub unsupported: &'static [&'static str],
    /// Providers accepted.
    pub providers: &'static [&'static str],
}

impl Spec {
    /// The attribute named `name`.
    pub fn attr(&self, name: &str) -> Option<&'static Attr> {
        self.attrs.iter().find(|attr| attr.name == name)
    }

    /// Properties in sync order (ensure first).
    pub fn properties(&self) -> impl Iterator<Item = &'static Attr> {
        self.attrs.iter().filter(|attr| attr.role == Role::Property)
    }
}

use Shape::{Bool, Int, IntOrName, List, Set, Text};

static USER: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("home", Text),
        prop("uid", Int),
        prop("gid", IntOrName),
        prop("comment", Text),
        prop("shell", Text),
        Attr { name: "password", role: Role::Property, shape: Text, sensitive: true },
        prop("password_min_age", Int),
        prop("password_max_age", Int),
        prop("password_warn_days", Int),
        prop("groups", Set),
        prop("expiry", Text),
        param("name", Text),
        param("membership", Text),
        param("system", Bool),
        param("allowdupe", Bool),
        param("managehome", Bool),
        param("forcelocal", Bool),
    ],
    unsupported: &[
        "roles",
        "auths",
        "profiles",
        "keys",
        "project",
        "attributes",
        "salt",
        "iterations",
        "loginclass",
        "role_membership",
        "auth_membership",
        "profile_membership",
        "key_membership",
        "attribute_membership",
        "ia_load_module",
        "purge_ssh_keys",
    ],
    providers: &["useradd"],
};

static GROUP: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("gid", Int),
        prop("members", Set),
        param("name", Text),
        param("auth_membership", Bool),
        param("allowdupe", Bool),
        param("system", Bool),
        param("forcelocal", Bool),
    ],
    unsupported: &["attributes", "attribute_membership", "ia_load_module"],
    providers: &["groupadd"],
};

static PACKAGE: Spec = Spec {
    namevar: "name",
    ensure: &[
        ("present", "present"),
        ("installed", "present"),
        ("absent", "absent"),
        ("purged", "purged"),
        ("latest", "latest"),
    ],
    ensure_free: true,
    attrs: &[
        prop("ensure", Text),
        prop("mark", Text),
        param("name", Text),
        param("source", Text),
        param("install_options", List),
        param("uninstall_options", List),
    ],
    unsupported: &[
        "package_settings",
        "flavor",
        "command",
        "instance",
        "status",
        "adminfile",
        "responsefile",
        "configfiles",
        "category",
        "platform",
        "root",
        "vendor",
        "description",
        "allowcdrom",
        "enable_only",
        "install_only",
        "allow_virtual",
        "reinstall_on_refresh",
    ],
    providers: &["apt", "dpkg"],
};

static SERVICE: Spec = Spec {
    namevar: "name",
    ensure: &[
        ("running", "running"),
        ("true", "running"),
        ("stopped", "stopped"),
        ("false", "stopped"),
    ],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("enable", Text),
        param("name", Text),
        param("hasstatus", Bool),
        param("start", Text),
        param("stop", Text),
        param("status", Text),
        param("pattern", Text),
        param("binary", Text),
    ],
    // `restart`/`hasrestart` act on refresh events, which a lone resource never receives.
    unsupported: &[
        "flags",
        "logonaccount",
        "logonpassword",
        "manifest",
        "control",
        "path",
        "timeout",
        "restart",
        "hasrestart",
    ],
    providers: &["systemd", "debian"],
};

static FILE: Spec = Spec {
    namevar: "path",
    ensure: &[
        ("present", "present"),
        ("file", "file"),
        ("directory", "directory"),
        ("link", "link"),
        ("absent", "absent"),
        ("false", "absent"),
    ],
    ensure_free: true,
    attrs: &[
        prop("ensure", Text),
        prop("content", Text),
        prop("target", Text),
        prop("owner", IntOrName),
        prop("group", IntOrName),
        prop("mode", Text),
        param("path", Text),
        param("source", Text),
        param("backup", Text),
        param("replace", Bool),
        param("force", Bool),
        param("checksum", Text),
        param("validate_cmd", Text),
        param("validate_replacement", Text),
    ],
    unsupported: &[
        "recurse",
        "recurselimit",
        "max_files",
        "ignore",
        "links",
        "purge",
        "sourceselect",
        "show_diff",
        "staging_location",
        "source_permissions",
        "checksum_value",
        "seluser",
        "selrole",
        "seltype",
        "selrange",
        "selinux_ignore_defaults",
        "ctime",
        "mtime",
        "type",
    ],
    providers: &["posix"],
};

static EXEC: Spec = Spec {
    namevar: "command",
    ensure: &[],
    ensure_free: false,
    attrs: &[
        prop("returns", List),
        param("command", Text),
        param("path", List),
        param("user", Text),
        param("group", Text),
        param("cwd", Text),
        param("environment", List),
        param("timeout", Int),
        param("tries", Int),
        param("try_sleep", Int),
        param("creates", List),
        param("unless", List),
        param("onlyif", List),
        param("logoutput", Text),
        param("umask", Text),
        param("refreshonly", Bool),
    ],
    unsupported: &["refresh"],
    providers: &["posix", "shell"],
};

static HOST: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("ip", Text),
        prop("host_aliases", List),
        prop("comment", Text),
        param("target", Text),
        param("name", Text),
    ],
    unsupported: &[],
    providers: &["parsed"],
};

static MAILALIAS: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("recipient", List),
        prop("file", Text),
        param("target", Text),
        param("name", Text),
    ],
    unsupported: &[],
    providers: &["aliases"],
};

static CRON: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("command", Text),
        prop("special", Text),
        prop("minute", List),
        prop("hour", List),
        prop("monthday", List),
        prop("month", List),
        prop("weekday", List),
        prop("environment", List),
        param("user", Text),
        param("target", Text),
        param("name", Text),
    ],
    unsupported: &[],
    providers: &["crontab"],
};

static SSH_AUTHORIZED_KEY: Spec = Spec {
    namevar: "name",
    ensure: &[("present", "present"), ("absent", "absent")],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("type", Text),
        prop("key", Text),
        prop("options", List),
        param("user", Text),
        param("target", Text),
        param("name", Text),
    ],
    unsupported: &["drop_privileges"],
    providers: &["parsed"],
};

static MOUNT: Spec = Spec {
    namevar: "name",
    ensure: &[
        ("defined", "defined"),
        ("present", "defined"),
        ("unmounted", "unmounted"),
        ("absent", "absent"),
        ("mounted", "mounted"),
    ],
    ensure_free: false,
    attrs: &[
        prop("ensure", Text),
        prop("device", Text),
        prop("fstype", Text),
        prop("options", Text),
        prop("dump", Text),
        prop("pass", Text),
        param("target", Text),
        param("name", Text),
    ],
    unsupported: &["blockdevice", "atboot", "remounts"],
    providers: &["parsed"],
};

/// Metaparameters that only mean something between resources of a catalog.
const CATALOG_METAPARAMS: &[&str] = &[
    "before",
    "require",
    "notify",
    "subscribe",
    "stage",
    "schedule",
    "alias",
    "tag",
    "audit",
    "loglevel",
];

/// A resource as asked for: the properties it should have and the parameters steering how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Its type.
    pub kind: Kind,
    /// Its title (how it is referred to: `User[rip]`).
    pub title: String,
    /// Its name on the system (the namevar's value; the title unless given).
    pub name: String,
    /// Properties it should have, canonical (`ensure` aliases resolved, numbers munged).
    pub should: BTreeMap<String, Value>,
    /// Parameters.
    pub params: BTreeMap<String, Value>,
    /// Report what would change without changing it.
    pub noop: bool,
    /// Provider asked for, if any.
    pub provider: Option<String>,
}

impl Desired {
    /// A parameter's text.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_text)
    }

    /// A boolean parameter, `default` when not given.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.param(name).map_or(default, |value| value == "true")
    }

    /// A list parameter's items (empty when not given).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.params.get(name).map(Value::items).unwrap_or_default()
    }

    /// The reference, `User[rip]`.
    pub fn reference(&self) -> String {
        format!("{}[{}]", reference_name(self.kind.name()), self.title)
    }

    /// The `ensure` asked for.
    pub fn ensure(&self) -> Option<&str> {
        self.should.get("ensure").and_then(Value::as_text)
    }
}

/// Why a resource cannot be built from what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// No attribute of that name.
    #[error("no parameter named '{attr}' for type {kind}")]
    UnknownAttribute {
        /// The type.
        kind: Kind,
        /// The attribute.
        attr: String,
    },
    /// Puppet has it, but no Linux provider manages it.
    #[error(
        "attribute '{attr}' of type {kind} is not supported by cohort (docs/resources.md lists what each type takes)"
    )]
    Unsupported {
        /// The type.
        kind: Kind,
        /// The attribute.
        attr: String,
    },
    /// A catalog relationship on a lone resource.
    #[error("'{0}' relates resources of a catalog; a single resource has none to relate to")]
    Metaparameter(String),
    /// A value that does not fit the attribute.
    #[error("invalid value for {kind} attribute '{attr}': {value:?}: {why}")]
    InvalidValue {
        /// The type.
        kind: Kind,
        /// The attribute.
        attr: String,
        /// What was given.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// The resource needs something it was not given.
    #[error("Validation of {}[{title}] failed: {why}", reference_name(kind.name()))]
    Incomplete {
        /// The type.
        kind: Kind,
        /// The title.
        title: String,
        /// What is missing.
        why: String,
    },
    /// The title is empty.
    #[error("a {0} resource needs a name")]
    NoTitle(Kind),
}

/// Converts a JSON value (from an RPC request or `attr=value` text) to an attribute value of
/// `shape`, or says why it does not fit.
fn shape_value(shape: Shape, value: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let text = |value: &J| -> Result<String, String> {
        match value {
            J::String(text) => Ok(text.clone()),
            J::Number(n) => Ok(n.to_string()),
            J::Bool(b) => Ok(b.to_string()),
            _ => Err("should be a single value".into()),
        }
    };
    match shape {
        Shape::Text => text(value).map(Value::Text),
        Shape::Int => {
            let text = text(value)?;
            text.trim()
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| "should be a whole number".into())
        }
        Shape::IntOrName => {
            let text = text(value)?;
            Ok(text.trim().parse::<i64>().map_or(Value::Text(text), Value::Int))
        }
        Shape::Bool => match text(value)?.to_ascii_lowercase().as_str() {
            "true" | "yes" => Ok(Value::Text("true".into())),
            "false" | "no" => Ok(Value::Text("false".into())),
            _ => Err("should be true or false".into()),
        },
        Shape::List | Shape::Set => match value {
            J::Array(items) => items.iter().map(text).collect::<Result<_, _>>().map(Value::List),
            J::String(joined) if joined.is_empty() => Ok(Value::List(Vec::new())),
            // A JSON list given as text (`groups='["adm","sudo"]'`), for items with commas.
            J::String(json) if json.starts_with('[') => {
                match serde_json::from_str::<Vec<String>>(json) {
                    Ok(items) => Ok(Value::List(items)),
                    Err(_) => Err("should be a JSON list of strings, or comma-separated".into()),
                }
            }
            J::String(joined) => {
                Ok(Value::List(joined.split(',').map(|s| s.trim().to_owned()).collect()))
            }
            other => Ok(Value::List(vec![text(other)?])),
        },
    }
}

impl Desired {
    /// Builds a resource of `kind` titled `title` from attributes as given (strings, numbers,
    /// lists), checking every name and value; `noop` and `provider` are taken out.
    pub fn build(
        kind: Kind,
        title: &str,
        attrs: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Desired, ResourceError> {
        let spec = kind.spec();
        if title.is_empty() {
            return Err(ResourceError::NoTitle(kind));
        }
        let mut desired = Desired {
            kind,
            title: title.to_owned(),
            name: title.to_owned(),
            should: BTreeMap::new(),
            params: BTreeMap::new(),
            noop: false,
            provider: None,
        };
        for (name, raw) in attrs {
            let invalid = |why: String| ResourceError::InvalidValue {
                kind,
                attr: name.clone(),
                value: match raw {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                },
                why,
            };
            match name.as_str() {
                "noop" => {
                    desired.noop = shape_value(Shape::Bool, raw).map_err(invalid)?
                        == Value::Text("true".into());
                    continue;
                }
                "provider" => {
                    let Value::Text(provider) = shape_value(Shape::Text, raw).map_err(invalid)?
                    else {
                        continue;
                    };
                    if !spec.providers.contains(&provider.as_str()) {
                        return Err(invalid(format!(
                            "providers for {kind} here are {}",
                            spec.providers.join(", ")
                        )));
                    }
                    desired.provider = Some(provider);
                    continue;
                }
                meta if CATALOG_METAPARAMS.contains(&meta) => {
                    return Err(ResourceError::Metaparameter(meta.to_owned()));
                }
                _ => {}
            }
            let Some(attr) = spec.attr(name) else {
                if spec.unsupported.contains(&name.as_str()) {
                    return Err(ResourceError::Unsupported { kind, attr: name.clone() });
                }
                return Err(ResourceError::UnknownAttribute { kind, attr: name.clone() });
            };
            let mut value = shape_value(attr.shape, raw).map_err(invalid)?;
            if attr.name == "ensure" {
                let given = value.flat();
                value = match spec.ensure.iter().find(|(alias, _)| *alias == given) {
                    Some((_, canonical)) => Value::Text((*canonical).to_owned()),
                    None if spec.ensure_free && !given.is_empty() => Value::Text(given),
                    None => {
                        let allowed: Vec<&str> = spec.ensure.iter().map(|(a, _)| *a).collect();
                        return Err(invalid(format!("valid values are {}", allowed.join(", "))));
                    }
                };
            }
            check_value(kind, attr.name, &value).map_err(invalid)?;
            if attr.name == spec.namevar {
                desired.name = value.flat();
                if attr.role == Role::Parameter {
                    continue;
                }
            }
            match attr.role {
                Role::Property => desired.should.insert(name.clone(), value),
                Role::Parameter => desired.params.insert(name.clone(), value),
            };
        }
        check_resource(&mut desired)?;
        Ok(desired)
    }
}

fn is_octal_mode(mode: &str) -> bool {
    (3..=4).contains(&mode.len()) && mode.chars().all(|c| ('0'..='7').contains(&c))
}

/// Normalises an octal mode to Puppet's four digits: `644` → `0644`.
pub fn normal_mode(mode: &str) -> String {
    format!("{mode:0>4}")
}

/// Shell metacharacters that only mean something to a shell.
pub fn shell_syntax(command: &str) -> Option<&'static str> {
    const SYNTAX: &[&str] = &[">", "<", "|", ";", "&", "$(", "`", "*", "?", "~", "${", "\n"];
    let mut quoted = None;
    let mut chars = command.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match (quoted, c) {
            (None, '\'' | '"') => quoted = Some(c),
            (Some(q), c) if c == q => quoted = None,
            (Some('"'), '$') if command[at..].starts_with("$(") => return Some("$("),
            (None, '\\') => {
                chars.next();
            }
            (None, _) => {
                if let Some(token) = SYNTAX.iter().find(|token| command[at..].starts_with(**token))
                {
                    return Some(token);
                }
            }
            _ => {}
        }
    }
    None
}

/// `Ok` when `ok`, else `why`.
fn require(ok: bool, why: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why.to_owned()) }
}

/// `Ok` when `text` is one of `allowed`.
fn one_of(text: &str, allowed: &[&str]) -> Result<(), String> {
    require(allowed.contains(&text), &format!("valid values are {}", allowed.join(", ")))
}

fn absolute(path: &str) -> Result<(), String> {
    require(path.starts_with('/'), "should be an absolute path")
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn is_date(text: &str) -> bool {
    text.len() == 10
        && text
            .char_indices()
            .all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() })
}

const CRON_SPECIAL: &[&str] =
    &["reboot", "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"];

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
];

/// Checks one attribute's value on its own.
fn check_value(kind: Kind, attr: &str, value: &Value) -> Result<(), String> {
    let text = value.flat();
    let items = value.items();
    match (kind, attr) {
        (Kind::User | Kind::Group, "name") => require(
            !text.contains([':', ',']) && !text.chars().any(char::is_whitespace),
            "names cannot contain ':', ',' or blanks",
        ),
        (Kind::User, "password") => require(!text.contains(':'), "passwords cannot include ':'"),
        (Kind::User, "groups") | (Kind::Group, "members") => require(
            items.iter().all(|g| !g.is_empty() && !g.contains(':')),
            "should be names, one per list item",
        ),
        (Kind::User, "membership") => one_of(&text, &["minimum", "inclusive"]),
        (Kind::User, "shell" | "home") => absolute(&text),
        (Kind::User, "expiry") => {
            require(text == "absent" || is_date(&text), "should be YYYY-MM-DD or absent")
        }
        (Kind::User | Kind::Group, "uid" | "gid") => {
            require(!matches!(value, Value::Int(n) if *n < 0), "should be 0 or more")
        }
        (Kind::Package, "mark") => one_of(&text, &["hold", "none"]),
        (Kind::Package | Kind::File, "source") => {
            absolute(text.strip_prefix("file://").unwrap_or(&text)).map_err(|_| {
                "only local sources (an absolute path or file:// URL) are supported".into()
            })
        }
        (Kind::Service, "enable") => one_of(&text, &["true", "false", "manual", "mask"]),
        (Kind::File, "path")
        | (Kind::Exec, "cwd")
        | (Kind::Host | Kind::Mailalias | Kind::Mount | Kind::SshAuthorizedKey, "target") => {
            absolute(&text)
        }
        (Kind::File, "mode") => {
            require(is_octal_mode(&text), "should be an octal mode such as '0644'")
        }
        (Kind::File, "checksum") => one_of(&text, &["sha256"]),
        (Kind::Exec, "returns") => {
            require(items.iter().all(|code| code.parse::<i32>().is_ok()), "should be exit codes")
        }
        (Kind::Exec, "logoutput") => one_of(&text, &["true", "false", "on_failure"]),
        (Kind::Exec, "environment") => {
            require(items.iter().all(|pair| pair.contains('=')), "should be NAME=value pairs")
        }
        (Kind::Exec, "umask") => require(
            (1..=4).contains(&text.len()) && text.chars().all(|c| c.is_digit(8)),
            "should be an octal umask such as '022'",
        ),
        (Kind::Exec, "creates") => items.iter().try_for_each(|path| absolute(path)),
        (Kind::Host, "ip") => {
            require(text.parse::<std::net::IpAddr>().is_ok(), "should be an IPv4 or IPv6 address")
        }
        (Kind::Host, "name" | "host_aliases") => match items.iter().find(|n| !is_hostname(n)) {
            Some(bad) => Err(format!("{bad:?} is not a valid hostname")),
            None => Ok(()),
        },
        (Kind::Host | Kind::Mailalias, "comment" | "recipient" | "name") => {
            require(!text.contains('\n'), "cannot span lines")
        }
        (Kind::Cron, "special") => one_of(&text, CRON_SPECIAL),
        (Kind::Cron, "minute" | "hour" | "monthday" | "month" | "weekday") => {
            let bad = items.iter().find(|f| {
                f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || "*/-".contains(c))
            });
            match bad {
                Some(bad) => Err(format!("{bad:?} is not a cron time field")),
                None => Ok(()),
            }
        }
        (Kind::Cron, "command" | "environment") => {
            require(!text.contains('\n'), "cannot span lines")
        }
        (Kind::SshAuthorizedKey, "type") => require(
            SSH_KEY_TYPES.contains(&text.as_str()) || text.ends_with("-cert-v01@openssh.com"),
            &format!("valid values are {}", SSH_KEY_TYPES.join(", ")),
        ),
        (Kind::SshAuthorizedKey, "key") => require(
            !text.is_empty()
                && text.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)),
            "should be the base64 key alone, without type or comment",
        ),
        (Kind::SshAuthorizedKey, "name") => {
            require(!text.chars().any(char::is_whitespace), "cannot contain blanks")
        }
        (Kind::Mount, "dump") => one_of(&text, &["0", "1", "2"]),
        (Kind::Mount, "pass") => require(text.parse::<u32>().is_ok(), "should be a number"),
        (Kind::Mount, "name") => absolute(&text),
        (Kind::Mount, "device" | "fstype" | "options") => require(
            !text.is_empty() && !text.chars().any(char::is_whitespace),
            "cannot be empty or contain blanks",
        ),
        _ => Ok(()),
    }
}

/// Rules between attributes, and defaults Puppet applies.
fn check_resource(desired: &mut Desired) -> Result<(), ResourceError> {
    let kind = desired.kind;
    let incomplete =
        |why: String| ResourceError::Incomplete { kind, title: desired.title.clone(), why };
    // Puppet's `ensure` defaults: packages are installed unless told otherwise; the plainly
    // ensurable types are present as soon as any property is managed.
    if desired.ensure().is_none() {
        let managed = desired.should.keys().any(|p| p != "ensure");
        let default = match kind {
            Kind::Package => Some("present"),
            Kind::User
            | Kind::Group
            | Kind::Host
            | Kind::Mailalias
            | Kind::Cron
            | Kind::SshAuthorizedKey
                if managed =>
            {
                Some("present")
            }
            _ => None,
        };
        if let Some(default) = default {
            desired.should.insert("ensure".into(), default.into());
        }
    }
    match kind {
        Kind::File => {
            if !desired.name.starts_with('/') {
                return Err(ResourceError::InvalidValue {
                    kind,
                    attr: "path".into(),
                    value: desired.name.clone(),
                    why: "should be an absolute path".into(),
                });
            }
            // `ensure => '/some/target'` is a link to it.
            if let Some(ensure) = desired.ensure()
                && !FILE.ensure.iter().any(|(alias, _)| *alias == ensure)
            {
                let target = ensure.to_owned();
                desired.should.insert("ensure".into(), "link".into());
                desired.should.insert("target".into(), target.into());
            }
            let has_content =
                desired.should.contains_key("content") || desired.params.contains_key("source");
            if has_content && desired.ensure().is_none() {
                desired.should.insert("ensure".into(), "file".into());
            }
            if desired.should.contains_key("content") && desired.params.contains_key("source") {
                return Err(incomplete(
                    "You cannot specify more than one of content, source".into(),
                ));
            }
            if let Some(mode) = desired.should.get_mut("mode") {
                *mode = Value::Text(normal_mode(&mode.flat()));
            }
            if desired.ensure() == Some("link") && !desired.should.contains_key("target") {
                return Err(incomplete("ensure => link needs a target".into()));
            }
        }
        Kind::Exec => {
            let command = desired.name.clone();
            let path_given = !desired.list("path").is_empty();
            let shell = desired.provider.as_deref() == Some("shell");
            for (what, commands) in [
                ("command", vec![command]),
                ("unless", desired.list("unless")),
                ("onlyif", desired.list("onlyif")),
            ] {
                for command in commands {
                    let program = command.split_whitespace().next().unwrap_or_default();
                    if program.is_empty() {
                        return Err(incomplete(format!("{what} is empty")));
                    }
                    if !shell && !path_given && !program.starts_with('/') {
                        return Err(incomplete(format!(
                            "'{program}' is not qualified and no path was specified. Please qualify the command or specify a path."
                        )));
                    }
                }
            }
            desired.should.entry("returns".into()).or_insert_with(|| Value::List(vec!["0".into()]));
        }
        Kind::Package
            if desired.provider.as_deref() == Some("dpkg")
                && !desired.params.contains_key("source")
                && desired.ensure().is_some_and(|e| !kind.is_absent(e)) =>
        {
            return Err(incomplete("the dpkg provider installs from a source (.deb path)".into()));
        }
        Kind::SshAuthorizedKey => {
            if desired.ensure() != Some("absent")
                && (!desired.should.contains_key("key") || !desired.should.contains_key("type"))
            {
                return Err(incomplete("a key needs both 'type' and 'key'".into()));
            }
            if !desired.params.contains_key("user") && !desired.params.contains_key("target") {
                return Err(incomplete("a key needs a 'user' (or a 'target' file)".into()));
            }
        }
        Kind::Cron => {
            if desired.should.contains_key("special")
                && ["minute", "hour", "monthday", "month", "weekday"]
                    .iter()
                    .any(|field| desired.should.contains_key(*field))
            {
                return Err(incomplete("'special' cannot be combined with time fields".into()));
            }
            if desired.ensure() != Some("absent") && !desired.should.contains_key("command") {
                return Err(incomplete("a cron job needs a command".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn builds_and_munges() {
        let user = Desired::build(
            Kind::User,
            "rip",
            &attrs(&[
                ("ensure", json!("present")),
                ("uid", json!("1005")),
                ("groups", json!("adm,sudo")),
                ("managehome", json!("true")),
                ("noop", json!(true)),
            ]),
        )
        .unwrap();
        assert_eq!(user.should["uid"], Value::Int(1005));
        assert_eq!(user.should["groups"], Value::List(vec!["adm".into(), "sudo".into()]));
        assert!(user.flag("managehome", false));
        assert!(user.noop);
        assert_eq!(user.reference(), "User[rip]");
    }

    #[test]
    fn errors_name_the_attribute_and_value() {
        let err = Desired::build(Kind::User, "rip", &attrs(&[("colour", json!("red"))]));
        assert_eq!(err.unwrap_err().to_string(), "no parameter named 'colour' for type user");
        let err = Desired::build(Kind::User, "rip", &attrs(&[("uid", json!("abc"))]));
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid value for user attribute 'uid': \"abc\": should be a whole number"
        );
        let err = Desired::build(Kind::Service, "x", &attrs(&[("ensure", json!("up"))]));
        assert!(err.unwrap_err().to_string().contains("valid values are running, true"));
        let err = Desired::build(Kind::User, "x", &attrs(&[("roles", json!("a"))]));
        assert!(matches!(err, Err(ResourceError::Unsupported { .. })));
        let err = Desired::build(Kind::User, "x", &attrs(&[("require", json!("a"))]));
        assert!(matches!(err, Err(ResourceError::Metaparameter(_))));
        let err = Desired::build(Kind::Host, "x", &attrs(&[("ip", json!("10.0.0.300"))]));
        assert!(err.unwrap_err().to_string().contains("'ip'"));
        let err = Desired::build(Kind::User, "x", &attrs(&[("provider", json!("ldap"))]));
        assert!(err.unwrap_err().to_string().contains("useradd"));
    }

    #[test]
    fn exec_commands_must_be_qualified_without_a_path() {
        let err = Desired::build(Kind::Exec, "echo hi", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Validation of Exec[echo hi] failed: 'echo' is not qualified and no path was specified. Please qualify the command or specify a path."
        );
        let ok = Desired::build(Kind::Exec, "echo hi", &attrs(&[("path", json!("/bin"))])).unwrap();
        assert_eq!(ok.should["returns"], Value::List(vec!["0".into()]));
        Desired::build(Kind::Exec, "echo hi", &attrs(&[("provider", json!("shell"))])).unwrap();
    }

    #[test]
    fn file_rules() {
        let link = Desired::build(Kind::File, "/tmp/l", &attrs(&[("ensure", json!("/etc/hosts"))]))
            .unwrap();
        assert_eq!(link.should["ensure"], Value::from("link"));
        assert_eq!(link.should["target"], Value::from("/etc/hosts"));
        let mode = Desired::build(Kind::File, "/tmp/f", &attrs(&[("mode", json!("644"))])).unwrap();
        assert_eq!(mode.should["mode"], Value::from("0644"));
        let err = Desired::build(Kind::File, "/tmp/f", &attrs(&[("mode", json!("u+rwx"))]));
        assert!(err.unwrap_err().to_string().contains("octal"));
        let err = Desired::build(Kind::File, "relative", &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("absolute"));
        let err = Desired::build(
            Kind::File,
            "/tmp/f",
            &attrs(&[("content", json!("x")), ("source", json!("/etc/hosts"))]),
        );
        assert!(err.unwrap_err().to_string().contains("more than one of content, source"));
    }

    #[test]
    fn shell_syntax_outside_quotes() {
        assert_eq!(shell_syntax("/bin/date > /tmp/date"), Some(">"));
        assert_eq!(shell_syntax("/bin/echo 'a > b'"), None);
        assert_eq!(shell_syntax("/bin/echo \"$(id)\""), Some("$("));
        assert_eq!(shell_syntax("/usr/bin/test -f /etc/hosts"), None);
        assert_eq!(shell_syntax("a && b"), Some("&"));
    }

    #[test]
    fn ensure_aliases_and_reference_names() {
        let svc =
            Desired::build(Kind::Service, "ssh", &attrs(&[("ensure", json!("true"))])).unwrap();
        assert_eq!(svc.ensure(), Some("running"));
        let pkg = Desired::build(Kind::Package, "bash", &attrs(&[("ensure", json!("installed"))]))
            .unwrap();
        assert_eq!(pkg.ensure(), Some("present"));
        assert_eq!(reference_name("ssh_authorized_key"), "Ssh_authorized_key");
        assert_eq!(Kind::from_name("SSH_AUTHORIZED_KEY"), Some(Kind::SshAuthorizedKey));
        assert_eq!(quote("it's"), "'it\\'s'");
    }
}
