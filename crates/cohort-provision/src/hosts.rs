//! Pointing the `puppet` host name at a master in a hosts file. The original dropped every
//! line *containing* "puppet" (`puppetdb`, comments, `# managed by puppet`) and appended its
//! own; here only the name `puppet` moves: it is taken off any line that lists it, a line left
//! with no name is dropped, and one `ADDRESS\tpuppet` line is added. Every other line,
//! comment and blank stays byte for byte, and a file already right is not rewritten.

/// The name managed.
pub const NAME: &str = "puppet";

/// The new text of a hosts file whose `puppet` should be `address`; `None` when it already is
/// (exactly one line names it, with that address and no other name).
pub fn point_puppet_at(text: &str, address: &str) -> Option<String> {
    let mut kept = Vec::new();
    let mut right = 0;
    let mut naming = 0;
    for line in text.lines() {
        let (entry, comment) = match line.find('#') {
            Some(at) => line.split_at(at),
            None => (line, ""),
        };
        let mut fields = entry.split_whitespace();
        let ip = fields.next();
        let names: Vec<&str> = fields.collect();
        if !names.contains(&NAME) {
            kept.push(line.to_owned());
            continue;
        }
        naming += 1;
        if ip == Some(address) && names == [NAME] {
            right += 1;
        }
        let others: Vec<&str> = names.iter().copied().filter(|name| *name != NAME).collect();
        if others.is_empty() {
            continue;
        }
        let ip = ip.unwrap_or_default();
        let comment = if comment.is_empty() { String::new() } else { format!(" {comment}") };
        kept.push(format!("{ip}\t{}{comment}", others.join(" ")));
    }
    if naming == 1 && right == 1 {
        return None;
    }
    kept.push(format!("{address}\t{NAME}"));
    let mut out = kept.join("\n");
    out.push('\n');
    Some(out)
}

/// Whether `text` is an IPv4 or IPv6 address (what the action accepts).
pub fn is_address(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1\tlocalhost\n# puppet infrastructure below\n10.0.0.5 puppetdb.example.com puppetdb\n\n10.0.0.9 old-master puppet # was the master\n::1 localhost ip6-localhost\n";

    #[test]
    fn only_the_puppet_name_moves() {
        let out = point_puppet_at(HOSTS, "10.1.1.1").unwrap();
        assert_eq!(
            out,
            "127.0.0.1\tlocalhost\n# puppet infrastructure below\n10.0.0.5 puppetdb.example.com puppetdb\n\n10.0.0.9\told-master # was the master\n::1 localhost ip6-localhost\n10.1.1.1\tpuppet\n"
        );
        assert_eq!(point_puppet_at(&out, "10.1.1.1"), None, "already right: untouched");
        let moved = point_puppet_at(&out, "10.2.2.2").unwrap();
        assert!(moved.ends_with("10.0.0.9\told-master # was the master\n::1 localhost ip6-localhost\n10.2.2.2\tpuppet\n"), "{moved}");
    }

    #[test]
    fn duplicates_collapse_to_one() {
        let out = point_puppet_at("1.1.1.1 puppet\n1.1.1.1 puppet\n", "1.1.1.1").unwrap();
        assert_eq!(out, "1.1.1.1\tpuppet\n");
        assert_eq!(point_puppet_at("", "::1").unwrap(), "::1\tpuppet\n");
    }

    #[test]
    fn addresses() {
        assert!(is_address("10.0.0.1") && is_address("fe80::1"));
        assert!(!is_address("10.0.0.1; rm -rf /") && !is_address("master"));
    }
}
