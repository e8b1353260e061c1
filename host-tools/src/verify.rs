//! `odt verify`: is everything on the devices intact?
//!
//! Without `--deep`, the keyless pass of the store: both superblock copies, every segment
//! header and footer, the footer chain, every record's CRC. With `--deep` also, with the
//! job's ingest identity, every live record's authentication tag and plaintext digest, and
//! each damaged file is named with the byte range that cannot be read back.

use std::path::PathBuf;
use std::time::Instant;

use crate::progress::Progress;
use odt_store::Damage;
use odt_store::device::Device;
use odt_store::error::{ErrorKind, StoreError};
use odt_store::format::journal::Kind;
use odt_store::format::segment;
use odt_store::format::superblock::Superblock;
use odt_store::trip::verify::{Problem, check_files, check_log};
use serde::Serialize;

use crate::job_devices::SealState;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Options {
    /// The devices of the set.
    pub devices: Vec<PathBuf>,
    /// The job directory (job file and ingest identity).
    pub job_dir: PathBuf,
    /// Also decrypt and check every record against the manifest (`--deep`).
    pub deep: bool,
}

/// What the keyless pass saw on one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCheck {
    /// The device.
    pub path: String,
    /// 1-based position in the set.
    pub index: u32,
    /// Segments with a footer, checked against the chain.
    pub closed_segments: u64,
    /// Records whose keyless CRC was checked.
    pub records: u64,
    /// Byte where the log ends.
    pub log_end: u64,
    /// Bytes read from the device.
    pub bytes_read: u64,
    /// What the keyless pass found wrong.
    pub problems: Vec<Problem>,
}

