//! Power cuts, not only crashes (issue 14, point 7). `nfs_crash` SIGKILLs the appliance
//! process, and the host kernel still writes out whatever that process left in its page
//! cache. Here the whole appliance image runs in qemu with its data disk opened without
//! host caching (`boot-test --disk-cache none`: O_DIRECT on the host, so the guest's
//! writes reach the disk image only when the guest kernel sends them, and flushes reach
//! the host file as fdatasync), and qemu itself is killed with SIGKILL at a random moment
//! of a copy: the guest's page cache and its in-flight requests are lost as in a power cut.
//!
//! Each trial: a copy over NFS from the host by the PyPI libnfs binding
//! (`tests/py/nfstool.py trial-writer`), whose every reply is logged as it comes back
//! (FILE_SYNC writes, COMMITs, CREATE, MKDIR, RENAME, REMOVE: what the appliance
//! promised); the power cut; the image booted again on the same disk (the journal
//! recovers: the appliance answers and `odt status` works), unlocked once; the whole export
//! read back and checked:
//! - every byte the appliance promised reads back as the last promised write there left it
//!   (or as a later write not yet promised), every promised entry exists, and every file
//!   whose REMOVE was answered stays gone;
//! - nothing torn is served: each byte holds data a write put there or, where no write was
//!   promised, zero (a hole where an unpromised write was lost); no file is longer than the
//!   copy made it, and no entry appears that the writer did not ask for; a rename is
//!   either done or not;
//! - the trials before (recovered, read back and so on the disk) are unchanged.
//!
//! Cleaning and compaction run under the cuts. Besides its files, the copy writes small
//! files and removes most of them again, overwrites ranges of its files in place, removes
//! some of them, and renames between long names; the disk has 4 MiB segments and a 5 MiB
//! journal, so closed segments fall under half live and the appliance's background cleaner
//! moves their records and frees them while the copy runs, and the journal compacts itself
//! every few trials. `odt status` before each copy and after the reboot says how many
//! segments were cleaned and how often the journal was compacted (both counted on the
//! disk, so only what was durable before the cut): what grew happened in the boot that was
//! cut, during its copy. The run requires some cuts to have landed in a boot whose cleaner
//! had freed segments, and at least one compaction followed by reboots and read-backs.
//!
//! The trials run one after another on one disk (each boot after a cut is the next trial's
//! boot); then the customer seals, the power button shuts down, and on the host
//! `odt seal-check` and `odt verify --deep` pass.
//!
//! Seeds: `ODT_POWER_SEED=N` replays a run's data and cut points (the cut still lands at
//! a moment of the copy that depends on timing); every run logs its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use odt_e2e::bins;
use odt_e2e::image::{BootOptions, ImageAppliance, need_tool, run_timed};
use odt_e2e::nfsclient::{nfstool_ok, require_clients};
use odt_e2e::run::run;
use odt_e2e::vmtree::read_tree;
use rand::{Rng, SeedableRng};

const TRIALS: usize = 5;
/// Files per trial, and the largest (bytes): small, so a trial's copy takes seconds.
const FILES: u64 = 4;
const MAX_SIZE: u64 = 1 << 20;
/// Small files written after each file, all but two removed again: with 4 MiB segments,
/// segments fall under half live within a trial and are cleaned.
const SMALL: u64 = 16;
/// Trials whose cut must come after the cleaner freed segments in the same boot.
const MIN_CUT_WHILE_CLEANING: usize = 2;
/// Renames (between two long names) at the start of each copy, before the cut can land:
/// journal entries without data, so that the small journal is compacted by itself during
/// the trials, at the same trial whatever the cuts.
const RENAMES: u64 = 560;

fn log(msg: impl AsRef<str>) {
    eprintln!("power_cut: {}", msg.as_ref());
}

