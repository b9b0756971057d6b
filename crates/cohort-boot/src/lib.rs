//! `cohort boot`: at first boot of a cloud instance, turn one generic image into its role.
//!
//! Reads user data (YAML: `facts` and an ordered list of `actions`) and instance metadata (EC2
//! IMDSv2, or a NoCloud seed directory), caches both, writes a facts file with the user-data facts
//! plus the flattened metadata, writes a MOTD, and runs the actions in order, each once per
//! instance. The successor of ec2-boot-init (reference/mcollective.md §9), with its quirks fixed:
//! metadata is refreshed every boot, actions do not re-run on reboot, failures stop the run and
//! are recorded, query strings survive, logging never goes through a shell.
//!
//! It needs no bus: boot must work before the network and the broker exist. Every path is under
//! a configurable root ([`Layout`]) so tests never touch the real `/etc`.

pub mod actions;
pub mod facts;
pub mod http;
pub mod layout;
pub mod log;
pub mod metadata;
pub mod motd;
pub mod run;
pub mod status;
pub mod userdata;

pub use layout::Layout;
