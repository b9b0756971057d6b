//! End-to-end tests of the `cohort` binary, run as a subprocess the way users run it.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod agents;
mod boot;
mod broker;
mod client_core;
mod cluster;
mod collective;
mod demo;
mod fleet;
mod imds;
mod latecomers;
mod nagios;
mod node_metrics;
mod operator;
mod package;
mod partition;
mod process;
mod provision;
mod puppet;
mod resource;
mod schedule;
mod security;
mod stress;
mod tidy;
mod xmpp;
