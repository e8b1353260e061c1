//! `odt-appliance`: the firmware of the ODT appliance.
//!
//! The store ([`odt_store`]) exported over NFSv3 with `nfsserve` ([`nfs`]), behind a gate
//! that enforces the client allow-list and bounds memory ([`gate`], [`framing`],
//! [`allow`]) and answers WRITE, COMMIT, READDIR and FSSTAT itself ([`writeback`], [`pending`],
//! [`readdir`], [`fsstat`], [`rpc`]) as well as the metadata procedures and MOUNT ([`meta`],
//! [`mount`]); persistent file handles ([`handles`]); the Locked → Unlocked → Sealed life
//! cycle ([`state`]); the HTTPS control API and web page for unlock, status, the seal and
//! the custody log ([`control`]); settings from
//! flags and a TOML file ([`config`]); and the process wiring ([`serve`]).

pub mod allow;
pub mod config;
pub mod control;
pub mod framing;
pub mod fsstat;
pub mod gate;
pub mod handles;
pub mod meta;
pub mod meter;
pub mod mount;
pub mod nfs;
pub mod nfsstat;
pub mod pending;
pub mod readdir;
pub mod rpc;
pub mod serve;
pub mod state;
pub mod throttle;
pub mod writeback;

#[cfg(test)]
pub(crate) mod testutil;
