//! `odt seal` and `odt bundles`: the customer's last steps on site. Both check every VM
//! bundle on the appliance (descriptor references, sizes, `.mf` digests); `seal` then seals
//! unless a bundle has errors, and prints the seal code.

use anyhow::bail;
use clap::Args;
use odt_store::trip::bundle::{BundleReport, Severity};
use odt_store::trip::control_api::{ControlKey, Op, Response};

/// `odt seal`
#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub to: crate::control_client::Connect,
    /// Seal although bundles have errors (the errors are recorded in the seal).
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `odt bundles`
#[derive(Debug, Args)]
pub struct BundlesArgs {
    #[command(flatten)]
    pub to: crate::control_client::Connect,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn key(code_file: Option<&std::path::Path>) -> anyhow::Result<ControlKey> {
    match crate::control_client::read_unlock_code(code_file)? {
        Some(c) => Ok(ControlKey::from_code(&c)),
        None => bail!("this needs the unlock code: give it on stdin or with --code-file"),
    }
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
    let key = key(a.to.code_file.as_deref())?;
    match crate::control_client::call(&a.to.appliance, Op::Bundles, Some(&key))? {
        Response::Bundles(r) => {
            if a.json {
                crate::output::json(&r)?;
            } else {
                print!("{}", human(&r));
            }
            Ok(if r.errors() == 0 { 0 } else { 3 })
        }
        Response::Error(e) => bail!(
            "bundle check on {} failed ({:?}): {}",
            a.to.appliance,
            e.kind,
            e.message
        ),
        other => bail!("unexpected answer from {}: {other:?}", a.to.appliance),
    }
}

/// Runs `odt seal`: exit 0 only if sealed.
pub fn run_seal(a: SealArgs) -> anyhow::Result<i32> {
    let key = key(a.to.code_file.as_deref())?;
    match crate::control_client::call(&a.to.appliance, Op::Seal { force: a.force }, Some(&key))? {
        Response::Sealed(r) => {
            if a.json {
                crate::output::json(&r)?;
            } else {
                print!("{}", human(&r.bundles));
                println!();
                println!(
                    "SEALED: {} files, {} ({} bundle(s)), {}. The export is now read-only.",
                    r.files,
                    crate::output::bytes(r.bytes),
                    r.bundles.bundles.len(),
                    crate::output::unix_time(r.sealed_unix)
                );
                println!();
                println!("  Seal code: {}", r.seal_code);
                println!();
                println!(
                    "Write it on the label and send it to the provider: the dock checks it with `odt seal-check --expect`."
                );
            }
            Ok(0)
        }
        Response::SealRefused { reason, bundles } => {
            if a.json {
                crate::output::json(
                    &serde_json::json!({"sealed": false, "reason": reason, "bundles": bundles}),
                )?;
            } else {
                print!("{}", human(&bundles));
                println!();
                println!("NOT SEALED: {reason}");
            }
            Ok(3)
        }
        Response::Error(e) => bail!(
            "seal of {} failed ({:?}): {}",
            a.to.appliance,
            e.kind,
            e.message
        ),
        other => bail!("unexpected answer from {}: {other:?}", a.to.appliance),
    }
}