/// A directory where `dd oflag=direct` works (qemu's cache=none needs O_DIRECT; tmpfs
/// refuses it): the temporary directory, else the target directory.
fn direct_io_dir(tmp: &Path) -> PathBuf {
    let target_tmp = bins::target_dir().join("tmp");
    std::fs::create_dir_all(&target_tmp).unwrap();
    for dir in [tmp.to_path_buf(), target_tmp] {
        let probe = dir.join("o_direct.probe");
        let o = run(
            Command::new("dd")
                .args(["if=/dev/zero", "bs=4096", "count=1", "oflag=direct"])
                .arg(format!("of={}", probe.display())),
            None,
            Duration::from_secs(30),
        );
        let _ = std::fs::remove_file(&probe);
        if o.status.success() {
            return dir;
        }
        log(format!(
            "{} refuses O_DIRECT ({}): trying the next place for the data disk",
            dir.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    panic!(
        "no file system here accepts O_DIRECT (TMPDIR and the target directory refuse it): \
         qemu's cache=none cannot open the data disk; set TMPDIR to a disk-backed directory"
    );
}

/// The status counters the trials read.
#[derive(Debug, Clone, Copy)]
struct Counters {
    cleaned: u64,
    compactions: u64,
    journal_used: u64,
    dead: u64,
}

/// One write the appliance answered: bytes `[off, off+len)` of content version `version`.
#[derive(Debug, Clone)]
struct Write {
    version: usize,
    off: u64,
    len: u64,
    /// FILE_SYNC, or UNSTABLE followed by a COMMIT of the file: durable.
    promised: bool,
}

/// Whether a file was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    No,
    /// REMOVE sent, no reply seen: the file may be there or not.
    Maybe,
    /// REMOVE answered: the file must be gone.
    Done,
}

/// What the writer's log says about one file (under its current name).
#[derive(Debug, Clone)]
struct FileLog {
    /// The whole content of each version the copy wrote (kept by the writer): the first
    /// from its creation, one more per overwrite.
    versions: Vec<PathBuf>,
    /// The writes answered, in order.
    writes: Vec<Write>,
    /// CREATE returned.
    created: bool,
    removed: Removal,
}

/// The writer's log, replayed: what must and what may exist after the cut.
#[derive(Debug, Default)]
struct Promises {
    files: BTreeMap<String, FileLog>,
    /// MKDIR returned.
    dirs: BTreeSet<String>,
    /// A rename announced but not answered: may or may not have happened.
    maybe_rename: Option<(String, String)>,
    /// The file the writer was writing when the power went: the writer has one request in
    /// flight, and a WRITE to this file whose reply the cut lost may have landed, whole or in
    /// part (the log does not name it: only answers are logged).
    writing: Option<String>,
}

impl Promises {
    fn replay(lines: &[String], expected_dir: &Path) -> Promises {
        let mut p = Promises::default();
        for line in lines {
            let w: Vec<&str> = line.split(' ').collect();
            fn file<'a>(p: &'a mut Promises, path: &str) -> &'a mut FileLog {
                p.files
                    .get_mut(path)
                    .unwrap_or_else(|| panic!("the writer's log names an unknown file {path}"))
            }
            // After these lines the writer's next request may be a WRITE to that file;
            // before any other request it logs a line (an intent, a new file).
            p.writing = match w.as_slice() {
                ["overwrite", path, ..] | ["done", "create" | "write" | "commit", path, ..] => {
                    Some(path.to_string())
                }
                _ => None,
            };
            match w.as_slice() {
                ["plan", ..] => {}
                ["file", path, _how, _len, local] => {
                    p.files.insert(
                        path.to_string(),
                        FileLog {
                            versions: vec![expected_dir.join(local)],
                            writes: Vec::new(),
                            created: false,
                            removed: Removal::No,
                        },
                    );
                }
                ["overwrite", path, _how, _off, _len, local] => {
                    file(&mut p, path).versions.push(expected_dir.join(local));
                }
                // An entry announced but not answered may exist or not.
                ["intent", "mkdir" | "create", _] => {}
                ["done", "mkdir", d] => {
                    p.dirs.insert(d.to_string());
                }
                ["done", "create", path] => file(&mut p, path).created = true,
                ["done", "write", path, off, len, how] => {
                    let f = file(&mut p, path);
                    f.writes.push(Write {
                        version: f.versions.len() - 1,
                        off: off.parse().unwrap(),
                        len: len.parse().unwrap(),
                        promised: *how == "sync",
                    });
                }
                ["done", "commit", path] => {
                    file(&mut p, path)
                        .writes
                        .iter_mut()
                        .for_each(|w| w.promised = true);
                }
                ["intent", "remove", path] => file(&mut p, path).removed = Removal::Maybe,
                ["done", "remove", path] => file(&mut p, path).removed = Removal::Done,
                ["intent", "rename", a, b] => p.maybe_rename = Some((a.to_string(), b.to_string())),
                ["done", "rename", a, b] => {
                    let f = p.files.remove(*a).expect("renamed file is known");
                    p.files.insert(b.to_string(), f);
                    p.maybe_rename = None;
                }
                ["finished"] => {}
                _ => panic!("unexpected line from the writer: {line}"),
            }
        }
        p
    }

    fn promised_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| f.removed == Removal::No)
            .flat_map(|f| f.writes.iter().filter(|w| w.promised).map(|w| w.len))
            .sum()
    }

    fn removed(&self) -> usize {
        let done = |f: &&FileLog| f.removed == Removal::Done;
        self.files.values().filter(done).count()
    }

    fn overwrites(&self) -> usize {
        self.files.values().map(|f| f.versions.len() - 1).sum()
    }
}

