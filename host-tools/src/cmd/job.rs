//! `odt job new`: a job id, the ingest identity (secret, stays in the job directory) and the
//! job file with its public recipient.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use odt_store::trip::job::{self, Job};

/// `odt job ...`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job directory: job.toml (public) and ingest.key (secret, mode 0600).
    New(NewArgs),
    /// Show a job.
    Show(ShowArgs),
}

/// `odt job new`
#[derive(Debug, Args)]
pub struct NewArgs {
    /// A name people recognise (customer, order number).
    #[arg(long)]
    pub name: String,
    /// Directory to create; must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `odt job show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The job directory (`odt job show DIR`, or `--job DIR`).
    #[arg(
        value_name = "DIR",
        required_unless_present = "job_opt",
        conflicts_with = "job_opt"
    )]
    pub job: Option<PathBuf>,
    /// The job directory, as an option (the same as the DIR argument).
    #[arg(long = "job", id = "job_opt", value_name = "DIR")]
    pub job_opt: Option<PathBuf>,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt job ...`.
pub fn run(c: JobCommand) -> anyhow::Result<i32> {
    match c {
        JobCommand::New(a) => new(a),
        JobCommand::Show(a) => {
            let dir = a.job.or(a.job_opt).expect("clap requires DIR or --job");
            let j = Job::load(&dir)?;
            if a.json {
                crate::output::json(&j)?;
            } else {
                print!("{}", toml_view(&j));
            }
            Ok(0)
        }
    }
}

fn toml_view(j: &Job) -> String {
    let mut s = format!(
        "job {} ({})\n  ingest recipient {}\n",
        j.id, j.name, j.recipient
    );
    match &j.set {
        None => s.push_str("  not provisioned yet\n"),
        Some(set) => {
            s.push_str(&format!(
                "  device set {} ({} device(s), {:?}), seal key {}\n",
                set.set_id,
                set.devices.len(),
                set.cipher,
                set.signing_public
            ));
            for d in &set.devices {
                s.push_str(&format!(
                    "    device {}: {} ({})\n",
                    d.index,
                    d.path,
                    crate::output::bytes(d.size)
                ));
            }
        }
    }
    s
}

fn new(a: NewArgs) -> anyhow::Result<i32> {
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if a.out.exists() {
        let empty = std::fs::read_dir(&a.out)
            .with_context(|| format!("cannot read {}", a.out.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty; choose a new directory for the job",
                a.out.display()
            );
        }
    } else {
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("cannot create {}", a.out.display()))?;
    }
    let mut idb = [0u8; 8];
    odt_store::crypto::keys::random_bytes(&mut idb);
    let id = format!("odt-{}", hex::encode(idb));
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    job::write_secret_file(
        &Job::identity_path(&a.out),
        odt_store::crypto::keys::identity_file_text(&identity).as_bytes(),
    )?;
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let j = Job {
        id,
        name: a.name,
        created_unix,
        recipient,
        set: None,
    };
    j.save(&a.out)?;
    if a.json {
        crate::output::json(&serde_json::json!({
            "job_id": j.id,
            "name": j.name,
            "dir": a.out,
            "recipient": j.recipient,
            "identity_file": Job::identity_path(&a.out),
        }))?;
    } else {
        println!("Created job {} ({}) in {}", j.id, j.name, a.out.display());
        println!("  ingest recipient: {}", j.recipient);
        println!(
            "  ingest identity:  {} (secret, mode 0600: keep it on the ingest station)",
            Job::identity_path(&a.out).display()
        );
        println!(
            "Next: odt provision --job {} --device PATH",
            a.out.display()
        );
    }
    Ok(0)
}
