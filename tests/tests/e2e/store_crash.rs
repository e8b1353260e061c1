//! Crash safety of the store: a writer process is SIGKILLed at random moments; on reopen
//! every acknowledged write is intact, nothing torn is served, and the store keeps working.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use odt_store::Store;
use odt_store::trip::provision::Options;
use odt_test_support::crash::{self as protocol, Event};
use odt_test_support::fixture::Fixture;
use rand::{Rng, SeedableRng};

const TRIALS: usize = 24;

fn provision_trial(devices: usize) -> Fixture {
    Fixture::with_options(
        devices,
        512 << 20,
        Options {
            segment_size: 4 << 20,
            ..Options::default()
        },
    )
}

/// Runs the writer, kills it after `after`, returns every line it printed.
fn run_and_kill(t: &Fixture, after: Duration) -> Vec<String> {
    run_and_kill_with(t, after, false)
}

/// As [`run_and_kill`]; `cleaner`: the store's background cleaner runs in the writer too.
fn run_and_kill_with(t: &Fixture, after: Duration, cleaner: bool) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odt-crash-writer"))
        .env("ODT_CRASH_CLEANER", if cleaner { "1" } else { "0" })
        .arg(t.code_file())
        .args(&t.paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    // Wait for the writer to be running (or to die trying) before the clock starts.
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
        let ready = Event::parse(&l) == Some(Event::Ready);
        lines.push(l);
        if ready {
            break;
        }
    }
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(deadline - Instant::now()) {
            lines.push(l);
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(start.elapsed() < Duration::from_secs(60));
    lines
}

type Model = BTreeMap<(u64, u64), Vec<u8>>;

fn apply(model: &mut Model, t: u64, seq: u64) {
    let (file, offset, len) = protocol::plan(t, seq);
    let data = protocol::data(t, seq, len);
    let f = model.entry((t, file)).or_default();
    let end = offset as usize + len;
    if f.len() < end {
        f.resize(end, 0);
    }
    f[offset as usize..end].copy_from_slice(&data);
}

fn content(s: &Store, t: u64, file: u64) -> Vec<u8> {
    match s.lookup(s.root(), protocol::file_name(t, file).as_bytes()) {
        Err(_) => Vec::new(),
        Ok(id) => {
            let size = s.getattr(id).unwrap().size;
            s.read(id, 0, size as u32).unwrap().0
        }
    }
}

/// What one writer run got acknowledged: per thread, the number of acknowledged writes and
/// the write that had begun but not returned when the process died.
fn parse(lines: &[String]) -> BTreeMap<u64, (u64, Option<u64>)> {
    let mut out: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
    for l in lines {
        match Event::parse(l) {
            Some(Event::Begin { t, seq, .. }) => {
                out.entry(t).or_default().1 = Some(seq);
            }
            Some(Event::Ack { t, seq }) => {
                let e = out.entry(t).or_default();
                assert_eq!(e.0, seq, "acks of thread {t} out of order");
                e.0 += 1;
            }
            Some(Event::Ready) | None => {}
        }
    }
    for e in out.values_mut() {
        e.1 = e.1.filter(|p| *p == e.0);
    }
    out
}

