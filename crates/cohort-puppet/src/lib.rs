//! Puppet run management: what the Puppet agent on a node is doing (from Puppet's own lock,
//! pid and summary files), starting a run or signalling the daemon, disabling and enabling with
//! Puppet's lock format, the last run's summary and report, and the rule by which
//! `cohort puppet runall` keeps at most N nodes applying a catalog.
//!
//! The pure core is [`state`] (status from the files), [`report`] (summary and report
//! parsing), [`runonce`] (a request to a `puppet agent` command line) and [`runall`] (the
//! scheduling state machine, fed statuses and the time). [`host`] does the I/O on a node.

pub mod host;
pub mod report;
pub mod runall;
pub mod runonce;
pub mod state;

pub use host::{PuppetAgent, PuppetConfig};
