//! NRPE's configuration, as NRPE 4 reads it (reference/boot-ral-nagios.md §C.6): `key=value`
//! lines, `#` comments; `command[name]=command line` defines a check, the last definition of a
//! name winning; `include=FILE` (or `include_file=`) is read in place; `include_dir=DIR` reads
//! every `*.cfg` below DIR, recursively, here in name order so the result does not depend on the
//! file system's. Other keys are NRPE's own and ignored.
//!
//! A configured path may be a file or a directory (read like `include_dir`). Without one, the
//! stock places are read ([`STOCK`]: the usual `nrpe.cfg` and `nrpe.d/` of Debian, Red Hat and
//! source installs), those that exist, so a machine with one file per check under
//! `/etc/nagios/nrpe.d/` and no NRPE daemon at all works. A file is read once however often it
//! is included or listed, at its first place in that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where NRPE's configuration usually is, in the order read when none is configured.
pub const STOCK: [&str; 6] = [
    "/etc/nagios/nrpe.cfg",
    "/etc/nagios/nrpe.d",
    "/etc/nrpe.cfg",
    "/etc/nrpe.d",
    "/usr/local/nagios/etc/nrpe.cfg",
    "/usr/local/etc/nrpe.cfg",
];

/// Commands by name, and where each was defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    /// Command line by check name.
    pub commands: BTreeMap<String, String>,
    /// The file that defined each command (its last definition).
    pub sources: BTreeMap<String, PathBuf>,
    /// Files read, so none is read twice.
    read: Vec<PathBuf>,
    /// Problems met on the way (unreadable includes, malformed lines); reading goes on past them,
    /// as NRPE's does.
    pub warnings: Vec<String>,
}

/// Include depth beyond which a cycle is assumed.
const MAX_DEPTH: usize = 16;

/// Reads the configuration files and directories in order (later definitions win across files
/// too); with none, the [`STOCK`] places that exist.
pub fn load(paths: &[PathBuf]) -> Commands {
    let mut commands = Commands::default();
    if paths.is_empty() {
        for path in STOCK.iter().map(Path::new).filter(|path| path.exists()) {
            read_path(path, &mut commands);
        }
        return commands;
    }
    for path in paths {
        read_path(path, &mut commands);
    }
    commands
}

fn read_path(path: &Path, out: &mut Commands) {
    if path.is_dir() { read_dir(path, 0, out) } else { read_file(path, 0, out) }
}

fn read_file(path: &Path, depth: usize, out: &mut Commands) {
    if depth > MAX_DEPTH {
        out.warnings.push(format!("{}: includes nested too deep (a cycle?)", path.display()));
        return;
    }
    let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if out.read.contains(&identity) {
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            out.warnings.push(format!("{}: {err}", path.display()));
            return;
        }
    };
    out.read.push(identity);
    for (idx, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            out.warnings.push(format!("{}:{}: not key=value: {line:?}", path.display(), idx + 1));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if let Some(name) = key.strip_prefix("command[").and_then(|rest| rest.strip_suffix(']')) {
            if name.is_empty() || value.is_empty() {
                out.warnings.push(format!(
                    "{}:{}: empty command name or command line",
                    path.display(),
                    idx + 1
                ));
                continue;
            }
            out.commands.insert(name.to_owned(), value.to_owned());
            out.sources.insert(name.to_owned(), path.to_owned());
            continue;
        }
        match key {
            "include" | "include_file" => read_file(&resolve(path, value), depth + 1, out),
            "include_dir" => read_dir(&resolve(path, value.trim_end_matches('/')), depth + 1, out),
            _ => {}
        }
    }
}

fn resolve(from: &Path, target: &str) -> PathBuf {
    let target = Path::new(target);
    if target.is_absolute() {
        target.to_owned()
    } else {
        from.parent().unwrap_or(Path::new("/")).join(target)
    }
}

