//! `cohort ping`: every matching node answers discovery; each is printed with its round-trip
//! time as it arrives, then the ping statistics. Ends as soon as replies stop arriving.

use std::process::ExitCode;
use std::time::Duration;

use crate::options::{CommonFlags, FilterFlags};
use crate::output::{Io, ms, unverified_lines};

/// Options of `cohort ping`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
}

pub(crate) async fn run(args: PingArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let filter = args.filter.build()?;
    let settings = args.common.settings()?;
    let client = settings.connect().await?;
    let mut options = settings.discovery();
    // Ping waits for the slowest node up to -t (default 5 s) plus --dt, not only the discovery
    // timeout, and ends once replies stop.
    options.timeout =
        settings.timeout.unwrap_or(Duration::from_secs(5)) + settings.discovery_timeout;
    // Literal identities still need the network here: ping measures the round trip.
    let mut filter_for_network = filter.clone();
    if cohort_client::literal_identities(&filter).is_some() {
        filter_for_network.identity =
            filter.identity.iter().map(|id| format!("/^{}$/", regex::escape(id))).collect();
    }
    let mut times = Vec::new();
    let mut write_error = None;
    let discovered = client
        .discover(&filter_for_network, &options, |node, elapsed| {
            times.push(elapsed);
            if let Err(err) = writeln!(io.out, "{:<40} time={:.2} ms", node.as_str(), ms(elapsed)) {
                write_error.get_or_insert(err);
            }
        })
        .await?;
    if let Some(err) = write_error {
        return Err(err.into());
    }
    if !discovered.unverified.is_empty() {
        write!(io.out, "\n{}", unverified_lines(&discovered.unverified))?;
    }
    writeln!(io.out, "\n\n---- ping statistics ----")?;
    if times.is_empty() {
        writeln!(io.out, "No responses received")?;
        return Ok(ExitCode::FAILURE);
    }
    let max = times.iter().max().copied().unwrap_or_default();
    let min = times.iter().min().copied().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let avg = times.iter().map(|t| ms(*t)).sum::<f64>() / times.len() as f64;
    writeln!(
        io.out,
        "{} replies max: {:.2} min: {:.2} avg: {:.2}",
        times.len(),
        ms(max),
        ms(min),
        avg
    )?;
    Ok(ExitCode::SUCCESS)
}
