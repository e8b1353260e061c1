//! `odt-appliance`: the firmware binary. Thin: parses the command line, sets up logging and
//! hands off to [`odt_appliance::serve`].

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use odt_appliance::config::{FileConfig, Flags, Settings};

/// The ODT appliance firmware: exports the bundle store over NFSv3, with an HTTPS control
/// API and web page for unlock, status, the seal and the custody log.
#[derive(Debug, Parser)]
#[command(name = "odt-appliance", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the devices' store over NFSv3 (locked until `odt unlock`).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Data devices of one set (block devices or image files, any order).
    #[arg(long = "device", num_args = 1..)]
    devices: Vec<PathBuf>,
    /// NFSv3 and MOUNT service address, e.g. 0.0.0.0:2049.
    #[arg(long)]
    listen: Option<String>,
    /// HTTPS control API and web page address (default 127.0.0.1:7049; on a customer's
    /// network, the address of the segment they administer from, not 0.0.0.0). The
    /// certificate is the one `odt provision` made; clients pin its fingerprint.
    #[arg(long)]
    control: Option<String>,
    /// TOML file with the same settings; flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NFS clients allowed to connect, as CIDR blocks (repeatable; default: everyone).
    #[arg(long, num_args = 1..)]
    allow: Vec<String>,
    /// NFS requests answered at a time, over all clients (bounds memory; default 32).
    #[arg(long)]
    max_inflight: Option<usize>,
    /// NFS connections kept (default 4096); beyond it, a new client closes the connection
    /// idle the longest.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Write the bound addresses as JSON to this file once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Accept test-only control requests (test-seal). Never on a shipped appliance.
    #[arg(long, hide = true)]
    test_hooks: bool,
    /// Leave deleted and overwritten data in place until a write needs its room (tests that
    /// look at the space dead records hold). Never on a shipped appliance.
    #[arg(long, hide = true)]
    no_background_cleaning: bool,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let settings = Settings::resolve(
        file,
        Flags {
            devices: a.devices,
            listen: a.listen,
            control: a.control,
            allow: a.allow,
            max_inflight: a.max_inflight,
            max_connections: a.max_connections,
            test_hooks: a.test_hooks,
            ready_file: a.ready_file,
            background_cleaning: !a.no_background_cleaning,
        },
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("odt-appliance")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(odt_appliance::serve::run(settings))?;
    Ok(())
}

/// Bounds what glibc keeps of freed request buffers. With its defaults (up to 8 arenas per
/// core, an mmap threshold that rises after large frees) copying 2 GiB with nfs-cp took
/// the appliance past 450 MiB RSS. Two arenas bound that; a fixed 4 MiB mmap threshold
/// keeps the 1 MiB buffers of every WRITE in the heap (a 256 KiB threshold bounded RSS a
/// little lower but mapped and zeroed every buffer anew: 17 instead of 10 CPU-seconds for
/// the same copy). Measured: 177 MiB peak for 2 GiB, 198 MiB in the e2e memory test.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn bound_malloc() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Freed request and record buffers stay mapped for the next ones instead of being
        // trimmed and faulted in (and zeroed) again: 7 % of the CPU time copying a large
        // file went to those page faults.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc() {}

/// Raises the open-file limit to the hard limit: every NFS connection is a descriptor, and
/// the server keeps thousands of idle ones rather than turning clients away (the usual
/// soft limit is 1024).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn raise_fd_limit() {}

fn main() {
    bound_malloc();
    raise_fd_limit();
    let cli = Cli::parse();
    init_logging();
    let r = match cli.command {
        Command::Serve(a) => serve(a),
    };
    if let Err(e) = r {
        let line = odt_store::error::one_line(e.as_ref());
        tracing::error!("{line}");
        eprintln!("odt-appliance: error: {line}");
        std::process::exit(1);
    }
}
