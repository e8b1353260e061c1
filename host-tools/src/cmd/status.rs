//! `odt status`: state, capacity, bytes and files stored, write rate of an appliance.

use anyhow::bail;
use clap::Args;
use odt_store::trip::control_api::{ControlKey, Op, Response, StatusReport};

use crate::output::bytes;

/// `odt status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub to: crate::control_client::Connect,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt status`.
pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let key = crate::control_client::read_unlock_code(a.to.code_file.as_deref())?
        .map(|c| ControlKey::from_code(&c));
    match crate::control_client::call(&a.to.appliance, Op::Status, key.as_ref())? {
        Response::Status(r) => {
            if a.json {
                crate::output::json(&r)?;
            } else {
                print!("{}", human(&a.to.appliance, &r));
            }
            Ok(0)
        }
        Response::Error(e) => bail!(
            "status of {} failed ({:?}): {}",
            a.to.appliance,
            e.kind,
            e.message
        ),
        other => bail!("unexpected answer from {}: {other:?}", a.to.appliance),
    }
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
    match &r.store {
        None => out.push_str("  Locked: unlock it with `odt unlock` to see its contents.\n"),
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use odt_store::trip::control_api::{State, StoreReport};

    #[test]
    fn human_report() {
        let locked = StatusReport {
            state: State::Locked,
            uptime_secs: 75,
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
            stored_bytes: 2 << 30,
            logical_bytes: 3 << 30,
            files: 7,
            dirs: 2,
            symlinks: 1,
            journal_used_bytes: 1 << 20,
            journal_bytes: 16 << 20,
            written_bytes: 3 << 30,
            write_rate_bytes_per_sec: 100 << 20,
        };
        let t = human(
            "a:1",
            &StatusReport {
                state: State::Unlocked,
                uptime_secs: 7200,
                store: Some(s),
            },
        );
        assert!(t.contains("1.0 GiB free (25%)"), "{t}");
        assert!(t.contains("7 files, 2 directories, 1 symlinks"), "{t}");
        assert!(t.contains("100.0 MiB/s now"), "{t}");
        assert!(t.contains("2h 0m"), "{t}");
    }
}
