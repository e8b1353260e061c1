//! The ingest receipt: what a finished `odt ingest` leaves on device 0 so that `odt erase`
//! can tell a device whose data reached the datastore from one whose data did not.
//!
//! Where: the second half of each superblock slot of device 0 (`32 KiB` and
//! `end − 64 KiB + 32 KiB`); the superblock frame (about 1 KiB) uses the start of the slot
//! and nothing reads past its frame. Both copies are written identically. The seal slots
//! are not used: the seal reader takes any non-zero byte in a seal slot for a seal record.
//! Erase overwrites the whole slots; provisioning rewrites only the superblock frame, but
//! it draws a new set id, and a receipt counts only for the set id it names — so a receipt
//! never outlives the trip it belongs to.
//!
//! What it proves: the receipt guards against operator mistakes (erasing before the data was
//! ingested), not against someone with write access to the device, who could destroy the
//! data anyway. It is CRC-framed (so a keyless reader can recognise it) and carries a MAC
//! keyed from the job's data key, so a holder of the ingest identity can check that an
//! ingest station that had the keys wrote it ([`Receipt::verify_mac`]).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::keys::Secrets;
use crate::device::Device;
use crate::error::{FormatError, Result, TripError};
use crate::format::frame;
use crate::format::superblock::{SLOT, Superblock};

/// Offset of the receipt inside a seal slot.
pub const OFFSET_IN_SLOT: u64 = SLOT / 2;
/// Room the receipt may take.
pub const MAX_LEN: u64 = SLOT / 2;
const MAGIC: &[u8; 8] = b"ODTRCPT1";
const MAC_CONTEXT: &str = "odt 2026 ingest receipt mac key";

/// The record of one finished ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Set id of the device set ingested (from the superblocks).
    pub set_id: u64,
    /// The job the set belongs to.
    pub job_id: String,
    /// When the ingest finished (seconds since the Unix epoch).
    pub completed_unix: u64,
    /// Regular files written to the datastore (this run and earlier runs it resumed).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Files not written because their content is damaged on the device.
    pub quarantined: u64,
    /// Entries refused because their names or targets were unsafe.
    pub refused: u64,
    /// The seal code the ingest checked, if the store was sealed.
    pub seal_code: Option<String>,
    /// Where the data went (for people; lossy UTF-8).
    pub datastore: String,
    /// `odt` version that wrote the receipt.
    pub tool_version: String,
    /// Keyed BLAKE3 over everything above (see [`Receipt::verify_mac`]).
    pub mac: [u8; 32],
}

impl Receipt {
    /// Whether the ingest brought every file over: nothing quarantined. Erase refuses
    /// (without `--force`) a set whose receipt is missing or not complete.
    pub fn is_complete(&self) -> bool {
        self.quarantined == 0
    }

    fn mac_key(secrets: &Secrets) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(MAC_CONTEXT, &secrets.data_key))
    }

    fn compute_mac(&self, secrets: &Secrets) -> [u8; 32] {
        let mut unsigned = self.clone();
        unsigned.mac = [0; 32];
        let body = postcard::to_stdvec(&unsigned).expect("receipt serialises");
        *blake3::keyed_hash(&Self::mac_key(secrets), &body).as_bytes()
    }

    /// Fills in the MAC with the job's secrets.
    pub fn sign(&mut self, secrets: &Secrets) {
        self.mac = self.compute_mac(secrets);
    }

    /// True if the MAC was made with these secrets.
    pub fn verify_mac(&self, secrets: &Secrets) -> bool {
        // Not secret-dependent timing worth worrying about: the MAC is public once written.
        self.compute_mac(secrets) == self.mac
    }

    /// The framed image written to the device.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_stdvec(self).expect("receipt serialises");
        frame::encode(MAGIC, &payload)
    }

    /// Decodes a framed image; `Ok(None)` if no receipt was ever written there.
    pub fn decode(buf: &[u8]) -> std::result::Result<Option<Receipt>, String> {
        match frame::decode(MAGIC, buf) {
            Ok(p) => postcard::from_bytes(p)
                .map(Some)
                .map_err(|e| format!("the receipt does not decode ({e})")),
            Err(frame::FrameError::Magic) => Ok(None),
            Err(e) => Err(format!("the receipt is damaged ({e})")),
        }
    }

    /// Offsets of the two copies on a device.
    pub fn offsets(sb: &Superblock) -> [u64; 2] {
        sb.copies().map(|s| s + OFFSET_IN_SLOT)
    }

    /// Writes both copies to device 0 of the set and syncs. `dev` must be open for writing.
    pub fn write(&self, dev: &Device, sb: &Superblock) -> Result<()> {
        if sb.device_index != 0 {
            return Err(TripError::Invalid(format!(
                "the ingest receipt goes on device 1 of the set, not on device {}",
                sb.device_index + 1
            ))
            .into());
        }
        if sb.encode().len() as u64 > OFFSET_IN_SLOT {
            return Err(TripError::Invalid(
                "the superblock fills its slot's first half: no room for an ingest receipt".into(),
            )
            .into());
        }
        let mut img = self.encode();
        if img.len() as u64 > MAX_LEN {
            return Err(TripError::Invalid(format!(
                "ingest receipt of {} bytes does not fit its {MAX_LEN}-byte slot",
                img.len()
            ))
            .into());
        }
        // Blank the rest of the slot so a longer earlier receipt leaves no tail behind.
        img.resize(MAX_LEN as usize, 0);
        for at in Self::offsets(sb) {
            dev.write_at(&img, at)?;
        }
        dev.sync()
    }

    /// Reads the receipt of device 0: the first copy that decodes, else the second.
    /// `Ok(None)` if neither copy holds a receipt; an error if one exists but neither copy
    /// is intact. The caller checks that the receipt names this set ([`Receipt::set_id`]).
    pub fn read(dev: &Device, sb: &Superblock) -> Result<Option<Receipt>> {
        let mut damage = None;
        let mut found_none = false;
        for at in Self::offsets(sb) {
            let buf = dev.read_vec(at, MAX_LEN as usize)?;
            match Self::decode(&buf) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => found_none = true,
                Err(why) => damage = Some((at, why)),
            }
        }
        match damage {
            Some((at, why)) if !found_none => {
                Err(FormatError::corrupt("ingest receipt", dev.path(), at, why))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Receipt {
        Receipt {
            set_id: 42,
            job_id: "odt-0011".into(),
            completed_unix: 1_700_000_000,
            files: 3,
            bytes: 1 << 30,
            quarantined: 0,
            refused: 1,
            seal_code: Some("ABCD-EFGH".into()),
            datastore: "/datastore/job".into(),
            tool_version: "0.1.0".into(),
            mac: [0; 32],
        }
    }

    #[test]
    fn mac_binds_every_field() {
        let s = Secrets::generate();
        let mut r = sample();
        r.sign(&s);
        assert!(r.verify_mac(&s));
        assert!(!r.verify_mac(&Secrets::generate()));
        let mut t = r.clone();
        t.quarantined = 0;
        t.files = 4;
        assert!(!t.verify_mac(&s));
        let mut t = r.clone();
        t.set_id = 43;
        assert!(!t.verify_mac(&s));
    }

    #[test]
    fn encode_decode_and_damage() {
        let r = sample();
        let img = r.encode();
        assert_eq!(Receipt::decode(&img).unwrap(), Some(r));
        assert_eq!(Receipt::decode(&[0u8; 64]).unwrap(), None);
        let mut bad = img.clone();
        bad[20] ^= 1;
        assert!(Receipt::decode(&bad).is_err());
    }
}
