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
//! (FILE_SYNC writes, COMMITs, CREATE, MKDIR, RENAME: what the appliance promised); the
//! power cut; the image booted again on the same disk (the journal recovers: the appliance
//! answers and `odt status` works), unlocked once; the whole export read back and checked:
//! - every byte the appliance promised reads back identical, every promised entry exists;
//! - nothing torn is served: each file reads its expected bytes or zeros (a hole where an
//!   unpromised write was lost), is no longer than the copy made it, and no entry
//!   appears that the writer did not ask for; a rename is either done or not;
//! - the trials before (recovered, read back and so on the disk) are unchanged.
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
const FILES: usize = 4;
const MAX_SIZE: usize = 1 << 20;

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

/// What the writer's log says about one file (under its current name).
#[derive(Debug, Clone)]
struct FileLog {
    /// The whole content the copy would have written (kept by the writer).
    expected: PathBuf,
    /// Ranges the appliance promised are durable: FILE_SYNC writes, and UNSTABLE writes
    /// followed by a COMMIT of the file.
    promised: Vec<(u64, u64)>,
    /// UNSTABLE writes not yet committed.
    unstable: Vec<(u64, u64)>,
    /// CREATE returned.
    created: bool,
}

/// The writer's log, replayed: what must and what may exist after the cut.
#[derive(Debug, Default)]
struct Promises {
    files: BTreeMap<String, FileLog>,
    /// MKDIR returned.
    dirs: BTreeSet<String>,
    /// A rename announced but not answered: may or may not have happened.
    maybe_rename: Option<(String, String)>,
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
            match w.as_slice() {
                ["file", path, _how, _len, local] => {
                    p.files.insert(
                        path.to_string(),
                        FileLog {
                            expected: expected_dir.join(local),
                            promised: Vec::new(),
                            unstable: Vec::new(),
                            created: false,
                        },
                    );
                }
                // An entry announced but not answered may exist or not.
                ["intent", "mkdir" | "create", _] => {}
                ["done", "mkdir", d] => {
                    p.dirs.insert(d.to_string());
                }
                ["done", "create", path] => file(&mut p, path).created = true,
                ["done", "write", path, off, len, how] => {
                    let r = (off.parse().unwrap(), len.parse().unwrap());
                    let f = file(&mut p, path);
                    if *how == "sync" {
                        f.promised.push(r);
                    } else {
                        f.unstable.push(r);
                    }
                }
                ["done", "commit", path] => {
                    let f = file(&mut p, path);
                    let u = std::mem::take(&mut f.unstable);
                    f.promised.extend(u);
                }
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
            .flat_map(|f| f.promised.iter().map(|r| r.1))
            .sum()
    }
}

/// Checks one file read back after the cut against its log; returns the bytes beyond the
/// promise that were present (expected data, not holes).
fn check_file(path: &str, got: &[u8], f: &FileLog) -> Result<u64, String> {
    let want = std::fs::read(&f.expected).unwrap();
    if got.len() > want.len() {
        return Err(format!(
            "{path}: {} bytes, but the copy never wrote past {}",
            got.len(),
            want.len()
        ));
    }
    let mut promised = vec![false; want.len()];
    for &(off, len) in &f.promised {
        let (a, b) = (off as usize, (off + len) as usize);
        promised[a..b].iter_mut().for_each(|p| *p = true);
        if got.len() < b {
            return Err(format!(
                "{path}: {} bytes, but [{a}, {b}) was promised durable",
                got.len()
            ));
        }
        if let Some(i) = (a..b).find(|&i| got[i] != want[i]) {
            return Err(format!(
                "{path}: byte {i} of the promised range [{a}, {b}) is {:#04x}, was {:#04x}",
                got[i], want[i]
            ));
        }
    }
    let mut extra = 0;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        if promised[i] {
            continue;
        }
        if g == w && g != 0 {
            extra += 1;
        } else if g != w && g != 0 {
            return Err(format!(
                "{path}: byte {i} (never promised) is {g:#04x}: neither the data written \
                 there ({w:#04x}) nor a hole: a torn write is served"
            ));
        }
    }
    Ok(extra)
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
        match present.as_slice() {
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
                extra += check_file(n, got, f)?;
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
        "{files} files read back, {} bytes promised and identical, {extra} more bytes \
         written before the cut also there",
        p.promised_bytes()
    ))
}

/// Runs the writer for trial `top` and cuts the power after `cut_line` lines of its log
/// plus `cut_ms`; returns the whole log (every reply the writer saw).
fn copy_and_cut(
    app: ImageAppliance,
    top: &str,
    expected_dir: &Path,
    seed: u64,
    cut_line: usize,
    cut_ms: u64,
) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg(bins::repo().join("tests/py/nfstool.py"))
        .args(["trial-writer", &app.url_root(), top])
        .arg(expected_dir)
        .args([FILES.to_string(), MAX_SIZE.to_string(), seed.to_string()])
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
    while lines.len() < cut_line {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => lines.push(l),
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
        &["--segment-size", "8M"],
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

    let mut app = boot();
    unlock(&app);
    let mut baseline = BTreeMap::new();
    for t in 0..TRIALS {
        let top = format!("t{t}");
        let trial_seed: u64 = rng.random_range(0..1 << 48);
        // Lines of the log before the cut: a file is about 10 of them.
        let cut_line = rng.random_range(1..=FILES * 10);
        let cut_ms = rng.random_range(0..400);
        log(format!(
            "{top}: trial seed {trial_seed}, cut after line {cut_line} + {cut_ms} ms"
        ));
        let expected = d.join(format!("{top}-expected"));
        std::fs::create_dir_all(&expected).unwrap();
        let lines = copy_and_cut(app, &top, &expected, trial_seed, cut_line, cut_ms);
        std::fs::write(d.join(format!("{top}-writer.log")), lines.join("\n")).unwrap();
        let promises = Promises::replay(&lines, &expected);

        // The same disk again: the journal recovers, the appliance answers (boot-test
        // waits for `odt status`), unlocks, and serves what it promised.
        app = boot();
        unlock(&app);
        let status = run_timed(
            odt(&app, &runtime, &["status", "--json", "--code-file"]).arg(&set.code_file),
            Duration::from_secs(60),
        );
        let v: serde_json::Value = serde_json::from_str(&status)
            .unwrap_or_else(|e| panic!("odt status --json is not JSON ({e}): {status}"));
        assert_eq!(v["state"], "unlocked", "status after the cut: {status}");
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
        "{TRIALS} power-cut trials passed in {:.1}s (seed {seed})",
        t0.elapsed().as_secs_f64()
    ));
}