/// Checks one file read back after the cut against its log; returns the bytes beyond the
/// promise that were present (written data, not holes).
///
/// Each byte must hold what the last promised write there wrote, or what a later
/// (unpromised) write wrote; a byte no promised write covers may also be a hole (zero).
/// With `writing` (the file the cut interrupted), the unanswered write in flight counts
/// among the later writes: any byte may also hold the file's last version there.
fn check_file(path: &str, got: &[u8], f: &FileLog, writing: bool) -> Result<u64, String> {
    let versions: Vec<Vec<u8>> = f
        .versions
        .iter()
        .map(|v| std::fs::read(v).unwrap())
        .collect();
    let current = versions.last().expect("a file has its first version");
    let answered_end = f.writes.iter().map(|w| w.off + w.len).max().unwrap_or(0) as usize;
    let end = if writing {
        answered_end.max(current.len())
    } else {
        answered_end
    };
    if got.len() > end {
        return Err(format!(
            "{path}: {} bytes, but the copy never wrote past {end}",
            got.len()
        ));
    }
    // The last promised write covering each byte (usize::MAX: none).
    let mut last = vec![usize::MAX; end];
    for (k, w) in f.writes.iter().enumerate().filter(|(_, w)| w.promised) {
        let (a, b) = (w.off as usize, (w.off + w.len) as usize);
        if got.len() < b {
            return Err(format!(
                "{path}: {} bytes, but [{a}, {b}) was promised durable",
                got.len()
            ));
        }
        last[a..b].iter_mut().for_each(|l| *l = k);
    }
    // Whether each byte read back is explained, and whether by data not promised.
    let mut ok: Vec<bool> = (0..got.len())
        .map(|i| last[i] == usize::MAX && got[i] == 0)
        .collect();
    let mut extra_at = vec![false; got.len()];
    for (k, w) in f.writes.iter().enumerate() {
        let data = &versions[w.version];
        let (a, b) = (w.off as usize, ((w.off + w.len) as usize).min(got.len()));
        for i in a..b {
            if (last[i] == usize::MAX || k >= last[i]) && got[i] == data[i] {
                ok[i] = true;
                extra_at[i] |= got[i] != 0 && k != last[i];
            }
        }
    }
    if writing {
        for i in 0..got.len().min(current.len()) {
            if !ok[i] && got[i] == current[i] {
                ok[i] = true;
                extra_at[i] = got[i] != 0;
            }
        }
    }
    if let Some(i) = ok.iter().position(|o| !o) {
        let promised = match last[i] {
            usize::MAX => "never promised".to_string(),
            k => format!(
                "promised as {:#04x} by the write of [{}, {})",
                versions[f.writes[k].version][i],
                f.writes[k].off,
                f.writes[k].off + f.writes[k].len
            ),
        };
        return Err(format!(
            "{path}: byte {i} is {:#04x} ({promised}): neither the data of the last promised \
             write there nor of a later write{}: a torn or lost write is served",
            got[i],
            if last[i] == usize::MAX {
                " nor a hole"
            } else {
                ""
            }
        ));
    }
    Ok(extra_at.iter().filter(|e| **e).count() as u64)
}

