//! The superblock: what a device is, which job and set it belongs to, where things are on
//! it, and the wrapped keys. Written at the start and the end of every device of a set.
//!
//! Device layout (every device; the journal only on device 0):
//! ```text
//! 0            superblock (64 KiB slot)
//! 64 KiB       seal record slot (64 KiB)
//! 128 KiB      metadata journal (device 0 only; `journal_len` bytes)
//! data_start   segments of `segment_size` bytes, 1 MiB aligned
//! end-128 KiB  copy of the seal record slot
//! end-64 KiB   copy of the superblock
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::crypto::cipher::Cipher;
use crate::device::Device;
use crate::error::{FormatError, Result};
use crate::format::frame;

/// On-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the superblock slot and of the seal slot.
pub const SLOT: u64 = 64 * 1024;
/// Start of the journal on device 0.
pub const JOURNAL_START: u64 = 2 * SLOT;
const MAGIC: &[u8; 8] = b"ODTSUPR1";
const ERASED_MAGIC: &[u8; 8] = b"ODTERASD";
const MIB: u64 = 1 << 20;

/// Everything a device says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superblock {
    /// Layout version (1).
    pub format_version: u32,
    /// Random id shared by the devices of one set.
    pub set_id: u64,
    /// The job this set was provisioned for.
    pub job_id: String,
    /// The customer's name for the job.
    pub job_name: String,
    /// This device's 1-based position in the set.
    pub device_index: u32,
    /// Devices in the set.
    pub device_count: u32,
    /// Bytes of the device the layout uses (the device may be larger).
    pub device_size: u64,
    /// Bytes per log segment.
    pub segment_size: u64,
    /// Bytes reserved for the metadata journal (device 0; zero elsewhere).
    pub journal_len: u64,
    /// Cipher of records and journal.
    pub cipher: Cipher,
    /// When the set was provisioned, in Unix seconds.
    pub created_unix: u64,
    /// Ed25519 public key the seal is signed with.
    pub signing_public: [u8; 32],
    /// The secrets, age-encrypted to the ingest station's X25519 recipient.
    pub wrapped_for_ingest: Vec<u8>,
    /// The secrets, age-encrypted (scrypt) to the customer's unlock code.
    pub wrapped_for_customer: Vec<u8>,
    /// Certificate and key of the control API (in clear: served while locked).
    pub tls: crate::crypto::tls::TlsIdentity,
}

/// A device geometry for unit tests: one 1 GiB device of a set, no keys, no certificate.
#[cfg(test)]
pub(crate) fn test_geometry(segment_size: u64, journal_len: u64) -> Superblock {
    Superblock {
        format_version: FORMAT_VERSION,
        set_id: 1,
        job_id: "job".into(),
        job_name: "job".into(),
        device_index: 0,
        device_count: 1,
        device_size: 1 << 30,
        segment_size,
        journal_len,
        cipher: Cipher::Aes256Gcm,
        created_unix: 0,
        signing_public: [0; 32],
        wrapped_for_ingest: Vec::new(),
        wrapped_for_customer: Vec::new(),
        tls: crate::crypto::tls::TlsIdentity {
            cert_der: Vec::new(),
            key_der: crate::crypto::tls::SecretBytes(Vec::new()),
            spki_sha256: [0; 32],
        },
    }
}

impl Superblock {
    /// First byte of the segment area.
    pub fn data_start(&self) -> u64 {
        (JOURNAL_START + self.journal_len).div_ceil(MIB) * MIB
    }

    /// Number of segments that fit.
    pub fn segment_count(&self) -> u64 {
        let end = self.device_size - 2 * SLOT;
        end.saturating_sub(self.data_start()) / self.segment_size
    }

    /// Segment holding the last byte before log tail `tail` (none for an empty log, 0).
    pub fn segment_of(&self, tail: u64) -> Option<u64> {
        (tail != 0).then(|| (tail - 1 - self.data_start()) / self.segment_size)
    }

    /// Byte offset of segment `i`.
    pub fn segment_start(&self, i: u64) -> u64 {
        self.data_start() + i * self.segment_size
    }

    /// Byte offset of segment `i`'s footer block (its last block).
    pub fn footer_start(&self, i: u64) -> u64 {
        self.segment_start(i) + self.segment_size - crate::format::segment::BLOCK
    }

    /// Offsets of the two superblock copies.
    pub fn copies(&self) -> [u64; 2] {
        [0, self.device_size - SLOT]
    }

    /// Offsets of the two seal-slot copies.
    pub fn seal_slots(&self) -> [u64; 2] {
        [SLOT, self.device_size - 2 * SLOT]
    }

