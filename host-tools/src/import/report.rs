//! What `odt import` did, per bundle: for people and as JSON.

use serde::Serialize;

/// How a bundle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Registered in vCenter with every byte verified.
    Imported,
    /// Already imported by an earlier run of this job.
    Skipped,
    /// Not attempted: the bundle is broken, unsupported, or its name is taken.
    Refused,
    /// Damaged on the device (found before anything was sent, or during the upload), or
    /// the upload failed: no VM was left registered (a lease that was open was aborted).
    Quarantined,
}

/// One uploaded file.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// The file's name in the descriptor.
    pub href: String,
    /// Bytes as stored on the device (compressed, for a gzip file; all chunks).
    pub bytes: u64,
    /// Bytes sent to vCenter (decompressed, for a gzip file).
    pub uploaded_bytes: u64,
    /// The sealed BLAKE3 roots of the device files its bytes came from, all verified.
    pub verified_roots: Vec<String>,
}

/// What became of one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// Path of the `.ovf` or `.ova` on the device.
    pub path: String,
    /// The VM's name, when the descriptor gives one.
    pub vm_name: Option<String>,
    /// How it ended.
    pub status: Status,
    /// The VM's managed object id.
    pub vm: Option<String>,
    /// Every file uploaded.
    pub disks: Vec<DiskReport>,
    /// Time spent on it.
    pub seconds: f64,
    /// Why it was refused or quarantined.
    pub reason: Option<String>,
    /// What vCenter warned about the descriptor.
    pub warnings: Vec<String>,
}

/// What one run of `odt import` did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The job the devices belong to.
    pub job_id: String,
    /// The device set.
    pub set_id: String,
    /// The seal code the devices carry.
    pub seal_code: String,
    /// vCenter's address.
    pub vcenter: String,
    /// The datacenter imported into.
    pub datacenter: String,
    /// The datastore that received the disks.
    pub datastore: String,
    /// The VM folder (inventory path).
    pub folder: String,
    /// The resource pool (inventory path).
    pub resource_pool: String,
    /// Every bundle imported or skipped.
    pub complete: bool,
    /// Every bundle, in the order imported.
    pub bundles: Vec<BundleReport>,
    /// Bytes sent to vCenter in all.
    pub bytes_uploaded: u64,
    /// Time of the whole run.
    pub seconds: f64,
}

impl Report {
    /// How many bundles ended as `s`.
    pub fn count(&self, s: Status) -> usize {
        self.bundles.iter().filter(|b| b.status == s).count()
    }

    /// The report for a terminal.
    pub fn human(&self) -> String {
        let mut out = format!(
            "{} job {} (seal {}) into {} datacenter {} datastore {} folder {}\n",
            if self.complete {
                "IMPORTED"
            } else {
                "INCOMPLETE"
            },
            self.job_id,
            self.seal_code,
            self.vcenter,
            self.datacenter,
            self.datastore,
            self.folder
        );
        for b in &self.bundles {
            let name = b.vm_name.as_deref().unwrap_or("?");
            let status = match b.status {
                Status::Imported => "imported",
                Status::Skipped => "skipped (already imported)",
                Status::Refused => "REFUSED",
                Status::Quarantined => "QUARANTINED",
            };
            out.push_str(&format!("  {name}  {status}  from {}", b.path));
            if let Some(vm) = &b.vm {
                out.push_str(&format!("  as {vm}"));
            }
            if b.status == Status::Imported {
                out.push_str(&format!("  in {:.1} s", b.seconds));
            }
            out.push('\n');
            for d in &b.disks {
                out.push_str(&format!(
                    "    {}  {}  BLAKE3 {}\n",
                    d.href,
                    crate::output::bytes(d.bytes),
                    d.verified_roots.join(", ")
                ));
            }
            for w in &b.warnings {
                out.push_str(&format!("    warning: {w}\n"));
            }
            if let Some(r) = &b.reason {
                out.push_str(&format!("    reason: {r}\n"));
            }
        }
        out.push_str(&format!(
            "{} imported, {} skipped, {} refused, {} quarantined; {} uploaded in {:.1} s\n",
            self.count(Status::Imported),
            self.count(Status::Skipped),
            self.count(Status::Refused),
            self.count(Status::Quarantined),
            crate::output::bytes(self.bytes_uploaded),
            self.seconds
        ));
        out
    }
}
