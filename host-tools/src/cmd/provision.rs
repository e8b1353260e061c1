//! `odt provision`: superblocks and fresh keys on the devices of a job.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use odt_store::crypto::cipher::Cipher;
use odt_store::trip::job::{Job, JobDevice, JobSet};
use odt_store::trip::provision::{self, Options};

/// `odt provision`
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The job directory made by `odt job new`.
    #[arg(long)]
    pub job: PathBuf,
    /// Data devices: block devices or disk-image files (striped in the order given).
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// Create missing image files with this size (e.g. 64G; sparse).
    #[arg(long, value_parser = crate::output::parse_size)]
    pub size: Option<u64>,
    /// AEAD for data and metadata: aes-256-gcm (default) or chacha20-poly1305.
    #[arg(long, default_value = "aes-256-gcm")]
    pub cipher: Cipher,
    /// Segment size (multiple of 1 MiB, at least 4 MiB).
    #[arg(long, default_value = "64M", value_parser = crate::output::parse_size)]
    pub segment_size: u64,
    /// Metadata journal size (default: 1/64 of the first device, 16 MiB to 4 GiB).
    #[arg(long, value_parser = crate::output::parse_size)]
    pub journal_size: Option<u64>,
    /// Provision although the job already has devices (their old keys are lost), or a
    /// device is not blank: it holds an ODT set (of any job, sealed or not) or other data,
    /// which is destroyed. Without it such devices are refused before anything is written
    /// (exit 8); blank devices and devices erased by `odt erase` need no --force.
    #[arg(long)]
    pub force: bool,
    /// Write the unlock sheet to this file (mode 0600) as well as printing it: the unlock
    /// code, and the appliance's certificate fingerprint on a comment line (`odt unlock
    /// --code-file FILE` pins it).
    #[arg(long)]
    pub code_file: Option<PathBuf>,
    /// Print the result as JSON (includes the unlock code).
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt provision`.
pub fn run(a: ProvisionArgs) -> anyhow::Result<i32> {
    let mut job = Job::load(&a.job).with_context(|| {
        format!(
            "{} is not a job directory (make one with `odt job new`)",
            a.job.display()
        )
    })?;
    if job.set.is_some() && !a.force {
        let msg = format!(
            "job {} already has provisioned devices; pass --force to provision new ones \
             (the old set can then no longer be unlocked with this job)",
            job.id
        );
        return Err(crate::exit::Refusal::new(crate::exit::Kind::Conflict, msg).into());
    }
    // A folder given by mistake (a typo, a missing file name) is named as such, not as
    // a read error at byte 0.
    if let Some(d) = a.devices.iter().find(|d| d.is_dir()) {
        let msg = format!(
            "{} is a directory, not a device: give a block device or a disk-image file \
             (created with --size if it does not exist)",
            d.display()
        );
        return Err(crate::exit::Refusal::new(crate::exit::Kind::Device, msg).into());
    }
    let recipient = job.recipient()?;
    let opts = Options {
        cipher: a.cipher,
        segment_size: a.segment_size,
        journal_len: a.journal_size,
        create_size: a.size,
        overwrite: a.force,
    };
    // A device that is not blank is refused (TripError::NotBlank: exit 8, kind `conflict`).
    let p = provision::provision(&a.devices, &job.id, &job.name, &recipient, &opts)?;
    let sb0 = &p.superblocks[0];
    job.set = Some(JobSet {
        set_id: format!("{:016x}", sb0.set_id),
        signing_public: hex::encode(p.signing_public),
        cipher: sb0.cipher,
        provisioned_unix: sb0.created_unix,
        devices: a
            .devices
            .iter()
            .zip(&p.superblocks)
            .map(|(path, sb)| JobDevice {
                index: sb.device_index + 1,
                path: std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string(),
                size: sb.device_size,
            })
            .collect(),
        tls_fingerprint: Some(p.tls.fingerprint()),
        tls_spki_pin: Some(p.tls.spki_pin()),
    });
    job.save(&a.job)?;
    if let Some(f) = &a.code_file {
        let sheet = crate::control::code_file_text(&job.id, &job.name, &p.unlock_code, &p.tls);
        odt_store::trip::job::write_secret_file(f, sheet.as_bytes())?;
    }
    let capacity: u64 = p
        .superblocks
        .iter()
        .map(|sb| sb.segment_count() * sb.segment_size)
        .sum();
    if a.json {
        crate::output::json(&serde_json::json!({
            "job_id": job.id,
            "set_id": format!("{:016x}", sb0.set_id),
            "devices": a.devices,
            "capacity_bytes": capacity,
            "cipher": sb0.cipher,
            "signing_public": hex::encode(p.signing_public),
            "unlock_code": p.unlock_code.expose(),
            "tls_fingerprint": p.tls.fingerprint(),
            "tls_spki_pin": p.tls.spki_pin(),
        }))?;
    } else {
        println!(
            "Provisioned {} device(s) for job {} ({}): {} for data, {:?}",
            p.superblocks.len(),
            job.id,
            job.name,
            crate::output::bytes(capacity),
            sb0.cipher
        );
        println!();
        println!("  Customer unlock code: {}", p.unlock_code.expose());
        println!();
        println!("  Appliance certificate (SHA-256):");
        println!("    {}", p.tls.fingerprint());
        println!(
            "  Public-key pin (curl --pinnedpubkey sha256//PIN): {}",
            p.tls.spki_pin()
        );
        println!();
        println!(
            "Give the customer the code and the fingerprint: `odt unlock --fingerprint FP` \
             refuses any other certificate, and the browser shows this fingerprint for the \
             page at https://APPLIANCE:7049/."
        );
        println!("It is shown only this once: send it to the customer by a separate channel.");
        if !std::io::stdout().is_terminal() {
            eprintln!("odt: note: the unlock code was printed to a non-terminal output");
        }
    }
    Ok(0)
}