    /// Serialises into a framed slot image.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_stdvec(self).expect("superblock serialises");
        frame::encode(MAGIC, &payload)
    }

    /// Writes both copies (no sync).
    pub fn write(&self, dev: &Device) -> Result<()> {
        let img = self.encode();
        assert!(img.len() as u64 <= SLOT);
        for at in self.copies() {
            dev.write_at(&img, at)?;
        }
        Ok(())
    }

    /// Reads the superblock of `dev`: the first copy, else the last copy. Refuses foreign,
    /// erased and truncated devices with a message that says which.
    pub fn read(dev: &Device) -> Result<Superblock> {
        let path = dev.path();
        if dev.size() < 4 * SLOT {
            return Err(FormatError::NotADevice {
                path: path.to_path_buf(),
                why: format!("it has only {} bytes", dev.size()),
            }
            .into());
        }
        let head = dev.read_vec(0, SLOT as usize)?;
        if head.starts_with(ERASED_MAGIC) {
            return Err(FormatError::Erased {
                path: path.to_path_buf(),
            }
            .into());
        }
        let first = Self::decode(path, &head);
        let sb = match first {
            Ok(sb) => sb,
            Err(first_err) => {
                // The end copy: at the end of the device as it is now.
                let tail = dev.read_vec(dev.size() - SLOT, SLOT as usize)?;
                match Self::decode(path, &tail) {
                    Ok(sb) if sb.device_size == dev.size() => sb,
                    _ => return Err(first_err),
                }
            }
        };
        if dev.size() < sb.device_size {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                expected: sb.device_size,
                actual: dev.size(),
            }
            .into());
        }
        Ok(sb)
    }

    /// Decodes and checks a superblock slot image held in memory, as [`Superblock::read`]
    /// does for each copy (for tools and fuzzing; no device needed).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Superblock, String> {
        Self::decode(Path::new("<slot>"), bytes).map_err(|e| e.to_string())
    }

    fn decode(path: &Path, slot: &[u8]) -> Result<Superblock> {
        let not = |why: String| {
            FormatError::NotADevice {
                path: path.to_path_buf(),
                why,
            }
            .into()
        };
        let payload = match frame::decode(MAGIC, slot) {
            Ok(p) => p,
            Err(frame::FrameError::Magic) if slot.iter().all(|&b| b == 0) => {
                return Err(not(
                    "it is blank (never provisioned: run `odt provision`)".into()
                ));
            }
            Err(frame::FrameError::Magic) => {
                return Err(not("no ODT superblock at its start (foreign data)".into()));
            }
            Err(e) => return Err(not(format!("its superblock is damaged ({e})"))),
        };
        let sb: Superblock = postcard::from_bytes(payload)
            .map_err(|e| not(format!("its superblock does not decode ({e})")))?;
        if sb.format_version != FORMAT_VERSION {
            return Err(not(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                sb.format_version
            )));
        }
        if sb.segment_size < 4 * MIB
            || !sb.segment_size.is_multiple_of(MIB)
            || sb.device_count == 0
            || sb.device_index >= sb.device_count
            || sb.device_size < 4 * SLOT
            || JOURNAL_START
                .checked_add(sb.journal_len)
                .is_none_or(|end| end > sb.device_size - 2 * SLOT)
        {
            return Err(not("its superblock has impossible geometry".into()));
        }
        Ok(sb)
    }

    /// Overwrites both superblock copies and both seal slots with an "erased" marker.
    pub fn erase(&self, dev: &Device) -> Result<()> {
        let mut img = vec![0u8; SLOT as usize];
        img[..8].copy_from_slice(ERASED_MAGIC);
        for at in self.copies().into_iter().chain(self.seal_slots()) {
            dev.write_at(&img, at)?;
        }
        dev.sync()
    }
}

/// Reads and checks the superblocks of a device set: same set and job, each index once,
/// none missing. Returns devices and superblocks ordered by index.
pub fn open_set(paths: &[std::path::PathBuf], write: bool) -> Result<Vec<(Device, Superblock)>> {
    if paths.is_empty() {
        return Err(FormatError::DeviceSet("no device given".into()).into());
    }
    let mut found: Vec<(Device, Superblock)> = Vec::new();
    for p in paths {
        let dev = Device::open(p, write)?;
        let sb = Superblock::read(&dev)?;
        if let Some((d0, s0)) = found.first()
            && (s0.set_id != sb.set_id || s0.job_id != sb.job_id)
        {
            return Err(FormatError::DeviceSet(format!(
                "{} belongs to job {} but {} belongs to job {}: attach the devices of one job",
                p.display(),
                sb.job_id,
                d0.path().display(),
                s0.job_id
            ))
            .into());
        }
        if let Some((d, _)) = found
            .iter()
            .find(|(_, s)| s.device_index == sb.device_index)
        {
            return Err(FormatError::DeviceSet(format!(
                "{} and {} are both device {} of the set",
                d.path().display(),
                p.display(),
                sb.device_index + 1
            ))
            .into());
        }
        found.push((dev, sb));
    }
    let count = found[0].1.device_count as usize;
    if found.len() != count {
        let have: Vec<u32> = found.iter().map(|(_, s)| s.device_index + 1).collect();
        let missing: Vec<String> = (1..=count as u32)
            .filter(|i| !have.contains(i))
            .map(|i| i.to_string())
            .collect();
        return Err(FormatError::DeviceSet(format!(
            "the set has {count} devices but {} were given; missing device(s) {}",
            found.len(),
            missing.join(", ")
        ))
        .into());
    }
    found.sort_by_key(|(_, s)| s.device_index);
    Ok(found)
}
