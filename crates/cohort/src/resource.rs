//! `cohort resource TYPE [NAME [attr=value ...]]`: Puppet-style resources on this machine,
//! like `puppet resource` without Ruby: lists every instance of a type, shows one, or makes one
//! so and shows the result. The work is in the `cohort-resource` crate; the node-side rules of
//! the `resource` agent do not apply here (this is the local administrator's own tool).

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cohort_resource::manifest::{self, Shown};
use cohort_resource::policy::ExecProvider;
use cohort_resource::provider::Env;
use cohort_resource::{Report, Resources};

use crate::output::Io;

/// Output forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Puppet's manifest form (`user { 'root': ... }`).
    Manifest,
    /// `{type: {title: {attr: value}}}` as YAML (`puppet resource --to_yaml`).
    Yaml,
    /// The same as JSON; when applying, the whole report (events, status, state).
    Json,
}

/// How `exec` runs commands when the resource names no provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecDefault {
    /// Directly, no shell.
    Posix,
    /// Through `/bin/sh -c`.
    Shell,
}

/// Options of `cohort resource`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ResourceArgs {
    /// Resource type: user, group, package, service, file, exec, host, mailalias, cron,
    /// ssh_authorized_key, mount; other types go to `puppet resource` when Puppet is installed.
    #[arg(value_name = "TYPE")]
    type_name: String,
    /// The resource's title; without it, every instance of the type is listed.
    name: Option<String>,
    /// Attributes to make so, `attr=value` (lists comma-separated).
    #[arg(value_name = "ATTR=VALUE")]
    attributes: Vec<String>,
    /// Output form.
    #[arg(long, value_enum, default_value_t = Format::Manifest)]
    format: Format,
    /// Report what would change without changing it.
    #[arg(long)]
    noop: bool,
    /// How `exec` runs commands when the resource names no provider.
    #[arg(long, value_enum, default_value_t = ExecDefault::Posix)]
    exec_provider: ExecDefault,
    /// The `puppet` command for types Cohort does not manage natively (default: the installed
    /// one, if any).
    #[arg(long, value_name = "PATH")]
    puppet: Option<PathBuf>,
    /// Longest any one command may run, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// `--format json` after an apply: the report, its status and its events as log lines.
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    report: &'a Report,
    status: &'static str,
    lines: Vec<String>,
}

fn parse_attributes(given: &[String]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut attrs = BTreeMap::new();
    for pair in given {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("attribute {pair:?} is not attr=value");
        };
        if name.is_empty() {
            bail!("attribute {pair:?} has no name");
        }
        attrs.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    Ok(attrs)
}

fn render(shown: &[Shown], format: Format, io: &mut Io<'_>) -> anyhow::Result<()> {
    match format {
        Format::Manifest => {
            for resource in shown {
                io.out.write_all(manifest::manifest(resource).as_bytes())?;
            }
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(&manifest::document(shown))
                .context("cannot write the resources as YAML")?;
            io.out.write_all(text.as_bytes())?;
        }
        Format::Json => write_json(&manifest::document(shown), io)?,
    }
    Ok(())
}

fn write_json(value: &impl serde::Serialize, io: &mut Io<'_>) -> anyhow::Result<()> {
    let text = if io.out_tty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    writeln!(io.out, "{text}")?;
    Ok(())
}

fn log_events(report: &Report, io: &mut Io<'_>) -> anyhow::Result<()> {
    let reference = report.reference();
    for event in &report.events {
        let level = if event.status == "failure" { "Error" } else { "Notice" };
        writeln!(io.err, "{level}: {}", event.line(&reference))?;
    }
    if let Some(error) = &report.error {
        writeln!(io.err, "Error: /{reference}: Could not evaluate: {error}")?;
    }
    Ok(())
}

pub(crate) fn run(args: ResourceArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let engine = Resources {
        env: Env {
            exec_provider: match args.exec_provider {
                ExecDefault::Posix => ExecProvider::Posix,
                ExecDefault::Shell => ExecProvider::Shell,
            },
            command_timeout: Duration::from_secs(args.timeout.max(1)),
        },
        puppet: cohort_resource::provider::find_puppet(args.puppet.as_deref()),
    };
    let type_name = args.type_name.to_ascii_lowercase();
    let Some(title) = &args.name else {
        if !args.attributes.is_empty() {
            bail!("attributes need a resource title: cohort resource {type_name} NAME attr=value");
        }
        let found = runtime.block_on(engine.search(&type_name))?;
        render(&found, args.format, io)?;
        return Ok(ExitCode::SUCCESS);
    };
    if args.attributes.is_empty() {
        let shown = runtime.block_on(engine.find(&type_name, title))?;
        render(&[shown], args.format, io)?;
        return Ok(ExitCode::SUCCESS);
    }
    let attrs = parse_attributes(&args.attributes)?;
    let report = runtime.block_on(engine.apply(&type_name, title, &attrs, args.noop))?;
    log_events(&report, io)?;
    if args.format == Format::Json {
        write_json(
            &ReportJson { status: report.status(), lines: report.lines(), report: &report },
            io,
        )?;
    } else {
        // Like `puppet resource`: the attributes given, plus ensure and provider.
        let given: Vec<String> = attrs.keys().cloned().collect();
        let shown = Shown {
            type_name: report.type_name.clone(),
            title: report.title.clone(),
            attributes: manifest::given_only(&report.state, &given),
        };
        render(&[shown], args.format, io)?;
    }
    Ok(if report.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
