//! `odt seal-check`: the courier's and the dock's check. Needs the job directory (for the
//! device key) but no data key; reads no file data; takes seconds whatever the data size.

use std::path::PathBuf;

use clap::Args;
use odt_store::trip::seal;

/// `odt seal-check`
#[derive(Debug, Args)]
pub struct SealCheckArgs {
    /// The appliance's data devices (block devices or image files), in any order.
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// The job directory (its job.toml holds the device key the seal must verify against).
    #[arg(long)]
    pub job: PathBuf,
    /// The seal code the customer reported; the check fails if the devices carry another.
    #[arg(long)]
    pub expect: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt seal-check`: exit 0 only if the seal is intact.
pub fn run(a: SealCheckArgs) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let r = seal::check(&a.devices, &a.job, a.expect.as_deref())?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        crate::output::json(&v)?;
    } else if r.intact {
        println!(
            "SEAL INTACT  code {}  ({} files, {}, sealed {}; checked in {:.1} s)",
            r.seal_code.as_deref().unwrap_or("?"),
            r.files.unwrap_or(0),
            crate::output::bytes(r.bytes.unwrap_or(0)),
            crate::output::unix_time(r.sealed_unix.unwrap_or(0)),
            started.elapsed().as_secs_f64()
        );
        if let Some(log) = &r.custody {
            print!("{}", crate::output::custody(log));
        }
    } else {
        println!(
            "SEAL BROKEN: {}",
            r.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    Ok(if r.intact { 0 } else { 3 })
}
