//! Choosing where the nodes come from (`--dm`, `--do`, `--nodes`, or standard input) and
//! turning it into a [`Selection`]: discovery with the filter, or a fixed list.
//!
//! Standard input is a node source only when asked (`--dm stdin`, `--nodes -`), or when
//! nothing else says which nodes (no node source and no identity, fact, class, agent or
//! compound filter) and standard input is a regular file or a pipe. So `cohort rpc ... -j |
//! cohort rpc ...` acts on exactly the nodes the first command heard from, while `while read h;
//! do cohort rpc ... -I "$h"; done < hosts` leaves the loop's input alone. A pipe is read to its
//! end; after a second with nothing on it the command says on stderr that it is waiting for
//! node names there and how not to (`--dm broadcast`). An empty pipe or file means broadcast.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cohort_client::Selection;
use cohort_client::sources::{self, Inventory};
use cohort_proto::{Collective, Filter};

/// How a discovery method is named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MethodName {
    /// Ask the network (the default).
    Broadcast,
    /// A file of identities, one per line (`--do FILE` or `--nodes FILE`).
    Flatfile,
    /// Identities (or `-j` output of another command) on standard input.
    Stdin,
    /// An inventory file written by `cohort inventory --export`.
    Inventory,
}

/// Discovery options, shared by the client commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct DiscoveryFlags {
    /// Discovery method [default: broadcast, or stdin when nothing else names the nodes and
    /// standard input is a pipe or a file with data].
    #[arg(
        long = "dm",
        visible_alias = "disc-method",
        value_name = "METHOD",
        value_enum,
        help_heading = "Discovery Options"
    )]
    method: Option<MethodName>,
    /// Option for the discovery method: the file for flatfile and inventory.
    #[arg(
        long = "do",
        visible_alias = "disc-option",
        value_name = "OPTION",
        help_heading = "Discovery Options"
    )]
    option: Option<String>,
    /// A file of identities, one per line (the flatfile method); `-` reads standard input.
    #[arg(long = "nodes", value_name = "FILE", help_heading = "Discovery Options")]
    nodes: Option<PathBuf>,
}

/// Where the nodes come from.
#[derive(Debug)]
pub(crate) enum Method {
    /// Ask the network.
    Broadcast,
    /// A fixed list, already filtered, and the method's name for messages.
    Fixed(&'static str, std::collections::BTreeSet<cohort_proto::Identity>),
}

impl Method {
    /// The selection for a call: discovery with `filter`, or the list.
    pub(crate) fn selection(
        &self,
        filter: &Filter,
        options: cohort_client::DiscoveryOptions,
    ) -> Selection {
        match self {
            Method::Broadcast => Selection::Discover(filter.clone(), options),
            Method::Fixed(_, nodes) => Selection::Listed(nodes.clone()),
        }
    }

    /// The method's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Method::Broadcast => "broadcast",
            Method::Fixed(name, _) => name,
        }
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// How long a pipe may stay silent before the command says it is waiting on it.
const SILENT_PIPE: Duration = Duration::from_secs(1);

/// Whether standard input is a pipe or a regular file (not a terminal, `/dev/null`, a socket).
fn stdin_is_data() -> bool {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    if std::io::stdin().is_terminal() {
        return false;
    }
    std::fs::metadata("/dev/stdin").is_ok_and(|meta| {
        let kind = meta.file_type();
        kind.is_fifo() || kind.is_file()
    })
}

/// Reads standard input to its end. When nothing arrived for [`SILENT_PIPE`], says on stderr
/// that the command is waiting for node names there, and how not to.
fn read_stdin() -> anyhow::Result<String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let fd = std::os::fd::AsFd::as_fd(&stdin);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(SILENT_PIPE).unwrap_or(PollTimeout::MAX);
    // Interrupted or unsupported: fall through to reading, as before.
    if matches!(poll(&mut fds, timeout), Ok(0)) {
        eprintln!(
            "Reading node names from standard input (nothing there after {} s); it is read to \
             its end. Give --dm broadcast to discover nodes instead.",
            SILENT_PIPE.as_secs()
        );
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text).context("cannot read standard input")?;
    Ok(text)
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

    /// As [`DiscoveryFlags::method`], but standard input is read only when `--dm stdin` or
    /// `--nodes -` says so: for the Nagios plugin, whose stdin is whatever the monitoring
    /// system left open.
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
        let stdin_named = self.nodes.as_deref() == Some(std::path::Path::new("-"));
        let file = || -> anyhow::Result<PathBuf> {
            match (&self.nodes, &self.option) {
                (Some(path), _) => Ok(path.clone()),
                (None, Some(option)) => Ok(PathBuf::from(option)),
                (None, None) => bail!(
                    "the {} discovery method needs a file: --nodes FILE or --do FILE",
                    if self.method == Some(MethodName::Inventory) {
                        "inventory"
                    } else {
                        "flatfile"
                    }
                ),
            }
        };
        let method = match self.method {
            Some(method) => method,
            None if stdin_named => MethodName::Stdin,
            None if self.nodes.is_some() => MethodName::Flatfile,
            None if auto_stdin && self.option.is_none() && filter.is_empty() && stdin_is_data() => {
                let text = read_stdin()?;
                if text.trim().is_empty() {
                    return Ok(Method::Broadcast);
                }
                return stdin_nodes(&text, filter);
            }
            None => MethodName::Broadcast,
        };
        match method {
            MethodName::Broadcast => Ok(Method::Broadcast),
            MethodName::Flatfile => {
                let path = file()?;
                let nodes = sources::flatfile(&read(&path)?)
                    .with_context(|| format!("in {}", path.display()))?;
                Ok(Method::Fixed(
                    "flatfile",
                    sources::select_identities("flatfile", nodes, filter)?,
                ))
            }
            MethodName::Stdin => stdin_nodes(&read_stdin()?, filter),
            MethodName::Inventory => {
                let path = file()?;
                let inventory = Inventory::parse(&read(&path)?)
                    .with_context(|| format!("in {}", path.display()))?;
                Ok(Method::Fixed("inventory", inventory.select(filter, collective)))
            }
        }
    }
}

fn stdin_nodes(text: &str, filter: &Filter) -> anyhow::Result<Method> {
    let nodes = sources::stdin(text)?;
    Ok(Method::Fixed("stdin", sources::select_identities("stdin", nodes, filter)?))
}
