//! Aggregated check results in Prometheus' text exposition format, for node_exporter's textfile
//! collector: gauges only, no timestamps (the collector rejects files with them), label values
//! escaped. The caller writes the text atomically (temporary file in the same directory, then
//! rename) so a scrape never sees half a file.

use crate::fleet::{State, Tally};

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics for one check.
pub fn render(tally: &Tally) -> String {
    let check = escape(&tally.check);
    let mut text = String::new();
    text.push_str("# HELP cohort_nrpe_nodes Nodes by state of an NRPE check across the fleet.\n");
    text.push_str("# TYPE cohort_nrpe_nodes gauge\n");
    let counts = tally.counts(State::Unknown);
    let answered_unknown = counts[3] - tally.no_response.len();
    for state in State::ALL {
        let n = if state == State::Unknown {
            answered_unknown
        } else {
            counts[usize::from(state.code())]
        };
        text.push_str(&format!(
            "cohort_nrpe_nodes{{check=\"{check}\",state=\"{}\"}} {n}\n",
            state.label().to_ascii_lowercase()
        ));
    }
    text.push_str(&format!(
        "cohort_nrpe_nodes{{check=\"{check}\",state=\"noresponse\"}} {}\n",
        tally.no_response.len()
    ));
    text.push_str("# HELP cohort_nrpe_node_state State of an NRPE check on one node: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, -1 no response.\n");
    text.push_str("# TYPE cohort_nrpe_node_state gauge\n");
    let mut rows: Vec<(String, i32)> =
        tally.results.iter().map(|r| (r.node.clone(), i32::from(r.state.code()))).collect();
    rows.extend(tally.no_response.iter().map(|node| (node.clone(), -1)));
    rows.sort();
    for (node, value) in rows {
        text.push_str(&format!(
            "cohort_nrpe_node_state{{check=\"{check}\",node=\"{}\"}} {value}\n",
            escape(&node)
        ));
    }
    text.push_str(
        "# HELP cohort_nrpe_check_duration_seconds Time the check took across the fleet.\n",
    );
    text.push_str("# TYPE cohort_nrpe_check_duration_seconds gauge\n");
    text.push_str(&format!(
        "cohort_nrpe_check_duration_seconds{{check=\"{check}\"}} {:.6}\n",
        tally.elapsed.as_secs_f64()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::NodeResult;

    #[test]
    fn exposition() {
        let tally = Tally {
            check: "check_\"odd\"".into(),
            results: vec![
                NodeResult { node: "b".into(), state: State::Warning, output: String::new() },
                NodeResult { node: "a".into(), state: State::Ok, output: String::new() },
            ],
            no_response: vec!["c".into()],
            elapsed: std::time::Duration::from_millis(5),
        };
        let text = render(&tally);
        assert!(
            text.contains("cohort_nrpe_nodes{check=\"check_\\\"odd\\\"\",state=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("state=\"unknown\"} 0\n") && text.contains("state=\"noresponse\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "node=\"a\"} 0\ncohort_nrpe_node_state{check=\"check_\\\"odd\\\"\",node=\"b\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("node=\"c\"} -1\n"));
        assert!(text.lines().all(|l| l.starts_with('#') || l.split(' ').count() == 2), "{text}");
    }
}
