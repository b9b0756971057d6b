//! `cohort rpc AGENT ACTION [key=value ...]`: discover, send, collect, print.
//!
//! Arguments are converted by the DDL's input types and validated before anything is sent.
//! Output follows MCollective's shape: the replies the display policy selects, aggregate
//! summaries, `Finished processing N / M hosts in X ms`, and the `No response from:` grid;
//! `-j` prints one JSON document instead (docs/output.md).
//!
//! Exit codes (reference/mcollective.md §1.1, with one fix): 0 all answered OK; 1 nothing
//! discovered; 2 some replies failed *or some discovered nodes did not answer* (MCollective
//! exited 0 when a node stayed silent); 3 nodes discovered but none answered; 4 no discovery
//! and no replies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cohort_client::{
    Call, CallResult, Count, Discovered, NodeReply, Pick, Spread, Targets, reply_timeout,
};
use cohort_ddl::{ActionDdl, AgentDdl, Display, Summary};
use cohort_proto::{AgentName, StatusCode};
use serde_json::{Map, Value, json};

use crate::options::{CommonFlags, FilterFlags, Lifetime};
use crate::output::{Io, finished_line, ms, name_grid, progress, unverified_lines};

/// Options of `cohort rpc`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RpcArgs {
    /// Agent to call.
    agent: String,
    /// Action to call.
    action: String,
    /// Inputs, as key=value.
    #[arg(value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
    /// Print one JSON document with every reply and the statistics.
    #[arg(short = 'j', long = "json", help_heading = "RPC Options")]
    json: bool,
    /// Which replies to print: ok, all or failed [default: the action's DDL display policy].
    #[arg(long = "display", value_name = "MODE", value_enum, conflicts_with_all = ["json", "jsonl"], help_heading = "RPC Options")]
    display: Option<DisplayMode>,
    /// No progress bar.
    #[arg(long = "np", visible_alias = "no-progress", help_heading = "RPC Options")]
    no_progress: bool,
    /// One JSON object per reply as it arrives, then one summary object.
    #[arg(long = "jsonl", conflicts_with = "json", help_heading = "RPC Options")]
    jsonl: bool,
    /// Print replies sorted by identity instead of in arrival order.
    #[arg(long = "sort", conflicts_with = "jsonl", help_heading = "RPC Options")]
    sort: bool,
    /// Send to N nodes (or N% of them) at a time, each batch waiting for its replies.
    #[arg(long = "batch", value_name = "N|N%", help_heading = "RPC Options")]
    batch: Option<Count>,
    /// Seconds to wait between batches.
    #[arg(
        long = "batch-sleep",
        value_name = "SECONDS",
        default_value_t = 1.0,
        requires = "batch",
        help_heading = "RPC Options"
    )]
    batch_sleep: f64,
    /// Act on only N of the discovered nodes (or N%).
    #[arg(
        long = "limit-nodes",
        visible_alias = "ln",
        value_name = "N|N%",
        help_heading = "RPC Options"
    )]
    limit: Option<Count>,
    /// Act on one discovered node (--limit-nodes 1).
    #[arg(short = '1', long = "one", conflicts_with = "limit", help_heading = "RPC Options")]
    one: bool,
    /// How --limit-nodes picks: first (in identity order) or random [default: random].
    #[arg(long = "limit-method", value_name = "METHOD", value_enum, help_heading = "RPC Options")]
    limit_method: Option<LimitMethod>,
    /// Seed for --limit-method random: the same seed picks the same nodes.
    #[arg(long = "limit-seed", value_name = "N", help_heading = "RPC Options")]
    limit_seed: Option<u64>,
    /// Fire and forget: nodes act but do not reply; prints the request id.
    #[arg(long = "nr", visible_alias = "no-results", conflicts_with_all = ["json", "jsonl", "reply_to", "batch"], help_heading = "RPC Options")]
    no_results: bool,
    /// Nodes reply to this subject instead of to this client, which does not wait; prints the
    /// request id. On a secure fleet nodes may only publish under `<collective>.reply.`.
    #[arg(long = "reply-to", value_name = "SUBJECT", conflicts_with_all = ["json", "jsonl", "batch"], help_heading = "RPC Options")]
    reply_to: Option<String>,
}

