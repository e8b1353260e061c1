//! Provisioning a device set: geometry, fresh secrets wrapped to the ingest recipient and to
//! a new customer unlock code, blank journal and seal slots, superblocks on every device.

use std::path::PathBuf;

use crate::crypto::cipher::Cipher;
use crate::crypto::keys::{Secrets, UnlockCode, random_u64};
use crate::crypto::tls::TlsIdentity;
use crate::device::Device;
use crate::error::{ErrorKind, FormatError, Result, TripError};
use crate::format::superblock::{FORMAT_VERSION, JOURNAL_START, SLOT, Superblock};
use crate::format::{checkpoint, is_zero, seal_record, segment};
use crate::trip::receipt::Receipt;

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
    /// Provision over devices that hold an ODT set or other data (`odt provision
    /// --force`). Without it only blank and erased devices are taken ([`survey`]).
    pub overwrite: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cipher: Cipher::Aes256Gcm,
            segment_size: 64 * MIB,
            journal_len: None,
            create_size: None,
            overwrite: false,
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

/// What a device holds before provisioning, as far as can be told without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// All zero where the superblock and seal slots go, at both ends.
    Blank,
    /// Crypto-erased by `odt erase`.
    Erased,
    /// A device of an ODT set.
    Odt(OdtDevice),
    /// Anything else: a file system, a partition table, an image of something.
    Foreign,
}

/// An ODT device found where a new set was to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdtDevice {
    /// The job it was provisioned for.
    pub job_id: String,
    /// That job's name.
    pub job_name: String,
    /// 1-based position in its set, and the set's size.
    pub index: u32,
    /// Devices in its set.
    pub count: u32,
    /// The journal holds batches: the set was unlocked (and may hold customer data).
    /// Known on device 1 only (the journal is there).
    pub unlocked: Option<bool>,
    /// The seal code, if the set was sealed; `Err` if its seal record is damaged.
    pub seal: std::result::Result<Option<String>, String>,
    /// An ingest receipt for this set (device 1 only): `Some(quarantined files)`.
    pub ingested: Option<u64>,
}

impl Found {
    /// The device may be provisioned without `--force`.
    pub fn is_free(&self) -> bool {
        matches!(self, Found::Blank | Found::Erased)
    }

    /// What is there, for the refusal.
    pub fn describe(&self) -> String {
        match self {
            Found::Blank => "blank".into(),
            Found::Erased => "erased by `odt erase`".into(),
            Found::Foreign => "non-zero data, not an ODT device".into(),
            Found::Odt(d) => {
                let seal = match &d.seal {
                    Ok(Some(code)) => format!("sealed (seal code {code})"),
                    Ok(None) => "not sealed".into(),
                    Err(why) => format!("seal record damaged ({why})"),
                };
                let unlocked = match d.unlocked {
                    Some(true) => ", unlocked (may hold customer data)",
                    Some(false) => ", never unlocked",
                    None => "",
                };
                let ingested = match d.ingested {
                    Some(0) => ", ingested",
                    Some(_) => ", ingested with files quarantined",
                    None if d.index == 1 => ", NOT ingested",
                    None => ", ingest unknown (see device 1)",
                };
                format!(
                    "device {} of {} of job {} ({}), {seal}{unlocked}{ingested}",
                    d.index, d.count, d.job_name, d.job_id
                )
            }
        }
    }
}

/// The places a superblock or seal record of a device of `size` bytes can be: both ends,
/// for the device's own size and for the whole-MiB size a layout uses.
fn metadata_places(size: u64) -> Vec<u64> {
    let mut at = vec![0, SLOT];
    for end in [size, size / MIB * MIB] {
        if end >= 4 * SLOT {
            at.extend([end - SLOT, end - 2 * SLOT]);
        }
    }
    at.sort_unstable();
    at.dedup();
    at
}

