//! Provisioned device sets on disk-image files in a temporary directory: through the
//! library ([`Fixture`], for tests of the store and the appliance) or through the real `odt`
//! binary ([`provision_with_cli`], for tests that drive the binaries).

use std::path::{Path, PathBuf};
use std::process::Command;

use odt_store::crypto::keys::{Secrets, UnlockCode};
use odt_store::trip::job::{Job, JobSet};
use odt_store::trip::provision::{self, Options, Provisioned};
use odt_store::{Access, Locked, Store};

use crate::MIB;

/// The job id of a [`Fixture`] unless it is made with [`Fixture::for_job`].
pub const JOB_ID: &str = "job-test";

/// A provisioned set of image files and the keys that open it; removed on drop.
pub struct Fixture {
    /// Holds the images (and the job directory, once asked for).
    pub dir: tempfile::TempDir,
    /// The images, by device index.
    pub paths: Vec<PathBuf>,
    /// The customer's unlock code.
    pub code: UnlockCode,
    /// The ingest identity the keys are wrapped to.
    pub identity: age::x25519::Identity,
    /// What provisioning wrote.
    pub provisioned: Provisioned,
    /// The job the set was provisioned for.
    pub job_id: String,
}

impl Fixture {
    /// `devices` image files of `size` bytes each, with 8 MiB segments (many segments on a
    /// small image, so tests cross segment boundaries cheaply).
    pub fn new(devices: usize, size: u64) -> Fixture {
        Self::with_options(devices, size, Options::default())
    }

    /// As [`Fixture::new`] with provisioning options; a segment size left at its default
    /// becomes 8 MiB.
    pub fn with_options(devices: usize, size: u64, opts: Options) -> Fixture {
        Self::for_job(JOB_ID, devices, size, opts)
    }

    /// As [`Fixture::with_options`], provisioned for job `job_id`.
    pub fn for_job(job_id: &str, devices: usize, size: u64, mut opts: Options) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("odt-test-")
            .tempdir()
            .expect("a temporary directory");
        let paths: Vec<PathBuf> = (0..devices)
            .map(|i| dir.path().join(format!("dev{i}.img")))
            .collect();
        let identity = age::x25519::Identity::generate();
        opts.create_size = Some(size);
        if opts.segment_size == Options::default().segment_size {
            opts.segment_size = 8 * MIB;
        }
        let provisioned =
            provision::provision(&paths, job_id, "test", &identity.to_public(), &opts)
                .expect("provisioning the test images");
        Fixture {
            dir,
            paths,
            code: provisioned.unlock_code.clone(),
            identity,
            provisioned,
            job_id: job_id.into(),
        }
    }

    /// The keys, unwrapped with the unlock code.
    pub fn secrets(&self) -> Secrets {
        let l = Locked::open(&self.paths, Access::ReadOnly).unwrap();
        l.secrets_from_code(&self.code).unwrap()
    }

    /// The store, read-write, unlocked with the unlock code (as the appliance opens it).
    pub fn open(&self) -> Store {
        let l = Locked::open(&self.paths, Access::ReadWrite).unwrap();
        let s = l.secrets_from_code(&self.code).unwrap();
        l.unlock(s, Access::ReadWrite).unwrap()
    }

    /// The store, read-only, unlocked with the ingest identity (as the provider opens it).
    pub fn open_ro(&self) -> odt_store::Result<Store> {
        let l = Locked::open(&self.paths, Access::ReadOnly)?;
        let s = l.secrets_from_identity(&self.identity)?;
        l.unlock(s, Access::ReadOnly)
    }

    /// A job directory for this set (job file and ingest identity), made on first use.
    pub fn job_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("job");
        if !dir.join(odt_store::trip::job::JOB_FILE).exists() {
            write_job(&dir, &self.job_id, &self.identity, &self.provisioned);
        }
        dir
    }

    /// A file holding the unlock code (for binaries that read it), made on first use.
    pub fn code_file(&self) -> PathBuf {
        let p = self.dir.path().join("unlock-code");
        if !p.exists() {
            std::fs::write(&p, self.code.expose()).unwrap();
        }
        p
    }
}

/// Writes a job directory at `dir` for a set provisioned as `job_id`: the job file (with
/// the set's id, signing key and cipher) and the ingest identity (mode 0600), as `odt job
/// new` and `odt provision` leave them.
pub fn write_job(dir: &Path, job_id: &str, identity: &age::x25519::Identity, p: &Provisioned) {
    std::fs::create_dir_all(dir).unwrap();
    let sb = &p.superblocks[0];
    Job {
        id: job_id.into(),
        name: sb.job_name.clone(),
        created_unix: 0,
        recipient: identity.to_public().to_string(),
        set: Some(JobSet {
            set_id: format!("{:016x}", sb.set_id),
            signing_public: hex::encode(p.signing_public),
            cipher: sb.cipher,
            provisioned_unix: sb.created_unix,
            devices: vec![],
            tls_fingerprint: Some(p.tls.fingerprint()),
            tls_spki_pin: Some(p.tls.spki_pin()),
        }),
    }
    .save(dir)
    .unwrap();
    let key = Job::identity_path(dir);
    if !key.exists() {
        odt_store::trip::job::write_secret_file(
            &key,
            odt_store::crypto::keys::identity_file_text(identity).as_bytes(),
        )
        .unwrap();
    }
}

/// A job made and provisioned by the real `odt` binary.
pub struct CliSet {
    /// The job directory (`odt job new --out`).
    pub job_dir: PathBuf,
    /// The data device images.
    pub devices: Vec<PathBuf>,
    /// File holding the customer unlock code.
    pub code_file: PathBuf,
}

/// Runs `odt job new` and `odt provision` (binary `odt`) in `dir`: `count` sparse images of
/// `size` (`4G`, `536870912`, ...), with `extra` provision arguments (`--segment-size 8M`).
/// Panics with the tool's output if either fails.
pub fn provision_with_cli(
    odt: &Path,
    dir: &Path,
    count: usize,
    size: &str,
    extra: &[&str],
) -> CliSet {
    let job_dir = dir.join("job");
    let run = |cmd: &mut Command| {
        let o = cmd
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", odt.display()));
        assert!(
            o.status.success(),
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new(odt)
        .args(["job", "new", "--name", "test customer", "--out"])
        .arg(&job_dir));
    // In a folder of their own: `odt ingest` refuses a datastore inside a device's folder,
    // and tests put their datastores in `dir`.
    let dev_dir = dir.join("devices");
    std::fs::create_dir_all(&dev_dir).expect("a folder for the device images");
    let devices: Vec<PathBuf> = (0..count)
        .map(|i| dev_dir.join(format!("dev{i}.img")))
        .collect();
    let code_file = dir.join("unlock-code");
    let mut cmd = Command::new(odt);
    cmd.args(["provision", "--job"]).arg(&job_dir);
    for d in &devices {
        cmd.arg("--device").arg(d);
    }
    cmd.args(["--size", size, "--code-file"])
        .arg(&code_file)
        .args(extra);
    run(&mut cmd);
    CliSet {
        job_dir,
        devices,
        code_file,
    }
}
