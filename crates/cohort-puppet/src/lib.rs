//! Puppet run management: what the Puppet agent on a node is doing (from Puppet's own lock,
//! pid and summary files), starting a run or signalling the daemon, disabling and enabling with
//! Puppet's lock format, the last run's summary and report, and the rule by which
//! `cohort puppet runall` keeps at most N nodes applying a catalog.
//!
//! The pure core is [`state`] (status from the files), [`report`] (summary and report
//! parsing), [`runonce`] (a request to a `puppet agent` command line) and [`runall`] (the
//! scheduling state machine, fed statuses and the time), [`schedule`] (the scheduler's plan and
//! decisions) and [`lease`] (which of several schedulers acts). [`host`] does the I/O on a node;
//! [`metrics`] are the scheduler's Prometheus counters.

pub mod host;
pub mod lease;
pub mod metrics;
pub mod report;
pub mod runall;
pub mod runonce;
pub mod schedule;
pub mod state;

pub use host::{PuppetAgent, PuppetConfig};
