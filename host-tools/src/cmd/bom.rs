//! `odt bom`: the bill of materials of a sealed appliance, fetched over the control API
//! (`GET /api/v1/bom`), or read from the sealed devices with the job: every file's path,
//! kind, size, mode, mtime and BLAKE3 (equal to `b3sum`), as the seal covers them, and the
//! `.mf` digest of VM bundle members. The customer keeps it as the per-file proof of what
//! was shipped; the dock or the provider compares it (`odt seal-check --bom`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use odt_store::trip::bom;

use crate::control::error::{CtlError, report};
use crate::control::{Client, Connect};
use crate::exit::{Kind, Refusal};
use crate::job_devices::SealState;

/// Format of the bill of materials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BomFormat {
    /// `path,kind,size,mode,mtime_unix,blake3,mf_digest`, one line per entry.
    Csv,
    /// `{job_id, seal_code, entries: [...]}`.
    Json,
}

/// `odt bom`
#[derive(Debug, Args)]
pub struct BomArgs {
    /// Control address of the appliance (host[:port], default port 7049): the list as the
    /// appliance serves it.
    #[arg(long, required_unless_present = "devices", conflicts_with = "devices")]
    pub appliance: Option<String>,
    /// The sealed devices of the set (any order): the list read from them with --job.
    #[arg(long = "device", num_args = 1.., requires = "job")]
    pub devices: Vec<PathBuf>,
    /// The job directory: with --device its ingest identity opens the devices; with
    /// --appliance its job.toml records the certificate fingerprint.
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// SHA-256 fingerprint of the appliance's certificate (with --appliance; see `odt
    /// unlock --help`).
    #[arg(long, requires = "appliance")]
    pub fingerprint: Option<String>,
    /// Read the unlock code from this file (with --appliance; see `odt unlock --help`).
    #[arg(long, requires = "appliance")]
    pub code_file: Option<PathBuf>,
    /// Format of the list (default csv; json with --json).
    #[arg(long, value_enum)]
    pub format: Option<BomFormat>,
    /// Write the list to this file instead of stdout (replaced only once it is complete).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The list as JSON, and on failure {"error": {"kind", "message"}} on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt bom`: exit 0 only if the whole list was written.
pub fn run(a: BomArgs) -> anyhow::Result<i32> {
    let format = a.format.unwrap_or(if a.json {
        BomFormat::Json
    } else {
        BomFormat::Csv
    });
    let list = match &a.appliance {
        Some(addr) => match from_appliance(&a, addr, format) {
            Ok(l) => l,
            Err(e) => return Ok(report(&e, a.json)),
        },
        None => from_devices(&a, format)?,
    };
    match &a.output {
        Some(p) => write_file(p, &list)?,
        None => std::io::stdout()
            .lock()
            .write_all(&list)
            .context("cannot write the bill of materials to stdout")?,
    }
    Ok(0)
}

fn from_appliance(a: &BomArgs, addr: &str, format: BomFormat) -> Result<Vec<u8>, CtlError> {
    let client = Client::connect(&Connect {
        appliance: addr.to_string(),
        fingerprint: a.fingerprint.clone(),
        job: a.job.clone(),
        code_file: a.code_file.clone(),
    })?;
    let query = match format {
        BomFormat::Csv => "csv",
        BomFormat::Json => "json",
    };
    client
        .with_token(true, "the bill of materials", |t| client.bom(t, query))
        .map_err(|e| e.context(&format!("bill of materials of {}", client.addr())))
}

/// The list from the sealed devices, built as the appliance builds it (see
/// [`odt_store::trip::bom`]) once the seal checks out.
fn from_devices(a: &BomArgs, format: BomFormat) -> anyhow::Result<Vec<u8>> {
    let job_dir = a.job.as_deref().expect("clap requires --job with --device");
    let (job, store, code) = open_sealed(&a.devices, job_dir)?;
    let entries = bom::entries(&store)?;
    Ok(match format {
        BomFormat::Csv => bom::csv(&entries).into_bytes(),
        BomFormat::Json => serde_json::to_vec_pretty(&bom::Bom {
            job_id: job.id,
            seal_code: Some(code),
            entries,
        })?,
    })
}

/// Opens a device set whose seal checks out, read-only with the job's ingest identity;
/// returns the job, the store and the seal code. An unsealed set or a broken seal is
/// refused: the bill of materials is what an intact seal covers.
pub fn open_sealed(
    devices: &[PathBuf],
    job_dir: &Path,
) -> anyhow::Result<(odt_store::trip::job::Job, odt_store::Store, String)> {
    let (job, locked) = crate::job_devices::open(devices, job_dir)?;
    let code = match crate::job_devices::seal_state(devices, job_dir, &locked) {
        SealState::Intact { code, .. } => code,
        SealState::Unsealed => {
            return Err(Refusal::new(
                Kind::NotSealed,
                "the devices are not sealed: the bill of materials is what the seal covers; \
                 the customer seals with `odt seal`",
            )
            .into());
        }
        SealState::Broken { why } => {
            return Err(Refusal::new(
                Kind::SealBroken,
                format!(
                    "the seal does not check out ({why}); see `odt seal-check` and `odt verify`"
                ),
            )
            .into());
        }
    };
    let store = crate::job_devices::unlock(locked, job_dir)?;
    Ok((job, store, code))
}

/// Writes `data` next to `p` and renames it into place, so that a partial list never
/// stands where a complete one is expected.
fn write_file(p: &Path, data: &[u8]) -> anyhow::Result<()> {
    let fail = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "cannot write the bill of materials to {}; check the folder exists and is \
             writable",
            p.display()
        ))
    };
    let mut tmp = p.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(fail)?;
    std::fs::rename(&tmp, p).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
