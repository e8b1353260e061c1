//! Crash safety of the store: a writer process is SIGKILLed at random moments; on reopen
//! every acknowledged write is intact, nothing torn is served, and the store keeps working.

#[path = "../src/crash_protocol.rs"]
mod protocol;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use odt_store::provision::{self, Options};
use odt_store::{Access, Locked, Store};
use rand::{Rng, SeedableRng};

const TRIALS: usize = 24;

struct Trial {
    dir: tempfile::TempDir,
    devices: Vec<PathBuf>,
    code_file: PathBuf,
}

fn provision_trial(devices: usize) -> Trial {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..devices).map(|i| dir.path().join(format!("d{i}.img"))).collect();
    let id = age::x25519::Identity::generate();
    let opts = Options {
        segment_size: 4 << 20,
        create_size: Some(512 << 20),
        ..Options::default()
    };
    let p = provision::provision(&paths, "crash", "crash", &id.to_public(), &opts).unwrap();
    let code_file = dir.path().join("code");
    std::fs::write(&code_file, p.unlock_code.expose()).unwrap();
    Trial {
        dir,
        devices: paths,
        code_file,
    }
}

fn open(t: &Trial) -> Store {
    let code = std::fs::read_to_string(&t.code_file).unwrap().parse().unwrap();
    let l = Locked::open(&t.devices, Access::ReadWrite).unwrap();
    let s = l.secrets_from_code(&code).unwrap();
    l.unlock(s, Access::ReadWrite).unwrap()
}

/// Runs the writer, kills it after `after`, returns every line it printed.
fn run_and_kill(t: &Trial, after: Duration) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odt-crash-writer"))
        .arg(&t.code_file)
        .args(&t.devices)
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
        let ready = l == "ready";
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

/// Checks every file against the acknowledged writes; the one write per thread that had
/// begun but not been acknowledged may or may not be there, but only whole.
fn check(s: &Store, lines: &[String]) -> usize {
    let mut acked: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut begun: BTreeMap<u64, u64> = BTreeMap::new();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["begin", t, seq, ..] => {
                begun.insert(t.parse().unwrap(), seq.parse().unwrap());
            }
            ["ack", t, seq] => acked
                .entry(t.parse().unwrap())
                .or_default()
                .push(seq.parse().unwrap()),
            _ => {}
        }
    }
    let mut n_acked = 0;
    for t in 0..protocol::THREADS {
        let seqs = acked.get(&t).cloned().unwrap_or_default();
        n_acked += seqs.len();
        for (i, s) in seqs.iter().enumerate() {
            assert_eq!(*s, i as u64, "acks of thread {t} out of order");
        }
        let mut model = Model::new();
        for s in &seqs {
            apply(&mut model, t, *s);
        }
        let pending = begun.get(&t).copied().filter(|b| *b as usize == seqs.len());
        let mut with_pending = model.clone();
        if let Some(p) = pending {
            apply(&mut with_pending, t, p);
        }
        for f in 0..protocol::FILES {
            let got = content(s, t, f);
            let a = model.get(&(t, f)).cloned().unwrap_or_default();
            let b = with_pending.get(&(t, f)).cloned().unwrap_or_default();
            assert!(
                got == a || got == b,
                "thread {t} file {f}: {} bytes on disk match neither the {} acknowledged bytes \
                 nor those plus the in-flight write",
                got.len(),
                a.len()
            );
        }
    }
    n_acked
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("ODT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026),
    );
    let mut total_acks = 0;
    for trial in 0..TRIALS {
        let t = provision_trial(1 + trial % 2);
        // Several kills per device set: each restart recovers the previous crash first.
        let mut lines = Vec::new();
        for round in 0..2 {
            let after = Duration::from_millis(rng.random_range(5..900));
            let more = run_and_kill(&t, after);
            assert!(
                more.iter().any(|l| l == "ready"),
                "trial {trial} round {round}: writer did not start: {more:?}"
            );
            // Sequence numbers restart per run; keep only the last run's lines on top of a
            // snapshot check of the previous one.
            if round == 0 {
                let s = open(&t);
                total_acks += check(&s, &more);
                drop(s);
                lines = more;
            } else {
                // The second run rewrote from seq 0 on top of the first run's files: its acks
                // overwrite the same plan, so the first run's bytes may show through only where
                // the second run has not written yet. Check the union model instead.
                let mut all = lines.clone();
                all.retain(|l| !l.starts_with("begin"));
                let s = open(&t);
                total_acks += check_two_runs(&s, &lines, &more);
                drop(s);
            }
        }
        let s = open(&t);
        let sb = s.superblock().clone();
        for (i, dev) in s.devices().iter().enumerate() {
            let sbi = if i == 0 { sb.clone() } else { odt_store::superblock::Superblock::read(dev).unwrap() };
            let (_, problems) = odt_store::verify::check_log(dev, &sbi, None, &mut |_| {});
            assert!(problems.is_empty(), "trial {trial}: log damaged after recovery: {problems:?}");
        }
        drop(s);
        drop(t.dir);
    }
    assert!(total_acks > TRIALS, "the writers acknowledged too little to test anything");
}

/// Two runs on the same files: the model is run 1's acks, then run 2's acks; each run's
/// in-flight write may or may not be there.
fn check_two_runs(s: &Store, run1: &[String], run2: &[String]) -> usize {
    let parse = |lines: &[String]| {
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut begun: BTreeMap<u64, u64> = BTreeMap::new();
        for l in lines {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["begin", t, seq, ..] => {
                    begun.insert(t.parse().unwrap(), seq.parse().unwrap());
                }
                ["ack", t, _] => *acked.entry(t.parse().unwrap()).or_default() += 1,
                _ => {}
            }
        }
        (acked, begun)
    };
    let (a1, b1) = parse(run1);
    let (a2, b2) = parse(run2);
    let mut n = 0;
    for t in 0..protocol::THREADS {
        let n1 = a1.get(&t).copied().unwrap_or(0);
        let n2 = a2.get(&t).copied().unwrap_or(0);
        n += n2 as usize;
        let p1 = b1.get(&t).copied().filter(|b| *b == n1);
        let p2 = b2.get(&t).copied().filter(|b| *b == n2);
        let mut candidates = Vec::new();
        for with1 in [false, true] {
            if with1 && p1.is_none() {
                continue;
            }
            for with2 in [false, true] {
                if with2 && p2.is_none() {
                    continue;
                }
                let mut m = Model::new();
                for s in 0..n1 {
                    apply(&mut m, t, s);
                }
                if with1 {
                    apply(&mut m, t, n1);
                }
                for s in 0..n2 {
                    apply(&mut m, t, s);
                }
                if with2 {
                    apply(&mut m, t, n2);
                }
                candidates.push(m);
            }
        }
        for f in 0..protocol::FILES {
            let got = content(s, t, f);
            assert!(
                candidates
                    .iter()
                    .any(|m| got == m.get(&(t, f)).cloned().unwrap_or_default()),
                "thread {t} file {f}: content after two crashes matches no allowed state"
            );
        }
    }
    n
}