/// Finds out what `dev` holds (reads only).
pub fn survey(dev: &Device) -> Result<Found> {
    let sb = match Superblock::read(dev) {
        Ok(sb) => sb,
        Err(e) if matches!(e.kind(), ErrorKind::Format(FormatError::Erased { .. })) => {
            return Ok(Found::Erased);
        }
        // Not a live superblock: blank only if every metadata place is all zero.
        Err(e) if matches!(e.kind(), ErrorKind::Format(_)) => {
            let size = dev.size();
            let blank = if size < 4 * SLOT {
                is_zero(&dev.read_vec(0, size as usize)?)
            } else {
                let mut all = true;
                for at in metadata_places(size) {
                    all &= is_zero(&dev.read_vec(at, SLOT as usize)?);
                }
                all
            };
            return Ok(if blank { Found::Blank } else { Found::Foreign });
        }
        Err(e) => return Err(e),
    };
    let seal = match seal_record::read(dev, &sb) {
        Ok(s) => Ok(s.map(|s| s.code())),
        Err(e) => Err(crate::error::one_line(&e)),
    };
    let (unlocked, ingested) = if sb.device_index == 0 {
        let written = checkpoint::journal_written(dev, &sb)?;
        let ingested = Receipt::read(dev, &sb)
            .ok()
            .flatten()
            .filter(|r| r.set_id == sb.set_id && r.job_id == sb.job_id)
            .map(|r| r.quarantined);
        (Some(written), ingested)
    } else {
        (None, None)
    };
    Ok(Found::Odt(OdtDevice {
        job_id: sb.job_id,
        job_name: sb.job_name,
        index: sb.device_index + 1,
        count: sb.device_count,
        unlocked,
        seal,
        ingested,
    }))
}

/// The smallest device that holds the metadata and one segment.
pub fn min_device_size(journal_len: u64, segment_size: u64) -> u64 {
    (JOURNAL_START + journal_len).div_ceil(MIB) * MIB + segment_size + 2 * SLOT
}

