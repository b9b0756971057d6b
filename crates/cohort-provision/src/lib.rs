//! The provisioner: new servers from bare to production unattended.
//!
//! A node boots, joins the collective with the `provision` agent active, and a provisioner
//! elsewhere notices it, picks the nearest Puppet master by facts, points the node at it,
//! cleans old certificates for the name on every master, has the node send a CSR, signs it,
//! runs the bootstrap and production Puppet environments, disables provisioning on the node and
//! tells people.
//!
//! From the pure core out: [`config`] (the TOML file and its checks), [`master`] (which master a
//! node gets: the first criterion that agrees wins), [`progress`] (one node's step state
//! machine, fed the clock: retries, backoff, what may not be repeated), [`lease`] and [`hosts`]
//! (the node's lock and its `/etc/hosts` edit, as pure text rules); then the adapters:
//! [`store`] (each node's progress in an embedded database, so a restarted provisioner resumes),
//! [`node`] and [`puppetca`] (the actions the node and master agents run), [`notify`] (mail,
//! webhooks, XMPP, local commands); and [`driver`], the concurrent loop over a [`driver::Fleet`]
//! that the binary implements on the bus.

pub mod config;
pub mod control;
pub mod driver;
pub mod hosts;
pub mod lease;
pub mod master;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod progress;
pub mod puppetca;
pub mod store;
#[cfg(feature = "xmpp")]
mod xmpp;

pub use config::{ProvisionConfig, Step};
pub use progress::{Progress, State};
