//! `odt ingest`: from a (sealed) device set into a datastore directory.
//!
//! Steps: open the set with the job's ingest identity (read-only), map the namespace to
//! safe datastore paths ([`plan`]), skip what an earlier run finished ([`state`]), move the
//! bytes with a worker pool ([`transfer`]) into temporaries that are renamed into place
//! only when complete ([`datastore`]), then symlinks and directory attributes, the report
//! ([`report`]) and the ingest receipt on device 1 that `odt erase` looks for.

pub mod conflicts;
pub mod datastore;
pub mod error;
pub mod file_log;
pub mod placed;
pub mod plan;
pub mod report;
pub mod safe_path;
pub mod state;
pub mod temp_file;
pub mod transfer;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use crate::progress::Progress;
use odt_store::device::Device;
use odt_store::trip::receipt::Receipt;

use crate::job_devices::SealState;
use datastore::{Datastore, Existing};
pub use error::IngestError;
use plan::{PlannedFile, file_name};
use report::{BundleReport, ReceiptStatus, Report};
use rustix::fs::FileType;

/// What to ingest, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The devices of the set.
    pub devices: Vec<PathBuf>,
    /// The job directory (job file and ingest identity).
    pub job_dir: PathBuf,
    /// The datastore directory (`--to`).
    pub datastore: PathBuf,
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Ingest although the seal is broken (the report says so).
    pub ignore_seal: bool,
    /// Start even if the datastore reports too little free space (see [`space_needed`]).
    pub skip_space_check: bool,
    /// What to do with paths that already hold something the ingest did not write.
    pub on_conflict: conflicts::OnConflict,
}

/// Bytes the datastore must have free for `files`: their data (holes take no space), each
/// file rounded up to whole 4 KiB blocks.
pub fn space_needed(files: &[&PlannedFile]) -> u64 {
    files
        .iter()
        .map(|f| f.data_bytes().next_multiple_of(4096))
        .sum()
}

/// A progress for `total` bytes (a bar on a terminal, JSON lines elsewhere: [`Progress`]).
pub type ProgressFactory<'a> = &'a dyn Fn(u64) -> Progress;

