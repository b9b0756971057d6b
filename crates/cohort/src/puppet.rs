//! `cohort puppet ACTION`: the `puppet` agent across the fleet, as `mco puppet` did: `count`,
//! `status`, `summary`, `enable`, `disable [MESSAGE]`, `runonce`, and `runall CONCURRENCY`, which
//! keeps at most that many nodes applying a catalog (the rule is `cohort_puppet::runall`).

use std::collections::{BTreeMap, BTreeSet};

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cohort_proto::{Identity, StatusCode};
use cohort_puppet::runall::{Ended, Observation, Runall};
use serde_json::{Map, Value, json};

use crate::apps::{Session, finished};
use crate::options::{CommonFlags, FilterFlags, Lifetime};
use crate::output::Io;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Action {
    /// How many nodes are enabled, disabled, applying, idling, stopped.
    Count,
    /// Each node's status line.
    Status,
    /// Last-run figures across the fleet: min, average, max.
    Summary,
    /// Enable Puppet.
    Enable,
    /// Disable Puppet, with an optional message.
    Disable,
    /// Start one Puppet run on every matching node now.
    Runonce,
    /// Run Puppet on every enabled matching node, at most CONCURRENCY at once.
    Runall,
    /// The scheduler daemon: every node once per interval (`--scheduler-config FILE`).
    Schedule,
}

/// Options of a run.
#[derive(Debug, Clone, Default, clap::Args)]
struct RunFlags {
    /// Run at once, without splay.
    #[arg(long)]
    force: bool,
    /// Run in noop mode.
    #[arg(long, conflicts_with = "no_noop")]
    noop: bool,
    /// Run with noop off, whatever the node's configuration says.
    #[arg(long)]
    no_noop: bool,
    /// Only resources with these tags (comma-separated).
    #[arg(long, alias = "tag")]
    tags: Option<String>,
    /// Catalog environment.
    #[arg(long)]
    environment: Option<String>,
    /// Another server, `host[:port]` (only where nodes allow it).
    #[arg(long)]
    server: Option<String>,
    /// Splay the run.
    #[arg(long, conflicts_with = "no_splay")]
    splay: bool,
    /// Do not splay.
    #[arg(long)]
    no_splay: bool,
    /// Longest splay, in seconds.
    #[arg(long)]
    splaylimit: Option<u64>,
    /// Apply the cached catalog.
    #[arg(long, conflicts_with = "no_use_cached_catalog")]
    use_cached_catalog: bool,
    /// Do not apply the cached catalog.
    #[arg(long)]
    no_use_cached_catalog: bool,
}

impl RunFlags {
    fn data(&self, force: bool) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("force".into(), json!(force || self.force));
        let pair = |on: bool, off: bool| (on || off).then_some(on);
        if let Some(noop) = pair(self.noop, self.no_noop) {
            data.insert("noop".into(), json!(noop));
        }
        if let Some(splay) = pair(self.splay, self.no_splay) {
            data.insert("splay".into(), json!(splay));
        }
        if let Some(cached) = pair(self.use_cached_catalog, self.no_use_cached_catalog) {
            data.insert("use_cached_catalog".into(), json!(cached));
        }
        for (key, value) in
            [("tags", &self.tags), ("environment", &self.environment), ("server", &self.server)]
        {
            if let Some(value) = value {
                data.insert(key.into(), json!(value));
            }
        }
        if let Some(limit) = self.splaylimit {
            data.insert("splaylimit".into(), json!(limit));
        }
        data
    }
}

/// Options of `cohort puppet`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PuppetArgs {
    /// What to do.
    #[arg(value_enum)]
    action: Action,
    /// `disable`: the message; `runall`: the concurrency.
    argument: Vec<String>,
    /// `runall`: start again this many seconds after the previous iteration began.
    #[arg(long, value_name = "SECONDS")]
    rerun: Option<u64>,
    /// `schedule`: the scheduler's configuration file.
    #[arg(long, value_name = "FILE", default_value = "/etc/cohort/puppet-scheduler.toml")]
    scheduler_config: std::path::PathBuf,
    /// `runall`: a run not seen applying this long after it was started is given up on.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    start_grace: u64,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
}