/// Provisions `paths` as one set for job `job_id`.
///
/// Nothing is written unless every device is large enough and, without
/// [`Options::overwrite`], blank or erased ([`survey`]): a device holding anything else is
/// refused with [`TripError::NotBlank`].
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
    // Sizes as they will be: missing files and smaller image files grow to `create_size`.
    let mut sizes = Vec::new();
    for p in paths {
        let (exists, is_file) = match std::fs::metadata(p) {
            Ok(m) => (true, m.is_file()),
            Err(_) => (false, false),
        };
        if !exists && opts.create_size.is_none() {
            sizes.push(None); // create_or_open says what is missing
            continue;
        }
        let now = if exists {
            Device::open(p, false)?.size()
        } else {
            0
        };
        sizes.push(Some(match opts.create_size {
            Some(c) if !exists || is_file => now.max(c),
            _ => now,
        }));
    }
    let journal_len0 = sizes.first().copied().flatten().map(|size0| {
        opts.journal_len
            .unwrap_or_else(|| (size0 / 64).clamp(16 * MIB, 4096 * MIB))
            .div_ceil(MIB)
            * MIB
    });
    for (i, (p, size)) in paths.iter().zip(&sizes).enumerate() {
        let Some(size) = *size else { continue };
        let journal = if i == 0 { journal_len0.unwrap_or(0) } else { 0 };
        let needed = min_device_size(journal, opts.segment_size);
        if size / MIB * MIB < needed {
            return Err(TripError::DeviceTooSmall {
                path: p.clone(),
                size,
                needed,
            }
            .into());
        }
    }
    // Look before touching anything: an existing device is read, never written, until all
    // of them have passed.
    for p in paths {
        if !p.exists() {
            continue;
        }
        let d = Device::open(p, false)?;
        let found = survey(&d)?;
        if !found.is_free() && !opts.overwrite {
            return Err(TripError::NotBlank {
                path: p.clone(),
                found: found.describe(),
            }
            .into());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            segment_size: 4 * MIB,
            journal_len: Some(16 * MIB),
            create_size: Some(32 * MIB),
            ..Options::default()
        }
    }

    fn provision_one(p: &std::path::Path, o: &Options) -> Result<Provisioned> {
        let id = age::x25519::Identity::generate();
        provision(&[p.to_path_buf()], "job-1", "first", &id.to_public(), o)
    }

    #[test]
    fn only_blank_and_erased_devices_are_taken_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        provision_one(&p, &opts()).unwrap();
        let found = survey(&Device::open(&p, false).unwrap()).unwrap();
        let Found::Odt(d) = &found else {
            panic!("{found:?}")
        };
        assert_eq!((d.job_id.as_str(), d.index, d.count), ("job-1", 1, 1));
        assert_eq!(
            (d.unlocked, d.seal.clone(), d.ingested),
            (Some(false), Ok(None), None)
        );
        assert!(
            found.describe().contains("job first (job-1), not sealed"),
            "{}",
            found.describe()
        );
        let before = std::fs::read(&p).unwrap();
        let e = provision_one(&p, &opts()).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::Trip(TripError::NotBlank { .. })),
            "{e}"
        );
        assert!(
            std::fs::read(&p).unwrap() == before,
            "a refused provision wrote"
        );
        provision_one(
            &p,
            &Options {
                overwrite: true,
                ..opts()
            },
        )
        .unwrap();

        let sb = Superblock::read(&Device::open(&p, false).unwrap()).unwrap();
        sb.erase(&Device::open(&p, true).unwrap()).unwrap();
        assert_eq!(
            survey(&Device::open(&p, false).unwrap()).unwrap(),
            Found::Erased
        );
        provision_one(&p, &opts()).unwrap();

        let blank = dir.path().join("blank.img");
        std::fs::File::create(&blank)
            .unwrap()
            .set_len(32 * MIB)
            .unwrap();
        assert_eq!(
            survey(&Device::open(&blank, false).unwrap()).unwrap(),
            Found::Blank
        );
        let d = Device::open(&blank, true).unwrap();
        d.write_at(b"x", 32 * MIB - 2 * SLOT + 5).unwrap();
        assert_eq!(survey(&d).unwrap(), Found::Foreign);
    }

    #[test]
    fn a_small_device_is_refused_with_both_sizes_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.img");
        std::fs::write(&p, b"0123456789").unwrap();
        let e = provision_one(
            &p,
            &Options {
                create_size: None,
                ..opts()
            },
        )
        .err()
        .unwrap();
        match e.kind() {
            ErrorKind::Trip(TripError::DeviceTooSmall { size, needed, .. }) => {
                assert_eq!(*size, 10);
                assert_eq!(*needed, min_device_size(16 * MIB, 4 * MIB));
            }
            _ => panic!("{e}"),
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
    }

    // Here rather than beside the receipt: provisioning reads receipts, so a receipt test
    // that provisions would make the two modules import each other.
    #[test]
    fn receipt_write_read_on_an_image_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let id = age::x25519::Identity::generate();
        let opts = Options {
            create_size: Some(64 << 20),
            segment_size: 8 << 20,
            ..Default::default()
        };
        let prov = provision(std::slice::from_ref(&p), "job", "n", &id.to_public(), &opts).unwrap();
        let sb = &prov.superblocks[0];
        let dev = Device::open(&p, true).unwrap();
        assert_eq!(Receipt::read(&dev, sb).unwrap(), None);
        let r = crate::trip::receipt::tests::sample();
        r.write(&dev, sb).unwrap();
        assert_eq!(Receipt::read(&dev, sb).unwrap(), Some(r.clone()));
        // The superblock is untouched.
        assert_eq!(Superblock::read(&dev).unwrap(), *sb);
        // One damaged copy: the other is used.
        let at = Receipt::offsets(sb)[0];
        let mut b = dev.read_vec(at + 30, 1).unwrap();
        b[0] ^= 0x55;
        dev.write_at(&b, at + 30).unwrap();
        assert_eq!(Receipt::read(&dev, sb).unwrap(), Some(r.clone()));
        // Both damaged: an error naming the receipt.
        let at2 = Receipt::offsets(sb)[1];
        dev.write_at(&b, at2 + 30).unwrap();
        let e = Receipt::read(&dev, sb).unwrap_err().to_string();
        assert!(e.contains("ingest receipt"), "{e}");
        // Erase destroys it.
        sb.erase(&dev).unwrap();
        assert_eq!(Receipt::read(&dev, sb).unwrap(), None);
    }
}