/// How `--limit-nodes` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LimitMethod {
    /// The first, in identity order.
    First,
    /// A random choice (`--limit-seed` repeats it).
    Random,
}

/// Which replies `--display` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DisplayMode {
    /// Only successful replies.
    Ok,
    /// Every reply.
    All,
    /// Only failed replies.
    Failed,
}

/// Finds the DDL of `agent`: built in, or `<agents_dir>/<agent>/<agent>.json`.
pub(crate) fn find_ddl(agent: &str, agents_dir: Option<&Path>) -> anyhow::Result<Option<AgentDdl>> {
    if let Some(ddl) = cohort_ddl::builtin::find(agent) {
        return Ok(Some((*ddl).clone()));
    }
    let Some(dir) = agents_dir else { return Ok(None) };
    // The name becomes a path: only an agent name may, never `../x` or `/etc/x`.
    if cohort_proto::AgentName::new(agent).is_err() {
        bail!("{agent:?} is not an agent name (lowercase letters, digits and '_')");
    }
    let path = dir.join(agent).join(format!("{agent}.json"));
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(AgentDdl::from_json(&text).with_context(|| format!("invalid DDL {}", path.display()))?))
}

fn parse_inputs(
    inputs: &[String],
    action: Option<&ActionDdl>,
) -> anyhow::Result<Map<String, Value>> {
    let mut data = Map::new();
    for input in inputs {
        let Some((key, text)) = input.split_once('=') else {
            bail!("argument {input:?} is not key=value");
        };
        let declared = action.and_then(|action| action.input.get(key));
        let value = match declared.or(action.and_then(|action| action.extra_input.as_ref())) {
            Some(ddl) => cohort_ddl::convert_argument(key, ddl, text)?,
            None if action.is_some() => {
                bail!(
                    "unknown input {key:?}; the action takes: {}",
                    action
                        .map(|a| a.input.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                )
            }
            None => Value::String(text.to_owned()),
        };
        data.insert(key.to_owned(), value);
    }
    if let Some(action) = action {
        cohort_ddl::validate_inputs(action, &mut data)?;
    }
    Ok(data)
}

pub(crate) async fn run(args: RpcArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    if !args.one
        && args.limit.is_none()
        && (args.limit_method.is_some() || args.limit_seed.is_some())
    {
        bail!("--limit-method and --limit-seed choose among nodes: give --limit-nodes or -1 too");
    }
    let agent = AgentName::new(args.agent.as_str())?;
    let filter = args.filter.build()?;
    let settings = args.common.settings()?;
    let ddl = find_ddl(agent.as_str(), settings.config.agents_dir.as_deref())?;
    let action = match &ddl {
        Some(ddl) => Some(ddl.action(&args.action).with_context(|| {
            format!(
                "Attempted to call action {} for {agent} but it's not declared in the DDL",
                args.action
            )
        })?),
        None => {
            writeln!(
                io.err,
                "warning: no DDL for agent {agent}; sending inputs as text without validation"
            )?;
            None
        }
    };
    let data = parse_inputs(&args.inputs, action)?;

    let method = args.common.discovery.method(&filter, &settings.config.collective)?;
    let client = settings.connect(Lifetime::OneShot).await?;
    let ddl_timeout = ddl.as_ref().map(|ddl| Duration::from_secs_f64(ddl.metadata.timeout));
    let timeout =
        reply_timeout(settings.config.timeout, ddl_timeout, settings.config.discovery_timeout);
    // Discovered nodes get one broadcast carrying the filter, even when few, and nodes that
    // answer discovery late are still awaited (cohort_client::Client::discover_and_call):
    // where MCollective's direct addressing of small sets would have silently left a slow node
    // out. Only nodes that have the agent are discovered.
    let method_name = method.name();
    let selection = method.selection(&filter, settings.discovery()).for_agent(&agent);
    let call = Call {
        agent: agent.clone(),
        action: args.action.clone(),
        data,
        filter: filter.clone(),
        collective: settings.config.collective.clone(),
        targets: Targets::Broadcast { expected: BTreeSet::new() },
        timeout,
        ttl: settings.config.ttl,
    };
    let pick = match args.limit_method {
        Some(LimitMethod::First) => Pick::First,
        Some(LimitMethod::Random) | None => Pick::Random(args.limit_seed),
    };
    let limit_count = if args.one { Some(Count::Nodes(1)) } else { args.limit };
    let spread = Spread {
        limit: limit_count.map(|count| (count, pick)),
        batch: args.batch,
        batch_sleep: Duration::try_from_secs_f64(args.batch_sleep)
            .with_context(|| format!("--batch-sleep {} is not a duration", args.batch_sleep))?,
    };

    if args.no_results || args.reply_to.is_some() {
        let (id, discovered) =
            client.send_selected(selection, spread, call, args.reply_to.as_deref()).await?;
        if let Some(discovered) = &discovered {
            crate::output::discovery_notes(io.err, discovered)?;
        }
        match &args.reply_to {
            Some(subject) => writeln!(io.out, "Request sent with id: {id} replying to {subject}")?,
            None => writeln!(io.out, "Request sent with id: {id}")?,
        }
        return Ok(ExitCode::SUCCESS);
    }

    let show_bar = io.err_tty && !args.no_progress && !args.json && !args.jsonl;
    let verbose_discovery = settings.verbose || (io.err_tty && !args.json && !args.jsonl);
    let bar = std::cell::RefCell::new(indicatif::ProgressBar::hidden());
    let out = &mut *io.out;
    let err = &mut *io.err;
    let mut write_error = None;
    let on_reply = |reply: &NodeReply| {
        crate::output::advance(&bar.borrow());
        if args.jsonl
            && let Err(e) = writeln!(out, "{}", reply_json(reply, true))
        {
            write_error.get_or_insert(e);
        }
    };
    let on_discovered = |found: &Discovered| {
        if verbose_discovery {
            // Progress, on stderr: a failed write there is not worth failing the call.
            let _ = if found.networked {
                writeln!(
                    err,
                    "Discovering hosts using the broadcast method for {} second(s) .... {}",
                    settings.config.discovery_timeout.as_secs_f64(),
                    found.nodes.len()
                )
            } else {
                writeln!(
                    err,
                    "Discovered {} nodes using the {} method",
                    found.nodes.len(),
                    method_name
                )
            };
        }
        *bar.borrow_mut() = progress(found.nodes.len(), show_bar);
    };
    let (discovered, result) = client.run(selection, spread, call, on_discovered, on_reply).await?;
    if let Some(err) = write_error {
        return Err(err.into());
    }
    crate::output::discovery_notes(io.err, &discovered)?;
    if discovered.nodes.is_empty() {
        writeln!(io.err, "\nNo request sent, we did not discover any nodes.")?;
        if args.json {
            print_json(io, &agent, &args.action, &discovered, None, &[], args.sort)?;
        } else if args.jsonl {
            writeln!(io.out, "{}", summary_json(&discovered, None, &[]))?;
        }
        if discovered.lost_broker.is_some() {
            return Ok(ExitCode::from(crate::output::EXIT_LOST_BROKER));
        }
        return Ok(ExitCode::from(1));
    }
    bar.borrow().finish_and_clear();
    let summaries = match action {
        Some(action) => cohort_ddl::summarize(
            action,
            result.replies.iter().filter(|r| carries_data(r.reply.status)).map(|r| &r.reply.data),
        ),
        None => Vec::new(),
    };
    if args.json {
        print_json(io, &agent, &args.action, &discovered, Some(&result), &summaries, args.sort)?;
    } else if args.jsonl {
        writeln!(io.out, "{}", summary_json(&discovered, Some(&result), &summaries))?;
    } else {
        let display = match args.display {
            Some(DisplayMode::Ok) => Display::Ok,
            Some(DisplayMode::All) => Display::Always,
            Some(DisplayMode::Failed) => Display::Failed,
            None => action.map_or(Display::Failed, |a| a.display),
        };
        print_text(
            io,
            action,
            display,
            &result,
            &summaries,
            &discovered,
            settings.verbose,
            &agent,
            &args.action,
            args.sort,
        )?;
    }
    if crate::output::lost_broker_note(io.err, &result)? || discovered.lost_broker.is_some() {
        return Ok(ExitCode::from(crate::output::EXIT_LOST_BROKER));
    }
    Ok(exit_code(&discovered, &result))
}

/// Whether a reply's data is a result: status 0 (OK) and 1 (aborted: the action ran and
/// reported failure, such as a check in WARNING) carry the action's outputs, as MCollective
/// aggregates them; the other statuses are errors about the request.
pub(crate) fn carries_data(status: StatusCode) -> bool {
    matches!(status, StatusCode::Ok | StatusCode::Aborted)
}

fn exit_code(discovered: &Discovered, result: &CallResult) -> ExitCode {
    let stats = &result.stats;
    let code = if !discovered.networked && stats.responses == 0 {
        4
    } else if discovered.nodes.is_empty() && stats.responses == 0 {
        1
    } else if stats.responses == 0 {
        3
    } else if stats.failed > 0
        || !stats.no_responses.is_empty()
        || !stats.unverified.is_empty()
        || !discovered.unverified.is_empty()
    {
        2
    } else {
        0
    };
    ExitCode::from(code)
}

/// A reply value as text: strings bare, null empty, anything else as JSON.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[allow(clippy::too_many_arguments)]
fn print_text(
    io: &mut Io<'_>,
    action: Option<&ActionDdl>,
    display: Display,
    result: &CallResult,
    summaries: &[Summary],
    discovered: &Discovered,
    verbose: bool,
    agent: &AgentName,
    action_name: &str,
    sort: bool,
) -> anyhow::Result<()> {
    let mut replies: Vec<_> = result.replies.iter().collect();
    if sort {
        replies.sort_by(|a, b| a.reply.sender.cmp(&b.reply.sender));
    }
    let mut block = String::new();
    for node in replies {
        let reply = &node.reply;
        let ok = reply.status == StatusCode::Ok;
        let show = match display {
            Display::Always => true,
            Display::Ok => ok,
            Display::Failed => !ok,
        };
        if !show {
            continue;
        }
        block
            .push_str(format!("{:<40} {}", reply.sender.as_str(), reply.status.label()).trim_end());
        block.push('\n');
        if reply.status_message != "OK" {
            block.push_str(&format!("   {}\n", reply.status_message));
        }
        if ok {
            let labels: Vec<(String, String)> = reply
                .data
                .keys()
                .map(|key| {
                    let label = action
                        .and_then(|a| a.output.get(key))
                        .map(|o| o.display_as.clone())
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| key.clone());
                    (key.clone(), label)
                })
                .collect();
            let width =
                labels.iter().map(|(_, label)| label.chars().count()).max().unwrap_or(0) + 3;
            for (key, label) in labels {
                let text = value_text(&reply.data[&key]);
                let mut lines = text.lines();
                let first = lines.next().unwrap_or_default();
                block.push_str(&format!("{:>width$}: {first}\n", label));
                for line in lines {
                    block.push_str(&format!("{:width$}  {line}\n", ""));
                }
            }
        }
        block.push('\n');
    }
    if !block.is_empty() {
        write!(io.out, "\n{block}")?;
    }
    for summary in summaries {
        let lines = summary.lines();
        // Nothing to summarize (every reply failed): no empty heading.
        if lines.is_empty() {
            continue;
        }
        writeln!(io.out, "Summary of {}:\n", summary.display_as)?;
        for line in lines {
            writeln!(io.out, "   {line}")?;
        }
        writeln!(io.out)?;
    }
    let stats = &result.stats;
    if verbose {
        writeln!(io.out, "---- {agent}#{action_name} call stats ----")?;
        writeln!(io.out, "           Nodes: {} / {}", stats.discovered, stats.responses)?;
        writeln!(io.out, "     Pass / Fail: {} / {}", stats.ok, stats.failed)?;
        writeln!(
            io.out,
            "      Start Time: {}",
            humantime::format_rfc3339_seconds(stats.start_time)
        )?;
        writeln!(io.out, "  Discovery Time: {:.2}ms", ms(discovered.elapsed))?;
        writeln!(io.out, "      Agent Time: {:.2}ms", ms(stats.request_time))?;
        writeln!(io.out, "      Total Time: {:.2}ms", ms(discovered.elapsed + stats.request_time))?;
    } else {
        writeln!(io.out, "{}", finished_line(stats))?;
    }
    if !stats.no_responses.is_empty() {
        write!(io.out, "\n{}", name_grid("No response from:", &stats.no_responses))?;
    }
    if !stats.unexpected.is_empty() {
        write!(io.out, "\n{}", name_grid("Unexpected response from:", &stats.unexpected))?;
    }
    let unverified: Vec<_> =
        discovered.unverified.iter().chain(&stats.unverified).cloned().collect();
    if !unverified.is_empty() {
        write!(io.out, "\n{}", unverified_lines(&unverified))?;
    }
    Ok(())
}

