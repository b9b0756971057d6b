//! Line-preserving editing of the files Puppet's parsed-file providers manage: `/etc/hosts`,
//! `/etc/aliases`, `/etc/fstab`, `authorized_keys` and crontabs. Every line we do not touch is
//! written back byte for byte (comments, blank lines, lines we cannot parse, untouched records);
//! a changed record is re-rendered in place, a new one appended, a removed one dropped. This is
//! a superset of Puppet's behaviour, which also re-renders untouched records, adds a HEADER
//! banner and fails outright on a line it cannot parse. Pure: text in, text out.

use crate::change::State;
use crate::model::Value;

/// One line (or, for continuation lines and cron jobs, one group of lines) of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<R> {
    /// Kept verbatim.
    Text(String),
    /// A record; `raw` is its text as read, `None` once changed (then rendered).
    Record {
        /// Its text as read.
        raw: Option<String>,
        /// The parsed record.
        record: R,
    },
}

/// A file format: how lines become records and records become lines.
pub trait Format {
    /// A parsed record.
    type Record: Clone + PartialEq;
    /// Splits `text` into verbatim lines and records.
    fn split(text: &str) -> Vec<Line<Self::Record>>;
    /// The canonical text of a record (without a final newline).
    fn render(record: &Self::Record) -> String;
    /// The record's name (the resource's title), if it has one.
    fn name(record: &Self::Record) -> Option<&str>;
}

/// A parsed file.
#[derive(Debug, Clone)]
pub struct Document<F: Format> {
    lines: Vec<Line<F::Record>>,
    trailing_newline: bool,
}

impl<F: Format> Document<F> {
    /// Parses a file's text (an empty string for a file that does not exist).
    pub fn parse(text: &str) -> Document<F> {
        Document {
            lines: F::split(text),
            trailing_newline: text.is_empty() || text.ends_with('\n'),
        }
    }

    /// Every record, in file order.
    pub fn records(&self) -> impl Iterator<Item = &F::Record> {
        self.lines.iter().filter_map(|line| match line {
            Line::Record { record, .. } => Some(record),
            Line::Text(_) => None,
        })
    }

    /// The first record named `name`.
    pub fn find(&self, name: &str) -> Option<&F::Record> {
        self.records().find(|record| F::name(record) == Some(name))
    }

    /// Replaces the first record named like `record` (dropping any later duplicates), or
    /// appends it.
    pub fn set(&mut self, record: F::Record) {
        let name = F::name(&record).map(str::to_owned);
        let mut placed = false;
        let mut kept = Vec::with_capacity(self.lines.len() + 1);
        for line in self.lines.drain(..) {
            match line {
                Line::Record { record: old, raw }
                    if name.is_some() && F::name(&old) == name.as_deref() =>
                {
                    if !placed {
                        placed = true;
                        if old == record {
                            kept.push(Line::Record { raw, record: old });
                        } else {
                            kept.push(Line::Record { raw: None, record: record.clone() });
                        }
                    }
                }
                other => kept.push(other),
            }
        }
        if !placed {
            kept.push(Line::Record { raw: None, record });
        }
        self.lines = kept;
    }

    /// Removes every record named `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|line| match line {
            Line::Record { record, .. } => F::name(record) != Some(name),
            Line::Text(_) => true,
        });
        self.lines.len() != before
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (at, line) in self.lines.iter().enumerate() {
            match line {
                Line::Text(text) => out.push_str(text),
                Line::Record { raw: Some(raw), .. } => out.push_str(raw),
                Line::Record { raw: None, record } => out.push_str(&F::render(record)),
            }
            if at + 1 < self.lines.len() || self.trailing_newline {
                out.push('\n');
            }
        }
        out
    }
}

fn plain_lines<R>(text: &str, parse: impl Fn(&str) -> Option<R>) -> Vec<Line<R>> {
    lines_of(text)
        .map(|line| match parse(line) {
            Some(record) => Line::Record { raw: Some(line.to_owned()), record },
            None => Line::Text(line.to_owned()),
        })
        .collect()
}

fn lines_of(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n').filter(move |_| !text.is_empty())
}

/// Splits on `sep` outside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == sep && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

