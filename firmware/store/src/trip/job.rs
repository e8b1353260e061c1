//! The provider's job: one customer order, one device set. A job directory holds
//! `job.toml` (public: id, name, ingest recipient, provisioned devices and their signing keys)
//! and `ingest.key` (the age X25519 identity; secret, mode 0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::cipher::Cipher;
use crate::error::{Result, TripError};

/// File name of the job description inside a job directory.
pub const JOB_FILE: &str = "job.toml";
/// File name of the ingest identity inside a job directory.
pub const IDENTITY_FILE: &str = "ingest.key";

/// One provisioned device, as the job remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDevice {
    /// 1-based position in the set.
    pub index: u32,
    /// Where the device was when it was provisioned.
    pub path: String,
    /// Bytes the layout uses.
    pub size: u64,
}

/// A device set provisioned for the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSet {
    /// Hex of the set id shared by the devices' superblocks.
    pub set_id: String,
    /// Hex of the Ed25519 public key the seal must verify against.
    pub signing_public: String,
    /// Cipher the set was provisioned with.
    pub cipher: Cipher,
    /// When, in Unix seconds.
    pub provisioned_unix: u64,
    /// The devices, by index.
    pub devices: Vec<JobDevice>,
    /// SHA-256 fingerprint of the appliance's control-API certificate: what `odt` pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<crate::crypto::tls::Fingerprint>,
    /// Base64 SHA-256 of the certificate's public key: what `curl --pinnedpubkey
    /// sha256//PIN` and Chromium's `--ignore-certificate-errors-spki-list` pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_spki_pin: Option<String>,
}

/// `job.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job id (random, hex), also in every superblock of its set.
    pub id: String,
    /// The customer's name for the job.
    pub name: String,
    /// When the job was made, in Unix seconds.
    pub created_unix: u64,
    /// The ingest station's age X25519 recipient (public).
    pub recipient: String,
    /// Filled in by `odt provision`.
    pub set: Option<JobSet>,
}

impl Job {
    /// Reads `DIR/job.toml`.
    pub fn load(dir: &Path) -> Result<Job> {
        let p = dir.join(JOB_FILE);
        let text = fs::read_to_string(&p).map_err(|source| TripError::ReadFile {
            what: "job file",
            path: p.clone(),
            source,
        })?;
        Ok(toml::from_str(&text).map_err(|e| TripError::BadJob {
            path: p.clone(),
            why: e.to_string(),
        })?)
    }

    /// Writes `DIR/job.toml` atomically (temp file + rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = dir.join(JOB_FILE);
        let tmp = dir.join(".job.toml.tmp");
        let text = toml::to_string_pretty(self).map_err(|e| TripError::BadJob {
            path: p.clone(),
            why: e.to_string(),
        })?;
        let write = |path: &Path, source| TripError::WriteFile {
            what: "job file",
            path: path.to_path_buf(),
            source,
        };
        fs::write(&tmp, text).map_err(|e| write(&tmp, e))?;
        Ok(fs::rename(&tmp, &p).map_err(|e| write(&p, e))?)
    }

    /// The ingest recipient as an age key.
    pub fn recipient(&self) -> Result<age::x25519::Recipient> {
        Ok(self.recipient.parse().map_err(|e| TripError::BadJob {
            path: JOB_FILE.into(),
            why: format!("recipient {:?}: {e}", self.recipient),
        })?)
    }

    /// Path of the identity file.
    pub fn identity_path(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_FILE)
    }

    /// Loads the ingest identity from `DIR/ingest.key`.
    pub fn load_identity(dir: &Path) -> Result<age::x25519::Identity> {
        let p = Self::identity_path(dir);
        let text = zeroize::Zeroizing::new(fs::read_to_string(&p).map_err(|source| {
            TripError::ReadFile {
                what: "ingest identity",
                path: p.clone(),
                source,
            }
        })?);
        crate::crypto::keys::parse_identity(&text)
    }

    /// The signing key recorded at provisioning.
    pub fn signing_public(&self) -> Result<[u8; 32]> {
        let set = self.set.as_ref().ok_or(TripError::NotProvisioned)?;
        let bad = |why: String| TripError::BadJob {
            path: JOB_FILE.into(),
            why: format!("signing_public: {why}"),
        };
        let v = hex::decode(&set.signing_public).map_err(|e| bad(e.to_string()))?;
        Ok(v.try_into().map_err(|_| bad("not 32 bytes".into()))?)
    }
}

/// Creates a file readable only by its owner (0600) and writes `data` to it.
pub fn write_secret_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|_| f.sync_all()))
        .map_err(|source| TripError::WriteFile {
            what: "secret file",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}
