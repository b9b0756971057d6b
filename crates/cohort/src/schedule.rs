//! `cohort puppet schedule --config FILE`: the Puppet scheduler daemon (MCollective's
//! puppetcommanderd). Every matching node runs Puppet once per interval, at evenly spread
//! offsets, never more than `concurrency` applying at once; nodes are rediscovered each cycle,
//! so new ones join and removed ones leave without a restart. Several schedulers with the same
//! lease name on one collective elect one to act (`cohort_puppet::lease`) through heartbeats on
//! `<collective>.scheduler.<lease>`. The rules are in `cohort_puppet::schedule`; this is the loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cohort_proto::{Identity, StatusCode};
use cohort_puppet::lease::Lease;
use cohort_puppet::metrics::ScheduleMetrics;
use cohort_puppet::runall::{Observation, Runall};
use cohort_puppet::schedule::{Decision, NodeState, ScheduleConfig, decide, plan};
use futures::StreamExt;
use rand::SeedableRng;
use serde_json::{Map, Value, json};

use crate::apps::Session;
use crate::options::{CommonFlags, Lifetime};
use crate::output::Io;
use crate::puppet::observed;

use crate::output::log_time as timestamp;

/// Serves `render()` as OpenMetrics text at `http://address/metrics` (the scheduler's and the
/// provisioner's metrics).
pub(crate) async fn serve_metrics(
    address: &str,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// Runs the scheduler until SIGTERM or SIGINT.
pub(crate) async fn run(
    config_file: &Path,
    common: &CommonFlags,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config_file)
        .with_context(|| format!("cannot read {}", config_file.display()))?;
    let config = ScheduleConfig::parse(&text)
        .with_context(|| format!("invalid scheduler configuration {}", config_file.display()))?;
    let filter =
        config.filter.build().with_context(|| format!("[filter] in {}", config_file.display()))?;
    let session = Session::open(common, &filter, Lifetime::LongLived).await?;
    let metrics = Arc::new(ScheduleMetrics::default());
    if let Some(address) = &config.metrics {
        let metrics = metrics.clone();
        serve_metrics(address, move || metrics.prometheus_text()).await?;
    }
    let me = format!(
        "{}-{}-{:08x}",
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id(),
        rand::random::<u32>()
    );
    let subject = format!("{}.scheduler.{}", session.collective(), config.lease);
    let mut heartbeats = session
        .nats()
        .subscribe(subject.clone())
        .await
        .map_err(|err| anyhow::anyhow!("cannot subscribe to {subject}: {err}"))?;
    let began = Instant::now();
    let mut lease = Lease::new(&me, config.lease_ttl, Duration::ZERO);
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_beat: Option<Instant> = None;
    let mut cycle = None;
    let mut cycle_began = Instant::now();
    let mut in_flight = Runall::new(Vec::new(), 1, config.start_grace);
    let mut lastruns: BTreeMap<String, i64> = BTreeMap::new();
    let mut was_holder = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    writeln!(
        io.err,
        "{}: scheduler {me} on {subject}: every {} , concurrency {}",
        timestamp(),
        humantime::format_duration(config.interval),
        config.concurrency
    )?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(message) = heartbeats.next() => {
                if let Ok(beat) = serde_json::from_slice::<Value>(&message.payload)
                    && let Some(id) = beat.get("id").and_then(Value::as_str)
                {
                    lease.heard(id, began.elapsed());
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = began.elapsed();
        if last_beat.is_none_or(|at| at.elapsed() >= lease.beat()) {
            let beat = json!({"id": me}).to_string();
            let _ = session.nats().publish(subject.clone(), beat.into()).await;
            last_beat = Some(Instant::now());
        }
        let holder = lease.is_mine(now);
        metrics.holder.set(i64::from(holder));
        if holder != was_holder {
            if holder {
                writeln!(io.err, "{}: holding the lease", timestamp())?;
            } else {
                writeln!(
                    io.err,
                    "{}: standing by: {} holds the lease",
                    timestamp(),
                    lease.holder(now)
                )?;
                cycle = None;
            }
            was_holder = holder;
        }
        if !holder {
            continue;
        }
        let over = cycle
            .as_ref()
            .is_none_or(|c: &cohort_puppet::schedule::Cycle| c.is_over(cycle_began.elapsed()));
        if over {
            let (_, found) = session.call("puppet", &filter, "status", Map::new(), None).await?;
            let nodes: Vec<String> =
                found.replies.iter().map(|r| r.reply.sender.as_str().to_owned()).collect();
            // Only this cycle's nodes are asked from now on: the ones that left are not waited for.
            lastruns = observed(&found).into_iter().map(|(o, _)| (o.node, o.lastrun)).collect();
            metrics.nodes.set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
            writeln!(
                io.err,
                "{}: new cycle: {} nodes over {}",
                timestamp(),
                nodes.len(),
                humantime::format_duration(config.interval)
            )?;
            cycle = Some(plan(nodes, config.interval, config.randomize, &mut rng));
            cycle_began = Instant::now();
        }
        let Some(current) = cycle.as_mut() else { continue };
        let due = current.due(cycle_began.elapsed());
        if due.is_empty() {
            continue;
        }
        // The due nodes and the runs still in flight: who is applying now.
        let mut ask: BTreeSet<Identity> =
            due.iter().filter_map(|n| Identity::new(n.as_str()).ok()).collect();
        for node in lastruns.keys() {
            if let Ok(identity) = Identity::new(node.as_str()) {
                ask.insert(identity);
            }
        }
        let (_, statuses) =
            session.call("puppet", &filter, "status", Map::new(), Some(ask)).await?;
        let answered = observed(&statuses);
        let states: BTreeMap<String, NodeState> =
            answered.iter().map(|(o, state)| (o.node.clone(), *state)).collect();
        // Nodes that stopped answering are not waited for, nor asked again this cycle.
        lastruns.retain(|node, _| {
            let here = states.contains_key(node);
            if !here {
                in_flight.vanished(node);
            }
            here
        });
        let seen: Vec<Observation> = answered.into_iter().map(|(o, _)| o).collect();
        for s in &seen {
            lastruns.insert(s.node.clone(), s.lastrun);
        }
        in_flight.observe(&seen, now);
        for node in due {
            let decision =
                decide(states.get(&node).copied(), in_flight.applying(), config.concurrency);
            if decision != Decision::Run {
                metrics.record(decision);
                writeln!(io.err, "{}: {node} skipped: {decision:?}", timestamp())?;
                continue;
            }
            let Ok(identity) = Identity::new(node.as_str()) else { continue };
            let data: Map<String, Value> =
                [("force".to_owned(), json!(true))].into_iter().collect();
            let (_, started) =
                session.call("puppet", &filter, "runonce", data, Some([identity].into())).await?;
            match started.replies.first().map(|r| &r.reply) {
                Some(reply) if reply.status == StatusCode::Ok => {
                    metrics.record(Decision::Run);
                    in_flight.started(&node, lastruns.get(&node).copied().unwrap_or(0), now);
                    let summary = reply.data.get("summary").and_then(Value::as_str).unwrap_or("");
                    writeln!(io.out, "{}: {node} schedule status: {summary}", timestamp())?;
                }
                other => {
                    metrics.start_failures.inc();
                    let why = other.map_or("no response", |r| r.status_message.as_str());
                    writeln!(io.out, "{}: {node} schedule status: {why}", timestamp())?;
                }
            }
        }
        io.out.flush()?;
        metrics.in_flight.set(i64::try_from(in_flight.applying()).unwrap_or(i64::MAX));
    }
    writeln!(io.err, "{}: scheduler {me} stopping", timestamp())?;
    Ok(ExitCode::SUCCESS)
}