// --- /etc/hosts ---------------------------------------------------------------------------

/// An `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// Address.
    pub ip: String,
    /// Canonical name.
    pub name: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// Text after `#`.
    pub comment: Option<String>,
}

/// `/etc/hosts`.
#[derive(Debug)]
pub struct Hosts;

impl Format for Hosts {
    type Record = HostRecord;

    fn split(text: &str) -> Vec<Line<HostRecord>> {
        plain_lines(text, |line| {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return None;
            }
            let (fields, comment) = match line.split_once('#') {
                Some((fields, comment)) => (fields, Some(comment.trim().to_owned())),
                None => (line, None),
            };
            let mut words = fields.split_whitespace();
            let ip = words.next()?;
            if !ip.starts_with(|c: char| c.is_ascii_hexdigit() || c == ':') {
                return None;
            }
            let name = words.next()?;
            Some(HostRecord {
                ip: ip.to_owned(),
                name: name.to_owned(),
                aliases: words.map(str::to_owned).collect(),
                comment: comment.filter(|c| !c.is_empty()),
            })
        })
    }

    fn render(record: &HostRecord) -> String {
        let mut out = format!("{}\t{}", record.ip, record.name);
        if !record.aliases.is_empty() {
            out.push('\t');
            out.push_str(&record.aliases.join(" "));
        }
        if let Some(comment) = &record.comment {
            out.push_str("\t# ");
            out.push_str(comment);
        }
        out
    }

    fn name(record: &HostRecord) -> Option<&str> {
        Some(&record.name)
    }
}

impl HostRecord {
    /// The resource state it stands for.
    pub fn state(&self) -> State {
        let mut state = State::new();
        state.insert("ensure".into(), "present".into());
        state.insert("ip".into(), self.ip.clone().into());
        if !self.aliases.is_empty() {
            state.insert("host_aliases".into(), Value::List(self.aliases.clone()));
        }
        if let Some(comment) = &self.comment {
            state.insert("comment".into(), comment.clone().into());
        }
        state
    }
}

// --- /etc/aliases -------------------------------------------------------------------------

/// An `/etc/aliases` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// Alias name.
    pub name: String,
    /// Recipients, unquoted.
    pub recipients: Vec<String>,
    /// `:include:` file.
    pub file: Option<String>,
}

/// `/etc/aliases` (continuation lines belong to the entry above them).
#[derive(Debug)]
pub struct Aliases;

fn parse_alias(logical: &str) -> Option<AliasRecord> {
    let trimmed = logical.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || logical.starts_with([' ', '\t']) {
        return None;
    }
    let (name, value) = logical.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let value = value.trim();
    if let Some(path) = value.strip_prefix(":include:") {
        return Some(AliasRecord {
            name: name.to_owned(),
            recipients: Vec::new(),
            file: Some(path.trim().to_owned()),
        });
    }
    let recipients = split_outside_quotes(value, ',')
        .into_iter()
        .map(|r| r.trim().trim_matches('"').to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    Some(AliasRecord { name: name.to_owned(), recipients, file: None })
}

impl Format for Aliases {
    type Record = AliasRecord;

    fn split(text: &str) -> Vec<Line<AliasRecord>> {
        let mut out: Vec<Line<AliasRecord>> = Vec::new();
        for line in lines_of(text) {
            let continues = line.starts_with([' ', '\t']) && !line.trim().is_empty();
            if continues && let Some(Line::Record { raw: Some(raw), record }) = out.last_mut() {
                raw.push('\n');
                raw.push_str(line);
                let logical = raw.replace("\n", " ");
                if let Some(joined) = parse_alias(&logical) {
                    *record = joined;
                }
                continue;
            }
            match parse_alias(line) {
                Some(record) => out.push(Line::Record { raw: Some(line.to_owned()), record }),
                None => out.push(Line::Text(line.to_owned())),
            }
        }
        out
    }

    fn render(record: &AliasRecord) -> String {
        if let Some(file) = &record.file {
            return format!("{}: :include: {file}", record.name);
        }
        let quoted: Vec<String> = record
            .recipients
            .iter()
            .map(|r| {
                if r.chars().all(|c| c.is_alphanumeric() || "-+_@.".contains(c)) {
                    r.clone()
                } else {
                    format!("\"{r}\"")
                }
            })
            .collect();
        format!("{}: {}", record.name, quoted.join(","))
    }

    fn name(record: &AliasRecord) -> Option<&str> {
        Some(&record.name)
    }
}

impl AliasRecord {
    /// The resource state it stands for.
    pub fn state(&self) -> State {
        let mut state = State::new();
        state.insert("ensure".into(), "present".into());
        match &self.file {
            Some(file) => state.insert("file".into(), file.clone().into()),
            None => state.insert("recipient".into(), Value::List(self.recipients.clone())),
        };
        state
    }
}

// --- /etc/fstab ---------------------------------------------------------------------------

/// An `/etc/fstab` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabRecord {
    /// What is mounted.
    pub device: String,
    /// Where (the resource's name).
    pub name: String,
    /// File system type.
    pub fstype: String,
    /// Mount options.
    pub options: String,
    /// dump field.
    pub dump: String,
    /// fsck pass.
    pub pass: String,
}

