//! `odt-appliance`: the firmware of the ODT appliance.
//!
//! The store ([`odt_store`]) exported by the appliance's own NFSv3 server ([`nfs`]: one
//! dispatcher, every procedure in process, hostile clients contained); the writes it
//! acknowledged and is still running ([`pending`]); the Locked → Unlocked → Sealed life
//! cycle ([`state`]); the HTTPS control API and web page for unlock, status, the seal and
//! the custody log ([`control`]); settings from flags and a TOML file ([`config`]); the
//! activity meter ([`meter`]) and log throttling ([`throttle`]); and the process wiring
//! ([`serve`]).

pub mod config;
pub mod control;
pub mod meter;
pub mod nfs;
pub mod pending;
pub mod serve;
pub mod state;
pub mod throttle;

#[cfg(test)]
pub(crate) mod testutil;
