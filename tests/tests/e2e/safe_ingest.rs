//! `odt ingest` never replaces what it did not write (issue 14): a datastore holding a
//! same-named file stops it before anything is written (exit 8, the file unchanged, the
//! conflict listed); `--on-conflict skip` and `rename` leave that file alone; a datastore
//! in or around the job folder or the device's folder is refused; a resumed run does not
//! take its own files for conflicts; and the per-file log's BLAKE3 is what `b3sum` prints
//! for each written file. A refused ingest changes nothing at all in the datastore (not
//! even its state folder); a run that lost its records knows its own files by the intent
//! record and their BLAKE3, and a look-alike file (same size, same mtime) is a conflict.
//! Short work (ingest, verify, erase) still ends with a final JSON progress line, and on a
//! terminal the bar ends full on a line of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odt_e2e::bins;
use odt_e2e::run::{run, run_ok};
use odt_e2e::vmtree::read_files;
use odt_store::trip::seal;
use odt_test_support::prelude::*;

const LIMIT: Duration = Duration::from_secs(300);

/// A sealed set of two VM folders and a top-level bundle, with its job directory.
struct Set {
    fx: Fixture,
    /// Holds the job directory and the datastores (apart from the device's folder).
    out: tempfile::TempDir,
    job: PathBuf,
    /// Device path -> content.
    files: BTreeMap<String, Vec<u8>>,
}

fn sealed_set() -> Set {
    let fx = Fixture::new(1, 256 * MIB);
    let s = fx.open();
    let mut files = BTreeMap::new();
    let vm = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let other = s.mkdir(s.root(), b"other", 0o755).unwrap();
    for (dir, dname, name, seed, len) in [
        (vm.id, "vm", "disk.vmdk", 1, 3 * MIB as usize + 17),
        (vm.id, "vm", "vm.ovf", 2, 900),
        (other.id, "other", "notes, v2.txt", 3, 5000),
    ] {
        let f = s.create(dir, name.as_bytes(), 0o644).unwrap();
        let data = pattern(seed, len);
        s.write(f.id, 0, &data).unwrap();
        files.insert(format!("{dname}/{name}"), data);
    }
    let top = s.create(s.root(), b"top.ovf", 0o644).unwrap();
    s.write(top.id, 0, b"<Envelope/>").unwrap();
    files.insert("top.ovf".into(), b"<Envelope/>".to_vec());
    seal::seal(&s, vec![]).unwrap();
    drop(s);
    let out = tempfile::tempdir().unwrap();
    let job = out.path().join("job");
    odt_test_support::fixture::write_job(&job, &fx.job_id, &fx.identity, &fx.provisioned);
    Set {
        fx,
        out,
        job,
        files,
    }
}