/// The export read back after trial `top`'s cut: earlier trials exactly as `baseline`,
/// trial `top` as its log allows. Returns a one-line summary.
fn check_trial(
    top: &str,
    seen: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    baseline: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    p: &Promises,
) -> Result<String, String> {
    let in_trial = |k: &Path| k.starts_with(top);
    let before: BTreeMap<_, _> = seen.iter().filter(|(k, _)| !in_trial(k)).collect();
    let want_before: BTreeMap<_, _> = baseline.iter().collect();
    if before != want_before {
        let a: BTreeSet<_> = before.keys().collect();
        let b: BTreeSet<_> = want_before.keys().collect();
        let changed: Vec<_> = a
            .intersection(&b)
            .filter(|k| before[**k] != want_before[**k])
            .collect();
        return Err(format!(
            "the earlier trials changed after this cut: gone {:?}, new {:?}, content changed {:?}",
            b.difference(&a).collect::<Vec<_>>(),
            a.difference(&b).collect::<Vec<_>>(),
            changed
        ));
    }
    let top_path = Path::new(top);
    if p.dirs.contains(top) && !seen.contains_key(top_path) {
        return Err(format!(
            "directory {top} was made (MKDIR answered) and is gone"
        ));
    }
    let mut explained: BTreeSet<PathBuf> = BTreeSet::new();
    explained.insert(top_path.to_path_buf());
    let mut extra = 0;
    let mut files = 0;
    for (path, f) in &p.files {
        // A rename announced but not answered may have happened or not, never both.
        let names: Vec<&str> = match &p.maybe_rename {
            Some((a, b)) if a == path => vec![a, b],
            _ => vec![path],
        };
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| seen.contains_key(Path::new(n)))
            .collect();
        explained.extend(names.iter().map(PathBuf::from));
        if f.removed == Removal::Done && !present.is_empty() {
            return Err(format!(
                "{path} was removed (REMOVE answered) and is back after the cut"
            ));
        }
        match present.as_slice() {
            // REMOVE sent (answered or not): gone is right.
            [] if f.removed != Removal::No => {}
            [] if f.created => {
                return Err(format!(
                    "{path} was created (CREATE answered) and is gone{}",
                    if names.len() > 1 {
                        format!(" (also under {})", names[1])
                    } else {
                        String::new()
                    }
                ));
            }
            [] => {}
            [n] => {
                let Some(Some(got)) = seen.get(Path::new(n)) else {
                    return Err(format!("{n} is a directory; the writer made a file"));
                };
                extra += check_file(n, got, f, p.writing.as_deref() == Some(path.as_str()))?;
                files += 1;
            }
            _ => return Err(format!("both {names:?} exist: a torn rename")),
        }
    }
    if let Some(k) = seen
        .keys()
        .filter(|k| in_trial(k))
        .find(|k| !explained.contains(*k))
    {
        return Err(format!(
            "{} exists, but the writer never asked for it",
            k.display()
        ));
    }
    Ok(format!(
        "{files} files read back, {} bytes promised and identical ({} overwrites), {} files \
         removed and gone, {extra} more bytes written before the cut also there",
        p.promised_bytes(),
        p.overwrites(),
        p.removed()
    ))
}

