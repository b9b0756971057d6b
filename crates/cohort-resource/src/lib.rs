//! Puppet-style resources, applied natively: `user`, `group`, `package`, `service`, `file`,
//! `exec`, `host`, `mailalias`, `cron`, `ssh_authorized_key` and `mount`, with Puppet 7's
//! attributes, rules and change wording, and no Ruby on the node.
//!
//! The pure core is [`model`] (types, attributes, validation), [`change`] (desired against
//! current, the events), [`manifest`] (display), [`parsed`] (line-preserving file editing) and
//! [`policy`] (what a node allows). [`provider`] does the I/O; [`apply::Resources`] ties them
//! together for the `resource` agent and `cohort resource`. Types we do not manage go to
//! `puppet resource` ([`puppet`]) when Puppet is installed.

pub mod apply;
pub mod change;
pub mod manifest;
pub mod model;
pub mod parsed;
pub mod policy;
pub mod provider;
pub mod puppet;

pub use apply::{ApplyError, Report, Resources};
pub use model::{Desired, Kind, ResourceError, Value};
