//! Nagios plugin conventions (reference/boot-ral-nagios.md §C), as Cohort needs them:
//!
//! - [`output`]: splitting what a plugin prints into summary, long output and performance data,
//!   and parsing performance data with the quirks real plugins produce;
//! - [`nrpe`]: NRPE's configuration (`command[name]=...`, `include`, `include_dir`);
//! - [`fleet`]: counting states across a fleet and rendering the result as one Nagios check
//!   (status line, perfdata, long output, exit code, 8 KiB bound);
//! - [`textfile`]: the same counts in node_exporter's textfile format.
//!
//! Everything but reading NRPE configuration files is pure.

pub mod fleet;
pub mod nrpe;
pub mod output;
pub mod textfile;

pub use fleet::State;