/// Runs the writer for trial `top` and cuts the power after the share `cut_at` of the
/// lines its log will have (its first line says how many) plus `cut_ms`; returns the whole
/// log (every reply the writer saw).
fn copy_and_cut(
    app: ImageAppliance,
    top: &str,
    expected_dir: &Path,
    seed: u64,
    cut_at: f64,
    cut_ms: u64,
) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg(bins::repo().join("tests/py/nfstool.py"))
        .args(["trial-writer", &app.url_root(), top])
        .arg(expected_dir)
        .args([FILES, MAX_SIZE, seed, SMALL, RENAMES].map(|n| n.to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut ended = false;
    let mut cut_line = 1;
    while lines.len() < cut_line {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => {
                if let Some(plan) = l.strip_prefix("plan ") {
                    let n: Vec<usize> = plan
                        .split(' ')
                        .map(|n| n.parse().expect("the writer's plan is two line counts"))
                        .collect();
                    // After the prefix (the renames that fill the journal), anywhere in the
                    // rest: the journal grows by the same amount in every trial.
                    cut_line = 1 + n[1] + ((n[0] - n[1]) as f64 * cut_at) as usize;
                }
                lines.push(l)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ended = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the writer said nothing for 120 s\n{}", app.stderr_text())
            }
        }
    }
    std::thread::sleep(Duration::from_millis(cut_ms));
    let at = started.elapsed();
    app.power_cut();
    // What the writer saw answered before the cut is still in the pipe; then it waits for
    // an appliance that is gone: stop it.
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let st = child.wait().unwrap();
    lines.extend(rx.try_iter());
    if ended || lines.last().map(String::as_str) == Some("finished") {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).ok();
        assert!(
            lines.last().map(String::as_str) == Some("finished"),
            "the writer failed before the cut ({st}): {err}"
        );
    }
    log(format!(
        "{top}: power cut {:.2}s into the copy, after {} of the writer's lines (last: {:?})",
        at.as_secs_f64(),
        lines.len(),
        lines.last()
    ));
    lines
}

/// `odt COMMAND --appliance ADDR ARGS...` with sessions kept in `runtime`.
fn odt(app: &ImageAppliance, runtime: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bins::odt());
    c.args(&args[..1])
        .args(["--appliance", &app.control])
        .args(&args[1..])
        .env("XDG_RUNTIME_DIR", runtime);
    c
}

