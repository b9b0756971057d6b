//! Where client commands write, and the pieces of MCollective's output they share: the
//! `No response from:` grid, the statistics lines and the progress bar.
//!
//! stdout carries data only (results, JSON); progress, hints and errors go to stderr. The
//! progress bar appears only when stderr is a terminal and `--np` was not given.

use std::io::Write;
use std::time::Duration;

use cohort_proto::Identity;

/// The two output streams of a command, plus what it may assume about the terminal.
pub(crate) struct Io<'a> {
    pub(crate) out: &'a mut dyn Write,
    pub(crate) err: &'a mut dyn Write,
    /// stdout is a terminal (pretty JSON).
    pub(crate) out_tty: bool,
    /// stderr is a terminal (progress bars).
    pub(crate) err_tty: bool,
}

impl Io<'_> {
    /// Streams of the process.
    pub(crate) fn with_std<T>(run: impl FnOnce(&mut Io<'_>) -> T) -> T {
        use std::io::IsTerminal;
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let out_tty = stdout.is_terminal();
        let err_tty = stderr.is_terminal();
        let mut out = stdout.lock();
        // stderr is not held locked: log lines from other threads (tracing) must be able to
        // get through while a command runs, or they would wait forever.
        let mut err = stderr;
        let mut io = Io { out: &mut out, err: &mut err, out_tty, err_tty };
        let result = run(&mut io);
        let _ = io.out.flush();
        result
    }
}

/// MCollective's grid of names: width max(longest, 30), floor(90 / width) columns.
/// MCollective's closing line of a call.
pub(crate) fn finished_line(stats: &cohort_client::CallStats) -> String {
    format!(
        "\nFinished processing {} / {} hosts in {:.2} ms",
        stats.responses,
        stats.discovered,
        ms(stats.request_time)
    )
}

/// The replies that did not verify, one per line: never merged with the results.
pub(crate) fn unverified_lines(unverified: &[cohort_client::Unverified]) -> String {
    let mut text = String::from("Unverified replies (ignored):\n\n");
    for reply in unverified {
        let sender = reply.sender.as_deref().unwrap_or("(unknown sender)");
        text.push_str(&format!("   {sender}: {}\n", reply.reason));
    }
    text
}

pub(crate) fn name_grid(title: &str, names: &[Identity]) -> String {
    let width = names.iter().map(|n| n.as_str().len()).max().unwrap_or(0).max(30);
    let columns = (90 / width).max(1);
    let mut text = format!("{title}\n\n");
    for row in names.chunks(columns) {
        text.push_str("   ");
        for name in row {
            text.push_str(&format!(" {:<width$}", name.as_str()));
        }
        text.push('\n');
    }
    text.push('\n');
    text
}

/// What the operator must know about a discovery, on stderr: that it came up short of the
/// count the last complete one found, and that its count could not be recorded.
pub(crate) fn discovery_notes(
    err: &mut dyn Write,
    discovered: &cohort_client::Discovered,
) -> std::io::Result<()> {
    if let Some(shortfall) = &discovered.shortfall {
        writeln!(err, "warning: {shortfall}")?;
    }
    if let Some(error) = &discovered.history_error {
        writeln!(err, "warning: cannot record the discovery count: {error}")?;
    }
    if let Some(broker) = &discovered.lost_broker {
        writeln!(
            err,
            "cohort: error: lost the broker at {broker} during discovery: nodes may be missing"
        )?;
    }
    Ok(())
}

/// Exit code of a command that lost its broker connection on the way: what it printed may
/// be incomplete (docs/reference/cli.md).
pub(crate) const EXIT_LOST_BROKER: u8 = 5;

/// Says on stderr that the call lost its broker, if it did; true when it did.
pub(crate) fn lost_broker_note(
    err: &mut dyn Write,
    result: &cohort_client::CallResult,
) -> std::io::Result<bool> {
    let Some(broker) = &result.stats.lost_broker else { return Ok(false) };
    let missing = result.stats.no_responses.len();
    let replies = if missing == 1 { "reply" } else { "replies" };
    writeln!(
        err,
        "cohort: error: lost the broker at {broker} during the call: {missing} {replies} may be missing"
    )?;
    Ok(true)
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A progress bar over `total` replies on stderr, or nothing when not wanted.
pub(crate) fn progress(total: usize, enabled: bool) -> indicatif::ProgressBar {
    if !enabled || total == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template(" {spinner} [ {bar:60.green/white} ] {pos} / {len}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One more reply: the bar grows when a node that joined discovery late answers (discovery
/// hands over to the call before the slowest nodes of a large fleet have answered it).
pub(crate) fn advance(bar: &indicatif::ProgressBar) {
    bar.inc(1);
    if bar.length().is_some_and(|length| bar.position() > length) {
        bar.set_length(bar.position());
    }
}

/// `2026-12-02 16:21:08Z`: the time at the start of a log line.
pub(crate) fn log_time() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace('T', " ")
}