/// `/etc/fstab`.
#[derive(Debug)]
pub struct Fstab;

impl Format for Fstab {
    type Record = FstabRecord;

    fn split(text: &str) -> Vec<Line<FstabRecord>> {
        plain_lines(text, |line| {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return None;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if !(4..=6).contains(&words.len()) {
                return None;
            }
            Some(FstabRecord {
                device: words[0].to_owned(),
                name: words[1].to_owned(),
                fstype: words[2].to_owned(),
                options: words[3].to_owned(),
                dump: words.get(4).copied().unwrap_or("0").to_owned(),
                pass: words.get(5).copied().unwrap_or("0").to_owned(),
            })
        })
    }

    fn render(r: &FstabRecord) -> String {
        format!("{}\t{}\t{}\t{}\t{}\t{}", r.device, r.name, r.fstype, r.options, r.dump, r.pass)
    }

    fn name(record: &FstabRecord) -> Option<&str> {
        Some(&record.name)
    }
}

impl FstabRecord {
    /// The properties it stands for (the provider adds whether it is mounted).
    pub fn state(&self) -> State {
        [
            ("device", &self.device),
            ("fstype", &self.fstype),
            ("options", &self.options),
            ("dump", &self.dump),
            ("pass", &self.pass),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Text(v.clone())))
        .collect()
    }
}

// --- authorized_keys ----------------------------------------------------------------------

/// An `authorized_keys` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Options (`from="…"`, `no-pty`).
    pub options: Vec<String>,
    /// Key type.
    pub key_type: String,
    /// Base64 key.
    pub key: String,
    /// Comment: the resource's name.
    pub name: String,
}

/// `authorized_keys`.
#[derive(Debug)]
pub struct AuthorizedKeys;

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-")
}

/// Splits off the first word, a blank outside double quotes ending it.
fn first_word(line: &str) -> (&str, &str) {
    let mut quoted = false;
    for (at, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&line[..at], line[at..].trim_start()),
            _ => {}
        }
    }
    (line, "")
}

impl Format for AuthorizedKeys {
    type Record = KeyRecord;

    fn split(text: &str) -> Vec<Line<KeyRecord>> {
        plain_lines(text, |line| {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return None;
            }
            let (first, rest) = first_word(trimmed);
            let (options, rest) = if is_key_type(first) {
                (Vec::new(), trimmed)
            } else {
                (split_outside_quotes(first, ','), rest)
            };
            let mut words = rest.splitn(3, char::is_whitespace);
            let key_type = words.next()?.to_owned();
            let key = words.next()?.to_owned();
            let name = words.next().unwrap_or("").trim().to_owned();
            is_key_type(&key_type).then_some(KeyRecord { options, key_type, key, name })
        })
    }

    fn render(r: &KeyRecord) -> String {
        let mut out = String::new();
        if !r.options.is_empty() {
            out.push_str(&r.options.join(","));
            out.push(' ');
        }
        out.push_str(&format!("{} {} {}", r.key_type, r.key, r.name));
        out
    }

    fn name(record: &KeyRecord) -> Option<&str> {
        (!record.name.is_empty()).then_some(record.name.as_str())
    }
}