/// Checks every file against the acknowledged writes of successive runs (each restarting its
/// plan at 0 on top of the last): each run's in-flight write may or may not be there, but
/// only whole. Returns the number of acknowledged writes of the last run.
fn check(s: &Store, runs: &[Vec<String>]) -> usize {
    let parsed: Vec<_> = runs.iter().map(|r| parse(r)).collect();
    for t in 0..protocol::THREADS {
        let mut candidates = vec![Model::new()];
        for p in &parsed {
            let (acked, pending) = p.get(&t).copied().unwrap_or((0, None));
            let mut next = Vec::new();
            for m in candidates {
                let mut m = m;
                for seq in 0..acked {
                    apply(&mut m, t, seq);
                }
                if let Some(seq) = pending {
                    let mut with = m.clone();
                    apply(&mut with, t, seq);
                    next.push(with);
                }
                next.push(m);
            }
            candidates = next;
        }
        for f in 0..protocol::FILES {
            let got = content(s, t, f);
            assert!(
                candidates
                    .iter()
                    .any(|m| got == m.get(&(t, f)).cloned().unwrap_or_default()),
                "thread {t} file {f}: {} bytes on disk match no state the acknowledged writes allow",
                got.len()
            );
        }
    }
    parsed
        .last()
        .map(|p| p.values().map(|e| e.0 as usize).sum())
        .unwrap_or(0)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("ODT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2026),
    );
    let mut total_acks = 0;
    for trial in 0..TRIALS {
        let t = provision_trial(1 + trial % 2);
        // Several kills per device set: each restart recovers the previous crash first.
        let mut runs: Vec<Vec<String>> = Vec::new();
        for round in 0..2 {
            let after = Duration::from_millis(rng.random_range(5..900));
            let lines = run_and_kill(&t, after);
            assert!(
                lines.iter().any(|l| Event::parse(l) == Some(Event::Ready)),
                "trial {trial} round {round}: writer did not start: {lines:?}"
            );
            runs.push(lines);
            let s = t.open();
            total_acks += check(&s, &runs);
        }
        let s = t.open();
        let sb = s.superblock().clone();
        for (i, dev) in s.devices().iter().enumerate() {
            let sbi = if i == 0 {
                sb.clone()
            } else {
                odt_store::format::superblock::Superblock::read(dev).unwrap()
            };
            let (_, problems) = odt_store::trip::verify::check_log(dev, &sbi, None, &mut |_| {});
            assert!(
                problems.is_empty(),
                "trial {trial}: log damaged after recovery: {problems:?}"
            );
        }
        drop(s);
        drop(t);
    }
    assert!(
        total_acks > TRIALS,
        "the writers acknowledged too little to test anything"
    );
}

/// Issue 17: the writers overwrite their files over and over with the background cleaner
/// running, so segments are cleaned and reused all the time; SIGKILL at random moments of
/// that loses no acknowledged byte, serves nothing torn, and leaves a log both checks pass.
#[test]
fn sigkill_while_segments_are_cleaned_loses_nothing_acknowledged() {
    const CLEAN_TRIALS: usize = 12;
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("ODT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1717),
    );
    let mut cleaned_trials = 0;
    for trial in 0..CLEAN_TRIALS {
        // 4 MiB segments, about 160 MiB for records: the writers' nine files take up to
        // about 63 MiB live, and every overwrite leaves dead records behind for the
        // background cleaner and for writes that would not fit.
        let devices = 1 + trial % 2;
        let t = Fixture::with_options(
            devices,
            (160 << 20) / devices as u64 + (20 << 20),
            Options {
                segment_size: 4 << 20,
                journal_len: Some(16 << 20),
                ..Options::default()
            },
        );
        let mut runs: Vec<Vec<String>> = Vec::new();
        for round in 0..2 {
            let after = Duration::from_millis(rng.random_range(300..2500));
            let lines = run_and_kill_with(&t, after, true);
            assert!(
                lines.iter().any(|l| Event::parse(l) == Some(Event::Ready)),
                "trial {trial} round {round}: writer did not start: {lines:?}"
            );
            runs.push(lines);
            let s = t.open();
            check(&s, &runs);
        }
        let s = t.open();
        if s.stats().segments_cleaned > 0 {
            cleaned_trials += 1;
        }
        for (dev, sb) in s.devices().iter().zip(s.superblocks()) {
            let (_, problems) = odt_store::trip::verify::check_log(dev, sb, None, &mut |_| {});
            assert!(
                problems.is_empty(),
                "trial {trial}: log damaged after recovery: {problems:?}"
            );
        }
        let damage = odt_store::trip::verify::check_files(&s, &mut |_| {}).unwrap();
        assert!(damage.is_empty(), "trial {trial}: {damage:?}");
    }
    assert!(
        cleaned_trials >= 10,
        "segments were cleaned in only {cleaned_trials} of {CLEAN_TRIALS} trials"
    );
}
