//! One boot, start to finish: metadata and user data, caches, facts file, actions (each once
//! per instance), MOTD, and the status record. Never returns an error: every failure is recorded
//! in the [`BootRecord`] (and logged), whose `ok` decides the exit status.
//!
//! Order: metadata → cache (refreshed every boot) → parse user data (invalid: stop, nothing
//! runs, the previous facts file stays) → facts file (before any action, as ec2-boot-init did) →
//! actions in order → MOTD → record. A successful action leaves a semaphore for this instance
//! id, so a reboot skips it and a new instance from the same image runs it; a failed action
//! leaves none and is tried again at the next boot.

use std::time::{Instant, SystemTime};

use crate::Layout;
use crate::actions::{self, Context};
use crate::http::{Http, RetryPolicy};
use crate::layout::write_atomic;
use crate::metadata::{self, Metadata};
use crate::status::{ActionRecord, ActionStatus, BootRecord};
use crate::userdata::{self, OnError};

/// Where metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datasource {
    /// A NoCloud seed if the seed directory has one, else EC2 at the default address.
    Auto,
    /// An EC2-compatible service at this base URL.
    Ec2(String),
    /// The NoCloud seed directory only.
    NoCloud,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct Options {
    /// Paths.
    pub layout: Layout,
    /// Where the facts file is in the running system (written into the daemon config).
    pub facts_file: String,
    /// Datasource choice.
    pub datasource: Datasource,
    /// Retry policy for every HTTP request.
    pub policy: RetryPolicy,
    /// Run every action again, semaphores or not.
    pub force: bool,
    /// Every `getactions` entry must pin a sha256.
    pub require_checksums: bool,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

async fn fetch_metadata(options: &Options, http: &Http) -> Result<Metadata, String> {
    match &options.datasource {
        Datasource::NoCloud => metadata::nocloud(&options.layout.seed).map_err(|e| e.to_string()),
        Datasource::Ec2(url) => metadata::ec2(http, url).await.map_err(|e| e.to_string()),
        Datasource::Auto if metadata::has_nocloud_seed(&options.layout.seed) => {
            metadata::nocloud(&options.layout.seed).map_err(|e| e.to_string())
        }
        Datasource::Auto => {
            metadata::ec2(http, metadata::DEFAULT_EC2_URL).await.map_err(|e| e.to_string())
        }
    }
}

/// Boots once.
pub async fn boot(options: &Options) -> BootRecord {
    let started = now();
    let layout = &options.layout;
    let mut record = BootRecord {
        instance_id: None,
        datasource: String::new(),
        started,
        finished: String::new(),
        ok: false,
        error: None,
        actions: Vec::new(),
    };
    let fail = |record: &mut BootRecord, error: String| {
        crate::log::error(&error);
        record.error = Some(error);
        record.ok = false;
    };
    crate::log::info("starting");
    let http = match Http::new(options.policy) {
        Ok(http) => http,
        Err(err) => {
            fail(&mut record, err.to_string());
            return finish(options, record, None);
        }
    };
    let metadata = match fetch_metadata(options, &http).await {
        Ok(metadata) => metadata,
        Err(err) => {
            fail(&mut record, err);
            return finish(options, record, None);
        }
    };
    let instance_id = metadata.instance_id().unwrap_or_default().to_owned();
    record.instance_id = Some(instance_id.clone());
    record.datasource = metadata.source.to_string();
    crate::log::info(&format!("instance {instance_id} from {}", metadata.source));

    // Refreshed every boot: a stop/start changes addresses and hostnames.
    let raw = metadata.user_data.clone().unwrap_or_default();
    let tree_json = serde_json::to_vec_pretty(&metadata.tree).unwrap_or_default();
    for (path, bytes) in [(layout.user_data_cache(), &raw), (layout.metadata_cache(), &tree_json)] {
        if let Err(err) = write_atomic(&path, bytes, 0o600) {
            fail(&mut record, format!("{}: {err}", path.display()));
            return finish(options, record, Some(&metadata));
        }
    }
    let user_data = match userdata::parse(&raw) {
        Ok(user_data) => user_data,
        Err(err) => {
            fail(&mut record, format!("{err}; no action was run"));
            return finish(options, record, Some(&metadata));
        }
    };
    let facts =
        crate::facts::render(&user_data.facts, user_data.write_ec2_facts.then_some(&metadata.tree));
    if let Err(err) = write_atomic(&layout.facts_file, facts.as_bytes(), 0o644) {
        fail(&mut record, format!("{}: {err}", layout.facts_file.display()));
        return finish(options, record, Some(&metadata));
    }
    crate::log::info(&format!("wrote {} facts to {}", facts.lines().count(), options.facts_file));

    let ctx = Context {
        layout,
        http: &http,
        instance_id: &instance_id,
        require_checksums: options.require_checksums,
        facts_file: &options.facts_file,
    };
    record.ok = true;
    let mut stopped = false;
    for action in &user_data.actions {
        let mut entry = ActionRecord {
            name: action.name.clone(),
            kind: action.kind.clone(),
            status: ActionStatus::NotRun,
            duration_ms: 0,
            output_tail: String::new(),
            error: None,
        };
        let semaphore = actions::semaphore(layout, &instance_id, action);
        if stopped {
            record.actions.push(entry);
            continue;
        }
        if semaphore.exists() && !options.force {
            crate::log::info(&format!(
                "action {} already ran for this instance; skipping",
                action.name
            ));
            entry.status = ActionStatus::Skipped;
            record.actions.push(entry);
            continue;
        }
        crate::log::info(&format!("running action {} ({})", action.name, action.kind));
        let clock = Instant::now();
        let result = actions::run(&ctx, action).await;
        entry.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(output) => {
                entry.status = ActionStatus::Ok;
                entry.output_tail = output;
                let mark = format!("{}\n", now());
                if let Err(err) = write_atomic(&semaphore, mark.as_bytes(), 0o600) {
                    crate::log::error(&format!("{}: {err}", semaphore.display()));
                }
                crate::log::info(&format!("action {} done", action.name));
            }
            Err(error) => {
                crate::log::error(&format!("action {} failed: {error}", action.name));
                entry.status = ActionStatus::Failed;
                entry.error = Some(error);
                record.ok = false;
                if action.on_error == OnError::Stop {
                    stopped = true;
                }
            }
        }
        record.actions.push(entry);
    }
    finish(options, record, Some(&metadata))
}

fn finish(options: &Options, mut record: BootRecord, metadata: Option<&Metadata>) -> BootRecord {
    record.finished = now();
    let status = if record.ok {
        "provisioned".to_owned()
    } else {
        match (&record.error, record.actions.iter().find(|a| a.status == ActionStatus::Failed)) {
            (Some(error), _) => format!("FAILED: {}", error.lines().next().unwrap_or_default()),
            (None, Some(action)) => format!("FAILED: action {}", action.name),
            (None, None) => "FAILED".to_owned(),
        }
    };
    let motd = match metadata {
        Some(metadata) => crate::motd::render(metadata, &status, &options.facts_file),
        None => format!(
            "\nThis machine has not been set up: cohort boot could not read its metadata.\n  {status}\n\n"
        ),
    };
    if let Err(err) = write_atomic(&options.layout.motd, motd.as_bytes(), 0o644) {
        crate::log::error(&format!("{}: {err}", options.layout.motd.display()));
    }
    if let Err(err) = crate::status::save(&options.layout.status_file(), &record) {
        crate::log::error(&format!("{}: {err}", options.layout.status_file().display()));
    }
    crate::log::info(&format!("finished: {status}"));
    record
}