fn read_dir(dir: &Path, depth: usize, out: &mut Commands) {
    if depth > MAX_DEPTH {
        out.warnings.push(format!("{}: includes nested too deep (a cycle?)", dir.display()));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            out.warnings.push(format!("{}: {err}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            read_dir(&path, depth + 1, out);
        } else if path.extension().is_some_and(|ext| ext == "cfg") {
            read_file(&path, depth, out);
        }
    }
}

/// Characters NRPE refuses in arguments (its default `nasty_metachars`), plus `$(`.
const NASTY: &[char] =
    &['|', '`', '&', '>', '<', '\'', '"', '\\', '[', ']', '{', '}', ';', '\r', '\n', '$'];

/// Which argument values are substituted into a command line run by `/bin/sh -c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgumentRule {
    /// Only ASCII letters, digits and `. _ : , @ % + = / -`, and `~` only as the start of a
    /// Nagios range (`~:`): nothing the shell splits (spaces), globs (`* ? [`), comments out
    /// (`#`), expands (`$`, `` ` ``, `~user`) or redirects.
    #[default]
    Strict,
    /// NRPE's own rule: anything but its `nasty_metachars` (`|`, `` ` ``, `&`, `>`, `<`, `'`,
    /// `"`, `\`, `[`, `]`, `{`, `}`, `;`, CR, LF) and `$`. Spaces still split a value into
    /// several arguments, `*` and `?` still glob, `#` still comments out the rest, `~user`
    /// still expands: only for configurations written for NRPE that rely on it.
    NrpeMetachars,
}

fn strict_refusal(arg: &str) -> Option<char> {
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        let allowed = c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | ':' | ',' | '@' | '%' | '+' | '=' | '/' | '-')
            || (c == '~' && chars.peek() == Some(&':'));
        if !allowed {
            return Some(c);
        }
    }
    None
}

