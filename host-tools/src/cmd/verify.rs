//! `odt verify`: are the devices of a job intact?

use std::path::PathBuf;

use clap::Args;

/// `odt verify`
///
/// Exit status: 0 everything intact; 3 damage or problems found (listed); 1 the check
/// could not be made (wrong job or key, erased or missing device).
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The devices of the set (any order).
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// The job directory (job.toml; with --deep also ingest.key).
    #[arg(long)]
    pub job: PathBuf,
    /// Also authenticate and hash every record with the job's ingest identity, naming each
    /// damaged file and the byte range lost.
    #[arg(long)]
    pub deep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt verify`.
pub fn run(a: VerifyArgs) -> anyhow::Result<i32> {
    let report = crate::verify::run(
        &crate::verify::Options {
            devices: a.devices,
            job_dir: a.job,
            deep: a.deep,
        },
        &|total| crate::progress::bytes_bar(total, "verify"),
    )?;
    if a.json {
        crate::output::json(&report)?;
    } else {
        print!("{}", report.human());
    }
    Ok(if report.intact {
        0
    } else {
        crate::exit::PROBLEMS_FOUND
    })
}
