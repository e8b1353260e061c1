//! `odt erase`: crypto-erase the devices of a set after their ingest.

use std::path::PathBuf;

use clap::Args;

/// `odt erase`
///
/// Destroys every wrapped key (both superblock copies of every device), the seal slots and
/// the metadata journal: the data can no longer be decrypted. Refuses a set whose ingest
/// has not completed (no ingest receipt on device 1, or files were quarantined) unless
/// `--force`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The devices to erase (the whole set, any order).
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// Also write zeros over the whole of each device (slow: the full device size).
    #[arg(long)]
    pub overwrite: bool,
    /// Erase even though no completed ingest is recorded on the devices (the data is lost).
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt erase`.
pub fn run(a: EraseArgs) -> anyhow::Result<i32> {
    let report = crate::erase::run(
        &crate::erase::Options {
            devices: a.devices,
            overwrite: a.overwrite,
            force: a.force,
        },
        &|total| crate::progress::bytes_bar(total, "overwrite"),
    )?;
    if a.json {
        crate::output::json(&report)?;
    } else {
        print!("{}", report.human());
    }
    Ok(0)
}
