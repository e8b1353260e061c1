//! What the tests of every crate share, so that no test copies another's helpers:
//! provisioned device sets ([`fixture`]), deterministic data ([`data`]), damage done to
//! image files ([`corrupt`]), ONC RPC calls as clients send them ([`rpc`]) and the protocol
//! between the crash tests and their writer process ([`crash`]).
//!
//! A dev-dependency of the workspace's crates (and a dependency of the end-to-end crate,
//! whose crash-writer binary speaks [`crash`]); nothing that ships links it.

pub mod corrupt;
pub mod crash;
pub mod data;
pub mod fixture;
pub mod rpc;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// The names most tests want, in one `use odt_test_support::prelude::*;`.
pub mod prelude {
    pub use crate::corrupt::{flip, read_at, write_at};
    pub use crate::data::{XorShift, pattern};
    pub use crate::fixture::Fixture;
    pub use crate::{GIB, MIB};
}