impl KeyRecord {
    /// The resource state it stands for.
    pub fn state(&self) -> State {
        let mut state = State::new();
        state.insert("ensure".into(), "present".into());
        state.insert("type".into(), self.key_type.clone().into());
        state.insert("key".into(), self.key.clone().into());
        if !self.options.is_empty() {
            state.insert("options".into(), Value::List(self.options.clone()));
        }
        state
    }
}

// --- crontabs -----------------------------------------------------------------------------

/// A crontab job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRecord {
    /// From the `# Puppet Name:` comment above it; unnamed jobs are not managed.
    pub name: Option<String>,
    /// `NAME=value` lines between the name comment and the job.
    pub environment: Vec<String>,
    /// `@reboot`, `@daily`, … (without `@`).
    pub special: Option<String>,
    /// minute, hour, monthday, month, weekday; each a list (`*` = any).
    pub times: [Vec<String>; 5],
    /// The command.
    pub command: String,
}

/// The five time fields' property names.
pub const CRON_FIELDS: [&str; 5] = ["minute", "hour", "monthday", "month", "weekday"];

/// A crontab (as `crontab -l` prints it).
#[derive(Debug)]
pub struct Crontab;

fn parse_job(line: &str) -> Option<(Option<String>, [Vec<String>; 5], String)> {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix('@') {
        let (special, command) = rest.split_once(char::is_whitespace)?;
        return Some((Some(special.to_owned()), Default::default(), command.trim().to_owned()));
    }
    let mut rest = trimmed;
    let mut times: [Vec<String>; 5] = Default::default();
    for field in &mut times {
        let (word, after) = rest.split_once(char::is_whitespace)?;
        if !word.chars().all(|c| c.is_ascii_alphanumeric() || ",*/-".contains(c)) {
            return None;
        }
        *field = word.split(',').map(str::to_owned).collect();
        rest = after.trim_start();
    }
    (!rest.is_empty()).then(|| (None, times, rest.to_owned()))
}

fn is_env_line(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.starts_with('#')
        && trimmed.split_once('=').is_some_and(|(name, _)| {
            !name.trim().is_empty() && !name.trim().contains(char::is_whitespace)
        })
}

impl Format for Crontab {
    type Record = CronRecord;

    fn split(text: &str) -> Vec<Line<CronRecord>> {
        let lines: Vec<&str> = lines_of(text).collect();
        let mut out = Vec::new();
        let mut at = 0;
        while at < lines.len() {
            let line = lines[at];
            if let Some(name) = line.trim().strip_prefix("# Puppet Name:") {
                let mut end = at + 1;
                let mut environment = Vec::new();
                while end < lines.len() && is_env_line(lines[end]) {
                    environment.push(lines[end].trim().to_owned());
                    end += 1;
                }
                if let Some((special, times, command)) = lines.get(end).and_then(|l| parse_job(l)) {
                    out.push(Line::Record {
                        raw: Some(lines[at..=end].join("\n")),
                        record: CronRecord {
                            name: Some(name.trim().to_owned()),
                            environment,
                            special,
                            times,
                            command,
                        },
                    });
                    at = end + 1;
                    continue;
                }
            }
            match parse_job(line).filter(|_| !line.trim_start().starts_with('#')) {
                Some((special, times, command)) => out.push(Line::Record {
                    raw: Some(line.to_owned()),
                    record: CronRecord {
                        name: None,
                        environment: Vec::new(),
                        special,
                        times,
                        command,
                    },
                }),
                None => out.push(Line::Text(line.to_owned())),
            }
            at += 1;
        }
        out
    }

    fn render(r: &CronRecord) -> String {
        let mut out = String::new();
        if let Some(name) = &r.name {
            out.push_str(&format!("# Puppet Name: {name}\n"));
        }
        for env in &r.environment {
            out.push_str(env);
            out.push('\n');
        }
        match &r.special {
            Some(special) => out.push_str(&format!("@{special} {}", r.command)),
            None => {
                let fields: Vec<String> = r
                    .times
                    .iter()
                    .map(|f| if f.is_empty() { "*".to_owned() } else { f.join(",") })
                    .collect();
                out.push_str(&format!("{} {}", fields.join(" "), r.command));
            }
        }
        out
    }

