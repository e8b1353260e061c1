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
    /// Attempted, but a byte failed verification or the upload failed: the lease was
    /// aborted and the VM removed.
    Quarantined,
}

/// One uploaded file.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub href: String,
    pub bytes: u64,
    /// The sealed BLAKE3 roots of the device files its bytes came from, all verified.
    pub verified_roots: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub path: String,
    pub vm_name: Option<String>,
    pub status: Status,
    /// The VM's managed object id.
    pub vm: Option<String>,
    pub disks: Vec<DiskReport>,
    pub seconds: f64,
    pub reason: Option<String>,
    /// What vCenter warned about the descriptor.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job_id: String,
    pub set_id: String,
    pub seal_code: String,
    pub vcenter: String,
    pub datacenter: String,
    pub datastore: String,
    pub folder: String,
    pub resource_pool: String,
    /// Every bundle imported or skipped.
    pub complete: bool,
    pub bundles: Vec<BundleReport>,
    pub bytes_uploaded: u64,
    pub seconds: f64,
}

impl Report {
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
