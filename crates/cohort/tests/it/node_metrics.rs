//! The daemon's metrics endpoint, scraped and parsed: requests by agent, action and status,
//! refusals, durations, broker reconnections and the facts' age, from a real daemon on our
//! broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cohort_test_support::free_port;

use crate::fleet::{BrokerKind, Fleet, NodeSpec};
use crate::schedule::http_get;

/// Every sample of an OpenMetrics text, by series (`name{labels}`); panics on a line that is
/// neither a comment nor `series value`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let body = text.split_once("\r\n\r\n").map_or(text, |(_, body)| body);
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("{line:?}")))
        })
        .collect()
}

#[test]
fn the_daemon_serves_its_metrics() {
    let port = free_port();
    let spec = NodeSpec {
        name: "web1.example.com",
        fact_file: "facts.yaml",
        facts: "country: uk\n",
        classes: "",
        collectives: &[],
    };
    let mut fleet = Fleet::start_configured(BrokerKind::Cohort, &[spec], &|_, _| {
        format!("metrics = \"127.0.0.1:{port}\"\n")
    });
    for args in [
        &["rpc", "rpcutil", "ping"][..],
        &["rpc", "rpcutil", "ping"],
        &["rpc", "rpcutil", "get_fact", "fact=country"],
    ] {
        assert!(fleet.cli(args).status.success());
    }
    fleet.restart_broker();
    fleet.wait_for(1);

    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let text = http_get(port);
        assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        let scraped = samples(&text);
        if scraped.get("cohort_daemon_broker_reconnects_total") == Some(&1.0) {
            break scraped;
        }
        assert!(Instant::now() < deadline, "no reconnection counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let at = |series: &str| {
        scraped.get(series).copied().unwrap_or_else(|| panic!("{series}: {scraped:#?}"))
    };
    assert_eq!(
        at("cohort_daemon_requests_total{agent=\"rpcutil\",action=\"ping\",status=\"0\"}"),
        2.0
    );
    assert_eq!(
        at("cohort_daemon_requests_total{agent=\"rpcutil\",action=\"get_fact\",status=\"0\"}"),
        1.0
    );
    // Discovery before each call (three, then the waits for the node).
    assert!(
        at("cohort_daemon_requests_total{agent=\"discovery\",action=\"ping\",status=\"0\"}") >= 3.0
    );
    assert_eq!(at("cohort_daemon_request_duration_seconds_count{agent=\"rpcutil\"}"), 3.0);
    assert!(at("cohort_daemon_messages_total") >= 6.0);
    assert!(at("cohort_daemon_replies_total") >= 6.0);
    let age = at("cohort_daemon_facts_age_seconds");
    assert!((0.0..3600.0).contains(&age), "{age}");
    // An insecure node has no replay cache.
    assert_eq!(at("cohort_daemon_replay_cache_capacity"), 0.0);
}
