//! `odt seal-check`: the courier's and the dock's check. Needs the job directory (for the
//! device key) but no data key; reads no file data; takes seconds whatever the data size.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use odt_store::trip::{bom, seal};

use crate::exit::{Kind, PROBLEMS_FOUND, Refusal};

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
    /// Also check that this bill of materials (CSV or JSON as `odt bom` writes it) is the
    /// list the seal covers; needs the job's ingest identity (ingest.key) to read the
    /// sealed list. Exit 3 names the first paths that differ.
    #[arg(long, value_name = "FILE")]
    pub bom: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Paths named when a bill of materials does not match.
const SHOWN: usize = 10;

/// Whether a bill of materials matches the seal.
#[derive(Debug, serde::Serialize)]
struct BomCheck {
    /// The file compared.
    file: PathBuf,
    /// No entry differs.
    matches: bool,
    /// Entries that differ (missing, added or changed).
    differing: usize,
    /// The first of their paths, in path order.
    first_differing_paths: Vec<String>,
}

/// Compares the bill of materials in `file` with the one the sealed devices hold.
fn check_bom(a: &SealCheckArgs, file: &Path) -> anyhow::Result<BomCheck> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the bill of materials {}", file.display()))?;
    let given = bom::parse(&text).map_err(|e| {
        Refusal::new(
            Kind::Usage,
            format!(
                "{} is not a bill of materials as `odt bom` writes it: {e}",
                file.display()
            ),
        )
    })?;
    let (_, store, _) = crate::cmd::bom::open_sealed(&a.devices, &a.job)?;
    let sealed = bom::entries(&store)?;
    let diff = bom::differences(&sealed, &given);
    Ok(BomCheck {
        file: file.to_path_buf(),
        matches: diff.is_empty(),
        differing: diff.len(),
        first_differing_paths: diff.into_iter().take(SHOWN).collect(),
    })
}

/// Runs `odt seal-check`: exit 0 only if the seal is intact (and, with --bom, the list
/// matches it).
pub fn run(a: SealCheckArgs) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let r = seal::check(&a.devices, &a.job, a.expect.as_deref())?;
    // The list is compared only under an intact seal: a broken one covers nothing.
    let bom = match &a.bom {
        Some(f) if r.intact => Some(check_bom(&a, f)?),
        _ => None,
    };
    let ok = r.intact && bom.as_ref().is_none_or(|b| b.matches);
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        if let Some(b) = &bom {
            v["bom"] = serde_json::to_value(b)?;
        }
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
        match &bom {
            Some(b) if b.matches => println!(
                "BILL OF MATERIALS MATCHES  {} (every entry as sealed)",
                b.file.display()
            ),
            Some(b) => {
                println!(
                    "BILL OF MATERIALS DIFFERS  {}: {} entr{} differ from the seal's, first:",
                    b.file.display(),
                    b.differing,
                    if b.differing == 1 { "y" } else { "ies" }
                );
                for p in &b.first_differing_paths {
                    println!("  {p}");
                }
            }
            None => {}
        }
    } else {
        println!(
            "SEAL BROKEN: {}",
            r.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    Ok(if ok { 0 } else { PROBLEMS_FOUND })
}
