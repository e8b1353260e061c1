//! `odt verify`: is everything on the devices intact?
//!
//! Without `--deep`, the keyless pass of the store: both superblock copies, every segment
//! header and footer, the footer chain, every record's CRC. With `--deep` also, with the
//! job's ingest identity, every live record's authentication tag and plaintext digest, and
//! each damaged file is named with the byte range that cannot be read back.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::ProgressBar;
use odt_store::device::Device;
use odt_store::journal::Kind;
use odt_store::segment;
use odt_store::superblock::Superblock;
use odt_store::verify::{Damage, Problem, check_files, check_log};
use serde::Serialize;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Options {
    pub devices: Vec<PathBuf>,
    pub job_dir: PathBuf,
    pub deep: bool,
}

/// What the keyless pass saw on one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCheck {
    pub path: String,
    /// 1-based position in the set.
    pub index: u32,
    pub closed_segments: u64,
    pub records: u64,
    /// Byte where the log ends.
    pub log_end: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

/// Everything `odt verify` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no problem and no damage was found.
    pub intact: bool,
    pub job_id: String,
    pub job_name: String,
    pub set_id: String,
    pub sealed: bool,
    pub seal_code: Option<String>,
    pub deep: bool,
    pub devices: Vec<DeviceCheck>,
    /// Files whose records were all checked (`--deep`).
    pub files_checked: Option<u64>,
    /// Plaintext bytes checked (`--deep`).
    pub bytes_checked: Option<u64>,
    /// Damaged files and the byte ranges lost (`--deep`).
    pub damaged: Vec<Damage>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "Verify of job {} ({}), device set {}", self.job_id, self.job_name, self.set_id);
        if let Some(c) = &self.seal_code {
            let _ = writeln!(s, "  seal code {c}");
        }
        for d in &self.devices {
            let _ = writeln!(
                s,
                "  device {} {}: {} closed segments, {} records, log ends at byte {}, {} read{}",
                d.index,
                d.path,
                d.closed_segments,
                d.records,
                d.log_end,
                crate::output::bytes(d.bytes_read),
                if d.problems.is_empty() { "" } else { " — PROBLEMS:" }
            );
            for p in &d.problems {
                let _ = writeln!(s, "    at byte {}: {}", p.offset, p.what);
            }
        }
        if let (Some(f), Some(b)) = (self.files_checked, self.bytes_checked) {
            let _ = writeln!(
                s,
                "  deep: {f} files, {} of records authenticated and hashed",
                crate::output::bytes(b)
            );
        }
        if !self.damaged.is_empty() {
            let _ = writeln!(s, "DAMAGED FILES:");
            for d in &self.damaged {
                let _ = writeln!(
                    s,
                    "  {}: bytes {}..{} ({} bytes) lost: {}",
                    d.path,
                    d.start,
                    d.end,
                    d.end - d.start,
                    d.why
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(
            s,
            "{} ({:.1} s)",
            if self.intact { "INTACT" } else { "NOT INTACT" },
            self.seconds
        );
        s
    }
}

/// Segments with a header, counted from the first (an estimate of what the keyless pass
/// reads, for the progress bar).
fn segments_in_use(dev: &Device, sb: &Superblock) -> u64 {
    let mut n = 0;
    while n < sb.segment_count() {
        match dev.read_vec(sb.segment_start(n), segment::BLOCK as usize) {
            Ok(b) if b.iter().any(|&x| x != 0) => n += 1,
            _ => break,
        }
    }
    n
}

/// Runs the checks. `Err` means the check could not be made (wrong job or key, erased or
/// missing device); damage found is in the report.
pub fn run(
    opts: &Options,
    progress: &dyn Fn(u64) -> ProgressBar,
) -> Result<Report, odt_store::Error> {
    let started = Instant::now();
    let (job, locked) = crate::job_devices::open(&opts.devices, &opts.job_dir)?;
    let sbs: Vec<Superblock> = locked.superblocks().to_vec();
    let mut notes = Vec::new();
    let (store, kept) = if opts.deep {
        (Some(crate::job_devices::unlock(locked, &opts.job_dir)?), None)
    } else {
        notes.push(
            "records were checked by CRC only; --deep also authenticates and hashes every \
             record with the job's ingest identity"
                .into(),
        );
        (None, Some(locked))
    };
    let devs: &[Device] = match (&store, &kept) {
        (Some(s), _) => s.devices(),
        (None, Some(l)) => l.devices(),
        (None, None) => unreachable!("either the store or the locked set is kept"),
    };
    let sealed = store.as_ref().is_some_and(|s| s.is_sealed());
    if !sealed {
        notes.push(
            "the seal was not checked (not sealed, or the seal check is not built into this \
             odt yet): the log's end is not pinned by a signature"
                .into(),
        );
    }
    let log_estimate: u64 = devs
        .iter()
        .zip(&sbs)
        .map(|(d, sb)| segments_in_use(d, sb) * (sb.segment_size - segment::BLOCK))
        .sum();
    let (files, stored): (u64, u64) = match &store {
        Some(s) => s.with_namespace(|ns| {
            ns.inodes()
                .filter(|i| i.kind == Kind::File)
                .fold((0, 0), |(n, b), i| (n + 1, b + i.stored_bytes()))
        }),
        None => (0, 0),
    };
    let bar = progress(log_estimate + stored);
    let results: Vec<(odt_store::verify::LogSummary, Vec<Problem>)> = std::thread::scope(|s| {
        let handles: Vec<_> = devs
            .iter()
            .zip(&sbs)
            .map(|(d, sb)| {
                let bar = &bar;
                s.spawn(move || check_log(d, sb, None, &mut |n| bar.inc(n)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("log check thread panicked"))
            .collect()
    });
    let devices: Vec<DeviceCheck> = results
        .into_iter()
        .zip(devs.iter().zip(&sbs))
        .map(|((sum, problems), (d, sb))| DeviceCheck {
            path: d.path().display().to_string(),
            index: sb.device_index + 1,
            closed_segments: sum.closed_segments,
            records: sum.records,
            log_end: sum.tail,
            bytes_read: sum.bytes_read,
            problems,
        })
        .collect();
    let mut damaged = Vec::new();
    if let Some(s) = &store {
        bar.set_length(bar.position() + stored);
        damaged = check_files(s, &mut |n| bar.inc(n))?;
    }
    bar.finish_and_clear();
    let intact = damaged.is_empty() && devices.iter().all(|d| d.problems.is_empty());
    Ok(Report {
        intact,
        job_id: job.id.clone(),
        job_name: job.name.clone(),
        set_id: format!("{:016x}", sbs[0].set_id),
        sealed,
        seal_code: None,
        deep: opts.deep,
        devices,
        files_checked: store.as_ref().map(|_| files),
        bytes_checked: store.as_ref().map(|_| stored),
        damaged,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
