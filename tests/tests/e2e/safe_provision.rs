//! `odt provision` destroys nothing by mistake (issue 14): a device holding a sealed,
//! never-ingested set of another job, or foreign data, is refused with exit 8 and left
//! byte-for-byte as it was, naming what is on it; `--force` provisions over it; an erased
//! device needs no `--force`; a device too small to hold a set is refused with its size and
//! the size needed; a directory given as the device is named as one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odt_e2e::bins;
use odt_e2e::run::run;
use odt_store::device::Device;
use odt_store::format::superblock::Superblock;
use odt_store::trip::seal;
use odt_test_support::prelude::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `odt ARGS`: exit code, stdout, stderr.
fn odt(args: &[&str]) -> (i32, String, String) {
    let o = run(Command::new(bins::odt()).args(args), None, LIMIT);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// BLAKE3 of a whole file (the device image before and after).
fn hash(p: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(p).unwrap())
}

/// A new job made by `odt job new`: its directory and id.
fn new_job(dir: &Path, name: &str) -> (PathBuf, String) {
    let job = dir.join(name);
    let (rc, out, err) = odt(&[
        "job",
        "new",
        "--name",
        name,
        "--out",
        job.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["id"]
        .as_str()
        .or_else(|| v["job_id"].as_str())
        .unwrap_or_else(|| panic!("job new --json has no id: {out}"))
        .to_string();
    (job, id)
}

fn provision(job: &Path, dev: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "provision",
        "--job",
        job.to_str().unwrap(),
        "--device",
        dev.to_str().unwrap(),
        "--segment-size",
        "8M",
        "--journal-size",
        "16M",
    ];
    args.extend_from_slice(extra);
    odt(&args)
}

/// A set of job `job-test` with a file written by the customer, sealed, never ingested.
fn sealed_set() -> (Fixture, String) {
    let fx = Fixture::new(1, 128 * MIB);
    let s = fx.open();
    let f = s.create(s.root(), b"customer.vmdk", 0o644).unwrap();
    s.write(f.id, 0, &pattern(3, 3 * MIB as usize)).unwrap();
    let sealed = seal::seal(&s, vec![]).unwrap();
    drop(s);
    (fx, sealed.code)
}

#[test]
fn provision_over_a_sealed_device_of_another_job_is_refused_until_force() {
    let (fx, code) = sealed_set();
    let dev = fx.paths[0].clone();
    let (job, job_id) = new_job(fx.dir.path(), "second customer");
    let before = hash(&dev);

    let (rc, out, err) = provision(&job, &dev, &[]);
    assert_eq!(rc, 8, "a refusal that changed nothing exits 8:\n{out}{err}");
    assert_eq!(
        hash(&dev),
        before,
        "the refused provision changed the device"
    );
    for want in [
        "refusing to provision",
        "job test (job-test)",
        &format!("sealed (seal code {code})"),
        "NOT ingested",
        "--force",
    ] {
        assert!(
            err.contains(want),
            "the refusal does not say {want:?}:\n{err}"
        );
    }
    assert!(
        !out.contains("unlock code"),
        "no unlock code was printed for a refused provision: {out}"
    );
    let job_file = std::fs::read_to_string(job.join("job.toml")).unwrap();
    assert!(
        !job_file.contains("set_id"),
        "the job records no set: {job_file}"
    );

    // --json: one error object with a stable kind.
    let (rc, out, _) = provision(&job, &dev, &["--json"]);
    assert_eq!(rc, 8);
    let v: serde_json::Value = serde_json::from_str(&out).expect("a JSON error object");
    assert_eq!(v["error"]["kind"], "conflict", "{v}");
    assert_eq!(hash(&dev), before);

    let (rc, out, err) = provision(&job, &dev, &["--force"]);
    assert_eq!(rc, 0, "{out}{err}");
    let sb = Superblock::read(&Device::open(&dev, false).unwrap()).unwrap();
    assert_eq!(
        sb.job_id, job_id,
        "--force provisioned the device for the new job"
    );
}

#[test]
fn provision_over_foreign_data_is_refused_and_an_erased_device_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = new_job(dir.path(), "customer");

    // A data file: non-zero bytes at its start (as a file system or an export would).
    let dev = dir.path().join("data.img");
    let f = std::fs::File::create(&dev).unwrap();
    f.set_len(128 * MIB).unwrap();
    drop(f);
    write_at(&dev, 4096, &pattern(9, MIB as usize));
    let before = hash(&dev);
    let (rc, out, err) = provision(&job, &dev, &[]);
    assert_eq!(rc, 8, "{out}{err}");
    assert!(
        err.contains("non-zero data, not an ODT device"),
        "the refusal does not say what is there:\n{err}"
    );
    assert_eq!(
        hash(&dev),
        before,
        "the refused provision changed the device"
    );

    // Data only at its end (where the superblock copy goes) is foreign too.
    let tail = dir.path().join("tail.img");
    let f = std::fs::File::create(&tail).unwrap();
    f.set_len(128 * MIB).unwrap();
    drop(f);
    write_at(&tail, 128 * MIB - 100, b"backup header");
    let (rc, _, err) = provision(&job, &tail, &[]);
    assert_eq!(rc, 8, "{err}");

    // A set erased by `odt erase` is provisioned without --force.
    let (fx, _) = sealed_set();
    let (rc, out, err) = odt(&[
        "erase",
        "--device",
        fx.paths[0].to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = provision(&job, &fx.paths[0], &[]);
    assert_eq!(rc, 0, "an erased device is provisioned:\n{out}{err}");

    // A blank (all-zero, sparse) image file is provisioned too (a second job: one set each).
    let (job2, _) = new_job(dir.path(), "third");
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(128 * MIB)
        .unwrap();
    let (rc, out, err) = provision(&job2, &blank, &[]);
    assert_eq!(rc, 0, "a blank device is provisioned:\n{out}{err}");
}

#[test]
fn a_device_too_small_is_refused_with_its_size_and_the_size_needed() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = new_job(dir.path(), "customer");
    let dev = dir.path().join("tiny.img");
    std::fs::write(&dev, b"0123456789").unwrap();
    let (rc, out, err) = provision(&job, &dev, &[]);
    assert_ne!(rc, 0, "{out}{err}");
    assert!(
        err.contains("device too small") && err.contains("has 10 bytes, needs at least"),
        "{err}"
    );
    assert!(
        !err.contains("18446744073709"),
        "an underflowed offset in the message: {err}"
    );
    assert_eq!(std::fs::read(&dev).unwrap(), b"0123456789");
}

#[test]
fn a_directory_given_as_the_device_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = new_job(dir.path(), "customer");
    let folder = dir.path().join("devices");
    std::fs::create_dir(&folder).unwrap();
    let (rc, out, err) = provision(&job, &folder, &[]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("is a directory, not a device"), "{err}");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
}
