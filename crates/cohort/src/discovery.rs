//! Choosing the discovery method (`--dm`, `--do`, `--nodes`, or standard input) and turning a
//! method that needs no network into a fixed set of nodes.
//!
//! Standard input is used without being asked when it is a pipe or a file with something in
//! it, so `cohort rpc ... -j | cohort rpc ...` acts on exactly the nodes the first command
//! heard from; an interactive terminal or `/dev/null` means broadcast.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_client::sources::{self, Inventory};
use cohort_proto::{Collective, Filter, Identity};

/// Discovery options, shared by the client commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct DiscoveryFlags {
    /// Discovery method: broadcast, flatfile, stdin or inventory [default: broadcast, or stdin
    /// when it is a pipe or file with data].
    #[arg(
        long = "dm",
        visible_alias = "disc-method",
        value_name = "METHOD",
        value_parser = ["broadcast", "flatfile", "stdin", "inventory"],
        help_heading = "Discovery Options"
    )]
    method: Option<String>,
    /// Option for the discovery method: the file for flatfile and inventory.
    #[arg(
        long = "do",
        visible_alias = "disc-option",
        value_name = "OPTION",
        help_heading = "Discovery Options"
    )]
    option: Option<String>,
    /// A file of identities, one per line (the flatfile method).
    #[arg(long = "nodes", value_name = "FILE", help_heading = "Discovery Options")]
    nodes: Option<PathBuf>,
}

/// Where the nodes come from.
#[derive(Debug)]
pub(crate) enum Method {
    /// Ask the network.
    Broadcast,
    /// A fixed list, already filtered, and the method's name for messages.
    Fixed(&'static str, BTreeSet<Identity>),
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Standard input's text when it is a pipe or a regular file (never a terminal, a character
/// device such as /dev/null, or a socket), `None` when it is not or holds only whitespace.
fn piped_stdin() -> anyhow::Result<Option<String>> {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let Ok(meta) = std::fs::metadata("/dev/stdin") else { return Ok(None) };
    let kind = meta.file_type();
    if !(kind.is_fifo() || kind.is_file()) {
        return Ok(None);
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text).context("cannot read standard input")?;
    Ok((!text.trim().is_empty()).then_some(text))
}

impl DiscoveryFlags {
    /// Resolves the method; fixed lists are filtered with `filter` here.
    pub(crate) fn method(
        &self,
        filter: &Filter,
        collective: &Collective,
    ) -> anyhow::Result<Method> {
        self.resolve(filter, collective, true)
    }

    /// As [`DiscoveryFlags::method`], but standard input is read only when `--dm stdin` says
    /// so: for the Nagios plugin, whose stdin is whatever the monitoring system left open.
    pub(crate) fn method_without_stdin(
        &self,
        filter: &Filter,
        collective: &Collective,
    ) -> anyhow::Result<Method> {
        self.resolve(filter, collective, false)
    }

    fn resolve(
        &self,
        filter: &Filter,
        collective: &Collective,
        auto_stdin: bool,
    ) -> anyhow::Result<Method> {
        let file = || -> anyhow::Result<PathBuf> {
            match (&self.nodes, &self.option) {
                (Some(path), _) => Ok(path.clone()),
                (None, Some(option)) => Ok(PathBuf::from(option)),
                (None, None) => bail!(
                    "the {} discovery method needs a file: --nodes FILE or --do FILE",
                    self.method.as_deref().unwrap_or("flatfile")
                ),
            }
        };
        let method = match self.method.as_deref() {
            Some(method) => method,
            None if self.nodes.is_some() => "flatfile",
            None if !auto_stdin => "broadcast",
            None => match piped_stdin()? {
                Some(text) => return stdin_nodes(&text, filter),
                None => "broadcast",
            },
        };
        match method {
            "broadcast" => Ok(Method::Broadcast),
            "flatfile" => {
                let path = file()?;
                let nodes = sources::flatfile(&read(&path)?)
                    .with_context(|| format!("in {}", path.display()))?;
                Ok(Method::Fixed(
                    "flatfile",
                    sources::select_identities("flatfile", nodes, filter)?,
                ))
            }
            "stdin" => {
                let mut text = String::new();
                std::io::stdin()
                    .lock()
                    .read_to_string(&mut text)
                    .context("cannot read standard input")?;
                stdin_nodes(&text, filter)
            }
            "inventory" => {
                let path = file()?;
                let inventory = Inventory::parse(&read(&path)?)
                    .with_context(|| format!("in {}", path.display()))?;
                Ok(Method::Fixed("inventory", inventory.select(filter, collective)))
            }
            other => bail!("unknown discovery method {other:?}"),
        }
    }
}

fn stdin_nodes(text: &str, filter: &Filter) -> anyhow::Result<Method> {
    let nodes = sources::stdin(text)?;
    Ok(Method::Fixed("stdin", sources::select_identities("stdin", nodes, filter)?))
}
