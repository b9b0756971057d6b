//! One check across a fleet: states counted, and rendered as a single Nagios check result in
//! the shape of the original check-mc-nrpe (reference/mcollective.md §6.4), fixed:
//!
//! ```text
//! check_load: OK: 40 WARNING: 1 CRITICAL: 1 UNKNOWN: 2|total=43 ok=40 warn=1 crit=1 unknown=1 checktime=0.210000 noresponse=1 expected=44
//! CRITICAL:
//!    db3.example.net
//! WARNING:
//!    web7.example.net
//! UNKNOWN:
//!    web9.example.net
//! NO RESPONSE:
//!    cache2.example.net
//! ```
//!
//! The first line's counts include non-responders (in the state chosen for them, UNKNOWN by
//! default; the original left them out). The perfdata keeps the original's labels, order and
//! meanings, so graphs keyed on them carry on: `total` is the replies received, `ok`, `warn`,
//! `crit`, `unknown` count replies, `checktime` is seconds with six decimals; two labels follow
//! them, `noresponse` and `expected` (replies plus non-responders). Exit codes outside 0-3
//! count as UNKNOWN (the original crashed);
//! CRITICAL beats every other state, then the worst wins; output is kept under Nagios' 8 KiB.

use std::time::Duration;

use serde::Serialize;

/// A Nagios state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// 0.
    Ok,
    /// 1.
    Warning,
    /// 2.
    Critical,
    /// 3.
    Unknown,
}

impl State {
    /// The state of a plugin exit code; anything outside 0-3 is UNKNOWN.
    pub fn from_exit(code: i64) -> State {
        match code {
            0 => State::Ok,
            1 => State::Warning,
            2 => State::Critical,
            _ => State::Unknown,
        }
    }

    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    /// Parses a state name (`ok`, `warning`, `critical`, `unknown`), for options.
    pub fn parse(text: &str) -> Option<State> {
        match text.to_ascii_lowercase().as_str() {
            "ok" => Some(State::Ok),
            "warning" => Some(State::Warning),
            "critical" => Some(State::Critical),
            "unknown" => Some(State::Unknown),
            _ => None,
        }
    }

    /// All four, in counting order.
    pub const ALL: [State; 4] = [State::Ok, State::Warning, State::Critical, State::Unknown];
}

/// One node's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeResult {
    /// The node.
    pub node: String,
    /// Its state.
    pub state: State,
    /// The plugin's first line.
    pub output: String,
}

/// The results of one check across the fleet.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Check name.
    pub check: String,
    /// Nodes that answered.
    pub results: Vec<NodeResult>,
    /// Nodes that were expected and did not answer.
    pub no_response: Vec<String>,
    /// Time the check took across the fleet.
    pub elapsed: Duration,
}

/// How the plugin judges.
#[derive(Debug, Clone, Copy)]
pub struct Judgement {
    /// State non-responders count as.
    pub no_response_state: State,
    /// Fewer nodes than this (answered or not) is a problem.
    pub min_nodes: Option<usize>,
    /// State of "fewer nodes than expected".
    pub min_nodes_state: State,
}

impl Default for Judgement {
    fn default() -> Judgement {
        Judgement {
            no_response_state: State::Unknown,
            min_nodes: None,
            min_nodes_state: State::Unknown,
        }
    }
}

impl Tally {
    /// Nodes per state, non-responders counted in `no_response_state`.
    pub fn counts(&self, no_response_state: State) -> [usize; 4] {
        let mut counts = self.reply_counts();
        counts[usize::from(no_response_state.code())] += self.no_response.len();
        counts
    }

    /// Replies per state (non-responders not counted): what the perfdata reports.
    pub fn reply_counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for result in &self.results {
            counts[usize::from(result.state.code())] += 1;
        }
        counts
    }

    /// Nodes in `state`, sorted.
    pub fn nodes_in(&self, state: State) -> Vec<&str> {
        let mut nodes: Vec<&str> =
            self.results.iter().filter(|r| r.state == state).map(|r| r.node.as_str()).collect();
        nodes.sort_unstable();
        nodes
    }
}

/// Nagios core's limit on plugin output, perfdata included.
pub const MAX_OUTPUT: usize = 8192;

