//! NRPE's configuration, as NRPE 4 reads it (reference/boot-ral-nagios.md §C.6): `key=value`
//! lines, `#` comments; `command[name]=command line` defines a check, the last definition of a
//! name winning; `include=FILE` (or `include_file=`) is read in place; `include_dir=DIR` reads
//! every `*.cfg` below DIR, recursively, here in name order so the result does not depend on the
//! file system's. Other keys are NRPE's own and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Commands by name, and where each was defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    /// Command line by check name.
    pub commands: BTreeMap<String, String>,
    /// Problems met on the way (unreadable includes, malformed lines); reading goes on past them,
    /// as NRPE's does.
    pub warnings: Vec<String>,
}

/// Include depth beyond which a cycle is assumed.
const MAX_DEPTH: usize = 16;

/// Reads the configuration files in order (later definitions win across files too).
pub fn load(files: &[PathBuf]) -> Commands {
    let mut commands = Commands::default();
    for file in files {
        read_file(file, 0, &mut commands);
    }
    commands
}

fn read_file(path: &Path, depth: usize, out: &mut Commands) {
    if depth > MAX_DEPTH {
        out.warnings.push(format!("{}: includes nested too deep (a cycle?)", path.display()));
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            out.warnings.push(format!("{}: {err}", path.display()));
            return;
        }
    };
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

/// Substitutes `$ARG1$`..`$ARG16$` with `args` and `$$` with `$`. Arguments must be non-empty
/// and free of shell metacharacters.
pub fn substitute(command: &str, args: &[String]) -> Result<String, String> {
    if args.len() > 16 {
        return Err("at most 16 arguments".to_owned());
    }
    for arg in args {
        if arg.is_empty() {
            return Err("empty argument".to_owned());
        }
        if let Some(bad) = arg.chars().find(|c| NASTY.contains(c)) {
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
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        std::fs::write(dir.join("loop.cfg"), "include=loop.cfg\n").unwrap();
        assert!(load(&[dir.join("loop.cfg")]).warnings.iter().any(|w| w.contains("too deep")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arguments() {
        assert_eq!(
            substitute("check -w $ARG1$ -c $ARG2$ $$HOME", &["5".into(), "10".into()]).unwrap(),
            "check -w 5 -c 10 $HOME"
        );
        assert_eq!(
            substitute("x $ARG10$ $ARG1$", &(1..=10).map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap(),
            "x 10 1"
        );
        assert!(substitute("x $ARG1$", &["a;rm -rf /".into()]).is_err());
        assert!(substitute("x $ARG1$", &["$(id)".into()]).is_err());
        assert!(substitute("x $ARG1$", &[String::new()]).is_err());
    }
}
