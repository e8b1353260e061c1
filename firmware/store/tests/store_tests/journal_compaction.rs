//! Journal compaction: a session long enough to fill the journal many times over runs on a
//! small journal region, the store reopens to the same namespace, the seal and its checks
//! hold after compaction, damage to a checkpoint is caught, and SIGKILLs of a process that
//! is compacting each recover a state holding every acknowledged change.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use odt_store::format::checkpoint;
use odt_store::format::journal::AttrChange;
use odt_store::format::superblock::JOURNAL_START;
use odt_store::trip::provision::Options;
use odt_store::trip::{seal, verify};
use odt_store::{Access, Locked, Store};
use odt_test_support::data::XorShift;
use odt_test_support::prelude::*;

/// A journal region small enough that a few thousand changes fill an area.
const JOURNAL: u64 = 8 * MIB;

fn fixture() -> Fixture {
    Fixture::with_options(
        1,
        64 * MIB,
        Options {
            journal_len: Some(JOURNAL),
            ..Options::default()
        },
    )
}

fn mode(change: u32) -> AttrChange {
    AttrChange {
        mode: Some(change),
        ..AttrChange::default()
    }
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, at).unwrap();
}

/// Threads making changes at once (their changes share group commits, as NFS clients' do).
const THREADS: u64 = 8;

/// One thread's share of the long session: creates (some with a small write), renames
/// across its directories, mode changes and removes, keeping some hundreds of files.
/// Returns its live files as (directory, name, id).
fn session(s: &Store, t: u64, ops: u64) -> Vec<(u64, Vec<u8>, u64)> {
    let root = s.root();
    let dirs: Vec<u64> = (0..4)
        .map(|i| {
            s.mkdir(root, format!("t{t}-d{i}").as_bytes(), 0o755)
                .unwrap()
                .id
        })
        .collect();
    let mut rng = XorShift::new(7 + t);
    let mut live: Vec<(u64, Vec<u8>, u64)> = Vec::new();
    let mut next = 0u64;
    let mut done = 0u64;
    while done < ops {
        let r = rng.next_u64() % 100;
        if live.len() < 200 || r < 25 {
            let d = dirs[(next % 4) as usize];
            let name = format!("file-{next}.dat").into_bytes();
            let f = s.create(d, &name, 0o644).unwrap();
            if next.is_multiple_of(5) {
                s.write(f.id, 0, format!("content {t} {next}").as_bytes())
                    .unwrap();
                done += 1;
            }
            live.push((d, name, f.id));
            next += 1;
        } else if r < 50 {
            let i = (rng.next_u64() as usize) % live.len();
            let (d, name, id) = live[i].clone();
            let to = dirs[(rng.next_u64() % 4) as usize];
            let new_name = format!("moved-{next}").into_bytes();
            next += 1;
            s.rename(d, &name, to, &new_name).unwrap();
            live[i] = (to, new_name, id);
        } else if r < 80 {
            let (_, _, id) = live[(rng.next_u64() as usize) % live.len()];
            s.setattr(id, mode(0o600 | (r as u32 & 0o7))).unwrap();
        } else {
            let i = (rng.next_u64() as usize) % live.len();
            let (d, name, _) = live.swap_remove(i);
            s.remove(d, &name).unwrap();
        }
        done += 1;
    }
    live
}

