//! Provisioning a device set: geometry, fresh secrets wrapped to the ingest recipient and to
//! a new customer unlock code, blank journal and seal slots, superblocks on every device.

use std::path::PathBuf;

use crate::crypto::cipher::Cipher;
use crate::crypto::keys::{Secrets, UnlockCode, random_u64};
use crate::crypto::tls::TlsIdentity;
use crate::device::Device;
use crate::error::{FormatError, Result, TripError};
use crate::format::segment;
use crate::format::superblock::{FORMAT_VERSION, JOURNAL_START, SLOT, Superblock};

const MIB: u64 = 1 << 20;

/// Choices for a new set.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cipher of the records and the journal.
    pub cipher: Cipher,
    /// Bytes per log segment (a multiple of 1 MiB).
    pub segment_size: u64,
    /// Journal bytes; `None` = 1/64 of device 0, between 16 MiB and 4 GiB.
    pub journal_len: Option<u64>,
    /// Size for image files that do not exist yet.
    pub create_size: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cipher: Cipher::Aes256Gcm,
            segment_size: 64 * MIB,
            journal_len: None,
            create_size: None,
        }
    }
}

/// What provisioning produced.
pub struct Provisioned {
    /// The superblock written on each device, by device index.
    pub superblocks: Vec<Superblock>,
    /// Printed once for the customer; not stored anywhere in the clear.
    pub unlock_code: UnlockCode,
    /// Ed25519 public key the seal will be signed with (recorded in the job).
    pub signing_public: [u8; 32],
    /// The control API's certificate (the same on every device of the set).
    pub tls: TlsIdentity,
}

/// Provisions `paths` as one set for job `job_id`.
pub fn provision(
    paths: &[PathBuf],
    job_id: &str,
    job_name: &str,
    recipient: &age::x25519::Recipient,
    opts: &Options,
) -> Result<Provisioned> {
    if paths.is_empty() {
        return Err(FormatError::DeviceSet("no device given".into()).into());
    }
    if opts.segment_size < 4 * MIB || !opts.segment_size.is_multiple_of(MIB) {
        return Err(TripError::Invalid(
            "segment size must be a multiple of 1 MiB, at least 4 MiB".into(),
        )
        .into());
    }
    let mut devs = Vec::new();
    for p in paths {
        let d = Device::create_or_open(p, opts.create_size)?;
        devs.push(d);
    }
    let secrets = Secrets::generate();
    let code = UnlockCode::generate();
    let wrapped_for_ingest = secrets.wrap_to_recipient(recipient)?;
    let wrapped_for_customer = secrets.wrap_to_code(&code)?;
    let signing_public = secrets.verifying_key();
    let tls = TlsIdentity::generate(job_id)?;
    let set_id = random_u64();
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let journal_len = opts
        .journal_len
        .unwrap_or_else(|| (devs[0].size() / 64).clamp(16 * MIB, 4096 * MIB))
        .div_ceil(MIB)
        * MIB;
    let mut sbs = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        // Layouts use whole MiB so that the end copies sit at a fixed, aligned place.
        let device_size = d.size() / MIB * MIB;
        let sb = Superblock {
            format_version: FORMAT_VERSION,
            set_id,
            job_id: job_id.to_string(),
            job_name: job_name.to_string(),
            device_index: i as u32,
            device_count: devs.len() as u32,
            device_size,
            segment_size: opts.segment_size,
            journal_len: if i == 0 { journal_len } else { 0 },
            cipher: opts.cipher,
            created_unix,
            signing_public,
            wrapped_for_ingest: wrapped_for_ingest.clone(),
            wrapped_for_customer: wrapped_for_customer.clone(),
            tls: tls.clone(),
        };
        if sb.segment_count() < 1 {
            return Err(TripError::TooSmall(format!(
                "{} is too small: {} bytes hold no {} MiB segment after {} MiB of metadata",
                d.path().display(),
                d.size(),
                opts.segment_size / MIB,
                sb.data_start() / MIB
            ))
            .into());
        }
        // Blank what a previous trip may have left where the new log starts.
        for at in sb.seal_slots() {
            d.zero(at, SLOT)?;
        }
        if i == 0 {
            d.zero(JOURNAL_START, journal_len)?;
        }
        d.zero(sb.segment_start(0), segment::BLOCK)?;
        sb.write(d)?;
        d.sync()?;
        sbs.push(sb);
    }
    Ok(Provisioned {
        superblocks: sbs,
        unlock_code: code,
        signing_public,
        tls,
    })
}