#[test]
fn power_cut_trials() {
    // qemu: one guest at a time on the machine (see odt_e2e::serial).
    let _qemu = odt_e2e::serial::qemu();
    let t0 = Instant::now();
    need_tool("qemu-system-x86_64", "boots the appliance image");
    need_tool("dd", "probes O_DIRECT");
    require_clients();
    let seed: u64 = match std::env::var("ODT_POWER_SEED") {
        Ok(s) => s.parse().expect("ODT_POWER_SEED is a number"),
        Err(_) => rand::random(),
    };
    log(format!(
        "seed {seed} (replay its data and cut points: ODT_POWER_SEED={seed})"
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let odt_bin = bins::odt();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let image = odt_e2e::image::build(&d.join("image"));
    let disk_home = tempfile::tempdir_in(direct_io_dir(d)).unwrap();
    let set = odt_test_support::fixture::provision_with_cli(
        &odt_bin,
        disk_home.path(),
        1,
        "1G",
        // Small segments fill and fall under half live within a trial's churn; a small
        // journal (the least whose checkpoint still fits the room compaction leaves) is
        // compacted by itself within a few trials.
        &["--segment-size", "4M", "--journal-size", "5M"],
    );
    let fingerprint = odt_e2e::appliance::fingerprint_of(&set.job_dir);
    let runtime = d.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let opts = BootOptions {
        disk_cache: Some("none".into()),
    };
    let boot = || {
        ImageAppliance::boot(
            &image,
            std::slice::from_ref(&set.devices[0]),
            &odt_bin,
            &fingerprint,
            d,
            &opts,
        )
    };
    let unlock = |app: &ImageAppliance| {
        run_timed(
            odt(app, &runtime, &["unlock", "--code-file"]).arg(&set.code_file),
            Duration::from_secs(120),
        );
    };

    let status = |app: &ImageAppliance| -> Counters {
        let out = run_timed(
            odt(app, &runtime, &["status", "--json", "--code-file"]).arg(&set.code_file),
            Duration::from_secs(60),
        );
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("odt status --json is not JSON ({e}): {out}"));
        assert_eq!(v["state"], "unlocked", "status: {out}");
        let n = |k: &str| {
            v["store"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("odt status --json has no store.{k}: {out}"))
        };
        Counters {
            cleaned: n("segments_cleaned"),
            compactions: n("journal_compactions"),
            journal_used: n("journal_used_bytes"),
            dead: n("dead_bytes"),
        }
    };

    let mut app = boot();
    unlock(&app);
    let mut baseline = BTreeMap::new();
    // Trials whose cut landed in a boot in which the cleaner had freed segments during the
    // copy, and the compactions seen after the reboots.
    let mut cut_while_cleaning = 0;
    let mut compactions = 0;
    for t in 0..TRIALS {
        let top = format!("t{t}");
        let trial_seed: u64 = rng.random_range(0..1 << 48);
        // Where in the writer's log the cut lands (a share of its lines), plus a delay.
        let cut_at: f64 = rng.random_range(0.0..1.0);
        let cut_ms = rng.random_range(0..400);
        log(format!(
            "{top}: trial seed {trial_seed}, cut after {:.0} % of the writer's lines + {cut_ms} ms",
            cut_at * 100.0
        ));
        let expected = d.join(format!("{top}-expected"));
        std::fs::create_dir_all(&expected).unwrap();
        let before = status(&app);
        let lines = copy_and_cut(app, &top, &expected, trial_seed, cut_at, cut_ms);
        std::fs::write(d.join(format!("{top}-writer.log")), lines.join("\n")).unwrap();
        let promises = Promises::replay(&lines, &expected);

        // The same disk again: the journal recovers, the appliance answers (boot-test
        // waits for `odt status`), unlocks, and serves what it promised.
        app = boot();
        unlock(&app);
        // The counters are on the disk (the cleaner's frees and the journal's start pointer
        // are durable before they count): what grew since `before` happened in the boot
        // that was cut, while the copy ran.
        let after = status(&app);
        let cleaned = after.cleaned - before.cleaned;
        let compacted = after.compactions - before.compactions;
        log(format!(
            "{top}: during the copy before the cut, {cleaned} segments cleaned and the journal \
             compacted {compacted} times; after the reboot {} journal bytes in use, {} dead \
             bytes",
            after.journal_used, after.dead
        ));
        cut_while_cleaning += usize::from(cleaned > 0);
        compactions = after.compactions;
        let seen_dir = d.join(format!("{top}-seen"));
        std::fs::create_dir_all(&seen_dir).unwrap();
        nfstool_ok(
            &["get", &app.url_root(), &seen_dir.to_string_lossy()],
            Duration::from_secs(300),
        );
        let seen = read_tree(&seen_dir, "");
        match check_trial(&top, &seen, &baseline, &promises) {
            Ok(summary) => log(format!("{top}: {summary}")),
            Err(e) => panic!(
                "power-cut trial {top} (run seed {seed}, trial seed {trial_seed}): {e}\n\
                 last lines of the writer's log:\n{}",
                lines[lines.len().saturating_sub(12)..].join("\n")
            ),
        }
        baseline = seen;
    }
    // Every trial was read back after a reboot that followed these compactions.
    assert!(
        compactions >= 1,
        "the journal was never compacted during the trials: nothing tried a power cut \
         after compaction (run seed {seed})"
    );
    assert!(
        cut_while_cleaning >= MIN_CUT_WHILE_CLEANING,
        "only {cut_while_cleaning} of {TRIALS} cuts landed after the cleaner had freed \
         segments in the same boot (run seed {seed}): the trials did not test cleaning"
    );

    // The customer seals; the provider's checks of the disk pass.
    let seal = run_timed(
        odt(&app, &runtime, &["seal", "--code-file"]).arg(&set.code_file),
        Duration::from_secs(300),
    );
    log(format!("sealed: {}", seal.trim()));
    app.power_off();
    let dev = &set.devices[0];
    let check = run_timed(
        Command::new(&odt_bin)
            .args(["seal-check", "--json", "--device"])
            .arg(dev)
            .arg("--job")
            .arg(&set.job_dir),
        Duration::from_secs(120),
    );
    let v: serde_json::Value = serde_json::from_str(&check)
        .unwrap_or_else(|e| panic!("seal-check --json is not JSON ({e}): {check}"));
    assert_eq!(v["intact"], true, "seal-check: {check}");
    let code = v["seal_code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && seal.contains(code),
        "the seal code on the disk ({code:?}) is not the one `odt seal` printed: {seal}"
    );
    run_timed(
        Command::new(&odt_bin)
            .args(["verify", "--deep", "--device"])
            .arg(dev)
            .arg("--job")
            .arg(&set.job_dir),
        Duration::from_secs(300),
    );
    log(format!(
        "{TRIALS} power-cut trials passed in {:.1}s (seed {seed}; {cut_while_cleaning} cut \
         with segments cleaned in the same boot, {compactions} journal compactions)",
        t0.elapsed().as_secs_f64()
    ));
}

/// The checker itself, on a file whose only write was in flight at the cut (a CREATE
/// answered, then a FILE_SYNC WRITE of [0, 256 KiB) whose reply the cut lost): its data may
/// be there, whole or in part, but nothing else may.
#[test]
fn the_checker_takes_a_write_in_flight_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251 + 1) as u8).collect();
    let version = dir.path().join("f.v1");
    std::fs::write(&version, &data).unwrap();
    let lines: Vec<String> = [
        format!("file t/f sync {} f.v1", data.len()),
        "intent create t/f".into(),
        "done create t/f".into(),
    ]
    .into();
    let p = Promises::replay(&lines, dir.path());
    assert_eq!(p.writing.as_deref(), Some("t/f"));
    let f = &p.files["t/f"];
    let landed = &data[..256 << 10];

    assert_eq!(check_file("t/f", landed, f, true), Ok((256 << 10) as u64));
    assert_eq!(check_file("t/f", &[], f, true), Ok(0));
    // Torn: the start landed, the rest is a hole.
    let mut torn = landed.to_vec();
    torn[4096..].fill(0);
    assert_eq!(check_file("t/f", &torn, f, true), Ok(4096));
    // Not the copy's data, or longer than the copy's file: refused.
    let mut wrong = landed.to_vec();
    wrong[100] ^= 0xff;
    assert!(check_file("t/f", &wrong, f, true).is_err());
    let mut long = data.clone();
    long.push(1);
    assert!(check_file("t/f", &long, f, true).is_err());
    // A file the writer had left (its next request was not a write to it): no write of it
    // can have been in flight.
    assert!(check_file("t/f", landed, f, false).is_err());
    let after_intent = Promises::replay(
        &[lines.clone(), vec!["intent remove t/f".into()]].concat(),
        dir.path(),
    );
    assert_eq!(after_intent.writing, None);
}