/// 300 000 namespace changes (creates, renames, mode changes, small writes, removes) on an
/// 8 MiB journal region: they journal more than the region holds.
#[test]
fn a_long_session_runs_on_a_small_journal_and_reopens_identical() {
    let fx = fixture();
    let s = fx.open();
    let total = 300_000;
    let (live, (drops, grown)) = std::thread::scope(|sc| {
        let s = &s;
        let watcher = sc.spawn(move || {
            // Counts the drops of the journal's use, and the growth seen between samples
            // (a lower bound of the bytes journaled), while the session runs.
            let (mut drops, mut grown) = (0, 0);
            let mut last = s.stats().journal_used;
            while !WATCH_DONE.load(Ordering::Acquire) {
                let used = s.stats().journal_used;
                if used < last {
                    drops += 1;
                } else {
                    grown += used - last;
                }
                last = used;
                std::thread::sleep(Duration::from_millis(5));
            }
            (drops, grown)
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| sc.spawn(move || session(s, t, total / THREADS)))
            .collect();
        let live: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        WATCH_DONE.store(true, Ordering::Release);
        (live, watcher.join().unwrap())
    });
    let st = s.stats();
    eprintln!("the journal's use dropped {drops} times; {grown} bytes journaled at least");
    assert!(drops >= 3, "the journal's use dropped {drops} times");
    assert!(grown > JOURNAL, "only {grown} bytes journaled");
    assert!(st.journal_used <= st.journal_len);
    assert!(
        st.journal_len <= JOURNAL / 2,
        "the journal is in one of its areas"
    );
    assert!(s.journal_start() > 0 || s.journal_end() < JOURNAL / 2);
    let before = s.view().state_digest();
    let files = st.files;
    assert_eq!(files, live.len() as u64);
    drop(s);
    let ro = fx.open_ro().unwrap();
    assert_eq!(
        ro.view().state_digest(),
        before,
        "reopened to another namespace"
    );
    assert_eq!(ro.stats().files, files);
    for (d, name, id) in &live {
        assert_eq!(ro.lookup(*d, name).unwrap(), *id);
    }
    drop(ro);
    // Read-write (recovery, a new session), then read-only: the same entries.
    let rw = fx.open();
    assert_eq!(rw.stats().files, files);
    drop(rw);
    assert_eq!(fx.open_ro().unwrap().stats().files, files);
}

static WATCH_DONE: AtomicBool = AtomicBool::new(false);

/// The seal pins the journal from its checkpoint; seal-check and verify pass after
/// compaction and still catch writes after the seal.
#[test]
fn seal_and_checks_after_compaction() {
    let fx = fixture();
    let s = fx.open();
    let d = s.mkdir(s.root(), b"vm1", 0o755).unwrap();
    let data = pattern(3, 3 * MIB as usize);
    let f = s.create(d.id, b"disk.vmdk", 0o644).unwrap();
    s.write(f.id, 0, &data).unwrap();
    for i in 0..300 {
        s.create(d.id, format!("n{i}").as_bytes(), 0o644).unwrap();
    }
    let used = s.stats().journal_used;
    assert!(s.compact_journal().unwrap());
    assert!(s.journal_start() > 0, "the journal moved to its other half");
    assert!(
        s.stats().journal_used < used,
        "compaction shrank the journal"
    );
    let g = s.create(d.id, b"vm1.ovf", 0o644).unwrap();
    s.write(g.id, 0, b"<Envelope/>").unwrap();
    let sealed = seal::seal(&s, vec![]).unwrap();
    let (start, end) = (s.journal_start(), s.journal_end());
    drop(s);
    let job = fx.job_dir();
    let r = seal::check(&fx.paths, &job, Some(&sealed.code)).unwrap();
    assert!(r.intact, "seal check after compaction: {:?}", r.problem);
    let ro = fx.open_ro().unwrap();
    let dev = &ro.devices()[0];
    let (_, problems) = verify::check_log(dev, &ro.superblocks()[0], None, &mut |_| {});
    assert!(problems.is_empty(), "{problems:?}");
    assert!(verify::check_files(&ro, &mut |_| {}).unwrap().is_empty());
    let f2 = ro
        .lookup(ro.lookup(ro.root(), b"vm1").unwrap(), b"disk.vmdk")
        .unwrap();
    assert_eq!(ro.read(f2, 0, data.len() as u32).unwrap().0, data);
    assert!(ro.view().seal().is_some());
    drop(ro);
    // Metadata after the seal's end is found.
    flip(&fx.paths[0], JOURNAL_START + end + 10);
    let r = seal::check(&fx.paths, &job, Some(&sealed.code)).unwrap();
    assert!(!r.intact);
    assert!(r.problem.unwrap().contains("after the seal"));
    flip(&fx.paths[0], JOURNAL_START + end + 10);
    // A change inside the checkpoint is found.
    flip(&fx.paths[0], JOURNAL_START + start + 100);
    let r = seal::check(&fx.paths, &job, Some(&sealed.code)).unwrap();
    assert!(!r.intact);
    assert!(r.problem.unwrap().contains("journal changed"));
    flip(&fx.paths[0], JOURNAL_START + start + 100);
    assert!(seal::check(&fx.paths, &job, None).unwrap().intact);
}

/// A flipped bit anywhere in a checkpoint (header, payload) refuses the open, read-only
/// and read-write, naming the checkpoint; the journal start pointer's damage is refused too.
#[test]
fn a_flipped_bit_in_a_checkpoint_is_caught() {
    let fx = fixture();
    let s = fx.open();
    for i in 0..400 {
        let f = s
            .create(s.root(), format!("f{i}").as_bytes(), 0o644)
            .unwrap();
        s.write(f.id, 0, b"x").unwrap();
    }
    assert!(s.compact_journal().unwrap());
    let (start, end) = (s.journal_start(), s.journal_end());
    drop(s);
    let sb = fx.open_ro().unwrap().superblocks()[0].clone();
    let ptr = checkpoint::read_start(
        &odt_store::device::Device::open(&fx.paths[0], false).unwrap(),
        &sb,
    )
    .unwrap()
    .unwrap();
    assert_eq!(ptr.start, start);
    let mut rng = XorShift::new(11);
    for at in [5, 30, 38, 45, 200, (end - start) / 2, end - start - 3]
        .into_iter()
        .chain((0..5).map(|_| rng.next_u64() % (end - start)))
    {
        let off = JOURNAL_START + start + at;
        flip(&fx.paths[0], off);
        let e = fx.open_ro().map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("checkpoint"), "flip at {at}: {e}");
        let l = Locked::open(&fx.paths, Access::ReadWrite).unwrap();
        let sec = l.secrets_from_code(&fx.code).unwrap();
        assert!(l.unlock(sec, Access::ReadWrite).is_err(), "flip at {at}");
        flip(&fx.paths[0], off);
    }
    // The pointer's slot.
    let slot =
        JOURNAL_START + checkpoint::usable(&sb) + (ptr.generation % 2) * checkpoint::START_SLOT;
    flip(&fx.paths[0], slot + 20);
    let e = fx.open_ro().map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("journal start pointer"), "{e}");
    flip(&fx.paths[0], slot + 20);
    assert_eq!(fx.open_ro().unwrap().stats().files, 400);
}

