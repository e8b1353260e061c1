//! `odt seal` and `odt bundles`: the customer's last steps on site. Both check every VM
//! bundle on the appliance (descriptor references, sizes, `.mf` digests); `seal` then seals
//! unless a bundle has errors, and prints the seal code.

use clap::Args;
use odt_store::trip::bundle::{BundleReport, Severity};

use crate::control::error::{CtlError, Kind, report};
use crate::control::{Client, Connect};

/// `odt seal`
#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    // Private: a `///` here would become help text; the options document themselves.
    to: Connect,
    /// Seal although bundles have errors (the errors are recorded in the seal).
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON (on failure: {"error": {"kind", "message"}}).
    #[arg(long)]
    pub json: bool,
}

/// `odt bundles`
#[derive(Debug, Args)]
pub struct BundlesArgs {
    #[command(flatten)]
    // Private: a `///` here would become help text; the options document themselves.
    to: Connect,
    /// Print the report as JSON (on failure: {"error": {"kind", "message"}}).
    #[arg(long)]
    pub json: bool,
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CtlError> {
    crate::output::json(v).map_err(|e| CtlError::new(Kind::Failed, e.to_string()))
}

/// The bundle report for people.
pub fn human(r: &BundleReport) -> String {
    let mut out = String::new();
    if r.bundles.is_empty() {
        out.push_str("No VM bundles (.ovf or .ova) found.\n");
    }
    for b in &r.bundles {
        let verdict = if !b.ok() {
            "ERRORS"
        } else if b.findings.is_empty() {
            "ok"
        } else {
            "ok, with warnings"
        };
        out.push_str(&format!(
            "{}: {} ({} files, {}, {} digests checked)\n",
            b.path,
            verdict,
            b.files.len(),
            crate::output::bytes(b.bytes),
            b.digests_checked
        ));
        for f in &b.findings {
            let tag = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            out.push_str(&format!("    {tag}: {}\n", f.message));
        }
    }
    if r.loose_files > 0 {
        out.push_str(&format!("{} file(s) outside any bundle.\n", r.loose_files));
    }
    out
}

/// Runs `odt bundles`: exit 0 if no bundle has errors, 3 otherwise.
pub fn run_bundles(a: BundlesArgs) -> anyhow::Result<i32> {
    let run = || -> Result<i32, CtlError> {
        let client = Client::connect(&a.to)?;
        let r = client
            .with_token(true, "the bundle check", |t| client.bundles(t))
            .map_err(|e| e.context(&format!("bundle check on {}", client.addr())))?;
        if a.json {
            print_json(&r)?;
        } else {
            print!("{}", human(&r));
        }
        Ok(if r.errors() == 0 { 0 } else { 3 })
    };
    Ok(run().unwrap_or_else(|e| report(&e, a.json)))
}

/// Runs `odt seal`: exit 0 only if sealed.
pub fn run_seal(a: SealArgs) -> anyhow::Result<i32> {
    let run = || -> Result<i32, CtlError> {
        let client = Client::connect(&a.to)?;
        let out = client
            .with_token(true, "the seal", |t| client.seal(t, a.force))
            .map_err(|e| e.context(&format!("seal of {}", client.addr())))?;
        match out {
            Ok(r) => {
                // The seal ended every session on the appliance: forget ours.
                client.forget_session();
                if a.json {
                    print_json(&r)?;
                } else {
                    print!("{}", human(&r.bundles));
                    println!();
                    println!(
                        "SEALED: {} file(s), {} ({} bundle(s)), {}. The export is now read-only.",
                        r.files,
                        crate::output::bytes(r.bytes),
                        r.bundles.bundles.len(),
                        crate::output::unix_time(r.sealed_unix)
                    );
                    println!();
                    println!("  Seal code: {}", r.seal_code);
                    println!();
                    println!(
                        "Write it on the label and send it to the provider: the dock checks it \
                         with `odt seal-check --expect`. `odt status` shows it again."
                    );
                    println!(
                        "Keep the bill of materials (every file's BLAKE3, as the seal covers \
                         it): `odt bom --appliance {} --code-file FILE -o bom.csv`; the seal \
                         ended the session, so the unlock code is needed again.",
                        client.addr()
                    );
                }
                Ok(0)
            }
            Err(refused) => {
                if a.json {
                    print_json(&refused)?;
                } else {
                    print!("{}", human(&refused.bundles));
                    println!();
                    println!("NOT SEALED: {}", refused.reason);
                }
                Ok(3)
            }
        }
    };
    Ok(run().unwrap_or_else(|e| report(&e, a.json)))
}
