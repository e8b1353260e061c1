//! `odt status`: state, capacity, bytes and files stored, write rate of an appliance; the
//! seal code and time once sealed.

use clap::Args;
use odt_store::trip::control_api::{State, StatusReport};

use crate::control::error::{CtlError, Kind, report};
use crate::control::{Client, Connect};
use crate::output::bytes;

/// `odt status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    // Private: a `///` here would become help text; the options document themselves.
    to: Connect,
    /// Print the report as JSON (on failure: {"error": {"kind", "message"}}).
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt status`.
pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    match status(&a) {
        Ok(()) => Ok(0),
        Err(e) => Ok(report(&e, a.json)),
    }
}

fn status(a: &StatusArgs) -> Result<(), CtlError> {
    let client = Client::connect(&a.to)?;
    let ctx = |e: CtlError| e.context(&format!("status of {}", client.addr()));
    // The public fields first: a locked appliance needs no code, and a sealed one shows its
    // seal code to anyone.
    let public = client.status(None).map_err(ctx)?;
    let r = if public.state == State::Locked {
        public
    } else {
        match client.with_token(true, "status", |t| client.status(Some(t))) {
            Ok(r) => r,
            Err(e) if e.kind == Kind::Unauthenticated => public,
            Err(e) => return Err(ctx(e)),
        }
    };
    if a.json {
        crate::output::json(&r).map_err(|e| CtlError::new(Kind::Failed, e.to_string()))?;
    } else {
        print!("{}", human(client.addr(), &r));
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The report for people.
fn human(addr: &str, r: &StatusReport) -> String {
    let mut out = format!("Appliance {addr}: {}\n", r.state);
    if let Some(s) = &r.seal {
        out.push_str(&format!(
            "  Seal code: {}  (sealed {}, {} files, {})\n",
            s.seal_code,
            crate::output::unix_time(s.sealed_unix),
            s.files,
            bytes(s.bytes)
        ));
    }
    match &r.store {
        None if r.state == State::Locked => {
            out.push_str("  Locked: unlock it with `odt unlock` to see its contents.\n")
        }
        None => out.push_str(
            "  Not signed in: `odt unlock` (or --code-file) shows capacity and contents.\n",
        ),
        Some(s) => {
            let pct = |n: u64| {
                if s.capacity_bytes == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / s.capacity_bytes as f64
                }
            };
            out.push_str(&format!(
                "  Job:       {} ({}), device set {}, {} device(s)\n",
                s.job_id, s.job_name, s.set_id, s.devices
            ));
            out.push_str(&format!(
                "  Capacity:  {} total, {} free ({:.0}%)\n",
                bytes(s.capacity_bytes),
                bytes(s.free_bytes),
                pct(s.free_bytes)
            ));
            out.push_str(&format!(
                "  Deleted:   {} held by deleted or overwritten data ({:.0}%), free again once cleaned\n             (data in the segment being written: once it is full)\n",
                bytes(s.dead_bytes),
                pct(s.dead_bytes)
            ));
            out.push_str(&format!(
                "  Stored:    {} of files in {} on the devices\n",
                bytes(s.logical_bytes),
                bytes(s.stored_bytes)
            ));
            out.push_str(&format!(
                "  Entries:   {} files, {} directories, {} symlinks\n",
                s.files, s.dirs, s.symlinks
            ));
            out.push_str(&format!(
                "  Writes:    {} since start, {}/s now\n",
                bytes(s.written_bytes),
                bytes(s.write_rate_bytes_per_sec)
            ));
            out.push_str(&format!(
                "  Journal:   {} of {} used\n",
                bytes(s.journal_used_bytes),
                bytes(s.journal_bytes)
            ));
        }
    }
    out.push_str(&format!("  Uptime:    {}\n", duration(r.uptime_secs)));
    out.push_str(&format!("  Certificate SHA-256: {}\n", r.fingerprint));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use odt_store::crypto::tls::Fingerprint;
    use odt_store::trip::control_api::{SealInfo, StoreReport};

    #[test]
    fn human_report() {
        let locked = StatusReport {
            state: State::Locked,
            uptime_secs: 75,
            fingerprint: Fingerprint([0xab; 32]),
            seal: None,
            signed_in: false,
            store: None,
        };
        let t = human("a:1", &locked);
        assert!(t.starts_with("Appliance a:1: locked\n"), "{t}");
        assert!(t.contains("1m 15s"), "{t}");
        let s = StoreReport {
            job_id: "J".into(),
            job_name: "N".into(),
            set_id: "00ff".into(),
            devices: 1,
            capacity_bytes: 4 << 30,
            free_bytes: 1 << 30,
            dead_bytes: 256 << 20,
            stored_bytes: 2 << 30,
            logical_bytes: 3 << 30,
            files: 7,
            dirs: 2,
            symlinks: 1,
            journal_used_bytes: 1 << 20,
            journal_bytes: 16 << 20,
            segments_cleaned: 3,
            journal_compactions: 1,
            written_bytes: 3 << 30,
            write_rate_bytes_per_sec: 100 << 20,
        };
        let t = human(
            "a:1",
            &StatusReport {
                state: State::Sealed,
                uptime_secs: 7200,
                fingerprint: Fingerprint([0xab; 32]),
                seal: Some(SealInfo {
                    seal_code: "7K2Q-DM9X-TA04".into(),
                    sealed_unix: 0,
                    files: 7,
                    bytes: 3 << 30,
                }),
                signed_in: true,
                store: Some(s),
            },
        );
        assert!(t.contains("1.0 GiB free (25%)"), "{t}");
        assert!(
            t.contains("256.0 MiB held by deleted or overwritten data (6%)"),
            "{t}"
        );
        assert!(t.contains("7 files, 2 directories, 1 symlinks"), "{t}");
        assert!(t.contains("100.0 MiB/s now"), "{t}");
        assert!(t.contains("2h 0m"), "{t}");
        assert!(
            t.contains("Seal code: 7K2Q-DM9X-TA04  (sealed 1970-01-01 00:00:00 UTC"),
            "{t}"
        );
        assert!(t.contains("AB:AB:AB"), "{t}");
    }
}