// ---- crash trials ---------------------------------------------------------------------

/// Live files the crash model keeps (the oldest is removed once there are more).
const KEEP: u64 = 2000;

/// What step `k` (from 1) of the crash child does, as a change of the model: name -> mode.
fn step(model: &mut BTreeMap<String, u32>, k: u64) {
    match k % 4 {
        1 => {
            model.insert(format!("f{k}"), 0o644);
        }
        2 => {
            let m = model.remove(&format!("f{}", k - 1)).unwrap();
            model.insert(format!("r{}", k - 1), m);
        }
        3 => {
            model.insert(format!("r{}", k - 2), 0o600 | (k as u32 % 8));
        }
        _ => {
            if k > 4 * KEEP {
                model.remove(&format!("r{}", k - 3 - 4 * KEEP));
            }
        }
    }
}

fn apply_step(s: &Store, k: u64) -> odt_store::Result<()> {
    let root = s.root();
    match k % 4 {
        1 => s
            .create(root, format!("f{k}").as_bytes(), 0o644)
            .map(|_| ()),
        2 => s.rename(
            root,
            format!("f{}", k - 1).as_bytes(),
            root,
            format!("r{}", k - 1).as_bytes(),
        ),
        3 => {
            let id = s.lookup(root, format!("r{}", k - 2).as_bytes())?;
            s.setattr(id, mode(0o600 | (k as u32 % 8))).map(|_| ())
        }
        _ if k > 4 * KEEP => s.remove(root, format!("r{}", k - 3 - 4 * KEEP).as_bytes()),
        // A step that changes nothing the model sees still journals something.
        _ => s.sync(),
    }
}

fn model_after(k: u64) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for i in 1..=k {
        step(&mut m, i);
    }
    m
}

fn listing(s: &Store) -> BTreeMap<String, u32> {
    s.list(s.root())
        .unwrap()
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.attr.mode & 0o7777))
        .collect()
}

fn open_rw(paths: &[PathBuf], code: &str) -> Store {
    let l = Locked::open(paths, Access::ReadWrite).unwrap();
    let s = l.secrets_from_code(&code.parse().unwrap()).unwrap();
    l.unlock(s, Access::ReadWrite).unwrap()
}

/// The crash child's test name (`journal_compaction::crash_child`): the test binary
/// holds every module of the store's tests, and a name is its path below the crate.
fn crash_child_name() -> String {
    let (_crate, module) = module_path!()
        .split_once("::")
        .expect("a module of the store_tests binary");
    format!("{module}::crash_child")
}

