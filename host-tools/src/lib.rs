//! The `odt` command line: one module per command under [`cmd`].

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod cmd;
pub mod control;
pub mod erase;
pub mod exit;
pub mod import;
pub mod ingest;
pub mod job_devices;
pub mod output;
pub mod progress;
pub mod verify;

/// Offline data transfer: provision, unlock, seal, check, verify, ingest and erase ODT
/// appliances.
///
/// Provider: `odt job new`, `odt provision`. Customer: `odt unlock`, `odt status`,
/// `odt seal`, `odt bom`. Courier/dock: `odt seal-check`, `odt bom --device`. Ingest
/// station: `odt verify`, `odt ingest`, `odt import`, `odt erase`.
#[derive(Debug, Parser)]
#[command(name = "odt", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    // A field's doc comment would become clap's help text; the subcommands have their own.
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Jobs: one customer order, one set of devices.
    #[command(subcommand)]
    Job(cmd::job::JobCommand),
    /// Write superblocks and fresh keys on the devices of a job; prints the unlock code.
    Provision(cmd::provision::ProvisionArgs),
    /// Check every segment and record of a job's devices; with --deep also every record's
    /// tag and hash, naming each damaged file and byte range. Exit 0 only if intact.
    Verify(cmd::verify::VerifyArgs),
    /// Decrypt, verify and write the VM bundles into a datastore directory; resumable,
    /// parallel, quarantines damaged files. Exit 0 only if every file was written.
    Ingest(cmd::ingest::IngestArgs),
    /// Import the VM bundles of a sealed device set into vCenter, streamed from the devices
    /// and verified on the way (one VM per bundle); resumable. Exit 0 only if every bundle
    /// was imported or skipped.
    Import(cmd::import::ImportArgs),
    /// Crypto-erase a device set after its ingest (refuses a set not fully ingested unless
    /// --force); --overwrite also zeros the devices.
    Erase(cmd::erase::EraseArgs),
    /// Check every VM bundle on an appliance (references, sizes, .mf digests), then seal it:
    /// prints the seal code. Refuses if a bundle has errors, unless --force.
    Seal(cmd::seal::SealArgs),
    /// Check every VM bundle on an appliance without sealing (exit 3 if any has errors).
    ///
    /// Uses the session `odt unlock` left, else asks for the unlock code.
    Bundles(cmd::seal::BundlesArgs),
    /// The courier's check: seal signature, seal code, every device present, nothing written
    /// after the seal. No data key needed; seconds, whatever the data size. Exit 0 only if
    /// intact.
    SealCheck(cmd::seal_check::SealCheckArgs),
    /// Unlock an appliance with the customer's unlock code (typed without echo, stdin, or
    /// --code-file), over HTTPS with the appliance's certificate pinned; leaves a session
    /// so that status, bundles and seal need no code.
    Unlock(cmd::unlock::UnlockArgs),
    /// State, capacity, bytes and files stored, write rate of an appliance.
    ///
    /// Without a session or code it shows the public fields: state, certificate
    /// fingerprint, and the seal code and time once sealed.
    Status(cmd::status::StatusArgs),
    /// The bill of materials of a sealed appliance or device set: every file's path, size,
    /// mode, mtime and BLAKE3 (equal to `b3sum`) as the seal covers them, and the `.mf`
    /// digest of VM bundle members, as CSV or JSON.
    ///
    /// From the appliance (--appliance): uses the session `odt unlock` left, else asks for
    /// the unlock code (the seal ends sessions: after `odt seal`, give the code again or use
    /// --code-file). From the sealed devices (--device ... --job DIR): with the job's
    /// ingest identity, after checking the seal.
    Bom(cmd::bom::BomArgs),
    /// Shell completions for bash, zsh, fish, elvish or powershell, on stdout.
    Completions(cmd::completions::CompletionsArgs),
    /// Manual pages: one roff page per command (odt.1, odt-seal.1, odt-job-new.1, ...).
    Man(cmd::completions::ManArgs),
}

impl Command {
    /// Whether the command line asked for `--json` (so a failure is printed as JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Job(cmd::job::JobCommand::New(a)) => a.json,
            Command::Job(cmd::job::JobCommand::Show(a)) => a.json,
            Command::Provision(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Ingest(a) => a.json,
            Command::Import(a) => a.json,
            Command::Erase(a) => a.json,
            Command::Seal(a) => a.json,
            Command::Bundles(a) => a.json,
            Command::SealCheck(a) => a.json,
            Command::Unlock(a) => a.json,
            Command::Status(a) => a.json,
            Command::Bom(a) => a.json,
            Command::Completions(_) | Command::Man(_) => false,
        }
    }
}

/// The `odt` command line as clap sees it, with the exit-code table after every
/// command's `--help` (for parsing, completions and manual pages alike).
pub fn cli_command() -> clap::Command {
    fn with_exit_codes(c: clap::Command) -> clap::Command {
        c.after_help(exit::EXIT_CODES)
            .mut_subcommands(with_exit_codes)
    }
    with_exit_codes(Cli::command())
}

/// Parses the process's arguments with [`cli_command`].
pub fn parse_args() -> Result<Cli, clap::Error> {
    let m = cli_command().try_get_matches()?;
    Cli::from_arg_matches(&m)
}

/// Logging to stderr; `RUST_LOG` overrides the level picked by `-v`.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Job(c) => cmd::job::run(c),
        Command::Provision(a) => cmd::provision::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Ingest(a) => cmd::ingest::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Erase(a) => cmd::erase::run(a),
        Command::Seal(a) => cmd::seal::run_seal(a),
        Command::Bundles(a) => cmd::seal::run_bundles(a),
        Command::SealCheck(a) => cmd::seal_check::run(a),
        Command::Unlock(a) => cmd::unlock::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Bom(a) => cmd::bom::run(a),
        Command::Completions(a) => cmd::completions::run_completions(a),
        Command::Man(a) => cmd::completions::run_man(a),
    }
}
