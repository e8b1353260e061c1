//! What a trip of the appliance needs beyond storing bytes: the provider's [`job`] and
//! [`provision`]ing, the customer's VM [`bundle`] check (OVF and OVA parsing in [`ovf`])
//! and [`seal`], the per-file [`manifest`] and the bill of materials ([`bom`]), the
//! provider's [`verify`] and ingest [`receipt`], and the messages of the appliance's
//! control API ([`control_api`]).

pub mod bom;
pub mod bundle;
pub mod bundle_digests;
pub mod control_api;
pub mod custody;
pub mod job;
pub mod manifest;
pub mod ovf;
pub mod provision;
pub mod receipt;
pub mod seal;
pub mod verify;
