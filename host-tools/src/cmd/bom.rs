//! `odt bom`: the bill of materials of a sealed appliance, fetched over the control API
//! (`GET /api/v1/bom`): every file's path, kind, size, mode, mtime and BLAKE3 (equal to
//! `b3sum`), as the seal covers them. The customer keeps it as the per-file proof of what
//! was shipped.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::control::error::{CtlError, EXIT_CODES, Kind, report};
use crate::control::{Client, Connect};

/// Format of the bill of materials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BomFormat {
    /// `path,kind,size,mode,mtime_unix,blake3`, one line per entry.
    Csv,
    /// `{job_id, seal_code, entries: [...]}`.
    Json,
}

/// `odt bom`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct BomArgs {
    #[command(flatten)]
    pub to: Connect,
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
    Ok(match bom(&a) {
        Ok(()) => 0,
        Err(e) => report(&e, a.json),
    })
}

fn bom(a: &BomArgs) -> Result<(), CtlError> {
    let format = a.format.unwrap_or(if a.json {
        BomFormat::Json
    } else {
        BomFormat::Csv
    });
    let client = Client::connect(&a.to)?;
    let query = match format {
        BomFormat::Csv => "csv",
        BomFormat::Json => "json",
    };
    let list = client
        .with_token(true, "the bill of materials", |t| client.bom(t, query))
        .map_err(|e| e.context(&format!("bill of materials of {}", client.addr())))?;
    match &a.output {
        Some(p) => write_file(p, &list),
        None => std::io::stdout()
            .lock()
            .write_all(&list)
            .map_err(|e| CtlError::new(Kind::Failed, format!("writing to stdout: {e}"))),
    }
}

/// Writes `data` next to `p` and renames it into place, so that a partial list never
/// stands where a complete one is expected.
fn write_file(p: &std::path::Path, data: &[u8]) -> Result<(), CtlError> {
    let fail = |e: std::io::Error| {
        CtlError::new(
            Kind::Failed,
            format!(
                "cannot write the bill of materials to {}: {e}; check the folder exists and \
                 is writable",
                p.display()
            ),
        )
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
