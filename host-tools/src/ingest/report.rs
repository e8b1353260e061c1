//! The ingest report, for people and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan::{Refusal, Renaming};
use super::transfer::Quarantined;
use crate::output::bytes;

/// One VM bundle in the report.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// Datastore folder of the bundle (or the `.ova`).
    pub path: String,
    /// Descriptors found in it.
    pub descriptors: Vec<String>,
    /// Files in it.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Files of the bundle that were quarantined.
    pub quarantined: u64,
    /// True when every file of the bundle is in the datastore.
    pub complete: bool,
}

/// Where the ingest receipt went.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptStatus {
    /// Written to device 1 of the set (so `odt erase` accepts the set).
    pub on_device: bool,
    /// Why not, if it was not.
    pub why_not: Option<String>,
}

/// Everything `odt ingest` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The job the set was provisioned for.
    pub job_id: String,
    /// The customer's name for the job.
    pub job_name: String,
    /// Hex of the device set id.
    pub set_id: String,
    /// The devices, as given.
    pub devices: Vec<String>,
    /// The datastore directory.
    pub datastore: String,
    /// Whether the store carries a seal.
    pub sealed: bool,
    /// The seal code checked, if sealed.
    pub seal_code: Option<String>,
    /// True when every file was written and nothing was refused.
    pub complete: bool,
    /// The VM bundles and whether each is complete.
    pub bundles: Vec<BundleReport>,
    /// Regular files on the device (refused ones not counted).
    pub files: u64,
    /// Files written by this run.
    pub files_written: u64,
    /// Files an earlier run had finished (verified then, not redone).
    pub files_resumed: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Further names of files with several (made with `link`, one copy of the bytes).
    pub hard_links: u64,
    /// Bytes (file sizes) of the regular files on the device (refused ones not counted).
    pub bytes_on_device: u64,
    /// Bytes (file sizes) of every file now in the datastore.
    pub bytes: u64,
    /// Bytes (file sizes) of the files written by this run.
    pub bytes_written: u64,
    /// Bytes read from records by this run (holes excluded).
    pub data_bytes_read: u64,
    /// Wall time of this run.
    pub seconds: f64,
    /// `bytes_written / seconds`.
    pub bytes_per_second: f64,
    /// Decoding worker threads used.
    pub workers: usize,
    /// Files not written because their content failed its checks.
    pub quarantined: Vec<Quarantined>,
    /// Entries not written, and why.
    pub refused: Vec<Refusal>,
    /// Entries written under another name, and why.
    pub renamed: Vec<Renaming>,
    /// Whether the ingest receipt was written to the set.
    pub receipt: ReceiptStatus,
    /// What the provider should know but did not stop the ingest.
    pub warnings: Vec<String>,
    /// What was done with paths that already held something (`--on-conflict`).
    pub on_conflict: super::conflicts::OnConflict,
    /// Paths that already held something the ingest did not write.
    pub conflicts: Vec<super::conflicts::Conflict>,
    /// Files not written because of a conflict (`--on-conflict skip`).
    pub files_skipped: u64,
    /// The per-file logs (CSV and JSON lines).
    pub file_log: Vec<String>,
    /// The custody log journaled on the appliance (up to the seal, which signs it).
    pub custody: odt_store::trip::custody::Log,
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Ingest of job {} ({}) into {}",
            self.job_id, self.job_name, self.datastore
        );
        match &self.seal_code {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "  seal code {c} (signature, log end and journal checked)"
                );
            }
            None if self.sealed => {
                let _ = writeln!(s, "  SEAL BROKEN: ingested anyway (--ignore-seal)");
            }
            None => {
                let _ = writeln!(
                    s,
                    "  NOT SEALED: nothing proves this is what the customer sealed"
                );
            }
        }
        let _ = writeln!(
            s,
            "  on the device:    {} files ({}), {} directories, {} symlinks, {} bundle(s)",
            self.files,
            bytes(self.bytes_on_device),
            self.dirs,
            self.symlinks,
            self.bundles.len()
        );
        if self.hard_links > 0 {
            let _ = writeln!(
                s,
                "                    {} further names of files with several (hard links)",
                self.hard_links
            );
        }
        let _ = writeln!(
            s,
            "  in the datastore: {} files ({}); {} done by an earlier run",
            self.files_written + self.files_resumed,
            bytes(self.bytes),
            self.files_resumed
        );
        let _ = writeln!(
            s,
            "  this run:         {} files, {} in {:.1} s ({}/s, {} workers)",
            self.files_written,
            bytes(self.bytes_written),
            self.seconds,
            bytes(self.bytes_per_second as u64),
            self.workers
        );
        for b in &self.bundles {
            let _ = writeln!(
                s,
                "  bundle {}: {} files, {}{}",
                b.path,
                b.files,
                bytes(b.bytes),
                if b.complete {
                    String::new()
                } else {
                    format!(", INCOMPLETE ({} quarantined)", b.quarantined)
                }
            );
        }
        if !self.quarantined.is_empty() {
            let _ = writeln!(
                s,
                "QUARANTINED ({} files, not written):",
                self.quarantined.len()
            );
            for q in &self.quarantined {
                let _ = writeln!(s, "  {}: {}", q.path, q.why);
                for r in &q.damaged {
                    let _ = writeln!(s, "    bytes {}..{}: {}", r.start, r.end, r.why);
                }
            }
        }
        if !self.refused.is_empty() {
            let _ = writeln!(s, "REFUSED ({} entries, not written):", self.refused.len());
            for r in &self.refused {
                let below = if r.entries_below > 0 {
                    format!(" ({} entries below it skipped too)", r.entries_below)
                } else {
                    String::new()
                };
                let _ = writeln!(s, "  {}: {}{below}", r.path, r.why);
            }
        }
        if !self.renamed.is_empty() {
            let _ = writeln!(s, "Renamed ({}):", self.renamed.len());
            for r in &self.renamed {
                let _ = writeln!(s, "  {} -> {}: {}", r.device_path, r.datastore_path, r.why);
            }
        }
        if !self.conflicts.is_empty() {
            let _ = writeln!(
                s,
                "Already in the datastore, not written by this ingest ({}, --on-conflict {}):",
                self.conflicts.len(),
                serde_json::to_value(self.on_conflict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            );
            for c in &self.conflicts {
                match &c.renamed_to {
                    Some(to) => {
                        let _ = writeln!(
                            s,
                            "  {} ({} there): {} written as {to}",
                            c.path, c.found, c.entry
                        );
                    }
                    None => {
                        let _ =
                            writeln!(s, "  {} ({} there): {} skipped", c.path, c.found, c.entry);
                    }
                }
            }
        }
        if let Some(csv) = self.file_log.first() {
            let _ = writeln!(s, "  per-file log: {csv} (and .jsonl)");
        }
        s.push_str(&crate::output::custody(&self.custody));
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        if !self.receipt.on_device {
            let _ = writeln!(
                s,
                "No ingest receipt on the device ({}): `odt erase` will refuse it without --force",
                self.receipt.why_not.as_deref().unwrap_or("unknown reason")
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if self.complete {
                "Complete: every file is in the datastore."
            } else {
                "INCOMPLETE: see the quarantined, refused and skipped entries above."
            }
        );
        s
    }
}