fn is_done_on_disk(ds: &Datastore, f: &PlannedFile) -> Result<bool, IngestError> {
    let (_, parent) = f.rel.split_last().expect("a file has a name");
    let Some(dir) = ds.open_dir(parent)? else {
        return Ok(false);
    };
    Ok(matches!(
        ds.existing(&dir, file_name(&f.rel)),
        Some(Existing { file_type: FileType::RegularFile, size, mtime })
            if size == f.size && mtime == f.mtime
    ))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs an ingest. Damaged files are quarantined and refused names listed in the report;
/// an `Err` means the ingest stopped (running it again resumes).
pub fn run(opts: &Options, progress: ProgressFactory<'_>) -> Result<Report, IngestError> {
    let started = Instant::now();
    conflicts::check_location(&opts.datastore, &opts.job_dir, &opts.devices)?;
    let (job, locked) = crate::job_devices::open(&opts.devices, &opts.job_dir)?;
    let sb0 = locked.superblock().clone();
    let mut warnings = Vec::new();
    let mut seal_code: Option<String> = None;
    match crate::job_devices::seal_state(&opts.devices, &opts.job_dir, &locked) {
        SealState::Intact { code, .. } => seal_code = Some(code),
        SealState::Unsealed => warnings.push(
            "the devices are not sealed: every record is authenticated, but nothing proves \
             the data is all the customer meant to send"
                .to_string(),
        ),
        SealState::Broken { why } if opts.ignore_seal => warnings.push(format!(
            "the seal is broken ({why}); ingested anyway (--ignore-seal)"
        )),
        SealState::Broken { why } => {
            return Err(IngestError::Seal(format!(
                "the seal is broken: {why}. The devices may have been altered after the \
                 customer sealed them: investigate with `odt seal-check` and `odt verify --deep`, \
                 or pass --ignore-seal to ingest anyway"
            )));
        }
    }
    let store = crate::job_devices::unlock(locked, &opts.job_dir)?;
    let sealed = store.is_sealed();
    // The per-file roots are journaled (authenticated) with the seal op; each file written
    // must hash to its root.
    let sealed_roots: Option<HashMap<u64, [u8; 32]>> = crate::job_devices::sealed_roots(&store);
    let mut plan = plan::build(&store.view());
    // Nothing is created or changed in the datastore until the ingest is sure to go
    // ahead: a refusal (conflicts, space) leaves it as it was.
    let mut ds = Datastore::inspect(&opts.datastore)?;
    let mut state = state::State::load(&ds, &job.id, sb0.set_id)?;
    // What is already there and not this ingest's own.
    let mut resolution = conflicts::resolve(&mut plan, &ds, &state, opts.on_conflict)?;
    if opts.on_conflict == conflicts::OnConflict::Refuse && !resolution.conflicts.is_empty() {
        return Err(IngestError::Conflicts {
            datastore: opts.datastore.display().to_string(),
            conflicts: resolution.conflicts,
        });
    }
    for e in std::mem::take(&mut resolution.adopted) {
        state.adopt(e);
    }
    let mut todo: Vec<&PlannedFile> = Vec::new();
    let mut resumed: Vec<&PlannedFile> = Vec::new();
    for f in &plan.files {
        if state.done_entry(f).is_some() && is_done_on_disk(&ds, f)? {
            resumed.push(f);
        } else {
            todo.push(f);
        }
    }
    let total: u64 = todo.iter().map(|f| f.data_bytes()).sum();
    // Refuse to start rather than fill the disk half-way (the temporaries of an interrupted
    // run are removed when the ingest starts, so they count as free).
    let needed = space_needed(&todo);
    let available = ds.available()?.saturating_add(ds.temporaries_size());
    if needed > available && !opts.skip_space_check {
        return Err(IngestError::NoSpace {
            path: opts.datastore.display().to_string(),
            needed,
            available,
        });
    }
    ds.prepare()?;
    state.start(&ds)?;
    for d in &plan.dirs {
        ds.ensure_dir(&d.rel)?;
    }
    let bar = progress(total);
    let outcome = transfer::Transfer {
        store: &store,
        ds: &ds,
        state: &state,
        files: &todo,
        sealed_roots: sealed_roots.as_ref(),
        progress: &bar,
    }
    .run(opts.jobs)?;
    bar.finish();
    state.sync()?;
    let quarantined_paths: HashSet<&str> = outcome
        .quarantined
        .iter()
        .map(|q| q.datastore_path.as_str())
        .collect();
    let mut hard_links = 0u64;
    for l in &plan.hard_links {
        let target = plan::rel_display(&l.target);
        if quarantined_paths.contains(target.as_str()) {
            warnings.push(format!(
                "{} is not linked: the file it names ({target}) is quarantined",
                l.device_path
            ));
            continue;
        }
        ds.make_hard_link(&l.rel, &l.target)?;
        hard_links += 1;
    }
    for l in &plan.symlinks {
        ds.make_symlink(&l.rel, &l.target, l.atime, l.mtime)?;
    }
    // Deepest first, so that finishing a directory does not touch its parent's times again.
    for d in plan.dirs.iter().rev() {
        ds.finish_dir(&d.rel, d.mode, d.atime, d.mtime)?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut bundles: Vec<BundleReport> = plan
        .bundles
        .iter()
        .map(|b| BundleReport {
            path: b.path.clone(),
            descriptors: b.descriptors.clone(),
            files: b.files,
            bytes: b.bytes,
            quarantined: 0,
            complete: true,
        })
        .collect();
    for (f, b) in plan.files.iter().zip(&plan.file_bundle) {
        if let Some(b) = b
            && quarantined_paths.contains(f.rel_display().as_str())
        {
            bundles[*b].quarantined += 1;
            bundles[*b].complete = false;
        }
    }
    let bytes_written: u64 = outcome.written.iter().map(|(i, _)| todo[*i].size).sum();
    let bytes_resumed: u64 = resumed.iter().map(|f| f.size).sum();
    let skipped = resolution.skipped_files.len() as u64;
    let complete = outcome.quarantined.is_empty() && plan.refused.is_empty() && skipped == 0;
    let mut report = Report {
        job_id: job.id.clone(),
        job_name: job.name.clone(),
        set_id: format!("{:016x}", sb0.set_id),
        devices: opts
            .devices
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        datastore: opts.datastore.display().to_string(),
        sealed,
        seal_code: seal_code.clone(),
        complete,
        bundles,
        files: plan.files.len() as u64,
        files_written: outcome.written.len() as u64,
        files_resumed: resumed.len() as u64,
        dirs: plan.dirs.len() as u64,
        symlinks: plan.symlinks.len() as u64,
        hard_links,
        bytes_on_device: plan.files.iter().map(|f| f.size).sum(),
        bytes: bytes_written + bytes_resumed,
        bytes_written,
        data_bytes_read: outcome.data_bytes,
        seconds,
        bytes_per_second: if seconds > 0.0 {
            bytes_written as f64 / seconds
        } else {
            0.0
        },
        workers: opts.jobs.max(1),
        quarantined: outcome.quarantined,
        refused: plan.refused.clone(),
        renamed: plan.renamed.clone(),
        receipt: ReceiptStatus {
            on_device: false,
            why_not: None,
        },
        warnings,
        custody: odt_store::trip::custody::log(&store),
        on_conflict: opts.on_conflict,
        conflicts: resolution.conflicts.clone(),
        files_skipped: skipped,
        file_log: [file_log::CSV_FILE, file_log::JSONL_FILE]
            .iter()
            .map(|n| {
                opts.datastore
                    .join(plan::STATE_DIR)
                    .join(n)
                    .display()
                    .to_string()
            })
            .collect(),
    };
    let mut log = Vec::new();
    let written: HashMap<usize, [u8; 32]> = outcome.written.iter().copied().collect();
    let quarantined: HashMap<&str, &str> = report
        .quarantined
        .iter()
        .map(|q| (q.datastore_path.as_str(), q.why.as_str()))
        .collect();
    let todo_index: HashMap<u64, usize> = todo.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    for f in &plan.files {
        let path = f.rel_display();
        let renamed = resolution.renamed_files.get(&path);
        let (outcome, reason, blake3) = if let Some(why) = quarantined.get(path.as_str()) {
            (file_log::Outcome::Quarantined, why.to_string(), None)
        } else if let Some(root) = todo_index.get(&f.id).and_then(|i| written.get(i)) {
            (
                file_log::Outcome::Written,
                String::new(),
                Some(hex::encode(root)),
            )
        } else if let Some(e) = state.done_entry(f) {
            (
                file_log::Outcome::Written,
                "written by an earlier run of this ingest".to_string(),
                Some(e.blake3.clone()),
            )
        } else {
            continue;
        };
        let (outcome, reason) = match (outcome, renamed) {
            (file_log::Outcome::Written, Some(why)) => (
                file_log::Outcome::Renamed,
                format!(
                    "{why} (--on-conflict rename){}",
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!("; {reason}")
                    }
                ),
            ),
            other => (other.0, reason),
        };
        log.push(file_log::Line {
            path,
            device_path: f.device_path.clone(),
            outcome,
            reason,
            size: Some(f.size),
            blake3,
        });
    }
    for (path, device_path, size, why) in &resolution.skipped_files {
        log.push(file_log::Line {
            path: path.clone(),
            device_path: device_path.clone(),
            outcome: file_log::Outcome::Skipped,
            reason: format!("{why} (--on-conflict skip)"),
            size: Some(*size),
            blake3: None,
        });
    }
    for r in &plan.refused {
        log.push(file_log::Line {
            path: String::new(),
            device_path: r.path.clone(),
            outcome: file_log::Outcome::Skipped,
            reason: format!("refused: {}", r.why),
            size: None,
            blake3: None,
        });
    }
    file_log::write(&ds, &log)?;
    // The receipt: what `odt erase` checks before destroying the keys.
    let mut receipt = Receipt {
        set_id: sb0.set_id,
        job_id: job.id.clone(),
        completed_unix: now_unix(),
        files: report.files_written + report.files_resumed,
        bytes: report.bytes,
        quarantined: report.quarantined.len() as u64,
        refused: report.refused.len() as u64,
        seal_code,
        datastore: std::fs::canonicalize(&opts.datastore)
            .unwrap_or_else(|_| opts.datastore.clone())
            .display()
            .to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mac: [0; 32],
    };
    receipt.sign(store.secrets());
    let dev0_path = store.devices()[0].path().to_path_buf();
    drop(store);
    report.receipt = if skipped > 0 {
        // The device holds the only copy of the skipped files: `odt erase` must not take
        // this ingest for a complete one.
        ReceiptStatus {
            on_device: false,
            why_not: Some(format!(
                "{skipped} file(s) were skipped (--on-conflict skip) and exist only on the device"
            )),
        }
    } else {
        match Device::open(&dev0_path, true).and_then(|d| receipt.write(&d, &sb0)) {
            Ok(()) => ReceiptStatus {
                on_device: true,
                why_not: None,
            },
            Err(e) => ReceiptStatus {
                on_device: false,
                why_not: Some(format!(
                    "cannot write it to {}: {}",
                    dev0_path.display(),
                    odt_store::error::one_line(&e)
                )),
            },
        }
    };
    let json = serde_json::to_vec_pretty(&report).expect("report serialises");
    ds.write_state_file("report.json", &json)?;
    Ok(report)
}