    fn name(record: &CronRecord) -> Option<&str> {
        record.name.as_deref()
    }
}

impl CronRecord {
    /// The resource state it stands for (`*` fields left out, as Puppet shows them).
    pub fn state(&self) -> State {
        let mut state = State::new();
        state.insert("ensure".into(), "present".into());
        state.insert("command".into(), self.command.clone().into());
        if let Some(special) = &self.special {
            state.insert("special".into(), special.clone().into());
        }
        for (field, value) in CRON_FIELDS.iter().zip(&self.times) {
            if !value.is_empty() && value.as_slice() != ["*"] {
                state.insert((*field).to_owned(), Value::List(value.clone()));
            }
        }
        if !self.environment.is_empty() {
            state.insert("environment".into(), Value::List(self.environment.clone()));
        }
        state
    }

    /// The title Puppet gives a job it did not write: `unmanaged:<command>-<n>`.
    pub fn unmanaged_title(&self, n: usize) -> String {
        format!("unmanaged:{}-{n}", self.command.replace(' ', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "# hand comment\n127.0.0.1\tlocalhost\n\n::1 localhost ip6-localhost ip6-loopback   # trailing comment\ngarbage line without ip\n10.0.0.7 web1.example.com web1 www\n";

    #[test]
    fn hosts_untouched_lines_stay_byte_for_byte() {
        let mut doc = Document::<Hosts>::parse(HOSTS);
        assert_eq!(doc.render(), HOSTS);
        let web1 = doc.find("web1.example.com").unwrap().clone();
        assert_eq!(web1.aliases, ["web1", "www"]);
        doc.set(HostRecord { ip: "10.0.0.8".into(), aliases: vec!["web1".into()], ..web1 });
        doc.set(HostRecord {
            ip: "10.0.0.5".into(),
            name: "db1.example.com".into(),
            aliases: vec!["db1".into(), "database".into()],
            comment: Some("primary db".into()),
        });
        assert!(doc.remove("ip6-nothing").eq(&false));
        assert_eq!(
            doc.render(),
            "# hand comment\n127.0.0.1\tlocalhost\n\n::1 localhost ip6-localhost ip6-loopback   # trailing comment\ngarbage line without ip\n10.0.0.8\tweb1.example.com\tweb1\n10.0.0.5\tdb1.example.com\tdb1 database\t# primary db\n"
        );
        let comment = Document::<Hosts>::parse(HOSTS).find("localhost").cloned();
        assert_eq!(comment.unwrap().ip, "127.0.0.1");
    }

    #[test]
    fn setting_an_equal_record_keeps_its_text() {
        let mut doc = Document::<Hosts>::parse("10.0.0.7   web1   # x\n");
        let same = doc.find("web1").unwrap().clone();
        doc.set(same);
        assert_eq!(doc.render(), "10.0.0.7   web1   # x\n");
    }

    #[test]
    fn aliases_quotes_includes_and_continuations() {
        let text = "# comment\npostmaster: root\npipe: \"|/usr/bin/handler --x\",bob,\"/var/mail/archive\"\nteam: alice,\n  bob\nlist: :include: /etc/mail/list\n";
        let mut doc = Document::<Aliases>::parse(text);
        assert_eq!(doc.render(), text);
        assert_eq!(
            doc.find("pipe").unwrap().recipients,
            ["|/usr/bin/handler --x", "bob", "/var/mail/archive"]
        );
        assert_eq!(doc.find("team").unwrap().recipients, ["alice", "bob"]);
        assert_eq!(doc.find("list").unwrap().file.as_deref(), Some("/etc/mail/list"));
        doc.set(AliasRecord {
            name: "foo".into(),
            recipients: vec!["rip@devco.net".into()],
            file: None,
        });
        doc.set(AliasRecord { name: "team".into(), recipients: vec!["carol".into()], file: None });
        assert_eq!(
            doc.render(),
            "# comment\npostmaster: root\npipe: \"|/usr/bin/handler --x\",bob,\"/var/mail/archive\"\nteam: carol\nlist: :include: /etc/mail/list\nfoo: rip@devco.net\n"
        );
        assert_eq!(
            Aliases::render(&AliasRecord {
                name: "p".into(),
                recipients: vec!["|/bin/x y".into(), "a".into()],
                file: None
            }),
            "p: \"|/bin/x y\",a"
        );
    }

    #[test]
    fn fstab_keys_on_mount_point() {
        let text = "# /etc/fstab\nUUID=abc / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n";
        let mut doc = Document::<Fstab>::parse(text);
        let data = doc.find("/data").unwrap().clone();
        assert_eq!(data.pass, "2");
        doc.set(FstabRecord { options: "noatime".into(), ..data });
        assert!(doc.remove("/"));
        assert_eq!(doc.render(), "# /etc/fstab\n/dev/sdb1\t/data\text4\tnoatime\t0\t2\n");
    }

    #[test]
    fn authorized_keys_with_options() {
        let text = "no-port-forwarding,from=\"10.0.0.0/8, 192.168.0.0/16\" ssh-ed25519 AAAAC3Nz alice@laptop\nssh-rsa AAAAB3 bob\n# keep\n";
        let doc = Document::<AuthorizedKeys>::parse(text);
        let alice = doc.find("alice@laptop").unwrap();
        assert_eq!(alice.options, ["no-port-forwarding", "from=\"10.0.0.0/8, 192.168.0.0/16\""]);
        assert_eq!(alice.key_type, "ssh-ed25519");
        assert_eq!(doc.find("bob").unwrap().key, "AAAAB3");
        assert_eq!(doc.render(), text);
        assert_eq!(
            AuthorizedKeys::render(alice),
            "no-port-forwarding,from=\"10.0.0.0/8, 192.168.0.0/16\" ssh-ed25519 AAAAC3Nz alice@laptop"
        );
    }

    #[test]
    fn crontab_named_jobs_with_environment() {
        let text = "# DO NOT EDIT THIS FILE\nMAILTO=ops\n*/5 * * * * /usr/bin/unmanaged --flag\n# Puppet Name: backup\nPATH=/bin:/usr/bin\n0 2 * * 1,3 /usr/local/bin/backup\n";
        let mut doc = Document::<Crontab>::parse(text);
        assert_eq!(doc.render(), text);
        let backup = doc.find("backup").unwrap().clone();
        assert_eq!(backup.environment, ["PATH=/bin:/usr/bin"]);
        assert_eq!(backup.times[4], ["1", "3"]);
        let state = backup.state();
        assert_eq!(state["weekday"], Value::List(vec!["1".into(), "3".into()]));
        assert!(!state.contains_key("month"));
        let unmanaged: Vec<_> = doc.records().filter(|r| r.name.is_none()).collect();
        assert_eq!(unmanaged[0].unmanaged_title(1), "unmanaged:/usr/bin/unmanaged_--flag-1");
        doc.set(CronRecord { special: Some("daily".into()), times: Default::default(), ..backup });
        assert_eq!(
            doc.render(),
            "# DO NOT EDIT THIS FILE\nMAILTO=ops\n*/5 * * * * /usr/bin/unmanaged --flag\n# Puppet Name: backup\nPATH=/bin:/usr/bin\n@daily /usr/local/bin/backup\n"
        );
        assert!(doc.remove("backup"));
        assert_eq!(
            doc.render(),
            "# DO NOT EDIT THIS FILE\nMAILTO=ops\n*/5 * * * * /usr/bin/unmanaged --flag\n"
        );
    }

    #[test]
    fn empty_and_unterminated_files() {
        let mut doc = Document::<Hosts>::parse("");
        assert_eq!(doc.records().count(), 0);
        doc.set(HostRecord {
            ip: "10.0.0.1".into(),
            name: "a".into(),
            aliases: vec![],
            comment: None,
        });
        assert_eq!(doc.render(), "10.0.0.1\ta\n");
        let doc = Document::<Hosts>::parse("10.0.0.1 a");
        assert_eq!(doc.render(), "10.0.0.1 a");
    }
}
