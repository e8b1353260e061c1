//! Opening a job's devices at the provider: the set is complete and of this job, and the
//! job's ingest identity opens its keys. Shared by `odt verify` and `odt ingest`.

use std::path::{Path, PathBuf};

use odt_store::error::{ErrorKind, FormatError, KeyError, one_line};
use odt_store::trip::job::Job;
use odt_store::{Access, Error, Locked, Store};

/// Reads the job and the devices' superblocks (read-only) and checks they belong together.
/// Erased, blank, foreign, truncated or missing devices fail here with the store's message.
pub fn open(devices: &[PathBuf], job_dir: &Path) -> Result<(Job, Locked), Error> {
    let job = Job::load(job_dir)?;
    let locked = Locked::open(devices, Access::ReadOnly)?;
    let sb = locked.superblock();
    if sb.job_id != job.id {
        return Err(FormatError::DeviceSet(format!(
            "the devices belong to job {} ({}) but {} is job {} ({}): give the job directory \
             the devices were provisioned for",
            sb.job_id,
            sb.job_name,
            job_dir.display(),
            job.id,
            job.name
        ))
        .into());
    }
    if let Some(set) = &job.set
        && set.set_id != format!("{:016x}", sb.set_id)
    {
        return Err(FormatError::DeviceSet(format!(
            "the devices are set {:016x} but job {} was last provisioned as set {}: these \
             devices were provisioned earlier or later than the job file records",
            sb.set_id, job.id, set.set_id
        ))
        .into());
    }
    Ok((job, locked))
}

/// Unwraps the keys with the job's ingest identity (`DIR/ingest.key`) and opens the store
/// read-only. Never writes to the devices.
pub fn unlock(locked: Locked, job_dir: &Path) -> Result<Store, Error> {
    let identity = Job::load_identity(job_dir)?;
    let secrets = locked
        .secrets_from_identity(&identity)
        .map_err(|e| match e.kind() {
            ErrorKind::Key(k) if k.is_wrong_key() => KeyError::Wrong(format!(
                "{} (identity file {})",
                odt_store::error::one_line(&e).trim_start_matches("wrong key: "),
                Job::identity_path(job_dir).display()
            ))
            .into(),
            _ => e,
        })?;
    locked.unlock(secrets, Access::ReadOnly)
}

/// What the seal of a device set says.
#[derive(Debug, Clone)]
pub enum SealState {
    /// No seal record: the customer never ran `odt seal`.
    Unsealed,
    /// Signature, seal code, log ends and journal all check out.
    Intact {
        /// The seal code.
        code: String,
        /// What the seal signs.
        record: Box<odt_store::format::seal_record::SealRecord>,
    },
    /// A seal record exists but something does not check out.
    Broken {
        /// What does not check out, as one sentence.
        why: String,
    },
}

/// Runs the courier's check ([`odt_store::trip::seal::check`]) and tells an unsealed set from a
/// broken seal.
pub fn seal_state(devices: &[PathBuf], job_dir: &Path, locked: &Locked) -> SealState {
    let mut any = false;
    for (d, sb) in locked.devices().iter().zip(locked.superblocks()) {
        match odt_store::format::seal_record::read(d, sb) {
            Ok(Some(_)) => any = true,
            Ok(None) => {}
            Err(e) => {
                return SealState::Broken { why: one_line(&e) };
            }
        }
    }
    if !any {
        return SealState::Unsealed;
    }
    let report = match odt_store::trip::seal::check(devices, job_dir, None) {
        Ok(r) => r,
        Err(e) => {
            return SealState::Broken { why: one_line(&e) };
        }
    };
    let record =
        odt_store::format::seal_record::read(&locked.devices()[0], &locked.superblocks()[0]);
    match (report.intact, report.seal_code, record) {
        (true, Some(code), Ok(Some(signed))) => SealState::Intact {
            code,
            record: Box::new(signed.record),
        },
        (_, _, _) => SealState::Broken {
            why: report
                .problem
                .unwrap_or_else(|| "the seal record could not be read back".into()),
        },
    }
}

/// The per-file BLAKE3 roots the seal journaled, by file id (`None` if not sealed).
pub fn sealed_roots(store: &Store) -> Option<std::collections::HashMap<u64, [u8; 32]>> {
    Some(store.view().seal()?.roots.iter().copied().collect())
}
