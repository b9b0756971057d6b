//! `cohort find`: the identities of the nodes matching the filter, one per line.

use std::process::ExitCode;

use crate::options::{CommonFlags, FilterFlags, Lifetime};
use crate::output::{Io, unverified_lines};

/// Options of `cohort find`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FindArgs {
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
}

pub(crate) async fn run(args: FindArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let filter = args.filter.build()?;
    let settings = args.common.settings()?;
    if let crate::discovery::Method::Fixed(name, nodes) =
        args.common.discovery.method(&filter, &settings.config.collective)?
    {
        for node in &nodes {
            writeln!(io.out, "{node}")?;
        }
        if settings.verbose {
            writeln!(io.err, "Discovered {} nodes using the {name} method", nodes.len())?;
        }
        return Ok(if nodes.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let client = settings.connect(Lifetime::OneShot).await?;
    let discovered = client.discover(&filter, &settings.discovery(), |_, _| {}).await?;
    for node in &discovered.nodes {
        writeln!(io.out, "{node}")?;
    }
    if !discovered.unverified.is_empty() {
        write!(io.err, "{}", unverified_lines(&discovered.unverified))?;
    }
    crate::output::discovery_notes(io.err, &discovered)?;
    if settings.verbose {
        writeln!(
            io.err,
            "Discovered {} nodes in {:.2} seconds using the broadcast discovery method",
            discovered.nodes.len(),
            discovered.elapsed.as_secs_f64()
        )?;
    }
    Ok(if discovered.lost_broker.is_some() {
        ExitCode::from(crate::output::EXIT_LOST_BROKER)
    } else if discovered.nodes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
