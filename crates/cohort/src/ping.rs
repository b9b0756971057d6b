//! `cohort ping`: every matching node answers discovery; each is printed with its round-trip
//! time as it arrives, then the ping statistics. Ends as soon as replies stop arriving.

use std::process::ExitCode;
use std::time::Duration;

use crate::options::{CommonFlags, FilterFlags, Lifetime};
use crate::output::{Io, ms, unverified_lines};

/// Options of `cohort ping`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    filter: FilterFlags,
    #[command(flatten)]
    common: CommonFlags,
    /// Also draw the distribution of round-trip times (20 buckets from fastest to slowest).
    #[arg(long = "graph")]
    graph: bool,
}

/// A sparkline of how many of `times` fall in each of `buckets` equal ranges from the smallest
/// to the largest.
pub(crate) fn sparkline(times: &[Duration], buckets: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) else {
        return String::new();
    };
    let span = (*max - *min).as_secs_f64();
    let mut counts = vec![0usize; buckets.max(1)];
    for time in times {
        let offset = (*time - *min).as_secs_f64();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let bucket = if span > 0.0 { ((offset / span) * counts.len() as f64) as usize } else { 0 };
        let last = counts.len() - 1;
        counts[bucket.min(last)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    counts
        .iter()
        .map(
            |&count| if count == 0 { ' ' } else { BARS[(count * (BARS.len() - 1)).div_ceil(most)] },
        )
        .collect()
}

pub(crate) async fn run(args: PingArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let filter = args.filter.build()?;
    let settings = args.common.settings()?;
    let method = args.common.discovery.method(&filter, &settings.config.collective)?;
    let client = settings.connect(Lifetime::OneShot).await?;
    let mut options = settings.discovery();
    // Ping waits for slow nodes up to -t (default 5 s) plus --dt while they are still
    // answering, not only the discovery timeout.
    options.limit = settings.config.timeout.unwrap_or(Duration::from_secs(5))
        + settings.config.discovery_timeout;
    // Literal identities still need the network here: ping measures the round trip.
    let mut filter_for_network = filter.clone();
    let listed = match method {
        crate::discovery::Method::Fixed(_, nodes) => Some(nodes),
        crate::discovery::Method::Broadcast => cohort_client::literal_identities(&filter),
    };
    if let Some(nodes) = listed {
        if nodes.is_empty() {
            writeln!(io.err, "No nodes to ping.")?;
            return Ok(ExitCode::FAILURE);
        }
        filter_for_network.identity =
            nodes.iter().map(|id| format!("/^{}$/", regex::escape(id.as_str()))).collect();
        // The list says how many to expect: the ping ends as soon as they have all answered.
        options.expect = Some(nodes.len());
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
    crate::output::discovery_notes(io.err, &discovered)?;
    writeln!(io.out, "\n\n---- ping statistics ----")?;
    let lost = discovered.lost_broker.is_some();
    if times.is_empty() {
        writeln!(io.out, "No responses received")?;
        return Ok(if lost {
            ExitCode::from(crate::output::EXIT_LOST_BROKER)
        } else {
            ExitCode::FAILURE
        });
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
    if args.graph {
        writeln!(io.out, "\n{:.2} ms |{}| {:.2} ms", ms(min), sparkline(&times, 20), ms(max))?;
    }
    Ok(if lost { ExitCode::from(crate::output::EXIT_LOST_BROKER) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_buckets() {
        let ms = |n: u64| Duration::from_millis(n);
        let line = sparkline(&[ms(10), ms(10), ms(10), ms(20)], 4);
        assert_eq!(line.chars().count(), 4);
        assert_eq!(line.chars().next(), Some('█'));
        assert_eq!(line.chars().nth(1), Some(' '));
        assert_ne!(line.chars().last(), Some(' '));
        assert_eq!(sparkline(&[ms(5)], 3).chars().next(), Some('█'));
        assert_eq!(sparkline(&[], 3), "");
    }
}
