//! Progress bars on stderr: shown only when stderr is a terminal, so that logs and pipes
//! get the report alone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar with rate and ETA; hidden unless stderr is a terminal.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("progress template is valid")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A byte-counting bar on a terminal; elsewhere one JSON line on stderr every two seconds
/// (`{"progress":WHAT,"bytes":N,"total":N,"bytes_per_second":N,"eta_seconds":N}`) until
/// the bar is finished or dropped, so that logs and supervisors see long work advance.
pub fn bytes_progress(total: u64, what: &str) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        return bytes_bar(total, what);
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    let weak = pb.downgrade();
    let what = what.to_string();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(2));
            let Some(pb) = weak.upgrade() else { break };
            if pb.is_finished() {
                break;
            }
            let done = pb.position();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let eta = if rate > 0.0 {
                total.saturating_sub(done) as f64 / rate
            } else {
                0.0
            };
            eprintln!(
                "{}",
                serde_json::json!({
                    "progress": what,
                    "bytes": done,
                    "total": total,
                    "bytes_per_second": rate.round(),
                    "eta_seconds": eta.round(),
                })
            );
        }
    });
    pb
}
