//! Progress on stderr: a bar on a terminal; elsewhere (logs, pipes, supervisors) one JSON
//! object per line, `{"what":"ingest","done":N,"total":N,"unit":"bytes",
//! "bytes_per_second":N,"eta_seconds":N}`, at most one a second while work advances and a
//! last one when it ends, so that programs see long work advance without parsing bars.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Least time between two JSON progress lines.
const EVERY: Duration = Duration::from_secs(1);
/// How often the reporter looks at the bar (bounds the delay of the last line).
const POLL: Duration = Duration::from_millis(200);

/// A byte-counting progress: a bar with rate and ETA on a terminal, JSON lines elsewhere.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("progress template is valid")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        return pb;
    }
    json_lines(total, what)
}

/// A hidden bar whose position a thread prints as JSON lines on stderr until the bar is
/// finished or dropped.
fn json_lines(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    let weak = pb.downgrade();
    let what = what.to_string();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last_line = started;
        let (mut done, mut total) = (0, total);
        let mut printed = None;
        loop {
            std::thread::sleep(POLL);
            let ended = match weak.upgrade() {
                Some(pb) => {
                    // Commands may learn the real total on the way (`set_length`).
                    (done, total) = (pb.position(), pb.length().unwrap_or(total));
                    pb.is_finished()
                }
                None => true,
            };
            let due = last_line.elapsed() >= EVERY && printed != Some(done);
            if due || (ended && printed != Some(done)) {
                eprintln!("{}", line(&what, done, total, started.elapsed()));
                printed = Some(done);
                last_line = Instant::now();
            }
            if ended {
                break;
            }
        }
    });
    pb
}

/// One progress line.
fn line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let eta = if rate > 0.0 {
        total.saturating_sub(done) as f64 / rate
    } else {
        0.0
    };
    serde_json::json!({
        "what": what,
        "done": done,
        "total": total,
        "unit": "bytes",
        "bytes_per_second": rate.round(),
        "eta_seconds": eta.round(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_what_done_total_and_unit() {
        let l = line("ingest", 50, 200, Duration::from_secs(2));
        assert!(!l.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["what"], "ingest");
        assert_eq!(
            (v["done"].as_u64(), v["total"].as_u64()),
            (Some(50), Some(200))
        );
        assert_eq!(v["unit"], "bytes");
        assert_eq!(v["bytes_per_second"], 25.0);
        assert_eq!(v["eta_seconds"], 6.0);
    }
}
