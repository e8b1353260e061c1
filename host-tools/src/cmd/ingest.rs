//! `odt ingest`: write the VM bundles of a device set into a datastore directory.

use std::path::PathBuf;

use clap::Args;

/// `odt ingest`
///
/// Resumable: run the same command again after an interruption and it continues, without
/// redoing files an earlier run finished. Damaged files are quarantined (not written) and
/// listed; unsafe names are refused or escaped and listed.
///
/// Never replaces what it did not write: a path of the datastore that already holds
/// something this ingest did not put there (a file of the same name, say) stops it before
/// anything is written, with the list of such paths, unless `--on-conflict skip` or
/// `rename` is given. A datastore inside the job folder or a device's folder (or holding
/// one) is refused. Every run writes a per-file log, DATASTORE/.odt-ingest/files.csv and
/// files.jsonl: path, device path, outcome (written, renamed, skipped, quarantined),
/// reason, size, BLAKE3 (as `b3sum` prints it for the written file).
///
/// Exit status: 0 every file is in the datastore; 3 finished, but files were quarantined,
/// skipped or entries refused (see the report); 8 refused before writing anything
/// (conflicts, unsafe datastore); 1 stopped by an error (fix it and run again to resume).
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The devices of the set (any order).
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// The job directory (job.toml and the ingest identity ingest.key).
    #[arg(long)]
    pub job: PathBuf,
    /// The datastore directory to write into (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Ingest even though the seal check fails (devices changed after the seal); the
    /// report says so and files are still checked against the journaled BLAKE3 roots.
    #[arg(long)]
    pub ignore_seal: bool,
    /// Start even though the datastore's file system reports less free space than the
    /// files still to ingest need (for file systems that compress or deduplicate). Without
    /// it the ingest refuses to start rather than stop half-way on a full disk.
    #[arg(long)]
    pub skip_space_check: bool,
    /// What to do with a path that already holds something this ingest did not write:
    /// refuse (stop before writing anything and list them, exit 8), skip (leave it; the
    /// device's entry is not written and the device gets no ingest receipt) or rename
    /// (write the entry beside it as NAME.odt-N.EXT).
    #[arg(long, value_enum, default_value = "refuse")]
    pub on_conflict: crate::ingest::conflicts::OnConflict,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt ingest`.
pub fn run(a: IngestArgs) -> anyhow::Result<i32> {
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let result = crate::ingest::run(
        &crate::ingest::Options {
            devices: a.devices,
            job_dir: a.job,
            datastore: a.to,
            jobs,
            ignore_seal: a.ignore_seal,
            skip_space_check: a.skip_space_check,
            on_conflict: a.on_conflict,
        },
        &|total| crate::progress::bytes_bar(total, "ingest"),
    );
    // Conflicts and an unsafe datastore are refusals (exit 8, kind `conflict`: see
    // crate::exit), reported with every other error at the binary's edge.
    let report = result?;
    if a.json {
        crate::output::json(&report)?;
    } else {
        print!("{}", report.human());
    }
    Ok(if report.complete {
        0
    } else {
        crate::exit::PROBLEMS_FOUND
    })
}