/// Substitutes `$ARG1$`..`$ARG16$` with `args` and `$$` with `$`. Arguments must be non-empty
/// and allowed by `rule`.
pub fn substitute(command: &str, args: &[String], rule: ArgumentRule) -> Result<String, String> {
    if args.len() > 16 {
        return Err("at most 16 arguments".to_owned());
    }
    for arg in args {
        if arg.is_empty() {
            return Err("empty argument".to_owned());
        }
        let bad = match rule {
            ArgumentRule::Strict => strict_refusal(arg),
            ArgumentRule::NrpeMetachars => arg.chars().find(|c| NASTY.contains(c)),
        };
        if let Some(bad) = bad {
            return Err(format!("argument {arg:?} contains {bad:?}, which is not allowed"));
        }
    }
    let mut out = command.to_owned();
    // Highest first, so $ARG1$ does not eat the start of $ARG10$.
    for idx in (1..=16).rev() {
        let value = args.get(idx - 1).map_or("", String::as_str);
        out = out.replace(&format!("$ARG{idx}$"), value);
    }
    Ok(out.replace("$$", "$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_and_last_definition_wins() {
        let dir = std::env::temp_dir().join(format!("cohort-nrpe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("nrpe.d/sub")).unwrap();
        std::fs::write(
            dir.join("nrpe.cfg"),
            "# main\nserver_port=5666\ncommand[check_a]=/bin/a\ncommand[check_b] = /bin/b old\ninclude=local.cfg\ninclude_dir=nrpe.d/\nbroken line\ninclude=/nonexistent.cfg\n",
        )
        .unwrap();
        std::fs::write(dir.join("local.cfg"), "command[check_c]=/bin/c\n").unwrap();
        std::fs::write(dir.join("nrpe.d/10-b.cfg"), "command[check_b]=/bin/b new\n").unwrap();
        std::fs::write(dir.join("nrpe.d/sub/20-d.cfg"), "command[check_d]=/bin/d $ARG1$\n")
            .unwrap();
        std::fs::write(dir.join("nrpe.d/ignored.txt"), "command[check_x]=/bin/x\n").unwrap();
        let loaded = load(&[dir.join("nrpe.cfg")]);
        assert_eq!(loaded.commands["check_a"], "/bin/a");
        assert_eq!(loaded.commands["check_b"], "/bin/b new");
        assert_eq!(loaded.commands["check_c"], "/bin/c");
        assert_eq!(loaded.commands["check_d"], "/bin/d $ARG1$");
        assert!(!loaded.commands.contains_key("check_x"));
        assert_eq!(loaded.sources["check_b"], dir.join("nrpe.d/10-b.cfg"));
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        // The directory listed after the file that includes it: read once, in its first place,
        // so nrpe.cfg's own later lines still win as in NRPE.
        std::fs::write(dir.join("main.cfg"), "include_dir=nrpe.d\ncommand[check_b]=/bin/b last\n")
            .unwrap();
        let twice = load(&[dir.join("main.cfg"), dir.join("nrpe.d")]);
        assert_eq!(twice.commands["check_b"], "/bin/b last");
        assert_eq!(twice.sources["check_b"], dir.join("main.cfg"));
        std::fs::write(dir.join("loop.cfg"), "include=loop.cfg\n").unwrap();
        // A file including itself is read once: no loop, nothing defined, nothing wrong.
        let looped = load(&[dir.join("loop.cfg")]);
        assert!(looped.commands.is_empty() && looped.warnings.is_empty(), "{looped:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_of_check_files_without_nrpe_cfg() {
        let dir = tempfile::tempdir().unwrap();
        let nrpe_d = dir.path().join("nrpe.d");
        std::fs::create_dir_all(&nrpe_d).unwrap();
        // The original layout: one file per check.
        std::fs::write(
            nrpe_d.join("check_puppet_run.cfg"),
            "command[check_puppet_run]=/usr/lib/nagios/plugins/check_file_age -f /var/lib/puppet/state/state.yaml -w 5400 -c 7200\n",
        )
        .unwrap();
        std::fs::write(nrpe_d.join("check_load.cfg"), "command[check_load]=/bin/load\n").unwrap();
        let loaded = load(std::slice::from_ref(&nrpe_d));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.commands.len(), 2);
        assert!(loaded.commands["check_puppet_run"].contains("check_file_age"));
        assert_eq!(loaded.sources["check_load"], nrpe_d.join("check_load.cfg"));
    }

    #[test]
    fn arguments() {
        let strict = |cmd: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            substitute(cmd, &args, ArgumentRule::Strict)
        };
        assert_eq!(
            strict("check -w $ARG1$ -c $ARG2$ $$HOME", &["5", "10"]).unwrap(),
            "check -w 5 -c 10 $HOME"
        );
        let ten: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        assert_eq!(strict("x $ARG10$ $ARG1$", &ten).unwrap(), "x 10 1");
        // Nagios thresholds, ranges, paths, addresses and percentages pass.
        for ok in [
            "~:10",
            "@10:20",
            "10:",
            "-5",
            "80%",
            "/var/log",
            "db-1.example.com:5432",
            "a=b,c+d",
            "user@host",
        ] {
            assert!(strict("x $ARG1$", &[ok]).is_ok(), "{ok}");
        }
        // What the shell would split, glob, comment out or expand does not.
        for (bad, char) in [
            ("a;rm -rf /", ';'),
            ("$(id)", '$'),
            ("/etc/pass*", '*'),
            ("5 -x /etc/shadow", ' '),
            ("5 #", ' '),
            ("5#", '#'),
            ("~root", '~'),
            ("?", '?'),
            ("a\tb", '\t'),
            ("é", 'é'),
        ] {
            let err = strict("x $ARG1$", &[bad]).unwrap_err();
            assert_eq!(err, format!("argument {bad:?} contains {char:?}, which is not allowed"));
        }
        assert!(strict("x $ARG1$", &[""]).is_err());
        // NRPE's own rule, only when asked for: spaces and globs pass, its metacharacters not.
        let nrpe =
            |arg: &str| substitute("x $ARG1$", &[arg.to_owned()], ArgumentRule::NrpeMetachars);
        assert_eq!(nrpe("5 -x /etc/pass*").unwrap(), "x 5 -x /etc/pass*");
        assert!(nrpe("a;b").is_err() && nrpe("$(id)").is_err());
    }
}
