//! The message of the day: who this instance is and how its boot went. Pure.

use crate::metadata::Metadata;

/// The MOTD text for `metadata` after a boot whose outcome is `status` (e.g. `provisioned`,
/// `FAILED: action 02-shell`).
pub fn render(metadata: &Metadata, status: &str, facts_file: &str) -> String {
    let leaf = |path: &str| metadata.leaf(path).filter(|v| !v.is_empty()).unwrap_or("-").to_owned();
    let rows = [
        ("Instance", leaf("instance-id")),
        ("Image", leaf("ami-id")),
        ("Type", leaf("instance-type")),
        ("Zone", leaf("placement/availability-zone")),
        ("Public hostname", leaf("public-hostname")),
        ("Private hostname", leaf("local-hostname")),
        ("Boot status", status.to_owned()),
        ("Data source", metadata.source.to_string()),
    ];
    let mut text = String::from("\nThis machine was set up by cohort boot.\n\n");
    for (label, value) in rows {
        text.push_str(&format!("  {label:<17} {value}\n"));
    }
    text.push_str(&format!(
        "\nSystem facts are in {facts_file}; `cohort boot status` shows the last boot.\n\n"
    ));
    text
}
