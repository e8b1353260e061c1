//! `odt erase`: crypto-erase a device set for its next trip.
//!
//! The keys exist only wrapped inside the superblocks, so destroying both superblock copies
//! of every device makes every record unreadable. Erase also blanks the seal slots and the
//! metadata journal (the names), then checks that each device now reads as erased.
//! `--overwrite` then writes zeros over the whole device except the erased marker.
//!
//! Safety: without `--force`, erase needs the complete set and an ingest receipt on device
//! 1 that names this set and says nothing was quarantined ([`odt_store::trip::receipt`]).

use std::path::PathBuf;

use crate::progress::Progress;
use odt_store::device::Device;
use odt_store::error::{ErrorKind, FormatError, one_line};
use odt_store::format::superblock::{JOURNAL_START, SLOT, Superblock};
use odt_store::trip::receipt::Receipt;
use serde::Serialize;

/// What to erase.
#[derive(Debug, Clone)]
pub struct Options {
    /// The devices of the set.
    pub devices: Vec<PathBuf>,
    /// Also overwrite every byte with zeros (`--overwrite`).
    pub overwrite: bool,
    /// Erase without an ingest receipt (`--force`).
    pub force: bool,
}

/// Why erase stopped.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// A device could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] odt_store::Error),
    /// Erase would lose data that was not ingested, or the devices do not form one set.
    #[error("refusing to erase: {0}")]
    Refused(String),
}

/// The receipt erase relied on.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptSummary {
    /// When the ingest finished, in Unix seconds.
    pub completed_unix: u64,
    /// Files the ingest wrote.
    pub files: u64,
    /// Bytes the ingest wrote.
    pub bytes: u64,
    /// Files it quarantined.
    pub quarantined: u64,
    /// The seal code it checked, if the set was sealed.
    pub seal_code: Option<String>,
    /// The datastore it wrote into.
    pub datastore: String,
}

/// What happened to one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceErased {
    /// The device.
    pub path: String,
    /// 1-based index in its set (unknown for a device erased earlier).
    pub index: Option<u32>,
    /// The device had already been erased before this run.
    pub already_erased: bool,
    /// Keys, seal slots and journal destroyed by this run.
    pub crypto_erased: bool,
    /// Bytes of zeros written by `--overwrite`.
    pub bytes_overwritten: u64,
}

/// Everything `odt erase` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The job the set was provisioned for (unknown if already erased).
    pub job_id: Option<String>,
    /// Hex of the set id (unknown if already erased).
    pub set_id: Option<String>,
    /// `--force` was given (the receipt was not required).
    pub forced: bool,
    /// The ingest receipt found on the set.
    pub receipt: Option<ReceiptSummary>,
    /// What happened to each device.
    pub devices: Vec<DeviceErased>,
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let (Some(j), Some(set)) = (&self.job_id, &self.set_id) {
            let _ = writeln!(s, "Erased device set {set} of job {j}");
        }
        match &self.receipt {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  ingest receipt: {} files ({}) into {}{}",
                    r.files,
                    crate::output::bytes(r.bytes),
                    r.datastore,
                    r.seal_code
                        .as_ref()
                        .map(|c| format!(", seal {c}"))
                        .unwrap_or_default()
                );
            }
            None if self.forced => {
                let _ = writeln!(s, "  --force: no ingest receipt was required");
            }
            None => {}
        }
        for d in &self.devices {
            let what = match (d.already_erased, d.crypto_erased) {
                (true, _) => "was already erased".to_string(),
                (false, true) => "keys, seal slots and journal destroyed".to_string(),
                (false, false) => "untouched".to_string(),
            };
            let over = if d.bytes_overwritten > 0 {
                format!(
                    "; {} overwritten with zeros",
                    crate::output::bytes(d.bytes_overwritten)
                )
            } else {
                String::new()
            };
            let _ = writeln!(s, "  {}: {what}{over}", d.path);
        }
        s
    }
}

/// A device as found before erasing.
enum Found {
    Live(Device, Box<Superblock>),
    Erased(Device),
}

/// Checks the receipt of a complete set; returns its summary.
fn require_receipt(live: &[(Device, Superblock)]) -> Result<ReceiptSummary, EraseError> {
    let (d0, sb0) = live
        .iter()
        .find(|(_, sb)| sb.device_index == 0)
        .ok_or_else(|| {
            EraseError::Refused(
                "device 1 of the set is not among the devices given, so its ingest receipt \
                 cannot be checked; give every device of the set (or --force)"
                    .into(),
            )
        })?;
    let count = sb0.device_count as usize;
    if live.len() != count {
        return Err(EraseError::Refused(format!(
            "the set has {count} devices but {} were given; erase the whole set at once (or --force)",
            live.len()
        )));
    }
    let r = Receipt::read(d0, sb0)?.ok_or_else(|| {
        EraseError::Refused(format!(
            "{} carries no ingest receipt: this set's data was never ingested completely; \
             run `odt ingest` first, or pass --force to destroy the data anyway",
            d0.path().display()
        ))
    })?;
    if r.set_id != sb0.set_id || r.job_id != sb0.job_id {
        return Err(EraseError::Refused(format!(
            "the ingest receipt on {} is from an earlier provisioning of the device (set {:016x}, \
             now {:016x}): this set was never ingested; run `odt ingest` first, or --force",
            d0.path().display(),
            r.set_id,
            sb0.set_id
        )));
    }
    if !r.is_complete() {
        return Err(EraseError::Refused(format!(
            "the ingest quarantined {} damaged file(s); keep the devices until they are \
             investigated, or pass --force to erase anyway",
            r.quarantined
        )));
    }
    Ok(ReceiptSummary {
        completed_unix: r.completed_unix,
        files: r.files,
        bytes: r.bytes,
        quarantined: r.quarantined,
        seal_code: r.seal_code,
        datastore: r.datastore,
    })
}