fn node_line(io: &mut Io<'_>, node: &Identity, text: &str) -> anyhow::Result<()> {
    writeln!(io.out, "{:<40} {text}", node.as_str())?;
    Ok(())
}

fn replies_sorted(result: &cohort_client::CallResult) -> Vec<&cohort_proto::Reply> {
    let mut replies: Vec<&cohort_proto::Reply> = result.replies.iter().map(|r| &r.reply).collect();
    replies.sort_by(|a, b| a.sender.cmp(&b.sender));
    replies
}

fn flag(data: &Map<String, Value>, key: &str) -> bool {
    data.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// `cohort puppet ACTION ...`.
pub(crate) async fn run(args: PuppetArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    if args.action == Action::Schedule {
        return crate::schedule::run(&args.scheduler_config, &args.common, io).await;
    }
    let filter = args.filter.build()?;
    let session = Session::open(&args.common, &filter, Lifetime::OneShot).await?;
    if args.action == Action::Runall {
        return runall(&args, &session, &filter, io).await;
    }
    fleet(&args, &session, &filter, io).await
}

/// The actions that are one call across the fleet.
async fn fleet(
    args: &PuppetArgs,
    session: &Session,
    filter: &cohort_proto::Filter,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let call = |action: &'static str, data: Map<String, Value>| async move {
        session.call("puppet", filter, action, data, None).await
    };
    let result = match args.action {
        Action::Status | Action::Count => call("status", Map::new()).await?.1,
        Action::Summary => call("last_run_summary", Map::new()).await?.1,
        Action::Enable => call("enable", Map::new()).await?.1,
        Action::Disable => {
            let mut data = Map::new();
            if !args.argument.is_empty() {
                data.insert("message".into(), json!(args.argument.join(" ")));
            }
            call("disable", data).await?.1
        }
        Action::Runonce => call("runonce", args.run.data(false)).await?.1,
        Action::Runall | Action::Schedule => {
            anyhow::bail!("{:?} is not a single fleet call", args.action)
        }
    };
    match args.action {
        Action::Count => count(&result, io)?,
        Action::Summary => summary(&result, io)?,
        _ => {
            for reply in replies_sorted(&result) {
                let text = if reply.status != StatusCode::Ok {
                    reply.status_message.clone()
                } else {
                    ["message", "status", "summary"]
                        .iter()
                        .find_map(|k| reply.data.get(*k).and_then(Value::as_str))
                        .unwrap_or_default()
                        .to_owned()
                };
                node_line(io, &reply.sender, &text)?;
            }
            writeln!(io.out)?;
        }
    }
    finished(io, &result)?;
    let ok = result.stats.failed == 0 && result.stats.no_responses.is_empty();
    Ok(if result.replies.is_empty() {
        ExitCode::from(1)
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn count(result: &cohort_client::CallResult, io: &mut Io<'_>) -> anyhow::Result<()> {
    let statuses: Vec<&Map<String, Value>> = result
        .replies
        .iter()
        .filter(|r| r.reply.status == StatusCode::Ok)
        .map(|r| &r.reply.data)
        .collect();
    let n = |key: &str, want: bool| statuses.iter().filter(|d| flag(d, key) == want).count();
    let word = |w: &str| {
        statuses.iter().filter(|d| d.get("status").and_then(Value::as_str) == Some(w)).count()
    };
    writeln!(io.out, "Total Puppet nodes: {}\n", statuses.len())?;
    writeln!(io.out, "          Nodes currently enabled: {}", n("enabled", true))?;
    writeln!(io.out, "         Nodes currently disabled: {}\n", n("enabled", false))?;
    writeln!(io.out, "Nodes currently doing puppet runs: {}", n("applying", true))?;
    writeln!(io.out, "          Nodes currently stopped: {}", word("stopped"))?;
    writeln!(io.out, "       Nodes with daemons started: {}", n("daemon_present", true))?;
    writeln!(io.out, "    Nodes without daemons started: {}", n("daemon_present", false))?;
    writeln!(io.out, "       Daemons started but idling: {}\n", n("idling", true))?;
    Ok(())
}

/// A ten-bucket histogram of `values` as block characters.
fn sparkline(values: &[f64], min: f64, max: f64) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut buckets = [0usize; 10];
    for v in values {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let idx = if max > min { (((v - min) / (max - min)) * 9.0).round() as usize } else { 0 };
        buckets[idx.min(9)] += 1;
    }
    let top = buckets.iter().copied().max().unwrap_or(1).max(1);
    buckets
        .iter()
        .map(|b| if *b == 0 { ' ' } else { BLOCKS[(b * 7).div_ceil(top).min(7)] })
        .collect()
}

fn summary(result: &cohort_client::CallResult, io: &mut Io<'_>) -> anyhow::Result<()> {
    const METRICS: [(&str, &str); 7] = [
        ("total_time", "Total Time"),
        ("config_retrieval_time", "Config Retrieval Time"),
        ("total_resources", "Total Resources"),
        ("out_of_sync_resources", "Out Of Sync Resources"),
        ("changed_resources", "Changed Resources"),
        ("failed_resources", "Failed Resources"),
        ("since_lastrun", "Time Since Last Run"),
    ];
    writeln!(io.out, "Summary statistics for {} nodes:\n", result.replies.len())?;
    for (key, label) in METRICS {
        let values: Vec<f64> = result
            .replies
            .iter()
            .filter(|r| r.reply.status == StatusCode::Ok)
            .filter_map(|r| r.reply.data.get(key).and_then(Value::as_f64))
            .filter(|v| *v >= 0.0)
            .collect();
        if values.is_empty() {
            writeln!(io.out, "  {label:>22}: no data")?;
            continue;
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        #[allow(clippy::cast_precision_loss)]
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        writeln!(
            io.out,
            "  {label:>22}: [{}]  min: {min:.1}  avg: {avg:.1}  max: {max:.1}",
            sparkline(&values, min, max)
        )?;
    }
    writeln!(io.out)?;
    for reply in replies_sorted(result) {
        if reply.status != StatusCode::Ok {
            node_line(io, &reply.sender, &reply.status_message)?;
        } else if reply.data.get("failed_resources").and_then(Value::as_i64).unwrap_or(0) > 0 {
            let failed = reply.data.get("failed_resources").and_then(Value::as_i64).unwrap_or(0);
            node_line(io, &reply.sender, &format!("last run had {failed} failed resource(s)"))?;
        }
    }
    Ok(())
}

/// How often `runall` asks the nodes what they are doing.
const POLL: Duration = Duration::from_millis(500);

use crate::output::log_time as timestamp;

/// The nodes that answered a `status` call: what runall and the scheduler go by.
pub(crate) fn observed(
    result: &cohort_client::CallResult,
) -> Vec<(Observation, cohort_puppet::schedule::NodeState)> {
    result
        .replies
        .iter()
        .map(|r| &r.reply)
        .filter(|r| r.status == StatusCode::Ok)
        .map(|r| {
            let state = cohort_puppet::schedule::NodeState {
                enabled: flag(&r.data, "enabled"),
                applying: flag(&r.data, "applying"),
            };
            let lastrun = r.data.get("lastrun").and_then(Value::as_i64).unwrap_or(0);
            let node = r.sender.as_str().to_owned();
            (Observation { node, applying: state.applying, lastrun }, state)
        })
        .collect()
}

async fn runall(
    args: &PuppetArgs,
    session: &Session,
    filter: &cohort_proto::Filter,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let Some(concurrency) = args.argument.first() else {
        bail!("runall needs a concurrency: cohort puppet runall 5");
    };
    let concurrency: usize =
        concurrency.parse().ok().filter(|c| *c > 0).with_context(|| {
            format!("concurrency {concurrency:?} is not a whole number above 0")
        })?;
    let mut failures = 0;
    loop {
        let began = Instant::now();
        // Every matching node with the agent, then only those whose Puppet is enabled now (the
        // original ANDed `puppet().enabled=true`); the others are reported as skipped.
        let (_, statuses) = session.call("puppet", filter, "status", Map::new(), None).await?;
        let mut nodes: Vec<Identity> = Vec::new();
        for reply in replies_sorted(&statuses) {
            if reply.status != StatusCode::Ok {
                writeln!(
                    io.out,
                    "{}: {} skipped: {}",
                    timestamp(),
                    reply.sender,
                    reply.status_message
                )?;
            } else if !flag(&reply.data, "enabled") {
                let why = reply.data.get("disable_message").and_then(Value::as_str).unwrap_or("");
                writeln!(
                    io.out,
                    "{}: {} skipped: Puppet is disabled: '{why}'",
                    timestamp(),
                    reply.sender
                )?;
            } else {
                nodes.push(reply.sender.clone());
            }
        }
        if nodes.is_empty() {
            writeln!(io.err, "{}: no enabled nodes found", timestamp())?;
        }
        let mut targets: BTreeSet<Identity> = nodes.iter().cloned().collect();
        let mut schedule = Runall::new(
            nodes.iter().map(|n| n.as_str().to_owned()).collect(),
            concurrency,
            Duration::from_secs(args.start_grace),
        );
        let mut lastruns: BTreeMap<String, i64> = BTreeMap::new();
        let mut initiated = 0;
        while !schedule.is_done() {
            let (_, statuses) =
                session.call("puppet", filter, "status", Map::new(), Some(targets.clone())).await?;
            let seen: Vec<Observation> = observed(&statuses).into_iter().map(|(o, _)| o).collect();
            // A node that stopped answering is neither waited for nor started.
            targets.retain(|node| {
                let answered = seen.iter().any(|s| s.node == node.as_str());
                if !answered {
                    schedule.vanished(node.as_str());
                }
                answered
            });
            for s in &seen {
                lastruns.insert(s.node.clone(), s.lastrun);
            }
            schedule.observe(&seen, began.elapsed());
            let starting = schedule.to_start();
            if starting.is_empty() && schedule.waiting() > 0 {
                writeln!(
                    io.err,
                    "{}: Currently {} nodes applying the catalog; waiting for less than {concurrency}",
                    timestamp(),
                    schedule.applying()
                )?;
            }
            if !starting.is_empty() {
                let listed: BTreeSet<Identity> =
                    starting.iter().filter_map(|n| Identity::new(n.as_str()).ok()).collect();
                let (_, started) = session
                    .call("puppet", filter, "runonce", args.run.data(true), Some(listed))
                    .await?;
                let replies: BTreeMap<&str, &cohort_proto::Reply> =
                    started.replies.iter().map(|r| (r.reply.sender.as_str(), &r.reply)).collect();
                for node in starting {
                    let (said, ok) = match replies.get(node.as_str()) {
                        Some(reply) if reply.status == StatusCode::Ok => {
                            let summary = reply.data.get("summary").and_then(Value::as_str);
                            (summary.unwrap_or_default().to_owned(), true)
                        }
                        Some(reply) => (reply.status_message.clone(), false),
                        None => ("no response".to_owned(), false),
                    };
                    writeln!(io.out, "{}: {node} schedule status: {said}", timestamp())?;
                    if ok {
                        let lastrun = lastruns.get(&node).copied().unwrap_or(0);
                        schedule.started(&node, lastrun, began.elapsed());
                        initiated += 1;
                    } else {
                        schedule.not_started(&node);
                        failures += 1;
                    }
                }
            }
            if !schedule.is_done() {
                tokio::time::sleep(POLL).await;
            }
        }
        for (node, ended) in schedule.ended() {
            match ended {
                Ended::NotStarted => {
                    writeln!(io.err, "{}: {node}: the run was not seen starting", timestamp())?;
                }
                Ended::Vanished => {
                    writeln!(io.err, "{}: {node}: stopped answering", timestamp())?;
                }
                Ended::Completed => {}
            }
        }
        writeln!(
            io.out,
            "{}: Iteration complete. Initiated a Puppet run on {initiated} nodes.",
            timestamp()
        )?;
        io.out.flush()?;
        let Some(rerun) = args.rerun else { break };
        let next = Duration::from_secs(rerun).saturating_sub(began.elapsed());
        writeln!(
            io.err,
            "{}: Sleeping for {} seconds before the next iteration",
            timestamp(),
            next.as_secs()
        )?;
        tokio::time::sleep(next).await;
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