/// The crash child: runs steps from `ODT_COMPACT_FROM`, compacting every 100 steps, and
/// prints `ack K` after step K returned and `compacting`/`compacted` around each
/// compaction it asks for. Run by the crash trial below, never on its own.
#[test]
#[ignore = "the child process of the crash trials (started by them)"]
fn crash_child() {
    let Ok(from) = std::env::var("ODT_COMPACT_FROM") else {
        return;
    };
    let from: u64 = from.parse().unwrap();
    let paths: Vec<PathBuf> = vec![std::env::var("ODT_COMPACT_DEV").unwrap().into()];
    let code = std::fs::read_to_string(std::env::var("ODT_COMPACT_CODE").unwrap()).unwrap();
    let s = open_rw(&paths, code.trim());
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for k in from.. {
        apply_step(&s, k).unwrap();
        writeln!(out, "ack {k}").unwrap();
        out.flush().unwrap();
        if k.is_multiple_of(100) {
            writeln!(out, "compacting").unwrap();
            out.flush().unwrap();
            s.compact_journal().unwrap();
            writeln!(out, "compacted").unwrap();
            out.flush().unwrap();
        }
    }
}

/// SIGKILLs of a process while it compacts (and while it journals between compactions):
/// each restart recovers exactly the state after the last acknowledged step or the one
/// after it (in flight when killed), never a mix or less.
#[test]
fn sigkill_during_compaction_recovers_every_acknowledged_change() {
    let fx = fixture();
    let code_file = fx.code_file();
    let code = fx.code.expose().to_string();
    // A namespace big enough that writing its checkpoint takes a while.
    {
        // Steps 4j+1..4j+4 concern file j only (no removes yet): threads share them out.
        let s = fx.open();
        std::thread::scope(|sc| {
            for t in 0..8 {
                let s = &s;
                sc.spawn(move || {
                    for j in (t..KEEP).step_by(8) {
                        for k in 4 * j + 1..=4 * j + 4 {
                            apply_step(s, k).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(listing(&s), model_after(4 * KEEP));
    }
    let mut done = 4 * KEEP;
    let mut rng = XorShift::new(99);
    let (mut trials, mut during) = (0, 0);
    while during < 10 {
        assert!(
            trials < 60,
            "only {during} of {trials} kills landed in a compaction"
        );
        trials += 1;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &crash_child_name(),
                "--ignored",
                "--nocapture",
                "-q",
            ])
            .env("ODT_COMPACT_FROM", (done + 1).to_string())
            .env("ODT_COMPACT_DEV", &fx.paths[0])
            .env("ODT_COMPACT_CODE", &code_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = done;
        let mut compactions = 0;
        let mut in_compaction = false;
        // Kill a random short while after the n-th compaction begins.
        let nth = 1 + rng.next_u64() % 3;
        for l in lines.by_ref() {
            let l = l.unwrap();
            if let Some(k) = l.strip_prefix("ack ") {
                acked = k.parse().unwrap();
            } else if l == "compacting" {
                in_compaction = true;
                compactions += 1;
                if compactions == nth {
                    std::thread::sleep(Duration::from_micros(rng.next_u64() % 20_000));
                    child.kill().unwrap();
                    break;
                }
            } else if l == "compacted" {
                in_compaction = false;
            }
        }
        // What the child printed before it died (a step acknowledged, a compaction ended).
        for l in lines.map_while(|l| l.ok()) {
            if let Some(k) = l.strip_prefix("ack ") {
                acked = k.parse().unwrap();
            } else if l == "compacted" {
                in_compaction = false;
            }
        }
        child.wait().unwrap();
        if in_compaction {
            during += 1;
        }
        let s = open_rw(&fx.paths, &code);
        let got = listing(&s);
        let st = s.stats();
        assert!(st.journal_used <= st.journal_len);
        drop(s);
        done = if got == model_after(acked) {
            acked
        } else if got == model_after(acked + 1) {
            acked + 1
        } else {
            panic!(
                "trial {trials}: the recovered namespace is neither the state after step {acked} nor after the next"
            )
        };
    }
    eprintln!("{during} of {trials} kills landed in a compaction; {done} steps done");
    let s = open_rw(&fx.paths, &code);
    assert_eq!(listing(&s), model_after(done));
}
