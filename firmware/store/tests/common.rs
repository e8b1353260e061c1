//! Helpers shared by the store's integration tests: real disk-image files in a temp dir.
#![allow(dead_code)]

use std::path::PathBuf;

use odt_store::crypto::keys::{Secrets, UnlockCode};
use odt_store::trip::provision::{self, Options};
use odt_store::{Access, Locked, Store};

pub const MIB: u64 = 1 << 20;

/// A provisioned set of image files and the keys that open it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub paths: Vec<PathBuf>,
    pub code: UnlockCode,
    pub identity: age::x25519::Identity,
}

impl Fixture {
    pub fn new(devices: usize, size: u64) -> Fixture {
        Self::with_options(devices, size, Options::default())
    }

    pub fn with_options(devices: usize, size: u64, mut opts: Options) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..devices)
            .map(|i| dir.path().join(format!("dev{i}.img")))
            .collect();
        let identity = age::x25519::Identity::generate();
        opts.create_size = Some(size);
        if opts.segment_size == Options::default().segment_size {
            opts.segment_size = 8 * MIB;
        }
        let p =
            provision::provision(&paths, "job-test", "test", &identity.to_public(), &opts).unwrap();
        Fixture {
            dir,
            paths,
            code: p.unlock_code,
            identity,
        }
    }

    pub fn secrets(&self) -> Secrets {
        let l = Locked::open(&self.paths, Access::ReadOnly).unwrap();
        l.secrets_from_code(&self.code).unwrap()
    }

    pub fn open(&self) -> Store {
        let l = Locked::open(&self.paths, Access::ReadWrite).unwrap();
        let s = l.secrets_from_code(&self.code).unwrap();
        l.unlock(s, Access::ReadWrite).unwrap()
    }

    pub fn open_ro(&self) -> odt_store::Result<Store> {
        let l = Locked::open(&self.paths, Access::ReadOnly)?;
        let s = l.secrets_from_identity(&self.identity)?;
        l.unlock(s, Access::ReadOnly)
    }
}

/// Deterministic pseudo-random bytes (xorshift), cheap to regenerate for checks.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
