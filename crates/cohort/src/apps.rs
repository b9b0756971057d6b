//! The small applications on top of `rpcutil` and the DDLs: `cohort facts`, `cohort inventory`
//! (one node, `--list-collectives`, `--export`), `cohort describe-filter` and `cohort plugin
//! doc`. Output shapes follow MCollective's applications (reference/mcollective.md §1.8).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cohort_client::sources::{Inventory, InventoryNode};
use cohort_client::{Call, CallResult, Discovered, Spread, Targets, reply_timeout};
use cohort_proto::{AgentName, Collective, Expr, FactOp, Filter, Identity, StatusCode, rpcutil};
use serde_json::{Map, Value, json};

use crate::discovery::Method;
use crate::options::{CommonFlags, FilterFlags, Lifetime, Settings};
use crate::output::{Io, finished_line, name_grid};

/// The client side of one application run, set up once: settings (key files, trust), the node
/// source (which may consume standard input) and the broker connection.
pub(crate) struct Session {
    settings: Settings,
    method: Method,
    client: cohort_client::Client,
}

impl Session {
    /// Calls that lose the broker wait `grace` for replies before they end.
    pub(crate) fn with_lost_grace(mut self, grace: std::time::Duration) -> Session {
        self.client = self.client.with_lost_grace(grace);
        self
    }

    /// The broker connection.
    pub(crate) fn nats(&self) -> &async_nats::Client {
        self.client.nats()
    }

    /// The collective addressed.
    pub(crate) fn collective(&self) -> &cohort_proto::Collective {
        &self.settings.config.collective
    }

    pub(crate) async fn open(
        common: &CommonFlags,
        filter: &Filter,
        lifetime: Lifetime,
    ) -> anyhow::Result<Session> {
        let settings = common.settings()?;
        let method = common.discovery.method(filter, &settings.config.collective)?;
        let client = settings.connect(lifetime).await?;
        Ok(Session { settings, method, client })
    }

    /// Calls `rpcutil <action>` on the nodes the method finds for `filter`.
    async fn rpcutil(
        &self,
        filter: &Filter,
        action: &str,
        data: Map<String, Value>,
    ) -> anyhow::Result<(Discovered, CallResult)> {
        self.call("rpcutil", filter, action, data, None).await
    }

    /// Calls `<agent> <action>` on `listed` nodes, or on those the method finds for `filter`.
    pub(crate) async fn call(
        &self,
        agent: &str,
        filter: &Filter,
        action: &str,
        data: Map<String, Value>,
        listed: Option<BTreeSet<Identity>>,
    ) -> anyhow::Result<(Discovered, CallResult)> {
        let (discovered, result) = self.call_quietly(agent, filter, action, data, listed).await?;
        crate::output::discovery_notes(&mut std::io::stderr(), &discovered)?;
        crate::output::lost_broker_note(&mut std::io::stderr(), &result)?;
        Ok((discovered, result))
    }

    /// [`Session::call`] without the discovery notes on stderr (a daemon that logs its own).
    pub(crate) async fn call_quietly(
        &self,
        agent: &str,
        filter: &Filter,
        action: &str,
        data: Map<String, Value>,
        listed: Option<BTreeSet<Identity>>,
    ) -> anyhow::Result<(Discovered, CallResult)> {
        let config = &self.settings.config;
        let agent = AgentName::new(agent)?;
        let call = Call {
            agent: agent.clone(),
            action: action.to_owned(),
            data,
            filter: filter.clone(),
            collective: config.collective.clone(),
            targets: Targets::Broadcast { expected: BTreeSet::new() },
            // The action's own timeout (a Puppet run takes minutes), as `cohort rpc` uses it.
            timeout: reply_timeout(
                config.timeout,
                cohort_ddl::builtin::find(agent.as_str())
                    .map(|ddl| std::time::Duration::from_secs_f64(ddl.metadata.timeout)),
                config.discovery_timeout,
            ),
            ttl: config.ttl,
        };
        let selection = match listed {
            Some(nodes) => cohort_client::Selection::Listed(nodes),
            None => self.method.selection(filter, self.settings.discovery()).for_agent(&agent),
        };
        Ok(self.client.run(selection, Spread::default(), call, |_| {}, |_| {}).await?)
    }
}