/// Everything `odt verify` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no problem and no damage was found.
    pub intact: bool,
    /// The job the set was provisioned for.
    pub job_id: String,
    /// The customer's name for the job.
    pub job_name: String,
    /// Hex of the device set id.
    pub set_id: String,
    /// True when the seal checked out.
    pub sealed: bool,
    /// The seal code, if the seal checked out.
    pub seal_code: Option<String>,
    /// Why the seal check failed (not sealed, or what does not match).
    pub seal_problem: Option<String>,
    /// `--deep` on a sealed set: files whose content does not hash to the root the seal
    /// recorded, or a manifest root that differs from the signed one.
    pub manifest_problems: Vec<String>,
    /// Whether `--deep` was asked for.
    pub deep: bool,
    /// What the keyless pass saw, per device.
    pub devices: Vec<DeviceCheck>,
    /// Files whose records were all checked (`--deep`).
    pub files_checked: Option<u64>,
    /// Plaintext bytes checked (`--deep`).
    pub bytes_checked: Option<u64>,
    /// Damaged files and the byte ranges lost (`--deep`).
    pub damaged: Vec<Damage>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    /// Wall time of the whole check.
    pub seconds: f64,
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Verify of job {} ({}), device set {}",
            self.job_id, self.job_name, self.set_id
        );
        if let Some(c) = &self.seal_code {
            let _ = writeln!(
                s,
                "  seal intact, code {c} (signature, log ends and journal checked)"
            );
        }
        if let Some(p) = &self.seal_problem {
            let _ = writeln!(s, "SEAL: {p}");
        }
        for p in &self.manifest_problems {
            let _ = writeln!(s, "MANIFEST: {p}");
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
                if d.problems.is_empty() {
                    ""
                } else {
                    " — PROBLEMS:"
                }
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
pub fn run(opts: &Options, progress: &dyn Fn(u64) -> Progress) -> Result<Report, odt_store::Error> {
    let started = Instant::now();
    let (job, locked) = crate::job_devices::open(&opts.devices, &opts.job_dir)?;
    let sbs: Vec<Superblock> = locked.superblocks().to_vec();
    let mut notes = Vec::new();
    let seal = crate::job_devices::seal_state(&opts.devices, &opts.job_dir, &locked);
    let (seal_code, seal_problem, sealed_record) = match seal {
        SealState::Intact { code, record } => (Some(code), None, Some(*record)),
        SealState::Unsealed => (
            None,
            Some("the devices are not sealed: the customer has not run `odt seal`".to_string()),
            None,
        ),
        SealState::Broken { why } => (None, Some(format!("the seal is broken: {why}")), None),
    };
    let (store, kept) = if opts.deep {
        (
            Some(crate::job_devices::unlock(locked, &opts.job_dir)?),
            None,
        )
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
    let sealed = seal_code.is_some();
    let log_estimate: u64 = devs
        .iter()
        .zip(&sbs)
        .map(|(d, sb)| segments_in_use(d, sb) * (sb.segment_size - segment::BLOCK))
        .sum();
    let (files, stored): (u64, u64) = match &store {
        Some(s) => s
            .view()
            .files()
            .fold((0, 0), |(n, b), i| (n + 1, b + i.stored_bytes())),
        None => (0, 0),
    };
    let bar = progress(log_estimate + stored);
    let results: Vec<(odt_store::trip::verify::LogSummary, Vec<Problem>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = devs
                .iter()
                .zip(&sbs)
                .map(|(d, sb)| {
                    let bar = &bar;
                    let tail = sealed_record
                        .as_ref()
                        .and_then(|r| r.devices.get(sb.device_index as usize))
                        .map(|sd| sd.tail);
                    s.spawn(move || check_log(d, sb, tail, &mut |n| bar.inc(n)))
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
    let mut manifest_problems = Vec::new();
    if let Some(s) = &store {
        bar.set_length(bar.position() + stored);
        damaged = check_files(s, &mut |n| bar.inc(n))?;
        if let Some(rec) = &sealed_record {
            match sealed_manifest_check(s, rec) {
                Ok(mut p) => manifest_problems.append(&mut p),
                Err(e) => match e.kind() {
                    ErrorKind::Store(StoreError::Damaged { file, .. }) if !damaged.is_empty() => {
                        notes.push(format!(
                            "the manifest could not be recomputed: {file} is damaged (listed \
                             above)"
                        ))
                    }
                    _ => return Err(e),
                },
            }
        }
    }
    bar.finish();
    let intact = seal_problem.is_none()
        && manifest_problems.is_empty()
        && damaged.is_empty()
        && devices.iter().all(|d| d.problems.is_empty());
    Ok(Report {
        intact,
        job_id: job.id.clone(),
        job_name: job.name.clone(),
        set_id: format!("{:016x}", sbs[0].set_id),
        sealed,
        seal_code,
        seal_problem,
        manifest_problems,
        deep: opts.deep,
        devices,
        files_checked: store.as_ref().map(|_| files),
        bytes_checked: store.as_ref().map(|_| stored),
        damaged,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// With the keys: recomputes every file's BLAKE3 root and the manifest root and compares
/// them with what the seal journaled and signed. Returns one sentence per mismatch.
fn sealed_manifest_check(
    store: &odt_store::Store,
    rec: &odt_store::format::seal_record::SealRecord,
) -> Result<Vec<String>, odt_store::Error> {
    let m = odt_store::trip::manifest::build(store)?;
    let mut problems = Vec::new();
    if let Some(roots) = crate::job_devices::sealed_roots(store) {
        for f in m.files.iter().filter(|f| f.kind == Kind::File) {
            let path = crate::ingest::safe_path::display(&f.path);
            match roots.get(&f.id) {
                Some(r) if *r == f.blake3 => {}
                Some(r) => problems.push(format!(
                    "{path}: content hashes to BLAKE3 {} but the seal recorded {}",
                    hex::encode(f.blake3),
                    hex::encode(r)
                )),
                None => problems.push(format!("{path}: the seal records no BLAKE3 root for it")),
            }
        }
    }
    if m.root() != rec.manifest_root {
        problems.push(format!(
            "the manifest root is {} but the seal signed {}",
            hex::encode(m.root()),
            hex::encode(rec.manifest_root)
        ));
    }
    Ok(problems)
}