fn crypto_erase(dev: &Device, sb: &Superblock) -> Result<(), EraseError> {
    // Names first (the journal), then the keys: if this is interrupted, running it again
    // still finds a live superblock and finishes.
    if sb.journal_len > 0 {
        dev.zero(JOURNAL_START, sb.journal_len)?;
    }
    sb.erase(dev)?;
    match Superblock::read(dev) {
        Err(e) if matches!(e.kind(), ErrorKind::Format(FormatError::Erased { .. })) => Ok(()),
        Ok(_) => Err(EraseError::Store(FormatError::corrupt(
            "superblock",
            dev.path(),
            0,
            "it still reads as a live superblock after the erase (the write did not land)",
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Writes zeros over `[SLOT, size)`: everything but the erased marker at the start.
fn overwrite(dev: &Device, bar: &Progress) -> Result<u64, EraseError> {
    const STEP: u64 = 8 << 20;
    const SYNC_EVERY: u64 = 1 << 30;
    let zeros = vec![0u8; STEP as usize];
    let (mut at, end) = (SLOT, dev.size());
    let mut since_sync = 0;
    while at < end {
        let n = STEP.min(end - at);
        dev.write_at(&zeros[..n as usize], at)?;
        at += n;
        since_sync += n;
        bar.inc(n);
        if since_sync >= SYNC_EVERY {
            dev.sync()?;
            since_sync = 0;
        }
    }
    dev.sync()?;
    Ok(end - SLOT)
}

/// Runs the erase.
pub fn run(opts: &Options, progress: &dyn Fn(u64) -> Progress) -> Result<Report, EraseError> {
    if opts.devices.is_empty() {
        return Err(EraseError::Refused("no device given".into()));
    }
    let mut found = Vec::new();
    for p in &opts.devices {
        let dev = Device::open(p, true)?;
        match Superblock::read(&dev) {
            Ok(sb) => found.push(Found::Live(dev, Box::new(sb))),
            Err(e) if matches!(e.kind(), ErrorKind::Format(FormatError::Erased { .. })) => {
                found.push(Found::Erased(dev))
            }
            Err(e) => {
                return Err(EraseError::Refused(format!(
                    "{}. Erase only touches ODT devices; to wipe anything else use the \
                     operating system's tools",
                    one_line(&e)
                )));
            }
        }
    }
    let mut live: Vec<(Device, Superblock)> = Vec::new();
    let mut erased_before = Vec::new();
    for f in found {
        match f {
            Found::Live(d, sb) => live.push((d, *sb)),
            Found::Erased(d) => erased_before.push(d),
        }
    }
    if let Some((d0, s0)) = live.first()
        && let Some((d, s)) = live.iter().find(|(_, s)| s.set_id != s0.set_id)
        && !opts.force
    {
        return Err(EraseError::Refused(format!(
            "{} (job {}) and {} (job {}) belong to different device sets; erase one set at a time",
            d0.path().display(),
            s0.job_id,
            d.path().display(),
            s.job_id
        )));
    }
    let receipt = if opts.force || live.is_empty() {
        None
    } else {
        Some(require_receipt(&live)?)
    };
    let mut devices = Vec::new();
    for (dev, sb) in &live {
        crypto_erase(dev, sb)?;
        devices.push(DeviceErased {
            path: dev.path().display().to_string(),
            index: Some(sb.device_index + 1),
            already_erased: false,
            crypto_erased: true,
            bytes_overwritten: 0,
        });
    }
    for dev in &erased_before {
        devices.push(DeviceErased {
            path: dev.path().display().to_string(),
            index: None,
            already_erased: true,
            crypto_erased: false,
            bytes_overwritten: 0,
        });
    }
    if opts.overwrite {
        let all: Vec<&Device> = live
            .iter()
            .map(|(d, _)| d)
            .chain(erased_before.iter())
            .collect();
        let total: u64 = all.iter().map(|d| d.size().saturating_sub(SLOT)).sum();
        let bar = progress(total);
        for (dev, report) in all.iter().zip(devices.iter_mut()) {
            report.bytes_overwritten = overwrite(dev, &bar)?;
        }
        bar.finish();
    }
    Ok(Report {
        job_id: live.first().map(|(_, s)| s.job_id.clone()),
        set_id: live.first().map(|(_, s)| format!("{:016x}", s.set_id)),
        forced: opts.force,
        receipt,
        devices,
    })
}
