//! `cohort nrpe CHECK` and `cohort nagios CHECK`: one NRPE check run on every matching node by
//! the `nrpe` agent, aggregated. `nrpe` is for people (the original `mco nrpe` shape, or JSON);
//! `nagios` is a Nagios/Icinga plugin (the original check-mc-nrpe, fixed: it never hangs past
//! its timeout and never prints anything but a plugin result).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cohort_client::Targets;
use cohort_nagios::State;
use cohort_nagios::fleet::{Judgement, NodeResult, Tally};
use cohort_proto::{AgentName, StatusCode};
use serde_json::{Value, json};

use crate::discovery::Method;
use crate::options::{CommonFlags, FilterFlags, Lifetime, Settings};
use crate::output::{Io, ms, name_grid, progress};

/// Options shared by both commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckFlags {
    /// The NRPE command to run, as named in the nodes' NRPE configuration: the last word.
    /// Words before it are filter statements added to `-W`, as check-mc-nrpe's Nagios command
    /// `check-mc-nrpe -W $ARG1$ $ARG2$` passes them (`-W puppet_enabled=1 country=us CHECK`).
    #[arg(value_name = "CHECK", required = true, num_args = 1..)]
    words: Vec<String>,
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
    /// Also write the counts in node_exporter textfile format to PATH (atomically).
    #[arg(long, value_name = "PATH")]
    textfile: Option<std::path::PathBuf>,
}

impl CheckFlags {
    /// The check: the last positional word.
    fn check(&self) -> &str {
        self.words.last().map_or("", String::as_str)
    }

    /// The filter: the flags, with the words before the check added to `-W`.
    fn filter(&self) -> anyhow::Result<cohort_proto::Filter> {
        let statements = &self.words[..self.words.len().saturating_sub(1)];
        self.filter.with_statements(statements).build()
    }
}

/// Options of `cohort nrpe`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NrpeArgs {
    #[command(flatten)]
    flags: CheckFlags,
    /// One JSON document.
    #[arg(short = 'j', long = "json", conflicts_with = "jsonl")]
    json: bool,
    /// One JSON object per node as it answers, then one summary object.
    #[arg(long)]
    jsonl: bool,
    /// No progress bar.
    #[arg(long = "np", visible_alias = "no-progress")]
    no_progress: bool,
}

/// Options of `cohort nagios`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NagiosArgs {
    #[command(flatten)]
    flags: CheckFlags,
    /// State of nodes that were discovered but did not answer.
    #[arg(long, value_name = "STATE", default_value = "unknown", value_parser = ["ok", "warning", "critical", "unknown"])]
    no_response_state: String,
    /// Fewer nodes than this is a problem.
    #[arg(long, value_name = "N")]
    min_nodes: Option<usize>,
    /// State of "fewer nodes than --min-nodes".
    #[arg(long, value_name = "STATE", default_value = "unknown", value_parser = ["warning", "critical", "unknown"])]
    min_nodes_state: String,
}

/// How long a check may run: the command's own limit in place of the nrpe DDL's 70 s, so a
/// fleet check ends well inside a monitoring system's service timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The reply timeout of a fleet check, by the client's one rule (`-t`, else the action's
/// timeout plus `--dt`).
fn check_timeout(settings: &Settings) -> Duration {
    cohort_client::reply_timeout(
        settings.config.timeout,
        Some(CHECK_TIMEOUT),
        settings.config.discovery_timeout,
    )
}

fn state_of(reply: &cohort_proto::Reply) -> (State, String) {
    match reply.status {
        StatusCode::Ok | StatusCode::Aborted => {
            let code = reply.data.get("exitcode").and_then(Value::as_i64).unwrap_or(3);
            let output =
                reply.data.get("output").and_then(Value::as_str).unwrap_or_default().to_owned();
            (State::from_exit(code), output)
        }
        // The node could not run it at all: no nrpe agent, invalid input, a crash.
        other => (State::Unknown, format!("{}: {}", other.label(), reply.status_message)),
    }
}

struct Ran {
    tally: Tally,
    discovered: cohort_client::Discovered,
    replies: Vec<cohort_client::NodeReply>,
    stats: cohort_client::CallStats,
}