pub(crate) fn finished(io: &mut Io<'_>, result: &CallResult) -> anyhow::Result<()> {
    let stats = &result.stats;
    writeln!(io.out, "{}", finished_line(stats))?;
    if !stats.no_responses.is_empty() {
        write!(io.out, "\n{}", name_grid("No response from:", &stats.no_responses))?;
    }
    Ok(())
}

use crate::rpc::value_text as text;

/// Options of `cohort facts`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FactsArgs {
    /// The fact; dots reach into structured facts (`os.release.major`).
    fact: String,
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
}

/// `cohort facts FACT`: each value with how many nodes have it; `-v` lists the nodes.
pub(crate) async fn facts(args: FactsArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let filter = args.filter.build()?;
    let mut data = Map::new();
    data.insert("fact".into(), json!(args.fact));
    let session = Session::open(&args.common, &filter, Lifetime::OneShot).await?;
    let (discovered, result) = session.rpcutil(&filter, "get_fact", data).await?;
    if discovered.nodes.is_empty() {
        writeln!(io.err, "No request sent, we did not discover any nodes.")?;
        return Ok(ExitCode::from(1));
    }
    let mut values: BTreeMap<String, Vec<&Identity>> = BTreeMap::new();
    for node in &result.replies {
        if node.reply.status == StatusCode::Ok
            && let Ok(fact) = rpcutil::read::<rpcutil::FactValue>(&node.reply.data)
        {
            values.entry(text(&fact.value)).or_default().push(&node.reply.sender);
        }
    }
    writeln!(io.out, "Report for fact: {}\n", args.fact)?;
    let mut ordered: Vec<(&String, &Vec<&Identity>)> = values.iter().collect();
    // Most common first, then by value, as MCollective sorts.
    ordered.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for (value, nodes) in ordered {
        let shown = if value.is_empty() { "(not set)" } else { value.as_str() };
        writeln!(io.out, "        {shown:<40} found {} times", nodes.len())?;
        if session.settings.verbose {
            let mut nodes: Vec<&&Identity> = nodes.iter().collect();
            nodes.sort();
            for node in nodes {
                writeln!(io.out, "            {node}")?;
            }
            writeln!(io.out)?;
        }
    }
    finished(io, &result)?;
    Ok(if result.stats.no_responses.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// Options of `cohort inventory`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InventoryArgs {
    /// The node to describe.
    #[arg(required_unless_present_any = ["list_collectives", "export"])]
    node: Option<Identity>,
    /// List the collectives and how many nodes are in each.
    #[arg(long = "list-collectives", visible_alias = "lc", conflicts_with_all = ["node", "export"])]
    list_collectives: bool,
    /// Write an inventory of the matching nodes (JSON, or YAML for .yaml/.yml) for `--dm
    /// inventory`.
    #[arg(long = "export", value_name = "FILE", conflicts_with = "node")]
    export: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
}

/// `cohort inventory NODE | --list-collectives | --export FILE`.
pub(crate) async fn inventory(args: InventoryArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let mut filter = args.filter.build()?;
    if args.list_collectives {
        return list_collectives(&args.common, &filter, io).await;
    }
    if let Some(path) = &args.export {
        return export(&args.common, &filter, path, io).await;
    }
    let Some(node) = &args.node else {
        bail!("name a node, or give --list-collectives or --export")
    };
    filter.identity = vec![node.to_string()];
    let session = Session::open(&args.common, &filter, Lifetime::OneShot).await?;
    let (_, inventory) = session.rpcutil(&filter, "inventory", Map::new()).await?;
    let (_, stats) = session.rpcutil(&filter, "daemon_stats", Map::new()).await?;
    let (Some(inventory), Some(stats)) = (inventory.replies.first(), stats.replies.first()) else {
        bail!("{node} did not answer");
    };
    // A node that refuses (its policy denies the caller) answers with a status and no data.
    let data: rpcutil::Inventory = document(node, &inventory.reply)?;
    let stats: rpcutil::DaemonStats = document(node, &stats.reply)?;
    writeln!(io.out, "Inventory for {node}:\n")?;
    writeln!(io.out, "   Server Statistics:")?;
    for (label, value) in [
        ("Version", stats.version.clone()),
        ("Start Time", stats.starttime.to_string()),
        ("Config File", stats.configfile.clone()),
        ("Process ID", stats.pid.to_string()),
        ("Total Messages", stats.total.to_string()),
        ("Messages Passed Filters", stats.passed.to_string()),
        ("Messages Filtered", stats.filtered.to_string()),
        ("Expired Messages", stats.ttlexpired.to_string()),
        ("Unverified Messages", stats.unverified.to_string()),
        ("Replayed Messages", stats.replayed.to_string()),
        ("Unauthorized Requests", stats.unauthorized.to_string()),
        ("Audit Lines Suppressed", stats.audit_suppressed.to_string()),
        ("Replies Sent", stats.replies.to_string()),
    ] {
        writeln!(io.out, "   {label:>28}: {value}")?;
    }
    writeln!(io.out, "   {:>28}: {}", "Collectives", data.collectives.join(", "))?;
    writeln!(io.out, "   {:>28}: {}\n", "Main Collective", data.main_collective)?;
    writeln!(io.out, "   Agents:")?;
    columns(io.out, &data.agents, 3, 24)?;
    writeln!(io.out, "\n   Configuration Management Classes:")?;
    columns(io.out, &data.classes, 2, 36)?;
    writeln!(io.out, "\n   Facts:")?;
    let mut flat = Vec::new();
    flatten("", &Value::Object(data.facts), &mut flat);
    for (key, value) in flat {
        writeln!(io.out, "      {key} => {value}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `rpcutil` document in `reply`; an error naming the node when it refused (its policy
/// denies the caller: a status and no data) or sent something else.
fn document<T: serde::de::DeserializeOwned>(
    node: &Identity,
    reply: &cohort_proto::Reply,
) -> anyhow::Result<T> {
    if reply.status != StatusCode::Ok {
        bail!("{node} refused the {} request: {}", reply.action, reply.status_message);
    }
    rpcutil::read(&reply.data)
        .map_err(|err| anyhow::anyhow!("{node} sent an unreadable {} reply: {err}", reply.action))
}

/// Dotted keys for nested facts, so `os.release.major` reads as the filters address it.
/// `items` laid out `per_row` to a line, each padded to `width`.
fn columns(
    out: &mut dyn std::io::Write,
    items: &[String],
    per_row: usize,
    width: usize,
) -> std::io::Result<()> {
    for row in items.chunks(per_row) {
        let line: String = row.iter().map(|item| format!("{item:<width$}")).collect();
        writeln!(out, "      {}", line.trim_end())?;
    }
    Ok(())
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, value, out);
            }
        }
        other if !prefix.is_empty() => out.push((prefix.to_owned(), text(other))),
        _ => {}
    }
}

