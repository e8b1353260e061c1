//! One module per `odt` command.

pub mod job;
pub mod provision;
