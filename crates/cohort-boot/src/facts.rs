//! The facts file: user-data facts, then the whole metadata flattened as
//! `ec2_<path_with_underscores>=value`, one `key=value` per line, which `cohort daemon --facts`
//! reads. Pure: [`render`] builds the text, the caller writes it.
//!
//! Flattening follows ec2-boot-init: path parts joined with `_`, `-` (and anything else that is
//! not a letter or digit) turned into `_`, multi-line values split into `<key>_0`, `<key>_1`, …;
//! plus `ec2_placement_region`, the availability zone without its last letter, when the service
//! does not give the region itself.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

fn key_part(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect()
}

fn walk(prefix: &str, tree: &Map<String, Value>, out: &mut BTreeMap<String, String>) {
    for (name, value) in tree {
        let key = format!("{prefix}_{}", key_part(name));
        match value {
            Value::Object(inner) => walk(&key, inner, out),
            Value::String(text) => {
                let lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    for (idx, line) in lines.iter().enumerate() {
                        out.insert(format!("{key}_{idx}"), (*line).to_owned());
                    }
                } else {
                    out.insert(key, text.trim_end().to_owned());
                }
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

/// The metadata tree as `ec2_*` facts.
pub fn flatten(tree: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk("ec2", tree, &mut out);
    if !out.contains_key("ec2_placement_region")
        && let Some(zone) = out.get("ec2_placement_availability_zone").filter(|zone| zone.len() > 1)
    {
        let region = zone[..zone.len() - 1].to_owned();
        out.insert("ec2_placement_region".to_owned(), region);
    }
    out
}

/// The facts file text: user facts first (in name order), then the `ec2_*` facts if wanted.
/// A user fact wins over a metadata fact of the same name.
pub fn render(user: &BTreeMap<String, String>, metadata: Option<&Map<String, Value>>) -> String {
    let mut text = String::new();
    for (key, value) in user {
        text.push_str(&format!("{key}={value}\n"));
    }
    if let Some(tree) = metadata {
        for (key, value) in flatten(tree) {
            if !user.contains_key(&key) {
                text.push_str(&format!("{key}={value}\n"));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening() {
        let tree: Map<String, Value> = serde_json::from_str(
            r#"{"ami-id": "ami-123", "instance-type": "t3.micro",
                "placement": {"availability-zone": "eu-west-1b"},
                "public-keys": {"0": {"openssh-key": "ssh-ed25519 AAAA me"}},
                "block-device-mapping": {"ami": "/dev/xvda"},
                "multi": "line one\nline two\n"}"#,
        )
        .unwrap();
        let facts = flatten(&tree);
        assert_eq!(facts["ec2_ami_id"], "ami-123");
        assert_eq!(facts["ec2_placement_availability_zone"], "eu-west-1b");
        assert_eq!(facts["ec2_placement_region"], "eu-west-1");
        assert_eq!(facts["ec2_public_keys_0_openssh_key"], "ssh-ed25519 AAAA me");
        assert_eq!(facts["ec2_block_device_mapping_ami"], "/dev/xvda");
        assert_eq!(facts["ec2_multi_0"], "line one");
        assert_eq!(facts["ec2_multi_1"], "line two");
        let mut user = BTreeMap::new();
        user.insert("role".to_owned(), "web".to_owned());
        user.insert("ec2_ami_id".to_owned(), "mine".to_owned());
        let text = render(&user, Some(&tree));
        assert!(
            text.starts_with("ec2_ami_id=mine\nrole=web\nec2_block_device_mapping_ami=/dev/xvda\n"),
            "{text}"
        );
        assert_eq!(text.matches("ec2_ami_id=").count(), 1);
        assert_eq!(render(&user, None), "ec2_ami_id=mine\nrole=web\n");
    }
}