async fn list_collectives(
    common: &CommonFlags,
    filter: &Filter,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let session = Session::open(common, filter, Lifetime::OneShot).await?;
    let (_, result) = session.rpcutil(filter, "collective_info", Map::new()).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for node in &result.replies {
        let Ok(info) = rpcutil::read::<rpcutil::CollectiveInfo>(&node.reply.data) else {
            continue;
        };
        for collective in info.collectives {
            *counts.entry(collective).or_default() += 1;
        }
    }
    writeln!(io.out, "   {:<30} Nodes", "Collective")?;
    writeln!(io.out, "   {:<30} =====", "==========")?;
    for (collective, count) in &counts {
        writeln!(io.out, "   {collective:<30} {count}")?;
    }
    writeln!(io.out, "\n   {:>30}: {}", "Total nodes", result.replies.len())?;
    Ok(ExitCode::SUCCESS)
}

async fn export(
    common: &CommonFlags,
    filter: &Filter,
    path: &std::path::Path,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let session = Session::open(common, filter, Lifetime::OneShot).await?;
    let (_, result) = session.rpcutil(filter, "inventory", Map::new()).await?;
    let mut nodes = Vec::new();
    for node in &result.replies {
        if node.reply.status != StatusCode::Ok {
            continue;
        }
        let Ok(data) = rpcutil::read::<rpcutil::Inventory>(&node.reply.data) else {
            writeln!(io.err, "warning: {} sent an unreadable inventory", node.reply.sender)?;
            continue;
        };
        let collectives =
            data.collectives.into_iter().filter_map(|c| Collective::new(c).ok()).collect();
        nodes.push(InventoryNode {
            identity: node.reply.sender.clone(),
            collectives,
            agents: data.agents,
            classes: data.classes,
            facts: data.facts,
        });
    }
    nodes.sort_by(|a, b| a.identity.cmp(&b.identity));
    let inventory = Inventory { nodes };
    let yaml = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
    let text = if yaml {
        serde_saphyr::to_string(&inventory).context("cannot write the inventory as YAML")?
    } else {
        format!("{}\n", serde_json::to_string_pretty(&inventory)?)
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(io.err, "wrote {} nodes to {}", inventory.nodes.len(), path.display())?;
    let stats = &result.stats;
    if !stats.no_responses.is_empty() {
        write!(
            io.err,
            "\n{}",
            name_grid("No response from (not in the inventory):", &stats.no_responses)
        )?;
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `cohort describe-filter`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DescribeFilterArgs {
    #[command(flatten)]
    filter: FilterFlags,
}

/// `cohort describe-filter [filters]`: the filter in words, as nodes will apply it.
pub(crate) fn describe_filter(
    args: DescribeFilterArgs,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    let filter = args.filter.build()?;
    for line in describe(&filter) {
        writeln!(io.out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn op_words(op: FactOp) -> &'static str {
    match op {
        FactOp::Eq => "equal to",
        FactOp::Ne => "not equal to",
        FactOp::Lt => "less than",
        FactOp::Gt => "greater than",
        FactOp::Le => "less than or equal to",
        FactOp::Ge => "greater than or equal to",
        FactOp::Match => "matching the regular expression",
    }
}

fn name_words(kind: &str, name: &str) -> String {
    match name.strip_prefix('/').and_then(|rest| rest.strip_suffix('/')) {
        Some(pattern) => format!("{kind} matching the regular expression /{pattern}/"),
        None => format!("{kind} {name:?}"),
    }
}

fn expr_words(expr: &Expr) -> String {
    match expr {
        Expr::And(a, b) => format!("({} and {})", expr_words(a), expr_words(b)),
        Expr::Or(a, b) => format!("({} or {})", expr_words(a), expr_words(b)),
        Expr::Not(a) => format!("not {}", expr_words(a)),
        Expr::Fact(fact) => format!("fact {} {} {:?}", fact.fact, op_words(fact.op), fact.value),
        Expr::Class(class) => name_words("class", class),
    }
}

/// The filter in words, one condition per line.
pub(crate) fn describe(filter: &Filter) -> Vec<String> {
    if filter.is_empty() {
        return vec!["Every node (no filter).".to_owned()];
    }
    let mut lines = vec!["Nodes that:".to_owned()];
    for fact in &filter.fact {
        lines.push(format!("  have the fact {} {} {:?}", fact.fact, op_words(fact.op), fact.value));
    }
    for class in &filter.class {
        lines.push(format!("  have the {}", name_words("class", class)));
    }
    for agent in &filter.agent {
        lines.push(format!("  host the {}", name_words("agent", agent)));
    }
    for expr in &filter.compound {
        lines.push(format!("  satisfy {}", expr_words(expr)));
    }
    if !filter.identity.is_empty() {
        let names: Vec<String> =
            filter.identity.iter().map(|id| name_words("identity", id)).collect();
        lines.push(format!("  have the {}", names.join(", or the ")));
    }
    for line in lines.iter_mut().skip(2) {
        *line = format!("  and{}", &line[1..]);
    }
    lines
}

/// Options of `cohort plugin`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum PluginCommand {
    /// List the agents, or show one agent's DDL: actions, inputs, outputs.
    Doc {
        /// The agent [default: list them all].
        agent: Option<String>,
        /// Client configuration file (for `agents_dir`).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `cohort plugin doc [AGENT]`.
pub(crate) fn plugin(args: PluginArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let PluginCommand::Doc { agent, config } = args.command;
    let settings = CommonFlags::from_config(config).settings()?;
    let dir = settings.config.agents_dir.as_deref();
    let Some(name) = agent else {
        let mut names: BTreeSet<String> =
            cohort_ddl::builtin::all().iter().map(|ddl| ddl.metadata.name.clone()).collect();
        if let Some(dir) = dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let agents = entries.flatten().filter_map(|e| e.file_name().into_string().ok());
            names.extend(agents.filter(|name| cohort_proto::AgentName::new(name.as_str()).is_ok()));
        }
        writeln!(io.out, "Agents:\n")?;
        for name in names {
            if let Some(ddl) = crate::rpc::find_ddl(&name, dir)? {
                writeln!(io.out, "  {:<24} {}", name, ddl.metadata.description)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(ddl) = crate::rpc::find_ddl(&name, dir)? else {
        bail!("no DDL for agent {name:?} (built in, or in the agents_dir of the client config)");
    };
    let meta = &ddl.metadata;
    writeln!(io.out, "{}\n{}\n\n{}\n", meta.name, "=".repeat(meta.name.len()), meta.description)?;
    for (label, value) in [
        ("Author", meta.author.as_str()),
        ("Version", meta.version.as_str()),
        ("License", meta.license.as_str()),
        ("Home Page", meta.url.as_str()),
    ] {
        writeln!(io.out, "   {label:>10}: {value}")?;
    }
    writeln!(io.out, "   {:>10}: {} s\n", "Timeout", meta.timeout)?;
    writeln!(io.out, "ACTIONS:\n========")?;
    let names: Vec<&str> = ddl.actions.iter().map(|a| a.action.as_str()).collect();
    writeln!(io.out, "   {}\n", names.join(", "))?;
    for action in &ddl.actions {
        let title = format!("{} action:", action.action);
        writeln!(io.out, "   {title}\n   {}", "-".repeat(title.len()))?;
        writeln!(io.out, "       {}\n", action.description)?;
        writeln!(io.out, "       INPUT:")?;
        if action.input.is_empty() {
            writeln!(io.out, "           This action does not have any inputs")?;
        }
        for (input_name, input) in &action.input {
            write_input(io, input_name, input)?;
        }
        if let Some(extra) = &action.extra_input {
            write_input(io, "(any other name)", extra)?;
        }
        writeln!(io.out, "\n       OUTPUT:")?;
        if action.output.is_empty() {
            writeln!(io.out, "           This action does not have any outputs")?;
        }
        for (output_name, output) in &action.output {
            writeln!(io.out, "           {output_name}:")?;
            writeln!(io.out, "              Description: {}", output.description)?;
            writeln!(io.out, "               Display As: {}", output.display_as)?;
        }
        writeln!(io.out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One input of `plugin doc`, in MCollective's layout.
fn write_input(io: &mut Io<'_>, name: &str, input: &cohort_ddl::InputDdl) -> anyhow::Result<()> {
    writeln!(io.out, "           {name}:")?;
    writeln!(io.out, "              Description: {}", input.description)?;
    writeln!(io.out, "                   Prompt: {}", input.prompt)?;
    writeln!(
        io.out,
        "                     Type: {}",
        serde_json::to_value(input.kind)?.as_str().unwrap_or_default()
    )?;
    writeln!(io.out, "                 Optional: {}", input.optional)?;
    if let Some(validation) = &input.validation {
        writeln!(io.out, "               Validation: {validation}")?;
    }
    if let Some(length) = input.maxlength {
        writeln!(io.out, "                   Length: {length}")?;
    }
    if let Some(list) = &input.list {
        let values: Vec<String> = list.iter().map(text).collect();
        writeln!(io.out, "                   Values: {}", values.join(", "))?;
    }
    if let Some(default) = &input.default {
        writeln!(io.out, "                  Default: {}", text(default))?;
    }
    if input.sensitive {
        writeln!(io.out, "                Sensitive: redacted in audit logs")?;
    }
    Ok(())
}
