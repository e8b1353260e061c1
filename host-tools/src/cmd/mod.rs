//! One module per `odt` command.

pub mod bom;
pub mod erase;
pub mod import;
pub mod ingest;
pub mod job;
pub mod provision;
pub mod refused;
pub mod seal;
pub mod seal_check;
pub mod status;
pub mod unlock;
pub mod verify;
