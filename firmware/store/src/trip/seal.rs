//! The seal: the customer's last step (every VM bundle checked, then the store closed under a
//! signed record, see [`crate::format::seal_record`]) and the courier's check of it, which
//! needs no key and reads no file data: [`check`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::device::Device;
use crate::engine::log::read_footer;
use crate::engine::{Access, Locked, Store};
use crate::error::{Result, StoreError, one_line};
use crate::format::checkpoint;
use crate::format::is_zero;
use crate::format::journal::{self, Kind, Op, SealedBundle, Time};
use crate::format::seal_record::{self, Sealed, SealedDevice, normalise_code};
use crate::format::segment;
use crate::format::superblock::{JOURNAL_START, SLOT, Superblock};
use crate::trip::bundle;
use crate::trip::job::Job;
use crate::trip::manifest;

/// Seals the store: no more changes, everything durable, the manifest and bundles journaled,
/// segments closed, the signed record written to every device.
pub fn seal(store: &Store, bundles: Vec<SealedBundle>) -> Result<Sealed> {
    refuse_oversize(store)?;
    store.begin_seal()?;
    store.sync()?;
    let m = manifest::build(store)?;
    let roots = m
        .files
        .iter()
        .filter(|f| f.kind == Kind::File)
        .map(|f| (f.id, f.blake3))
        .collect();
    store.submit(vec![Op::Seal {
        time: Time::now(),
        manifest_root: m.root(),
        roots,
        bundles,
    }])?;
    store.write_seal_record()
}

/// Refuses to seal a store holding a file larger than its capacity (one written before the
/// limit existed): hashing it would take as long as its apparent size. Checked before the
/// store stops taking changes, so that the customer can still truncate or remove it.
fn refuse_oversize(store: &Store) -> Result<()> {
    let limit = store.max_file_size();
    let view = store.view();
    match view.files().find(|f| f.size() > limit) {
        Some(f) => Err(StoreError::FileTooLarge {
            file: String::from_utf8_lossy(&view.path(f.id())).into_owned(),
            size: f.size(),
            limit,
        }
        .into()),
        None => Ok(()),
    }
}

/// What `odt seal` gets back: the bundle check and, unless it refused, the seal.
#[derive(Debug, Clone)]
pub struct SealOutcome {
    /// The bundle check made before sealing.
    pub bundles: bundle::BundleReport,
    /// The seal, unless it was refused.
    pub sealed: Option<Sealed>,
    /// Why the seal was refused (bundle errors without `force`).
    pub refused: Option<String>,
}

/// The customer's seal: checks every VM bundle first and refuses if any has errors (unless
/// `force`), then seals.
pub fn check_and_seal(store: &Store, force: bool) -> Result<SealOutcome> {
    if store.is_sealed() {
        return Err(StoreError::ReadOnly.into());
    }
    refuse_oversize(store)?;
    let bundles = bundle::check(store, Time::now())?;
    let bad = bundles.errors();
    if bad > 0 && !force {
        return Ok(SealOutcome {
            refused: Some(format!(
                "{bad} of {} bundle(s) have errors; fix the export or seal with --force to ship it as is",
                bundles.bundles.len()
            )),
            bundles,
            sealed: None,
        });
    }
    let list = bundles.bundles.iter().map(|b| b.sealed()).collect();
    let sealed = seal(store, list)?;
    Ok(SealOutcome {
        bundles,
        sealed: Some(sealed),
        refused: None,
    })
}

/// Outcome of the courier's check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Whether the seal is intact and, with `--expect`, the one expected.
    pub intact: bool,
    /// The first thing found wrong, as one plain sentence.
    pub problem: Option<String>,
    /// The seal code of the record found.
    pub seal_code: Option<String>,
    /// The job the seal names.
    pub job_id: Option<String>,
    /// When the store was sealed, in Unix seconds.
    pub sealed_unix: Option<i64>,
    /// Files sealed.
    pub files: Option<u64>,
    /// Bytes sealed.
    pub bytes: Option<u64>,
    /// The devices checked, as given.
    pub devices: Vec<PathBuf>,
    /// Bytes read to decide.
    pub bytes_read: u64,
    /// The custody log the seal signs (shown once the signature holds).
    pub custody: Option<crate::format::journal::CustodyLog>,
}

struct Fail(String);

/// The courier's and the dock's check: signature against the job's device key, seal code,
/// every device of the set present and of this job, nothing written after the seal. Needs
/// no data key and reads no file data.
pub fn check(paths: &[PathBuf], job_dir: &Path, expect: Option<&str>) -> Result<CheckReport> {
    let job = Job::load(job_dir)?;
    let mut report = CheckReport {
        intact: false,
        problem: None,
        seal_code: None,
        job_id: None,
        sealed_unix: None,
        files: None,
        bytes: None,
        devices: paths.to_vec(),
        bytes_read: 0,
        custody: None,
    };
    match check_inner(paths, &job, expect, &mut report) {
        Ok(()) => report.intact = true,
        Err(Fail(why)) => report.problem = Some(why),
    }
    Ok(report)
}

