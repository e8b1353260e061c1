//! Support for the end-to-end tests: temporary jobs and devices, the real `odt` and
//! `odt-appliance` binaries, and the external NFS clients.

pub mod appliance;
pub mod bins;
pub mod guest;
pub mod image;
pub mod nfsclient;
pub mod run;
pub mod serial;
pub mod vcsim;
pub mod vmtree;