async fn run_check(
    flags: &CheckFlags,
    filter: cohort_proto::Filter,
    settings: &Settings,
    method: Method,
    mut on_reply: impl FnMut(&cohort_client::NodeReply),
    mut on_discovered: impl FnMut(usize),
) -> anyhow::Result<Ran> {
    let started = Instant::now();
    let client = settings.connect(Lifetime::OneShot).await?;
    let agent = AgentName::new("nrpe")?;
    let mut data = serde_json::Map::new();
    data.insert("command".into(), Value::from(flags.check()));
    let call = cohort_client::Call {
        agent: agent.clone(),
        action: "runcommand".to_owned(),
        data,
        filter: filter.clone(),
        collective: settings.config.collective.clone(),
        targets: Targets::Broadcast { expected: std::collections::BTreeSet::new() },
        timeout: check_timeout(settings),
        ttl: settings.config.ttl,
    };
    // Only nodes that can run the check count; others are not "no response". Literal `-I`
    // names and node lists are taken as they are: those nodes are expected, agent or not.
    let selection = method.selection(&filter, settings.discovery()).for_agent(&agent);
    // With nothing discovered nothing is sent, and the result is empty with zero counts.
    let (discovered, result) = client
        .run(
            selection,
            cohort_client::Spread::default(),
            call,
            |found| on_discovered(found.nodes.len()),
            |reply| on_reply(reply),
        )
        .await?;
    let (replies, stats) = (result.replies, result.stats);
    let results = replies
        .iter()
        .map(|r| {
            let (state, output) = state_of(&r.reply);
            NodeResult { node: r.reply.sender.to_string(), state, output }
        })
        .collect();
    let tally = Tally {
        check: flags.check().to_owned(),
        results,
        no_response: stats.no_responses.iter().map(ToString::to_string).collect(),
        elapsed: started.elapsed(),
    };
    Ok(Ran { tally, discovered, replies, stats })
}

fn write_textfile(path: &std::path::Path, tally: &Tally) -> anyhow::Result<()> {
    // Atomic (temporary file, then rename): node_exporter never scrapes half a file.
    let text = cohort_nagios::textfile::render(tally);
    cohort_boot::layout::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Worst state: CRITICAL first, then the highest code.
fn worst(states: impl Iterator<Item = State>) -> State {
    let states: Vec<State> = states.collect();
    if states.contains(&State::Critical) {
        State::Critical
    } else {
        states.into_iter().max().unwrap_or(State::Ok)
    }
}

fn node_json(reply: &cohort_client::NodeReply) -> Value {
    let (state, output) = state_of(&reply.reply);
    let data = &reply.reply.data;
    json!({
        "node": reply.reply.sender,
        "state": state,
        "exitcode": state.code(),
        "output": output,
        "long_output": data.get("long_output").cloned().unwrap_or(Value::Null),
        "perfdata": data.get("perfdata").cloned().unwrap_or(Value::Null),
        "perf": data.get("perf").cloned().unwrap_or(Value::Null),
        "time_ms": ms(reply.elapsed),
    })
}

pub(crate) async fn nrpe(args: NrpeArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let settings = args.flags.common.settings()?;
    let filter = args.flags.filter()?;
    let method = args.flags.common.discovery.method(&filter, &settings.config.collective)?;
    let bar = std::cell::RefCell::new(indicatif::ProgressBar::hidden());
    let show_bar = io.err_tty && !args.no_progress && !args.json && !args.jsonl;
    let mut lines = Vec::new();
    let ran = run_check(
        &args.flags,
        filter,
        &settings,
        method,
        |reply| {
            crate::output::advance(&bar.borrow());
            if args.jsonl {
                lines.push(node_json(reply).to_string());
            }
        },
        |count| *bar.borrow_mut() = progress(count, show_bar),
    )
    .await?;
    bar.borrow().finish_and_clear();
    crate::output::discovery_notes(io.err, &ran.discovered)?;
    let tally = &ran.tally;
    let counts = tally.counts(State::Unknown);
    let state = worst(
        tally
            .results
            .iter()
            .map(|r| r.state)
            .chain(tally.no_response.iter().map(|_| State::Unknown)),
    );
    if let Some(path) = &args.flags.textfile {
        write_textfile(path, tally)?;
    }
    let summary = json!({
        "check": tally.check,
        "state": state,
        "counts": {"ok": counts[0], "warning": counts[1], "critical": counts[2], "unknown": counts[3] - tally.no_response.len(), "noresponse": tally.no_response.len()},
        "no_responses": tally.no_response,
        "unexpected_responses": ran.stats.unexpected,
        "discovered": ran.stats.discovered,
        "responses": ran.stats.responses,
        "time_ms": ms(tally.elapsed),
    });
    if args.jsonl {
        for line in lines {
            writeln!(io.out, "{line}")?;
        }
        writeln!(io.out, "{}", json!({"summary": summary}))?;
    } else if args.json {
        let mut document = summary;
        document["nodes"] = Value::Array(ran.replies.iter().map(node_json).collect());
        let text = if io.out_tty {
            serde_json::to_string_pretty(&document)?
        } else {
            serde_json::to_string(&document)?
        };
        writeln!(io.out, "{text}")?;
    } else {
        let mut results: Vec<&NodeResult> = tally.results.iter().collect();
        results.sort_by(|a, b| a.node.cmp(&b.node));
        let mut block = String::new();
        for result in results {
            if result.state == State::Ok && !settings.verbose {
                continue;
            }
            block.push_str(&format!(
                "{:<40} status={}\n    {}\n\n",
                result.node,
                result.state.label(),
                result.output
            ));
        }
        if !block.is_empty() {
            write!(io.out, "\n{block}")?;
        }
        writeln!(io.out, "{} NRPE results\n", tally.check)?;
        for (label, n) in [
            ("OK", counts[0]),
            ("WARNING", counts[1]),
            ("CRITICAL", counts[2]),
            ("UNKNOWN", counts[3]),
        ] {
            writeln!(io.out, "{label:>16}: {n}")?;
        }
        writeln!(io.out, "{}", crate::output::finished_line(&ran.stats))?;
        if ran.stats.discovered == 0 {
            writeln!(io.err, "\nNo request sent, we did not discover any nodes.")?;
        }
        if !ran.stats.no_responses.is_empty() {
            write!(io.out, "\n{}", name_grid("No response from:", &ran.stats.no_responses))?;
        }
        if !ran.stats.unexpected.is_empty() {
            write!(io.out, "\n{}", name_grid("Unexpected response from:", &ran.stats.unexpected))?;
        }
    }
    Ok(if ran.stats.discovered == 0 { ExitCode::from(3) } else { ExitCode::from(state.code()) })
}

/// The plugin: always one Nagios result on stdout and exit 0-3, whatever happens.
pub(crate) fn nagios(args: NagiosArgs) -> ExitCode {
    let check = args.flags.check().to_owned();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            println!("{check}: UNKNOWN: cannot start: {err}");
            return ExitCode::from(3);
        }
    };
    let mut stdout = std::io::stdout();
    runtime.block_on(plugin(args, &mut stdout))
}