/// The plugin's whole output and its exit code.
pub fn render_plugin(tally: &Tally, judgement: &Judgement) -> (String, u8) {
    let counts = tally.counts(judgement.no_response_state);
    let total = tally.results.len() + tally.no_response.len();
    let mut state = State::Ok;
    let mut worst = |candidate: State| {
        // CRITICAL first (a critical node matters more than an unknown one), then the highest.
        state = match (state, candidate) {
            (State::Critical, _) | (_, State::Critical) => State::Critical,
            (a, b) => a.max(b),
        };
    };
    for candidate in State::ALL {
        if counts[usize::from(candidate.code())] > 0 {
            worst(candidate);
        }
    }
    let mut extra = String::new();
    if total == 0 {
        worst(State::Unknown);
        extra = " (no node matched the filter)".to_owned();
    }
    if let Some(min) = judgement.min_nodes
        && total < min
    {
        worst(judgement.min_nodes_state);
        extra = format!(" ({total} nodes, expected at least {min})");
    }
    let checktime = tally.elapsed.as_secs_f64();
    let replies = tally.reply_counts();
    let first = format!(
        "{}: OK: {} WARNING: {} CRITICAL: {} UNKNOWN: {}{extra}|total={} ok={} warn={} crit={} unknown={} checktime={checktime:.6} noresponse={} expected={total}",
        tally.check,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        tally.results.len(),
        replies[0],
        replies[1],
        replies[2],
        replies[3],
        tally.no_response.len(),
    );
    let mut no_response = tally.no_response.clone();
    no_response.sort();
    let sections: Vec<(&str, Vec<&str>)> = vec![
        ("CRITICAL:", tally.nodes_in(State::Critical)),
        ("WARNING:", tally.nodes_in(State::Warning)),
        ("UNKNOWN:", tally.nodes_in(State::Unknown)),
        ("NO RESPONSE:", no_response.iter().map(String::as_str).collect()),
    ];
    let mut text = first;
    text.push('\n');
    // Keep room for every section's "(+N more)" line so truncation never exceeds the limit.
    let reserve = sections.iter().filter(|(_, nodes)| !nodes.is_empty()).count() * 40;
    for (label, nodes) in sections {
        if nodes.is_empty() {
            continue;
        }
        let budget = MAX_OUTPUT.saturating_sub(text.len() + reserve);
        if budget < label.len() + 10 {
            break;
        }
        text.push_str(label);
        text.push_str("\n  ");
        let mut used = label.len() + 3;
        let mut shown = 0;
        for node in &nodes {
            if used + node.len() + 1 > budget {
                break;
            }
            text.push(' ');
            text.push_str(node);
            used += node.len() + 1;
            shown += 1;
        }
        if shown < nodes.len() {
            text.push_str(&format!(" (+{} more)", nodes.len() - shown));
        }
        text.push('\n');
    }
    (text, state.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(states: &[(&str, State)], silent: &[&str]) -> Tally {
        Tally {
            check: "check_x".into(),
            results: states
                .iter()
                .map(|(node, state)| NodeResult {
                    node: (*node).into(),
                    state: *state,
                    output: String::new(),
                })
                .collect(),
            no_response: silent.iter().map(|s| (*s).to_owned()).collect(),
            elapsed: Duration::from_millis(1234),
        }
    }

    #[test]
    fn all_ok() {
        let (text, code) = render_plugin(
            &tally(&[("a", State::Ok), ("b", State::Ok)], &[]),
            &Judgement::default(),
        );
        assert_eq!(
            text,
            "check_x: OK: 2 WARNING: 0 CRITICAL: 0 UNKNOWN: 0|total=2 ok=2 warn=0 crit=0 unknown=0 checktime=1.234000 noresponse=0 expected=2\n"
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn critical_beats_unknown_and_lists_hosts() {
        let t = tally(
            &[
                ("b", State::Critical),
                ("a", State::Critical),
                ("c", State::Warning),
                ("d", State::Unknown),
            ],
            &["z"],
        );
        let (text, code) = render_plugin(&t, &Judgement::default());
        assert_eq!(code, 2);
        assert!(
            text.starts_with(
                "check_x: OK: 0 WARNING: 1 CRITICAL: 2 UNKNOWN: 2|total=4 ok=0 warn=1 crit=2 unknown=1 checktime="
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nCRITICAL:\n   a b\nWARNING:\n   c\nUNKNOWN:\n   d\nNO RESPONSE:\n   z\n"
            ),
            "{text}"
        );
        let (_, code) =
            render_plugin(&tally(&[("a", State::Warning)], &["z"]), &Judgement::default());
        assert_eq!(code, 3);
        let judgement = Judgement { no_response_state: State::Ok, ..Judgement::default() };
        let (text, code) = render_plugin(&tally(&[("a", State::Warning)], &["z"]), &judgement);
        assert_eq!(code, 1);
        assert!(text.starts_with("check_x: OK: 1 WARNING: 1 "), "{text}");
    }

    #[test]
    fn min_nodes_and_empty() {
        let judgement = Judgement {
            min_nodes: Some(3),
            min_nodes_state: State::Critical,
            ..Judgement::default()
        };
        let (text, code) = render_plugin(&tally(&[("a", State::Ok)], &[]), &judgement);
        assert_eq!(code, 2);
        assert!(text.contains("(1 nodes, expected at least 3)|"), "{text}");
        let (text, code) = render_plugin(&tally(&[], &[]), &Judgement::default());
        assert_eq!(code, 3);
        assert!(text.contains("(no node matched the filter)"), "{text}");
    }

    #[test]
    fn output_stays_under_8k() {
        let names: Vec<String> = (0..2000).map(|n| format!("node{n:05}.example.net")).collect();
        let states: Vec<(&str, State)> =
            names.iter().map(|n| (n.as_str(), State::Critical)).collect();
        let silent: Vec<&str> = names.iter().take(500).map(String::as_str).collect();
        let (text, _) = render_plugin(&tally(&states, &silent), &Judgement::default());
        assert!(text.len() <= MAX_OUTPUT, "{}", text.len());
        assert!(text.contains("more)"), "{text}");
        assert!(text.contains("NO RESPONSE:") || text.len() > 7000);
    }
}
