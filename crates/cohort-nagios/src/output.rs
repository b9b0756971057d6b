//! Plugin output: the first line is the summary, later lines the long output; a `|` on the first
//! line starts performance data, and the first later line with a `|` continues it (that line's
//! text before the `|` is the last long-output line, and every line after is perfdata too).

use serde::Serialize;

/// A plugin's output, split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginOutput {
    /// First line, without performance data.
    pub summary: String,
    /// The other lines, without performance data.
    pub long_output: Vec<String>,
    /// All performance data, space-joined.
    pub perfdata: String,
}

/// Splits raw plugin stdout.
pub fn split(text: &str) -> PluginOutput {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let (summary, mut perf_parts) = match first.split_once('|') {
        Some((summary, perf)) => (summary.trim_end().to_owned(), vec![perf.trim().to_owned()]),
        None => (first.trim_end().to_owned(), Vec::new()),
    };
    let mut long_output = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf_parts.push(line.trim().to_owned());
        } else if let Some((text, perf)) = line.split_once('|') {
            if !text.trim().is_empty() {
                long_output.push(text.trim_end().to_owned());
            }
            perf_parts.push(perf.trim().to_owned());
            in_perf = true;
        } else {
            long_output.push(line.trim_end().to_owned());
        }
    }
    while long_output.last().is_some_and(|l| l.is_empty()) {
        long_output.pop();
    }
    let perfdata = perf_parts.into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ");
    PluginOutput { summary, long_output, perfdata }
}

/// One performance data item: `'label'=value[UOM];warn;crit;min;max`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerfItem {
    /// Label, unquoted.
    pub label: String,
    /// Value; `None` when the plugin said `U` (unknown).
    pub value: Option<f64>,
    /// Unit of measure (`s`, `%`, `B`, `c`, …), empty for a count.
    pub uom: String,
    /// Warning range, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn: Option<String>,
    /// Critical range, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crit: Option<String>,
    /// Minimum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Why a perfdata item was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse performance data {item:?}: {reason}")]
pub struct PerfError {
    /// The item.
    pub item: String,
    /// Why.
    pub reason: &'static str,
}

/// Splits perfdata into items, honouring quoted labels (which may contain spaces, and `''` for
/// a quote).
fn items(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                current.push('\'');
                current.push('\'');
                chars.next();
            }
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn field(text: Option<&str>) -> Option<String> {
    text.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Parses one item.
pub fn parse_item(item: &str) -> Result<PerfItem, PerfError> {
    let fail = |reason| PerfError { item: item.to_owned(), reason };
    let (label, rest) = if let Some(quoted) = item.strip_prefix('\'') {
        let mut end = None;
        let bytes = quoted.as_bytes();
        let mut idx = 0;
        while idx < bytes.len() {
            if bytes[idx] == b'\'' {
                if bytes.get(idx + 1) == Some(&b'\'') {
                    idx += 2;
                    continue;
                }
                end = Some(idx);
                break;
            }
            idx += 1;
        }
        let end = end.ok_or_else(|| fail("unterminated quoted label"))?;
        let rest =
            quoted[end + 1..].strip_prefix('=').ok_or_else(|| fail("no '=' after the label"))?;
        (quoted[..end].replace("''", "'"), rest)
    } else {
        let (label, rest) = item.split_once('=').ok_or_else(|| fail("no '='"))?;
        (label.to_owned(), rest)
    };
    if label.is_empty() {
        return Err(fail("empty label"));
    }
    let mut fields = rest.split(';');
    let value_field = fields.next().unwrap_or_default().trim();
    let (value, uom) = if value_field == "U" {
        (None, String::new())
    } else {
        let split = value_field
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(value_field.len());
        // `e`/`E` can also start a unit; prefer reading them as a unit when no number parses.
        let (mut number_part, mut uom_part) = value_field.split_at(split);
        if number(number_part).is_none() {
            let digits = value_field
                .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
                .unwrap_or(value_field.len());
            (number_part, uom_part) = value_field.split_at(digits);
        }
        let value = number(number_part).ok_or_else(|| fail("the value is not a number or U"))?;
        (Some(value), uom_part.to_owned())
    };
    let warn = field(fields.next());
    let crit = field(fields.next());
    let min = fields.next().and_then(number);
    let max = fields.next().and_then(number);
    Ok(PerfItem { label, value, uom, warn, crit, min, max })
}

/// Parses all performance data, keeping what parses and reporting what does not.
pub fn parse_perfdata(text: &str) -> (Vec<PerfItem>, Vec<PerfError>) {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for item in items(text) {
        match parse_item(&item) {
            Ok(item) => parsed.push(item),
            Err(err) => errors.push(err),
        }
    }
    (parsed, errors)
}

#[cfg(test)]
mod tests;
