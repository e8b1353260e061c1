//! A trip whose journal was compacted (issue 17 point 3), through the real `odt` binary: a
//! store with a small journal region churns through thousands of changes, compacts, goes
//! on changing and is sealed; then `odt seal-check --expect`, `odt verify --deep`, `odt bom
//! --device` (BLAKE3 = `b3sum`) and `odt ingest` (byte for byte) all work from the
//! devices; and a checkpoint byte changed after the seal fails `seal-check`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use odt_e2e::bins;
use odt_e2e::run::{run, run_ok, text};
use odt_e2e::vmtree::read_files;
use odt_store::format::superblock::JOURNAL_START;
use odt_store::trip::provision::Options;
use odt_store::trip::seal;
use odt_test_support::prelude::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);

/// `odt ARGS... --device D --job J`.
fn odt_dev(fx: &Fixture, job: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bins::odt());
    c.args(args).arg("--job").arg(job);
    for d in &fx.paths {
        c.arg("--device").arg(d);
    }
    run(&mut c, None, LIMIT)
}

#[test]
fn seal_check_verify_bom_and_ingest_after_compaction() {
    let fx = Fixture::with_options(
        1,
        128 * MIB,
        Options {
            journal_len: Some(8 * MIB),
            ..Options::default()
        },
    );
    let s = fx.open();
    let mut files = BTreeMap::new();
    let vm = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let disk = s.create(vm.id, b"disk.vmdk", 0o644).unwrap();
    let data = pattern(1, 3 * MIB as usize + 17);
    s.write(disk.id, 0, &data).unwrap();
    files.insert("vm/disk.vmdk".to_string(), data);
    // Churn: names created, renamed, changed and removed, from several threads.
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let s = &s;
            sc.spawn(move || {
                let d = s
                    .mkdir(s.root(), format!("tmp{t}").as_bytes(), 0o755)
                    .unwrap();
                for i in 0..250u64 {
                    let f = s.create(d.id, format!("n{i}").as_bytes(), 0o644).unwrap();
                    s.write(f.id, 0, format!("{t} {i}").as_bytes()).unwrap();
                    s.rename(d.id, format!("n{i}").as_bytes(), d.id, b"last")
                        .unwrap();
                }
                s.remove(d.id, b"last").unwrap();
                s.rmdir(s.root(), format!("tmp{t}").as_bytes()).unwrap();
            });
        }
    });
    let used = s.stats().journal_used;
    assert!(s.compact_journal().unwrap(), "the journal compacted");
    assert!(
        s.stats().journal_used < used / 4,
        "compaction dropped the churn"
    );
    // Changes after the checkpoint.
    let other = s.mkdir(s.root(), b"other", 0o755).unwrap();
    let notes = s.create(other.id, b"notes.txt", 0o644).unwrap();
    s.write(notes.id, 0, b"after the checkpoint\n").unwrap();
    s.rename(vm.id, b"disk.vmdk", vm.id, b"vm-disk1.vmdk")
        .unwrap();
    let moved = files.remove("vm/disk.vmdk").unwrap();
    files.insert("vm/vm-disk1.vmdk".to_string(), moved);
    files.insert("other/notes.txt".into(), b"after the checkpoint\n".to_vec());
    let start = s.journal_start();
    assert!(start > 0, "the journal starts at its checkpoint");
    let code = seal::seal(&s, vec![]).unwrap().code;
    drop(s);
    let job = fx.job_dir();

    let o = odt_dev(&fx, &job, &["seal-check", "--expect", &code]);
    assert!(o.status.success(), "seal-check: {}", text(&o));
    let o = odt_dev(&fx, &job, &["verify", "--deep"]);
    assert!(o.status.success(), "verify --deep: {}", text(&o));

    let o = odt_dev(&fx, &job, &["bom", "--json"]);
    assert!(o.status.success(), "bom: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("bom --json");
    let bom: BTreeMap<String, String> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "file")
        .map(|e| {
            (
                e["path"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/')
                    .to_string(),
                e["blake3"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = files
        .iter()
        .map(|(p, d)| (p.clone(), blake3::hash(d).to_hex().to_string()))
        .collect();
    assert_eq!(bom, want);

    let out = tempfile::tempdir().unwrap();
    let ds = out.path().join("datastore");
    let mut c = Command::new(bins::odt());
    c.arg("ingest")
        .arg("--device")
        .arg(&fx.paths[0])
        .arg("--job")
        .arg(&job)
        .arg("--to")
        .arg(&ds);
    run_ok(&mut c, LIMIT);
    assert_eq!(read_files(&ds), files, "ingested bytes");

    // A byte of the checkpoint changed after the seal.
    flip(&fx.paths[0], JOURNAL_START + start + 64, 2);
    let o = odt_dev(&fx, &job, &["seal-check", "--expect", &code]);
    assert!(
        !o.status.success(),
        "a changed checkpoint passed seal-check"
    );
    assert!(text(&o).contains("journal"), "{}", text(&o));
}
