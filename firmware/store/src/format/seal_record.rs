//! The seal record: what the seal signs with the device key and where it is kept. It pins
//! everything on the devices — the log's end and segment chain head on every device, the
//! journal's end and hash (which covers every name, attribute, extent and the per-file
//! BLAKE3 roots), the manifest root — and yields the short **seal code** for the label and
//! for the provider.
//!
//! The record is stored in clear (it holds no names and no data) in both seal slots of every
//! device, so the courier's check needs no key and reads no file data.

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{FormatError, Result};
use crate::format::frame;
use crate::format::is_zero;
use crate::format::journal::Time;
use crate::format::superblock::{SLOT, Superblock};

const MAGIC: &[u8; 8] = b"ODTSEAL1";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What the seal pins on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDevice {
    /// 1-based position in the set.
    pub index: u32,
    /// End of the log (0 = nothing written).
    pub tail: u64,
    /// Hash of the last segment footer.
    pub chain_head: [u8; 32],
    /// The segment the log would have continued in (never used, or freed by the cleaner:
    /// its header is zeros), or the segment count when the device was full.
    pub next_segment: u64,
}

/// The signed content of the seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRecord {
    /// Version of this record's layout (2: devices name their next segment).
    pub version: u32,
    /// The job the set was provisioned for.
    pub job_id: String,
    /// The set's random id.
    pub set_id: u64,
    /// Every device's log end and chain head.
    pub devices: Vec<SealedDevice>,
    /// Journal offset after the last batch before the seal.
    pub journal_end: u64,
    /// BLAKE3 of the journal bytes from its start (the checkpoint the start pointer names,
    /// or byte 0 for a journal never compacted, see [`crate::format::checkpoint`]) to
    /// `journal_end`.
    pub journal_hash: [u8; 32],
    /// Root over every file's manifest entry.
    pub manifest_root: [u8; 32],
    /// Files sealed.
    pub files: u64,
    /// Directories sealed, the root included.
    pub dirs: u64,
    /// Sum of the sealed files' sizes.
    pub bytes: u64,
    /// VM bundles found at the seal.
    pub bundles: u32,
    /// When the store was sealed.
    pub sealed: Time,
    /// The custody log up to the seal (signed with the rest).
    pub custody: crate::format::journal::CustodyLog,
}

/// The record with its Ed25519 signature, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSeal {
    /// What is signed.
    pub record: SealRecord,
    /// Ed25519 signature of the postcard encoding of `record`.
    pub signature: Vec<u8>,
}

impl SignedSeal {
    /// Signs `record` with the device signing key.
    pub fn sign(record: SealRecord, key: &ed25519_dalek::SigningKey) -> SignedSeal {
        let signature = key
            .sign(&postcard::to_stdvec(&record).expect("seal record serialises"))
            .to_bytes()
            .to_vec();
        SignedSeal { record, signature }
    }

    /// The record as stored in a seal slot (a CRC frame; fits in [`SLOT`]).
    pub fn encode(&self) -> Vec<u8> {
        let img = frame::encode(MAGIC, &postcard::to_stdvec(self).expect("seal serialises"));
        assert!(img.len() as u64 <= SLOT, "a seal record fits its slot");
        img
    }

    /// The seal code: 60 bits of a hash of the record and its signature, as three groups of
    /// four Crockford base32 characters (`7K2Q-DM9X-TA04`).
    pub fn code(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key("odt 2026 seal code");
        h.update(&postcard::to_stdvec(&self.record).unwrap());
        h.update(&self.signature);
        let d = h.finalize();
        let v = u64::from_le_bytes(d.as_bytes()[..8].try_into().unwrap());
        let mut s = String::with_capacity(14);
        for i in 0..12 {
            if i > 0 && i % 4 == 0 {
                s.push('-');
            }
            s.push(CROCKFORD[((v >> (i * 5)) & 31) as usize] as char);
        }
        s
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &[u8; 32]) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(key) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&self.signature) else {
            return false;
        };
        vk.verify(&postcard::to_stdvec(&self.record).unwrap(), &sig)
            .is_ok()
    }
}

/// Normalises a seal code typed by a person (case, separators, I/L→1, O→0).
pub fn normalise_code(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = match c.to_ascii_uppercase() {
            'I' | 'L' => '1',
            'O' => '0',
            c if c.is_ascii_alphanumeric() => c,
            _ => continue,
        };
        if !out.is_empty() && out.chars().filter(|c| *c != '-').count() % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A finished seal.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The signed record, as written to every device.
    pub seal: SignedSeal,
    /// Its seal code (`XXXX-XXXX-XXXX`).
    pub code: String,
}

/// Reads a device's seal record: `None` if it was never sealed. Both copies must agree.
pub fn read(dev: &Device, sb: &Superblock) -> Result<Option<SignedSeal>> {
    let mut found: Vec<Option<SignedSeal>> = Vec::new();
    for at in sb.seal_slots() {
        let b = dev.read_vec(at, SLOT as usize)?;
        if is_zero(&b) {
            found.push(None);
            continue;
        }
        let payload = frame::decode(MAGIC, &b).map_err(|e| {
            FormatError::corrupt(
                "seal record",
                dev.path(),
                at,
                format!("{e}: the seal record was altered or damaged"),
            )
        })?;
        let s: SignedSeal = postcard::from_bytes(payload).map_err(|e| {
            FormatError::corrupt(
                "seal record",
                dev.path(),
                at,
                format!("does not decode: {e}"),
            )
        })?;
        found.push(Some(s));
    }
    match (&found[0], &found[1]) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) if a == b => Ok(Some(a.clone())),
        _ => Err(FormatError::corrupt(
            "seal record",
            dev.path(),
            sb.seal_slots()[1],
            "the two copies of the seal record differ",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_normalisation() {
        assert_eq!(normalise_code("7k2q dm9x-ta04"), "7K2Q-DM9X-TA04");
        assert_eq!(normalise_code("lo2q-dm9x-ta04"), "102Q-DM9X-TA04");
    }
}
