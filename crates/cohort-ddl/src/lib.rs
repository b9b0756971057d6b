//! Agent DDL: what an agent's actions take and return, in Choria's JSON agent DDL schema so
//! existing DDL files are read as they are.
//!
//! The DDL drives everything around an action: the client converts `key=value` arguments by
//! input type and validates them before sending; the node validates again and applies defaults
//! before the agent runs; replies are pre-filled with output defaults; the client picks which
//! replies to print by the display policy, labels outputs by `display_as`, and computes the
//! aggregate summaries. Pure: parsing and validation only, no I/O.

mod aggregate;
pub mod builtin;
mod model;
mod validate;

pub use aggregate::{Summary, SummaryResult, summarize};
pub use model::{
    ActionDdl, AgentDdl, AggregateDdl, DdlError, Display, InputDdl, InputType, Metadata, OutputDdl,
};
pub use validate::{InputError, convert_argument, validate_inputs};
