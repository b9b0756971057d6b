//! `cohort provision`: the provisioner daemon (`run`) and its operator commands (`status`,
//! `retry`, `forget`). The rules live in `cohort_provision`; this file connects its
//! [`Fleet`](cohort_provision::driver::Fleet) to the bus through the client session, listens
//! for start-up announcements on `<collective>.registration`, serves metrics and the control
//! socket, and renders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cohort_proto::{Filter, Identity, StatusCode};
use cohort_provision::control::{self, Request, Response};
use cohort_provision::driver::{Answer, Driver, Fleet, Found};
use cohort_provision::metrics::ProvisionMetrics;
use cohort_provision::store::Store;
use cohort_provision::{Progress, ProvisionConfig, State};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::apps::Session;
use crate::options::{CommonFlags, Lifetime};
use crate::output::Io;

/// What `cohort provision` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Action {
    /// Run the provisioner until SIGTERM or SIGINT.
    Run,
    /// Every node's state and last event (`-j`: the whole record, history included).
    Status,
    /// Try a failed node again from the step that failed.
    Retry,
    /// Drop a node's record; it is provisioned afresh if it is still provisionable.
    Forget,
}

/// Options of `cohort provision`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProvisionArgs {
    /// What to do.
    #[arg(value_enum)]
    action: Action,
    /// `retry`, `forget`: the node.
    node: Option<String>,
    /// The provisioner's configuration file.
    #[arg(long, value_name = "FILE", default_value = "/etc/cohort/provision.toml")]
    provision_config: PathBuf,
    /// `status`: JSON instead of a table.
    #[arg(short = 'j', long)]
    json: bool,
    #[command(flatten)]
    common: CommonFlags,
}

fn read_config(path: &Path) -> anyhow::Result<ProvisionConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ProvisionConfig::parse(&text)
        .with_context(|| format!("invalid provisioner configuration {}", path.display()))
}

