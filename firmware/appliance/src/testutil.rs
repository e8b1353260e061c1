//! Test fixtures: a provisioned device image in a temp dir (odt-test-support's), and an
//! unlocked appliance on it.

use std::sync::Arc;

use crate::framing::HEADER;
use crate::rpc::CallHeader;
use crate::state::Appliance;

/// An RPC call record as the gate reads it (a zero record mark, then a call of `program`
/// version 3 with AUTH_NULL credentials and verifier, then `args`) and its parsed header.
pub fn call_record(xid: u32, program: u32, procedure: u32, args: &[u8]) -> (CallHeader, Vec<u8>) {
    let mut v = vec![0u8; HEADER];
    for w in [xid, 0, 2, program, 3, procedure, 0, 0, 0, 0] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(args);
    let h = crate::rpc::parse_call(&v[HEADER..]).expect("a well-formed call");
    (h, v)
}

/// A provisioned one-device set (job `job-unit`), with the appliance on top.
pub struct Fixture(odt_test_support::fixture::Fixture);

impl std::ops::Deref for Fixture {
    type Target = odt_test_support::fixture::Fixture;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Fixture {
    /// A set of one image of `size` bytes.
    pub fn new(size: u64) -> Fixture {
        Fixture(odt_test_support::fixture::Fixture::for_job(
            "job-unit",
            1,
            size,
            Default::default(),
        ))
    }

    /// A locked appliance on the set.
    pub fn appliance(&self, test_hooks: bool) -> Arc<Appliance> {
        Arc::new(Appliance::open(&self.paths, test_hooks).unwrap())
    }

    /// An unlocked appliance on the set.
    pub fn unlocked(&self) -> Arc<Appliance> {
        let a = self.appliance(true);
        a.unlock(&self.code).unwrap();
        a
    }
}
