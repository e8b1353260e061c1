//! Progress on stderr: a bar on a terminal; elsewhere (logs, pipes, supervisors) one JSON
//! object per line, `{"what":"ingest","done":N,"total":N,"unit":"bytes",
//! "bytes_per_second":N,"eta_seconds":N,"finished":B}`, at most one a second while work
//! advances, and always a last one (`"finished":true`) when it ends, however quickly, so
//! that programs see long work advance and every run's final totals without parsing bars.

use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Least time between two JSON progress lines.
const EVERY: Duration = Duration::from_secs(1);

/// A byte-counting progress: a bar with rate and ETA on a terminal, JSON lines elsewhere.
/// [`Progress::finish`] (or dropping it) prints the final state before it returns.
pub struct Progress {
    bar: ProgressBar,
    json: Option<JsonLines>,
}

/// The thread printing JSON lines, and how to stop it.
struct JsonLines {
    /// Set when the work ended; the thread prints the last line and returns.
    ended: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A byte-counting progress: a bar on a terminal, JSON lines on stderr elsewhere.
pub fn bytes_bar(total: u64, what: &str) -> Progress {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("progress template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        return Progress { bar, json: None };
    }
    json_lines(total, what, Box::new(|l: String| eprintln!("{l}")))
}

/// Where JSON lines go (stderr; a vector in tests).
type Sink = Box<dyn Fn(String) + Send>;

/// A hidden bar whose position a thread hands to `out` as JSON lines until the progress
/// ends.
fn json_lines(total: u64, what: &str, out: Sink) -> Progress {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    let ended = Arc::new((Mutex::new(false), Condvar::new()));
    let (b, e, what) = (bar.clone(), ended.clone(), what.to_string());
    let thread = std::thread::spawn(move || {
        let started = Instant::now();
        let mut printed = None;
        let (lock, cv) = &*e;
        let mut is_ended = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !*is_ended {
                is_ended = cv
                    .wait_timeout(is_ended, EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let (done, total) = (b.position(), b.length().unwrap_or(total));
            if *is_ended {
                out(line(&what, done, total, started.elapsed(), true));
                return;
            }
            if printed != Some(done) {
                out(line(&what, done, total, started.elapsed(), false));
                printed = Some(done);
            }
        }
    });
    Progress {
        bar,
        json: Some(JsonLines {
            ended,
            thread: Mutex::new(Some(thread)),
        }),
    }
}

impl Progress {
    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Bytes done so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Sets the total once the command learns it better.
    pub fn set_length(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// The work is complete: the total becomes what was done (an estimate may have been off)
    /// and the final state is printed before this returns.
    pub fn finish(&self) {
        self.bar.set_length(self.bar.position());
        self.end();
    }

    /// Prints the final state once (the bar left drawn on a terminal, the last JSON line
    /// elsewhere) and waits until it is out.
    fn end(&self) {
        match &self.json {
            None => {
                if !self.bar.is_finished() {
                    self.bar.finish();
                    // The bar stays, its line ended: what the command prints next starts
                    // a line of its own.
                    eprintln!();
                }
            }
            Some(j) => {
                let (lock, cv) = &*j.ended;
                *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
                cv.notify_all();
                let thread = j.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(t) = thread {
                    // The thread only prints; its panic would have lost a line, nothing more.
                    let _ = t.join();
                }
            }
        }
    }
}

impl Drop for Progress {
    /// Work that stopped early (an error) still shows where it stopped.
    fn drop(&mut self) {
        self.end();
    }
}

/// One progress line.
fn line(what: &str, done: u64, total: u64, elapsed: Duration, finished: bool) -> String {
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
        "finished": finished,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_what_done_total_and_unit() {
        let l = line("ingest", 50, 200, Duration::from_secs(2), false);
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
        assert_eq!(v["finished"], false);
    }

    fn collected() -> (Arc<Mutex<Vec<String>>>, Sink) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        (lines, Box::new(move |s: String| l.lock().unwrap().push(s)))
    }

    #[test]
    fn work_ending_at_once_still_prints_its_final_line_before_finish_returns() {
        let (lines, out) = collected();
        let p = json_lines(1000, "verify", out);
        p.inc(600);
        p.finish();
        let lines = lines.lock().unwrap();
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(
            (last["done"].as_u64(), last["total"].as_u64()),
            (Some(600), Some(600))
        );
        assert_eq!(last["finished"], true);
        drop(lines);
        drop(p);
    }

    #[test]
    fn dropping_unfinished_work_prints_where_it_stopped_once() {
        let (lines, out) = collected();
        let p = json_lines(1000, "ingest", out);
        p.inc(10);
        drop(p);
        let lines = lines.lock().unwrap();
        let finals: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v["finished"] == true)
            .collect();
        assert_eq!(finals.len(), 1);
        assert_eq!(
            (finals[0]["done"].as_u64(), finals[0]["total"].as_u64()),
            (Some(10), Some(1000))
        );
    }
}
