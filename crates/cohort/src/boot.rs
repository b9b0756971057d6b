//! `cohort boot`: first-boot setup from user data and instance metadata, plus `status`,
//! `fetch` and `log` for action scripts. The work is in the `cohort-boot` crate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cohort_boot::Layout;
use cohort_boot::http::{Http, RetryPolicy};
use cohort_boot::run::{Datasource, Options};

/// Options of `cohort boot`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BootArgs {
    #[command(subcommand)]
    command: Option<BootCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum BootCommand {
    /// Show how the last boot went; exit 1 if it failed.
    Status {
        /// Directory every path is under.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download URL to DEST with retries (for action scripts).
    Fetch {
        /// What to download (query strings are kept).
        url: String,
        /// Where to write it.
        dest: PathBuf,
        /// Timeout of one request, in seconds.
        #[arg(long, default_value_t = 10.0)]
        request_timeout: f64,
        /// Everything may take this long, retries included, in seconds.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// Log a message to the console and syslog (for action scripts).
    Log {
        /// The message.
        #[arg(required = true)]
        message: Vec<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Directory every path is under (tests use a temporary one).
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// The facts file to write.
    #[arg(long, default_value = "/etc/facts.txt", value_name = "PATH")]
    facts_file: PathBuf,
    /// Where metadata comes from.
    #[arg(long, value_parser = ["auto", "ec2", "nocloud"], default_value = "auto")]
    datasource: String,
    /// An EC2-compatible metadata service to use instead of 169.254.169.254 (implies ec2).
    #[arg(long, value_name = "URL")]
    metadata_url: Option<String>,
    /// NoCloud seed directory [default: /var/lib/cloud/seed/nocloud].
    #[arg(long, value_name = "DIR")]
    seed_dir: Option<PathBuf>,
    /// Run every action again, even those that already ran for this instance.
    #[arg(long)]
    force: bool,
    /// Refuse getactions entries without a sha256 pin.
    #[arg(long)]
    require_checksums: bool,
    /// Longest wait for one operation (the metadata service coming up, one download), seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Timeout of one HTTP request, seconds.
    #[arg(long, default_value_t = 5.0)]
    request_timeout: f64,
    /// Retries of a failed HTTP request.
    #[arg(long, default_value_t = 6)]
    retries: usize,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name} must be a positive number of seconds, not {value}"))
}

pub(crate) fn run(args: BootArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        None => runtime.block_on(boot(args.run)),
        Some(BootCommand::Status { root, json }) => status(&root, json),
        Some(BootCommand::Fetch { url, dest, request_timeout, timeout }) => {
            let policy = RetryPolicy {
                request_timeout: seconds("--request-timeout", request_timeout)?,
                total: seconds("--timeout", timeout)?,
                ..RetryPolicy::default()
            };
            runtime.block_on(async {
                let http = Http::new(policy)?;
                let body = http.get(&url).await?;
                cohort_boot::layout::write_atomic(&dest, &body, 0o644)
                    .with_context(|| format!("cannot write {}", dest.display()))?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Some(BootCommand::Log { message }) => {
            cohort_boot::log::info(&message.join(" "));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn boot(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut layout = Layout::new(&args.root, &args.facts_file);
    if let Some(seed) = &args.seed_dir {
        layout.seed = layout.under_root(&seed.to_string_lossy());
    }
    let datasource = match (args.metadata_url, args.datasource.as_str()) {
        (Some(url), "auto" | "ec2") => Datasource::Ec2(url),
        (Some(_), _) => {
            anyhow::bail!("--metadata-url is for the ec2 datasource, not {}", args.datasource)
        }
        (None, "ec2") => Datasource::Ec2(cohort_boot::metadata::DEFAULT_EC2_URL.to_owned()),
        (None, "nocloud") => Datasource::NoCloud,
        (None, _) => Datasource::Auto,
    };
    let policy = RetryPolicy {
        request_timeout: seconds("--request-timeout", args.request_timeout)?,
        retries: args.retries,
        total: seconds("--timeout", args.timeout)?,
        ..RetryPolicy::default()
    };
    let options = Options {
        layout,
        facts_file: args.facts_file.display().to_string(),
        datasource,
        policy,
        force: args.force,
        require_checksums: args.require_checksums,
    };
    let record = cohort_boot::run::boot(&options).await;
    Ok(if record.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn status(root: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(root, std::path::Path::new("/etc/facts.txt"));
    let record = cohort_boot::status::load(&layout.status_file()).map_err(anyhow::Error::msg)?;
    let Some(record) = record else {
        eprintln!("no boot recorded in {}", layout.status_file().display());
        return Ok(ExitCode::FAILURE);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", cohort_boot::status::render(&record));
    }
    Ok(if record.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