/// The plugin's work on an async runtime, writing its result to `out` (the demo's tour runs
/// it in-process).
pub(crate) async fn plugin(args: NagiosArgs, out: &mut dyn std::io::Write) -> ExitCode {
    let check = args.flags.check().to_owned();
    let mut unknown = |reason: String| {
        // A plugin's first line is all a pager shows: keep it to one line.
        let _ = writeln!(out, "{check}: UNKNOWN: {}", reason.replace('\n', " "));
        ExitCode::from(3)
    };
    let settings = match args.flags.common.settings() {
        Ok(settings) => settings,
        Err(err) => return unknown(format!("{err:#}")),
    };
    let judgement = Judgement {
        no_response_state: State::parse(&args.no_response_state).unwrap_or(State::Unknown),
        min_nodes: args.min_nodes,
        min_nodes_state: State::parse(&args.min_nodes_state).unwrap_or(State::Unknown),
    };
    // Everything, connecting included, must end before Nagios' own timeout would fire.
    let budget = settings.config.connect_timeout
        + settings.config.discovery_timeout
        + check_timeout(&settings)
        + Duration::from_secs(2);
    let selected = args.flags.filter().and_then(|filter| {
        let method = args
            .flags
            .common
            .discovery
            .method_without_stdin(&filter, &settings.config.collective)?;
        Ok((filter, method))
    });
    let (filter, method) = match selected {
        Ok(selected) => selected,
        Err(err) => return unknown(format!("{err:#}")),
    };
    let checked = run_check(&args.flags, filter, &settings, method, |_| {}, |_| {});
    let ran = tokio::time::timeout(budget, checked).await;
    let ran = match ran {
        Ok(Ok(ran)) => ran,
        Ok(Err(err)) => return unknown(format!("{err:#}")),
        Err(_) => return unknown(format!("no result within {budget:?}")),
    };
    if let Some(path) = &args.flags.textfile
        && let Err(err) = write_textfile(path, &ran.tally)
    {
        return unknown(format!("{err:#}"));
    }
    let (text, code) = cohort_nagios::fleet::render_plugin(&ran.tally, &judgement);
    if write!(out, "{text}").is_err() {
        return ExitCode::from(3);
    }
    ExitCode::from(code)
}