fn check_inner(
    paths: &[PathBuf],
    job: &Job,
    expect: Option<&str>,
    r: &mut CheckReport,
) -> std::result::Result<(), Fail> {
    let key = job
        .signing_public()
        .map_err(|e| Fail(format!("the job cannot check seals: {}", one_line(&e))))?;
    for p in paths {
        let dev = Device::open(p, false).map_err(|e| Fail(one_line(&e)))?;
        let sb = Superblock::read(&dev).map_err(|e| Fail(one_line(&e)))?;
        if sb.job_id != job.id {
            return Err(Fail(format!(
                "{} belongs to job {}, not to job {} ({})",
                p.display(),
                sb.job_id,
                job.id,
                job.name
            )));
        }
    }
    let locked = Locked::open(paths, Access::ReadOnly).map_err(|e| Fail(one_line(&e)))?;
    let (devs, sbs) = (locked.devices(), locked.superblocks());
    if sbs[0].signing_public != key {
        return Err(Fail(
            "the devices were provisioned with another signing key than the job records (re-provisioned?)".into(),
        ));
    }
    let mut seals = Vec::new();
    for (dev, sb) in devs.iter().zip(sbs) {
        match seal_record::read(dev, sb) {
            Ok(Some(s)) => seals.push(s),
            Ok(None) => {
                return Err(Fail(format!(
                    "{} is not sealed: the customer has not run `odt seal`",
                    dev.path().display()
                )));
            }
            Err(e) => return Err(Fail(one_line(&e))),
        }
        r.bytes_read += 2 * SLOT;
    }
    let seal = &seals[0];
    if let Some((i, _)) = seals.iter().enumerate().find(|(_, s)| *s != seal) {
        return Err(Fail(format!(
            "device {} carries a different seal record than device 1 (devices from different seals mixed)",
            i + 1
        )));
    }
    if !seal.verify(&key) {
        return Err(Fail(
            "the seal record's signature does not verify with the job's device key: it was altered or forged".into(),
        ));
    }
    let rec = &seal.record;
    r.seal_code = Some(seal.code());
    r.job_id = Some(rec.job_id.clone());
    r.sealed_unix = Some(rec.sealed.secs);
    r.custody = Some(rec.custody.clone());
    r.files = Some(rec.files);
    r.bytes = Some(rec.bytes);
    if rec.job_id != job.id || rec.set_id != sbs[0].set_id || rec.devices.len() != devs.len() {
        return Err(Fail(
            "the seal record is for another job or device set".into(),
        ));
    }
    if let Some(want) = expect
        && normalise_code(want) != seal.code()
    {
        return Err(Fail(format!(
            "the seal code is {}, not the expected {}: this is not the seal the customer reported",
            seal.code(),
            normalise_code(want)
        )));
    }
    // Nothing after the seal: the log on every device ends exactly where the seal says.
    for ((dev, sb), sd) in devs.iter().zip(sbs).zip(&rec.devices) {
        r.bytes_read += check_log_end(dev, sb, sd)?;
    }
    let dev0 = &devs[0];
    // The journal runs from the start its pointer names (keyless; a pointer moved after
    // the seal changes the bytes hashed) to the end the seal signs.
    let start = checkpoint::read_start(dev0, &sbs[0]).map_err(|e| Fail(one_line(&e)))?;
    let from = start.map_or(0, |s| s.start);
    let limit = checkpoint::limit(&sbs[0], from, start.is_some());
    if rec.journal_end < from || rec.journal_end > limit {
        return Err(Fail(
            "the metadata journal does not end where the seal says (its start pointer was moved)"
                .into(),
        ));
    }
    let jh = journal::hash(dev0, from, rec.journal_end).map_err(|e| Fail(one_line(&e)))?;
    r.bytes_read += rec.journal_end - from;
    if jh != rec.journal_hash {
        return Err(Fail(
            "the metadata journal changed after the seal (names, attributes or the manifest were altered)".into(),
        ));
    }
    let room = (limit - rec.journal_end).min(SLOT);
    let after = dev0
        .read_vec(JOURNAL_START + rec.journal_end, room as usize)
        .map_err(|e| Fail(one_line(&e)))?;
    if !is_zero(&after) {
        return Err(Fail(
            "metadata was written to the journal after the seal".into(),
        ));
    }
    Ok(())
}

fn check_log_end(
    dev: &Device,
    sb: &Superblock,
    sd: &SealedDevice,
) -> std::result::Result<u64, Fail> {
    let name = || format!("device {} ({})", sd.index, dev.path().display());
    let after_seal = || Fail(format!("data was written to {} after the seal", name()));
    let read = |at: u64, n: u64| dev.read_vec(at, n as usize).map_err(|e| Fail(one_line(&e)));
    let mut bytes = 0;
    let next_seg = if sd.tail == 0 {
        sd.next_segment
    } else {
        let seg = sb.segment_of(sd.tail).expect("tail is not 0");
        let f = read_footer(dev, sb, seg).map_err(|_| {
            Fail(format!(
                "{}: the last segment's footer is missing or damaged (log truncated or altered)",
                name()
            ))
        })?;
        if f.hash() != sd.chain_head || sb.segment_start(seg) + f.used != sd.tail {
            return Err(Fail(format!(
                "{}: the log does not end where the seal says (truncated, replaced or appended)",
                name()
            )));
        }
        let slack_from = sd.tail;
        let slack_to = sb.footer_start(seg);
        let mut at = slack_from;
        while at < slack_to {
            let n = (slack_to - at).min(8 << 20);
            if !is_zero(&read(at, n)?) {
                return Err(after_seal());
            }
            bytes += n;
            at += n;
        }
        sd.next_segment
    };
    if next_seg < sb.segment_count() {
        bytes += segment::BLOCK;
        if !is_zero(&read(sb.segment_start(next_seg), segment::BLOCK)?) {
            return Err(after_seal());
        }
    }
    Ok(bytes)
}