/// One reply as JSON; `line` adds `"type": "reply"` for `--jsonl`.
fn reply_json(node: &NodeReply, line: bool) -> Value {
    let mut value = json!({
        "sender": node.reply.sender,
        "agent": node.reply.agent,
        "action": node.reply.action,
        "statuscode": node.reply.status.code(),
        "statusmsg": node.reply.status_message,
        "data": node.reply.data,
        "time_ms": ms(node.elapsed),
    });
    if line && let Value::Object(map) = &mut value {
        map.insert("type".into(), json!("reply"));
    }
    value
}

/// The statistics object of `-j` and of the `--jsonl` summary line.
fn stats_json(discovered: &Discovered, result: Option<&CallResult>) -> Value {
    let mut stats = call_stats_json(discovered, result);
    if let Value::Object(map) = &mut stats {
        map.insert("expected".into(), json!(discovered.expected));
        map.insert(
            "shortfall".into(),
            discovered.shortfall.map_or(Value::Null, |short| {
                json!({
                    "expected": short.expected,
                    "found": short.found,
                    "missing": short.expected.saturating_sub(short.found),
                    "waited_ms": ms(short.waited),
                })
            }),
        );
    }
    stats
}

fn call_stats_json(discovered: &Discovered, result: Option<&CallResult>) -> Value {
    let unverified: Vec<Value> = discovered
        .unverified
        .iter()
        .chain(result.map(|r| r.stats.unverified.as_slice()).unwrap_or_default())
        .map(|u| json!({ "sender": u.sender, "reason": u.reason }))
        .collect();
    match result {
        Some(result) => {
            let s = &result.stats;
            json!({
                "request_id": s.request_id,
                "discovered": s.discovered,
                "responses": s.responses,
                "ok": s.ok,
                "failed": s.failed,
                "no_responses": s.no_responses,
                "unexpected_responses": s.unexpected,
                "unverified_replies": unverified,
                "discovery_time_ms": ms(discovered.elapsed),
                "request_time_ms": ms(s.request_time),
                "start_time": humantime::format_rfc3339_millis(s.start_time).to_string(),
            })
        }
        None => {
            let empty: [&str; 0] = [];
            json!({
                "discovered": 0,
                "responses": 0,
                "ok": 0,
                "failed": 0,
                "no_responses": empty,
                "unexpected_responses": empty,
                "unverified_replies": unverified,
                "discovery_time_ms": ms(discovered.elapsed),
                "request_time_ms": 0.0,
            })
        }
    }
}

/// The last line of `--jsonl`.
fn summary_json(
    discovered: &Discovered,
    result: Option<&CallResult>,
    summaries: &[Summary],
) -> Value {
    json!({ "type": "summary", "summaries": summaries, "stats": stats_json(discovered, result) })
}

fn print_json(
    io: &mut Io<'_>,
    agent: &AgentName,
    action: &str,
    discovered: &Discovered,
    result: Option<&CallResult>,
    summaries: &[Summary],
    sort: bool,
) -> anyhow::Result<()> {
    let mut nodes: Vec<&NodeReply> = result.map(|r| r.replies.iter().collect()).unwrap_or_default();
    if sort {
        nodes.sort_by(|a, b| a.reply.sender.cmp(&b.reply.sender));
    }
    let replies: Vec<Value> = nodes.into_iter().map(|node| reply_json(node, false)).collect();
    let stats = stats_json(discovered, result);
    let document = json!({
        "agent": agent,
        "action": action,
        "replies": replies,
        "summaries": summaries,
        "stats": stats,
    });
    let text = if io.out_tty {
        serde_json::to_string_pretty(&document)?
    } else {
        serde_json::to_string(&document)?
    };
    writeln!(io.out, "{text}")?;
    Ok(())
}