/// Runs `cohort provision ACTION`.
pub(crate) async fn run(args: ProvisionArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let config = read_config(&args.provision_config)?;
    match args.action {
        Action::Run => serve(config, &args.common, io).await,
        Action::Status => {
            let nodes =
                match control::ask(&control::socket_path(&config.store), &Request::Status).await {
                    Ok(response) => checked(response)?.nodes,
                    // No provisioner running: read the store itself.
                    Err(_) => open_store(&config.store)?.all()?,
                };
            status(&nodes, args.json, io)
        }
        Action::Retry | Action::Forget => {
            let node = args.node.clone().context("name the node")?;
            let request = if args.action == Action::Retry {
                Request::Retry { node: node.clone() }
            } else {
                Request::Forget { node: node.clone() }
            };
            let message = match control::ask(&control::socket_path(&config.store), &request).await {
                Ok(response) => checked(response)?.message,
                Err(_) => offline(&config.store, &request)?,
            };
            writeln!(io.out, "{message}")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn checked(response: Response) -> anyhow::Result<Response> {
    if response.ok { Ok(response) } else { anyhow::bail!("{}", response.message) }
}

fn open_store(path: &Path) -> anyhow::Result<Store> {
    Store::open(path).with_context(|| {
        format!(
            "no provisioner answers on {} and the store cannot be opened",
            control::socket_path(path).display()
        )
    })
}

/// `retry`/`forget` with no provisioner running: on the store directly.
fn offline(path: &Path, request: &Request) -> anyhow::Result<String> {
    let store = open_store(path)?;
    match request {
        Request::Retry { node } => {
            let mut progress = store.get(node)?.with_context(|| format!("no record of {node}"))?;
            progress.retry(cohort_provision::driver::now_ms()).map_err(anyhow::Error::msg)?;
            store.put(&progress)?;
            Ok(format!("{node} queued again at step {}", progress.step + 1))
        }
        Request::Forget { node } => {
            anyhow::ensure!(store.remove(node)?, "no record of {node}");
            Ok(format!("{node} forgotten"))
        }
        Request::Status => Ok(String::new()),
    }
}

fn status(nodes: &[Progress], json: bool, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    if json {
        serde_json::to_writer_pretty(&mut *io.out, nodes)?;
        writeln!(io.out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["NODE", "STATE", "STEP", "MASTER", "LAST EVENT"].map(str::to_owned)];
    for progress in nodes {
        let last = progress
            .history
            .last()
            .map(|e| format!("{}: {}", e.step, e.message))
            .unwrap_or_default();
        let step = progress.step + usize::from(!progress.is_settled());
        let master = progress.master.clone().unwrap_or_else(|| "-".to_owned());
        rows.push([
            progress.node.clone(),
            progress.state.name().to_owned(),
            step.to_string(),
            master,
            last,
        ]);
    }
    let widths: Vec<usize> =
        (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let mut line = String::new();
        for (c, width) in widths.iter().enumerate() {
            line.push_str(&format!("{:<width$}  ", row[c]));
        }
        line.push_str(&row[4]);
        writeln!(io.out, "{}", line.trim_end())?;
    }
    let failed = nodes.iter().filter(|p| matches!(p.state, State::Failed { .. })).count();
    writeln!(
        io.err,
        "{} nodes, {} done, {failed} failed",
        nodes.len(),
        nodes.iter().filter(|p| p.state == State::Done).count()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How long a call's reply is still waited for once the broker connection was seen lost.
const LOST_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// The bus, as the provisioner sees it.
struct Bus {
    session: Session,
}

impl Fleet for Bus {
    async fn discover(&self, agent: &str, filter: &Filter) -> Result<Vec<Found>, String> {
        let mut filter = filter.clone();
        filter.agent.push(agent.to_owned());
        // Named nodes are asked directly, with no filter on the request (a node that does not
        // match would stay silent and be waited for): the filter is applied to the answers.
        let named = Filter { identity: filter.identity.clone(), ..Filter::default() };
        let listed = cohort_client::literal_identities(&named);
        let sent = if listed.is_some() { Filter::default() } else { filter.clone() };
        let (_, result) = self
            .session
            .call_quietly("rpcutil", &sent, "inventory", Map::new(), listed)
            .await
            .map_err(|err| format!("{err:#}"))?;
        let mut found = Vec::new();
        for reply in result.replies {
            let reply = reply.reply;
            if reply.status != StatusCode::Ok {
                continue;
            }
            let strings = |key: &str| -> Vec<String> {
                reply
                    .data
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            let (agents, classes) = (strings("agents"), strings("classes"));
            let facts =
                reply.data.get("facts").and_then(Value::as_object).cloned().unwrap_or_default();
            let node = cohort_filter::Node {
                identity: reply.sender.as_str(),
                facts: &facts,
                classes: &classes,
                agents: &agents,
            };
            if cohort_filter::matches(&filter, &node) {
                found.push(Found { identity: reply.sender.as_str().to_owned(), facts });
            }
        }
        Ok(found)
    }

    async fn call(
        &self,
        node: &str,
        agent: &str,
        action: &str,
        data: Map<String, Value>,
    ) -> Result<Answer, String> {
        let identity = Identity::new(node).map_err(|err| format!("{node:?}: {err}"))?;
        // A request published while the broker connection was down may never have reached the
        // node, and its reply would be waited for until the action's timeout (minutes for a
        // Puppet run): the client ends a call LOST_GRACE after losing the broker, and the step
        // is retried.
        let (_, result) = self
            .session
            .call_quietly(agent, &Filter::default(), action, data, Some(BTreeSet::from([identity])))
            .await
            .map_err(|err| format!("{err:#}"))?;
        let lost = result.stats.lost_broker.clone();
        let Some(reply) = result.replies.into_iter().next() else {
            return Err(match lost {
                Some(broker) => format!(
                    "lost the broker at {broker} during the call; no reply from {node} within {} s",
                    LOST_GRACE.as_secs()
                ),
                None => format!("no reply from {node}"),
            });
        };
        let reply = reply.reply;
        Ok(Answer { status: reply.status, message: reply.status_message, data: reply.data })
    }
}

/// The provisioner until SIGTERM or SIGINT.
async fn serve(
    config: ProvisionConfig,
    common: &CommonFlags,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    // `cohort provision status` with no provisioner running opens the store for a moment:
    // wait that out rather than fail; another provisioner on the same store keeps it.
    let mut attempts = 0;
    let store = loop {
        match Store::open(&config.store) {
            Ok(store) => break store,
            Err(_) if attempts < 30 => attempts += 1,
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "cannot open the progress store {} (is another provisioner using it?)",
                        config.store.display()
                    )
                });
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let session = Session::open(common, &Filter::default(), Lifetime::LongLived)
        .await?
        .with_lost_grace(LOST_GRACE);
    let metrics = ProvisionMetrics::default();
    if let Some(address) = &config.metrics {
        let metrics = metrics.clone();
        crate::schedule::serve_metrics(address, move || metrics.prometheus_text()).await?;
    }
    let owner = store.owner(|| {
        format!(
            "{}-{:08x}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rand::random::<u32>()
        )
    })?;
    let subject = cohort_proto::registration_subject(session.collective());
    let mut registrations = session
        .nats()
        .subscribe(subject.clone())
        .await
        .map_err(|err| anyhow::anyhow!("cannot subscribe to {subject}: {err}"))?;
    let socket = control::socket_path(&config.store);
    let (command_tx, command_rx) = tokio::sync::mpsc::channel(16);
    let control = control::serve(&socket, command_tx)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let (notice_tx, notice_rx) = tokio::sync::mpsc::channel(4096);
    let target_agent = config.target.agent.clone();
    let driver = Arc::new(
        Driver::new(Bus { session }, config, store, owner.clone(), metrics)
            .map_err(anyhow::Error::msg)?,
    );
    // Start-up announcements: a node that looks provisionable by its own account is then
    // checked by a signed discovery, so a forged announcement gains nothing.
    let listening = driver.clone();
    let listener = tokio::spawn(async move {
        while let Some(message) = registrations.next().await {
            if let Some(identity) = listening.announced(&message.payload) {
                let _ = notice_tx.try_send(identity);
            }
        }
    });
    writeln!(
        io.err,
        "{}: provisioner {owner} listening on {subject} for nodes with the {target_agent} agent",
        crate::output::log_time()
    )?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    driver.run(notice_rx, command_rx, shutdown).await;
    listener.abort();
    control.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(ExitCode::SUCCESS)
}