/// `odt ingest` of `set` into `to` with `extra` arguments: exit code, stdout, stderr.
fn ingest(set: &Set, to: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(bins::odt());
    c.arg("ingest")
        .arg("--device")
        .arg(&set.fx.paths[0])
        .arg("--job")
        .arg(&set.job)
        .arg("--to")
        .arg(to)
        .args(extra);
    let o = run(&mut c, None, LIMIT);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The JSON-lines per-file log.
fn log_lines(ds: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(ds.join(".odt-ingest/files.jsonl"))
        .expect("the per-file log files.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// `b3sum` of a file, as it prints it.
fn b3sum(p: &Path) -> String {
    let out = run_ok(Command::new("b3sum").arg("--no-names").arg(p), LIMIT);
    out.trim().to_string()
}

/// Checks every written or renamed line of the log against `b3sum` of the datastore file,
/// and the CSV log against the JSON lines.
fn check_log_against_b3sum(ds: &Path) -> usize {
    let lines = log_lines(ds);
    let mut checked = 0;
    for l in &lines {
        let outcome = l["outcome"].as_str().unwrap();
        if outcome == "written" || outcome == "renamed" {
            let p = ds.join(l["path"].as_str().unwrap());
            assert_eq!(
                l["blake3"].as_str().unwrap(),
                b3sum(&p),
                "the log's BLAKE3 of {} is not what b3sum says",
                p.display()
            );
            assert_eq!(
                l["size"].as_u64().unwrap(),
                std::fs::metadata(&p).unwrap().len()
            );
            checked += 1;
        }
    }
    let csv = std::fs::read_to_string(ds.join(".odt-ingest/files.csv")).unwrap();
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("path,device_path,outcome,reason,size,blake3")
    );
    assert_eq!(
        rows.count(),
        lines.len(),
        "CSV and JSON lines differ:\n{csv}"
    );
    for l in &lines {
        if let Some(h) = l["blake3"].as_str() {
            assert!(csv.contains(h), "{h} is not in the CSV log:\n{csv}");
        }
    }
    checked
}

#[test]
fn a_same_named_file_stops_the_ingest_and_stays_as_it_was() {
    which_b3sum();
    let set = sealed_set();
    let ds = set.out.path().join("datastore");
    std::fs::create_dir_all(ds.join("vm")).unwrap();
    let mine = b"the provider's own disk, not from this device".to_vec();
    std::fs::write(ds.join("vm/disk.vmdk"), &mine).unwrap();
    std::fs::write(ds.join("unrelated.txt"), b"keep").unwrap();
    let before = read_files(&ds);

    let (rc, out, err) = ingest(&set, &ds, &[]);
    assert_eq!(rc, 8, "conflicts exit 8:\n{out}{err}");
    assert!(
        err.contains("vm/disk.vmdk") && err.contains("--on-conflict"),
        "the refusal lists the conflict and the way on:\n{err}"
    );
    assert_eq!(
        read_files(&ds),
        before,
        "the refused ingest wrote into the datastore"
    );

    let (rc, out, _) = ingest(&set, &ds, &["--json"]);
    assert_eq!(rc, 8);
    let v: serde_json::Value = serde_json::from_str(&out).expect("a JSON error object");
    assert_eq!(v["error"]["kind"], "conflict", "{v}");
    assert_eq!(read_files(&ds), before);

    // skip: the provider's file stays, everything else arrives; not complete (exit 3).
    let (rc, out, err) = ingest(&set, &ds, &["--on-conflict", "skip"]);
    assert_eq!(rc, 3, "{out}{err}");
    let got = read_files(&ds);
    assert_eq!(
        got["vm/disk.vmdk"], mine,
        "skip replaced the provider's file"
    );
    assert_eq!(got["unrelated.txt"], b"keep");
    for (p, data) in &set.files {
        if p != "vm/disk.vmdk" {
            assert_eq!(&got[p], data, "{p} was not ingested");
        }
    }
    let lines = log_lines(&ds);
    let skipped: Vec<_> = lines.iter().filter(|l| l["outcome"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{lines:?}");
    assert_eq!(skipped[0]["path"], "vm/disk.vmdk");
    assert_eq!(check_log_against_b3sum(&ds), set.files.len() - 1);
    assert!(
        out.contains("skipped") && out.contains("No ingest receipt"),
        "the report says the file was skipped and erase will refuse:\n{out}"
    );

    // rename (same datastore: the files skip wrote are its own, not conflicts).
    let (rc, out, err) = ingest(&set, &ds, &["--on-conflict", "rename"]);
    assert_eq!(rc, 0, "{out}{err}");
    let got = read_files(&ds);
    assert_eq!(
        got["vm/disk.vmdk"], mine,
        "rename replaced the provider's file"
    );
    assert_eq!(got["vm/disk.odt-1.vmdk"], set.files["vm/disk.vmdk"]);
    let lines = log_lines(&ds);
    let renamed: Vec<_> = lines.iter().filter(|l| l["outcome"] == "renamed").collect();
    assert_eq!(renamed.len(), 1, "{lines:?}");
    assert_eq!(renamed[0]["path"], "vm/disk.odt-1.vmdk");
    assert_eq!(renamed[0]["device_path"], "vm/disk.vmdk");
    assert_eq!(check_log_against_b3sum(&ds), set.files.len());

    // Run again without --on-conflict: the renamed file is its own work, the provider's
    // file is still a conflict.
    let (rc, _, err) = ingest(&set, &ds, &[]);
    assert_eq!(rc, 8, "{err}");
    assert!(err.contains("1 path(s)"), "{err}");
}

#[test]
fn a_fresh_ingest_logs_every_file_with_the_blake3_b3sum_prints_and_resumes_cleanly() {
    which_b3sum();
    let set = sealed_set();
    let ds = set.out.path().join("fresh");
    let (rc, out, err) = ingest(&set, &ds, &[]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("bundle /:"),
        "a bundle at the top is named \"/\":\n{out}"
    );
    assert_eq!(read_files(&ds), set.files);
    assert_eq!(check_log_against_b3sum(&ds), set.files.len());
    // Again into the same datastore: its own files are no conflict.
    let (rc, out, err) = ingest(&set, &ds, &["--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(check_log_against_b3sum(&ds), set.files.len());
}

#[test]
fn a_datastore_in_the_job_or_device_folder_is_refused() {
    let set = sealed_set();
    let job_files = |j: &Path| -> Vec<Vec<u8>> {
        ["job.toml", "ingest.key"]
            .iter()
            .map(|n| std::fs::read(j.join(n)).unwrap())
            .collect()
    };
    let before = job_files(&set.job);
    let dev_dir = set.fx.paths[0].parent().unwrap().to_path_buf();
    for (to, kind) in [
        (set.job.clone(), "is the job folder"),
        (set.job.join("out"), "is inside the job folder"),
        (dev_dir.clone(), "is the folder of device"),
        (dev_dir.join("ds"), "is inside the folder of device"),
        (dev_dir.parent().unwrap().to_path_buf(), "contains"),
    ] {
        let (rc, out, err) = ingest(&set, &to, &[]);
        assert_eq!(rc, 8, "{}: {out}{err}", to.display());
        assert!(
            err.contains("refusing to ingest") && err.contains(kind),
            "{}: {err}",
            to.display()
        );
    }
    assert_eq!(job_files(&set.job), before, "the job's files were touched");
    assert!(
        !set.job.join("out").exists(),
        "a refused datastore was created"
    );
    assert!(!set.job.join(".odt-ingest").exists());
    let (rc, out, _) = ingest(&set, &set.job, &["--json"]);
    assert_eq!(rc, 8);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["kind"], "conflict", "{v}");
}

/// b3sum is a test dependency (scripts/install-test-deps): its absence fails the test.
fn which_b3sum() {
    let o = Command::new("b3sum").arg("--version").output();
    assert!(
        o.is_ok_and(|o| o.status.success()),
        "b3sum is missing: run scripts/install-test-deps"
    );
}

/// Everything below `dir`, the ingest's state included, and `dir` itself: path -> (type,
/// mode, mtime in ns, content of files or symlink target).
fn full_tree(dir: &Path) -> BTreeMap<String, (String, u32, i128, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    fn entry(p: &Path) -> (String, u32, i128, Vec<u8>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let body = if m.is_file() {
            std::fs::read(p).unwrap()
        } else if m.is_symlink() {
            std::fs::read_link(p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        (format!("{:?}", m.file_type()), m.mode(), mtime, body)
    }
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (String, u32, i128, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, entry(&p));
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    out.insert(".".into(), entry(dir));
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_refused_ingest_creates_and_changes_nothing_in_the_datastore() {
    let set = sealed_set();
    let ds = set.out.path().join("datastore");
    std::fs::create_dir_all(ds.join("vm")).unwrap();
    std::fs::write(ds.join("vm/disk.vmdk"), b"the provider's own").unwrap();
    let before = full_tree(&ds);
    let (rc, out, err) = ingest(&set, &ds, &[]);
    assert_eq!(rc, 8, "{out}{err}");
    assert_eq!(
        full_tree(&ds),
        before,
        "the refused ingest created or changed something (its state folder?)"
    );
    assert!(!ds.join(".odt-ingest").exists());

    // With the state of an earlier run (skip), a refusal leaves that state as it was too.
    let (rc, out, err) = ingest(&set, &ds, &["--on-conflict", "skip"]);
    assert_eq!(rc, 3, "{out}{err}");
    let before = full_tree(&ds);
    assert!(
        before.contains_key(".odt-ingest/done.jsonl"),
        "{:?}",
        before.keys()
    );
    let (rc, out, err) = ingest(&set, &ds, &["--json"]);
    assert_eq!(rc, 8, "{out}{err}");
    assert_eq!(
        full_tree(&ds),
        before,
        "the refused ingest touched the datastore"
    );
}

/// Sets the modification time of `p` to that of `like` (to the nanosecond).
fn same_mtime(p: &Path, like: &Path) {
    let t = std::fs::metadata(like).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(p).unwrap(),
        std::fs::metadata(like).unwrap(),
    );
    assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
}

#[test]
fn a_look_alike_file_is_a_conflict_and_a_run_that_lost_its_records_knows_its_own_files() {
    let set = sealed_set();
    // What the ingest writes, to copy its size and mtime.
    let model = set.out.path().join("model");
    let (rc, out, err) = ingest(&set, &model, &[]);
    assert_eq!(rc, 0, "{out}{err}");

    // Someone else's file with the size and the mtime (to the nanosecond) the ingest gives
    // vm/vm.ovf, but other bytes: not the ingest's own, whatever it looks like.
    let ds = set.out.path().join("datastore");
    std::fs::create_dir_all(ds.join("vm")).unwrap();
    let theirs = vec![b'x'; set.files["vm/vm.ovf"].len()];
    std::fs::write(ds.join("vm/vm.ovf"), &theirs).unwrap();
    same_mtime(&ds.join("vm/vm.ovf"), &model.join("vm/vm.ovf"));
    let (rc, out, err) = ingest(&set, &ds, &[]);
    assert_eq!(
        rc, 8,
        "a look-alike file was taken for the ingest's own:\n{out}{err}"
    );
    assert!(err.contains("vm/vm.ovf"), "{err}");
    assert_eq!(std::fs::read(ds.join("vm/vm.ovf")).unwrap(), theirs);

    // A run killed after placing its files but before recording them as done (its
    // done.jsonl lost): the intent records and the files' BLAKE3 say they are its own.
    std::fs::remove_file(model.join(".odt-ingest/done.jsonl")).unwrap();
    let (rc, out, err) = ingest(&set, &model, &["--json"]);
    assert_eq!(
        rc, 0,
        "the ingest took its own files for conflicts:\n{out}{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        v["files_resumed"].as_u64(),
        Some(set.files.len() as u64),
        "the placed files were not known as done: {v}"
    );
    assert_eq!(read_files(&model), set.files);

    // The same, but one placed file was since replaced by a look-alike: a conflict.
    std::fs::remove_file(model.join(".odt-ingest/done.jsonl")).unwrap();
    let p = model.join("other/notes, v2.txt");
    let look_alike = model.join("look-alike");
    std::fs::write(
        &look_alike,
        vec![b'y'; set.files["other/notes, v2.txt"].len()],
    )
    .unwrap();
    same_mtime(&look_alike, &p);
    std::fs::rename(&look_alike, &p).unwrap();
    let (rc, out, err) = ingest(&set, &model, &[]);
    assert_eq!(
        rc, 8,
        "a replaced file was taken for the ingest's own:\n{out}{err}"
    );
    assert!(
        err.contains("other/notes, v2.txt") && err.contains("1 path(s)"),
        "{err}"
    );
}

/// The JSON progress lines of `what` on stderr (a pipe here, not a terminal).
fn progress_lines(stderr: &str, what: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a progress line is JSON"))
        .filter(|v| v["what"] == what)
        .collect()
}

/// The last progress line shows all `total` bytes done, and is marked as the last.
fn check_final_line(stderr: &str, what: &str, total: u64) {
    let lines = progress_lines(stderr, what);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no {what} progress line at all on stderr:\n{stderr}"));
    assert_eq!(
        (last["done"].as_u64(), last["total"].as_u64()),
        (Some(total), Some(total)),
        "the last {what} progress line is not the final state: {last}"
    );
    assert_eq!(last["finished"], true, "{last}");
    assert_eq!(last["unit"], "bytes");
    let finals = lines.iter().filter(|l| l["finished"] == true).count();
    assert_eq!(finals, 1, "one final line: {lines:?}");
}

#[test]
fn short_work_still_ends_with_a_final_progress_line_of_its_totals() {
    let set = sealed_set();
    let ds = set.out.path().join("datastore");
    let (rc, out, err) = ingest(&set, &ds, &["--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let total: u64 = set.files.values().map(|d| d.len() as u64).sum();
    check_final_line(&err, "ingest", total);

    let dev = set.fx.paths[0].to_str().unwrap();
    let job = set.job.to_str().unwrap();
    let o = run(
        Command::new(bins::odt()).args(["verify", "--device", dev, "--job", job]),
        None,
        LIMIT,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    let lines = progress_lines(&err, "verify");
    let last = lines.last().expect("a final verify progress line");
    check_final_line(&err, "verify", last["total"].as_u64().unwrap());
    assert!(last["done"].as_u64().unwrap() >= total, "{last}");

    let o = run(
        Command::new(bins::odt()).args(["erase", "--device", dev, "--overwrite", "--force"]),
        None,
        LIMIT,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    let size = std::fs::metadata(dev).unwrap().len();
    let last = progress_lines(&err, "overwrite");
    let last = last.last().expect("a final overwrite progress line");
    assert!(last["total"].as_u64().unwrap() + 65536 >= size, "{last}");
    check_final_line(&err, "overwrite", last["total"].as_u64().unwrap());
}

#[test]
fn on_a_terminal_the_bar_ends_full_on_a_line_of_its_own() {
    let set = sealed_set();
    // `script` (bsdutils, essential in Debian) gives the command a terminal.
    let cmd = format!(
        "'{}' verify --device '{}' --job '{}'",
        bins::odt().display(),
        set.fx.paths[0].display(),
        set.job.display()
    );
    let o = run(
        Command::new("script").args(["-qec", &cmd, "/dev/null"]),
        None,
        LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    let report = out.find("Verify of job").expect("the report");
    // The bar's last drawing: what follows its last clear-line before the report.
    let last = out[..report].rsplit("\x1b[2K").next().unwrap();
    assert!(
        last.contains("verify [================================]"),
        "the bar does not end full: {last:?}"
    );
    assert!(
        last.ends_with('\n'),
        "the report does not start a line of its own: {last:?}"
    );
}
