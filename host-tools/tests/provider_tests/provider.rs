//! The provider's side end to end, with the real `odt` binary on real image files: verify,
//! ingest (byte for byte, sparse, modes and times, bit flips quarantined, hostile names,
//! wrong identity) and erase.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{self, *};
use odt_test_support::prelude::*;

/// Two VM bundles and some loose files, including a sparse file past 4 GiB; returns the
/// expected tree and the seal code.
fn populate_clean(setup: &Setup) -> (std::collections::BTreeMap<String, Expect>, String) {
    let store = setup.open_rw();
    let mut b = Builder::new(&store);
    b.mkdir(b"vm1", 0o755, Some("vm1"));
    b.file(
        b"vm1/vm1.ovf",
        0o644,
        3000,
        vec![(0, pattern(1, 3000))],
        Some("vm1/vm1.ovf"),
    );
    b.file(
        b"vm1/vm1.mf",
        0o600,
        180,
        vec![(0, pattern(2, 180))],
        Some("vm1/vm1.mf"),
    );
    // A disk with data, an all-zero stretch (stored as a hole) and an unaligned tail.
    let mut disk = pattern(3, 21 * MIB as usize + 4321);
    disk[3 * MIB as usize..7 * MIB as usize].fill(0);
    b.file(
        b"vm1/vm1-disk1.vmdk",
        0o640,
        disk.len() as u64,
        vec![(0, disk)],
        Some("vm1/vm1-disk1.vmdk"),
    );
    // Sparse: 4.5 GiB with three islands of data (one straddling 4 GiB).
    let size = 4 * GIB + GIB / 2;
    b.file(
        b"vm1/vm1-disk2.vmdk",
        0o644,
        size,
        vec![
            (0, pattern(4, 65536)),
            (GIB + 12345, pattern(5, 3 * MIB as usize)),
            (4 * GIB - MIB / 2, pattern(6, MIB as usize)),
        ],
        Some("vm1/vm1-disk2.vmdk"),
    );
    b.mkdir(b"exports", 0o750, Some("exports"));
    b.mkdir(b"exports/db server", 0o755, Some("exports/db server"));
    b.file(
        b"exports/db server/db server.ovf",
        0o644,
        900,
        vec![(0, pattern(7, 900))],
        Some("exports/db server/db server.ovf"),
    );
    b.file(
        b"exports/db server/db-disk1.vmdk",
        0o644,
        5 * MIB + 1,
        vec![(0, pattern(8, 5 * MIB as usize + 1))],
        Some("exports/db server/db-disk1.vmdk"),
    );
    b.file(
        b"exports/empty.txt",
        0o444,
        0,
        vec![],
        Some("exports/empty.txt"),
    );
    b.file(
        b"..notes",
        0o600,
        10,
        vec![(0, b"0123456789".to_vec())],
        Some("..notes"),
    );
    b.file(
        "ディスク é.txt".as_bytes(),
        0o644,
        5,
        vec![(0, b"hello".to_vec())],
        Some("ディスク é.txt"),
    );
    b.symlink(
        b"vm1/current.vmdk",
        b"vm1-disk1.vmdk",
        Some("vm1/current.vmdk"),
    );
    b.symlink(b"exports/up", b"../vm1", Some("exports/up"));
    let expect = b.expect.clone();
    let code = seal(&store);
    (expect, code)
}

#[test]
fn ingest_equals_the_written_tree_and_erase_ends_the_trip() {
    // The tree holds sparse disks of up to 4 GiB: a file may not be larger than the
    // set's capacity (sparse images, so this costs no disk).
    let setup = Setup::new(2, 3 * 1024 * MIB);
    let (expect, code) = populate_clean(&setup);

    // The courier's check and both verify depths pass.
    let o = setup.run("seal-check", &["--expect", &code]);
    assert_eq!(common::code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = setup.run("verify", &["--json"]);
    let v = json(&o);
    assert_eq!(common::code(&o), 0, "{v:#}");
    assert_eq!(v["intact"], true);
    assert_eq!(v["seal_code"], code.as_str());
    let o = setup.run("verify", &["--deep", "--json"]);
    let v = json(&o);
    assert_eq!(common::code(&o), 0, "{v:#}");
    assert_eq!(v["files_checked"], 9);
    assert!(v["damaged"].as_array().unwrap().is_empty());
    assert!(v["manifest_problems"].as_array().unwrap().is_empty());

    let ds = setup.dir.path().join("datastore");
    let o = setup.ingest(&ds, &[]);
    let r = json(&o);
    assert_eq!(common::code(&o), 0, "{r:#}\n{}", stderr(&o));
    assert_eq!(r["complete"], true);
    assert_eq!(r["seal_code"], code.as_str());
    assert_eq!(r["files"], 9);
    assert_eq!(r["files_written"], 9);
    assert_eq!(r["symlinks"], 2);
    let bundles: Vec<&str> = r["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap())
        .collect();
    assert_eq!(bundles, ["exports/db server", "vm1"]);
    assert_eq!(r["receipt"]["on_device"], true, "{r:#}");
    check_tree(&ds, &expect);

    // Sparse stays sparse: 4.5 GiB logical, a few MiB allocated.
    let m = std::fs::metadata(ds.join("vm1/vm1-disk2.vmdk")).unwrap();
    assert_eq!(m.len(), 4 * GIB + GIB / 2);
    assert!(
        m.blocks() * 512 < 16 * MIB,
        "{} bytes allocated",
        m.blocks() * 512
    );
    // The zero stretch inside the first disk is a hole too.
    let m = std::fs::metadata(ds.join("vm1/vm1-disk1.vmdk")).unwrap();
    assert!(
        m.blocks() * 512 < 19 * MIB,
        "{} bytes allocated",
        m.blocks() * 512
    );
    // The BLAKE3 roots in the resume state equal b3sum of what is on disk.
    let state = std::fs::read_to_string(ds.join(".odt-ingest/done.jsonl")).unwrap();
    for line in state.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = ds.join(e["path"].as_str().unwrap());
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&p).unwrap()).unwrap();
        assert_eq!(
            e["blake3"],
            h.finalize().to_hex().as_str(),
            "{}",
            p.display()
        );
    }

    // Running it again redoes nothing.
    let o = setup.ingest(&ds, &[]);
    let r = json(&o);
    assert_eq!(common::code(&o), 0, "{r:#}");
    assert_eq!(r["files_written"], 0);
    assert_eq!(r["files_resumed"], 9);
    check_tree(&ds, &expect);

    // The ingest left a receipt: erase goes ahead, and afterwards nothing opens the set.
    let mut args = vec!["erase", "--json", "--device"];
    let devs: Vec<String> = setup
        .devices
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    args.extend(devs.iter().map(|s| s.as_str()));
    let o = odt(&args);
    let e = json(&o);
    assert_eq!(common::code(&o), 0, "{e:#}{}", stderr(&o));
    assert_eq!(e["receipt"]["files"], 9);
    assert_eq!(e["devices"].as_array().unwrap().len(), 2);
    for cmd in ["verify", "seal-check"] {
        let o = setup.run(cmd, &[]);
        assert_ne!(common::code(&o), 0, "{cmd} after erase succeeded");
        let all = stdout(&o) + &stderr(&o);
        assert!(all.contains("was erased"), "{cmd}: {all}");
    }
    let o = setup.ingest(&setup.dir.path().join("ds2"), &[]);
    assert_eq!(common::code(&o), 1);
    assert!(
        stderr(&o).contains("was erased: its keys were destroyed"),
        "{}",
        stderr(&o)
    );
    // No key material is left: no age header anywhere in the superblock slots.
    for d in &setup.devices {
        let img = std::fs::read(d).unwrap();
        assert!(
            !img.windows(21).any(|w| w == b"age-encryption.org/v1"),
            "{} still holds a wrapped key",
            d.display()
        );
    }
}

/// Record locations of a file: (file offset, len, device index, address, record length).
fn records(store: &odt_store::Store, path: &[u8]) -> Vec<(u64, u64, u32, u64, u32)> {
    let mut id = store.root();
    for c in path.split(|&b| b == b'/') {
        id = store.lookup(id, c).unwrap();
    }
    store
        .view()
        .get(id)
        .unwrap()
        .extents()
        .map(|(o, e)| (o, e.len, e.rec.loc.dev, e.rec.loc.addr, e.rec.loc.len))
        .collect()
}

#[test]
fn bit_flips_quarantine_exactly_the_damaged_files() {
    let setup = Setup::new(1, 256 * MIB);
    let store = setup.open_rw();
    let mut b = Builder::new(&store);
    b.mkdir(b"vm", 0o755, Some("vm"));
    b.file(
        b"vm/vm.ovf",
        0o644,
        2000,
        vec![(0, pattern(1, 2000))],
        Some("vm/vm.ovf"),
    );
    b.file(
        b"vm/a.vmdk",
        0o644,
        6 * MIB,
        vec![(0, pattern(2, 6 * MIB as usize))],
        None,
    );
    b.file(
        b"vm/b.vmdk",
        0o644,
        6 * MIB,
        vec![(0, pattern(3, 6 * MIB as usize))],
        Some("vm/b.vmdk"),
    );
    b.file(
        b"vm/c.log",
        0o644,
        70_000,
        vec![(0, pattern(4, 70_000))],
        None,
    );
    b.file(
        b"vm/d.vmdk",
        0o644,
        3 * MIB,
        vec![(0, pattern(5, 3 * MIB as usize))],
        Some("vm/d.vmdk"),
    );
    let expect = b.expect.clone();
    let a_recs = records(&store, b"vm/a.vmdk");
    let c_recs = records(&store, b"vm/c.log");
    seal(&store);
    drop(store);
    // One bit in the middle of a's fourth record, one in c's only record.
    let (a_off, a_len, _, a_addr, a_rlen) = a_recs[3];
    flip(&setup.devices[0], a_addr + a_rlen as u64 / 2, 3);
    let (_, _, _, c_addr, c_rlen) = c_recs[0];
    flip(&setup.devices[0], c_addr + c_rlen as u64 - 20, 0);

    // The keyless verify sees damage; the deep one names the files and ranges.
    let o = setup.run("verify", &["--json"]);
    assert_eq!(common::code(&o), 3, "{}", stdout(&o));
    let o = setup.run("verify", &["--deep", "--json"]);
    let v = json(&o);
    assert_eq!(common::code(&o), 3);
    let damaged: Vec<(String, u64, u64)> = v["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["start"].as_u64().unwrap(),
                d["end"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        damaged,
        [
            ("vm/a.vmdk".to_string(), a_off, a_off + a_len),
            ("vm/c.log".to_string(), 0, 70_000)
        ]
    );

    let ds = setup.dir.path().join("ds");
    let o = setup.ingest(&ds, &[]);
    let r = json(&o);
    assert_eq!(common::code(&o), 3, "{r:#}");
    assert_eq!(r["complete"], false);
    let q: Vec<&str> = r["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["path"].as_str().unwrap())
        .collect();
    assert_eq!(q, ["vm/a.vmdk", "vm/c.log"]);
    let qa = &r["quarantined"][0]["damaged"][0];
    assert_eq!(
        (qa["start"].as_u64().unwrap(), qa["end"].as_u64().unwrap()),
        (a_off, a_off + a_len)
    );
    assert!(qa["why"].as_str().unwrap().contains("checksum"), "{qa}");
    assert_eq!(r["bundles"][0]["complete"], false);
    assert_eq!(r["bundles"][0]["quarantined"], 2);
    // The report tells what the device holds from what reached the datastore.
    let all = 2000 + 6 * MIB + 6 * MIB + 70_000 + 3 * MIB;
    assert_eq!(r["bytes_on_device"], all);
    assert_eq!(r["bytes"], all - 6 * MIB - 70_000);
    assert_eq!(
        (r["files"].as_u64(), r["files_written"].as_u64()),
        (Some(5), Some(3))
    );
    // Everything else is there, byte for byte; nothing of the damaged files is.
    check_tree(&ds, &expect);
    // Erase refuses while files are quarantined.
    let o = odt(&["erase", "--device", setup.devices[0].to_str().unwrap()]);
    assert_eq!(common::code(&o), 8);
    assert!(
        stderr(&o).contains("quarantined 2 damaged file(s)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn hostile_names_are_refused_or_neutralised_and_nothing_escapes() {
    let setup = Setup::new(1, 128 * MIB);
    let store = setup.open_rw();
    let mut b = Builder::new(&store);
    b.mkdir(b"vm", 0o755, Some("vm"));
    b.file(
        b"vm/vm.ovf",
        0o644,
        4,
        vec![(0, b"<x/>".to_vec())],
        Some("vm/vm.ovf"),
    );
    b.file(
        b"vm/..foo",
        0o644,
        3,
        vec![(0, b"foo".to_vec())],
        Some("vm/..foo"),
    );
    b.file(
        b"vm/disk\xff\xfe.vmdk",
        0o644,
        3,
        vec![(0, b"bin".to_vec())],
        Some("vm/disk%FF%FE.vmdk"),
    );
    b.file(
        b"vm/line\nbreak",
        0o644,
        2,
        vec![(0, b"nl".to_vec())],
        Some("vm/line%0Abreak"),
    );
    b.file(
        b".odt-ingest",
        0o644,
        5,
        vec![(0, b"state".to_vec())],
        Some("%2Eodt-ingest"),
    );
    b.symlink(b"vm/etc", b"../../etc", None);
    b.symlink(b"vm/passwd", b"/etc/passwd", None);
    b.mkdir(b"a", 0o755, Some("a"));
    b.symlink(b"a/s", b"..", Some("a/s"));
    b.symlink(b"a/t", b"s/../..", None);
    b.symlink(b"a/ok", b"../vm/vm.ovf", Some("a/ok"));
    let expect = b.expect.clone();
    seal(&store);
    drop(store);

    let outside = setup.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let ds = outside.join("ds");
    let o = setup.ingest(&ds, &[]);
    let r = json(&o);
    assert_eq!(common::code(&o), 3, "{r:#}");
    let refused: Vec<&str> = r["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for want in [
        "vm/etc -> ../../etc",
        "vm/passwd -> /etc/passwd",
        "a/t -> s/../..",
    ] {
        assert!(refused.contains(&want), "{want} not refused: {refused:?}");
    }
    assert_eq!(r["renamed"].as_array().unwrap().len(), 3, "{r:#}");
    check_tree(&ds, &expect);
    // Nothing was written next to the datastore.
    let beside: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["ds"]);

    // A symlink planted in the datastore is never followed: the ingest stops instead.
    let ds2 = outside.join("ds2");
    let victim = outside.join("victim");
    std::fs::create_dir_all(&ds2).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, ds2.join("vm")).unwrap();
    // The symlink is something this ingest did not write: a conflict, refused before
    // anything is written (exit 8), so nothing goes through it.
    let o = setup.ingest(&ds2, &[]);
    assert_eq!(common::code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("vm"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "wrote through the symlink"
    );
}

#[test]
fn wrong_identity_and_wrong_job_are_clear_errors() {
    let setup = Setup::new(1, 64 * MIB);
    {
        let store = setup.open_rw();
        let mut b = Builder::new(&store);
        b.file(b"f", 0o644, 3, vec![(0, b"abc".to_vec())], None);
        seal(&store);
    }
    // Same job file, another identity.
    let key = setup.job.join("ingest.key");
    std::fs::remove_file(&key).unwrap();
    let other = age::x25519::Identity::generate();
    std::fs::write(
        &key,
        odt_store::crypto::keys::identity_file_text(&other).as_bytes(),
    )
    .unwrap();
    let ds = setup.dir.path().join("ds");
    let o = setup.ingest(&ds, &[]);
    assert_eq!(common::code(&o), 1);
    let e = stderr(&o);
    assert!(
        e.contains("wrong key: the ingest identity does not open this device's keys"),
        "{e}"
    );
    assert!(e.contains("ingest.key"), "{e}");
    let o = setup.run("verify", &["--deep"]);
    assert_eq!(common::code(&o), 1);
    assert!(
        stderr(&o).contains("does not open this device's keys"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&ds).join("f").exists());

    // Another job's directory altogether.
    let other_job = setup.dir.path().join("other-job");
    let o = odt(&[
        "job",
        "new",
        "--name",
        "x",
        "--out",
        other_job.to_str().unwrap(),
    ]);
    assert_eq!(common::code(&o), 0);
    let o = odt(&[
        "ingest",
        "--job",
        other_job.to_str().unwrap(),
        "--to",
        ds.to_str().unwrap(),
        "--device",
        setup.devices[0].to_str().unwrap(),
    ]);
    assert_eq!(common::code(&o), 1);
    assert!(
        stderr(&o).contains("the devices belong to job"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn erase_needs_a_receipt_unless_forced_and_overwrite_zeros_the_device() {
    let setup = Setup::new(2, 64 * MIB);
    {
        let store = setup.open_rw();
        let mut b = Builder::new(&store);
        b.file(
            b"f",
            0o644,
            2 * MIB,
            vec![(0, pattern(9, 2 * MIB as usize))],
            None,
        );
        seal(&store);
    }
    let devs: Vec<&str> = setup.devices.iter().map(|p| p.to_str().unwrap()).collect();
    // Not ingested: refused, and nothing was touched.
    let o = odt(&["erase", "--device", devs[0], devs[1]]);
    assert_eq!(common::code(&o), 8);
    assert!(
        stderr(&o).contains("carries no ingest receipt"),
        "{}",
        stderr(&o)
    );
    // Only part of the set: refused too.
    let o = odt(&["erase", "--device", devs[1]]);
    assert_eq!(common::code(&o), 8);
    assert!(
        stderr(&o).contains("device 1 of the set is not among"),
        "{}",
        stderr(&o)
    );
    let o = setup.run("verify", &["--deep"]);
    assert_eq!(common::code(&o), 0, "{}", stdout(&o));
    // Forced, with overwrite.
    let o = odt(&[
        "erase",
        "--force",
        "--overwrite",
        "--json",
        "--device",
        devs[0],
        devs[1],
    ]);
    let e = json(&o);
    assert_eq!(common::code(&o), 0, "{e:#}");
    for d in &setup.devices {
        let img = std::fs::read(d).unwrap();
        let nonzero = img
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, _)| i)
            .max();
        assert!(
            nonzero.unwrap() < 64 * 1024,
            "non-zero byte at {nonzero:?} after --overwrite"
        );
    }
    let o = setup.run("verify", &[]);
    assert_eq!(common::code(&o), 1);
    assert!(stderr(&o).contains("was erased"), "{}", stderr(&o));
    // Erasing again is harmless and says so.
    let o = odt(&["erase", "--device", devs[0], devs[1]]);
    assert_eq!(common::code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("was already erased"), "{}", stdout(&o));
}

/// Runs `script` as root of a new user and mount namespace (so it may mount a small tmpfs
/// without privileges), with `args` as $1...
fn in_mount_namespace(script: &str, args: &[&Path]) -> std::process::Output {
    let o = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "bash",
            "-c",
            script,
            "bash",
        ])
        .args(args)
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        o.status.success(),
        "this test mounts a small tmpfs in a user and mount namespace (unshare -rm); that \
         failed: {}",
        stderr(&o)
    );
    o
}

#[test]
fn a_full_datastore_is_refused_up_front_or_stops_cleanly_and_the_ingest_resumes() {
    let setup = Setup::new(1, 128 * MIB);
    let expect = {
        let store = setup.open_rw();
        let mut b = Builder::new(&store);
        b.mkdir(b"vm", 0o755, Some("vm"));
        for (i, name) in ["vm/a.vmdk", "vm/b.vmdk", "vm/c.vmdk"].iter().enumerate() {
            let data = pattern(10 + i as u64, 4 * MIB as usize);
            b.file(name.as_bytes(), 0o644, 4 * MIB, vec![(0, data)], Some(name));
        }
        b.file(
            b"vm/vm.ovf",
            0o644,
            3000,
            vec![(0, pattern(20, 3000))],
            Some("vm/vm.ovf"),
        );
        seal(&store);
        b.expect.clone()
    };
    let t = setup.dir.path();
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // 12 MiB of incompressible file data against a 10 MiB file system: the check refuses;
    // forced past it, the copy runs out of space part-way; with room, it resumes.
    let script = r#"
        set -u
        mnt=$1 t=$2 odt=$3 job=$4 dev=$5
        mount -t tmpfs -o size=10M odt-test "$mnt" || exit 1
        ing() { "$odt" ingest --job "$job" --device "$dev" --to "$mnt/ds" --json "$@"; }
        ing >"$t/1.out" 2>"$t/1.err"; echo $? >"$t/1.rc"
        ls -A "$mnt" >"$t/1.list"
        ing --skip-space-check >"$t/2.out" 2>"$t/2.err"; echo $? >"$t/2.rc"
        ls -A "$mnt/ds/.odt-ingest/tmp" >"$t/2.tmp"
        cp -a "$mnt/ds" "$t/after2"
        mount -o remount,size=64M "$mnt" || exit 1
        ing >"$t/3.out" 2>"$t/3.err"; echo $? >"$t/3.rc"
        cp -a "$mnt/ds" "$t/after3"
    "#;
    in_mount_namespace(
        script,
        &[&mnt, t, Path::new(odt_bin()), &setup.job, &setup.devices[0]],
    );
    let read = |n: &str| std::fs::read_to_string(t.join(n)).unwrap();

    // Refused before anything was written, saying what to do.
    assert_eq!(read("1.rc").trim(), "1", "{}", read("1.err"));
    let e = read("1.err");
    assert!(e.contains("not enough space in"), "{e}");
    assert!(e.contains("--skip-space-check"), "{e}");
    assert_eq!(
        read("1.list"),
        "",
        "the refused run created the datastore (or its .odt-ingest)"
    );

    // Out of space part-way: a clear error naming the file, the cause said once; the
    // half-written temporary is gone and nothing incomplete carries a final name.
    assert_eq!(read("2.rc").trim(), "1", "{}", read("2.err"));
    let e = read("2.err");
    assert_eq!(e.matches("No space left on device").count(), 1, "{e}");
    assert!(e.contains("run the same command again to resume"), "{e}");
    assert!(e.contains("cannot write the temporary of vm/"), "{e}");
    assert_eq!(read("2.tmp"), "", "temporaries left behind");
    for (rel, m) in walk(&t.join("after2")) {
        if m.is_file() {
            let Some(Expect::File(f)) = expect.get(&rel) else {
                panic!("unexpected file {rel}")
            };
            check_file(&t.join("after2").join(&rel), f).unwrap();
        }
    }

    // With room, the same command finishes the job, keeping what the last run completed.
    assert_eq!(read("3.rc").trim(), "0", "{}", read("3.err"));
    let r: serde_json::Value = serde_json::from_str(&read("3.out")).unwrap();
    assert_eq!(r["complete"], true);
    assert_eq!(
        r["files_written"].as_u64().unwrap() + r["files_resumed"].as_u64().unwrap(),
        4
    );
    // At least the first disk fitted before the space ran out, and was committed then.
    assert!(r["files_resumed"].as_u64().unwrap() >= 1, "{r:#}");
    check_tree(&t.join("after3"), &expect);
}

/// A file with three names (hard links, as `cp -a` or `rsync -H` make them on the share)
/// arrives as one file with three names, and a resumed ingest keeps it so.
#[test]
fn hard_links_arrive_as_one_file_with_every_name() {
    let setup = Setup::new(1, 256 * MIB);
    let store = setup.open_rw();
    let mut b = Builder::new(&store);
    b.mkdir(b"a", 0o755, None);
    b.mkdir(b"b", 0o755, None);
    let data = pattern(7, 3 * MIB as usize + 5);
    let id = b.file(
        b"a/disk.vmdk",
        0o644,
        data.len() as u64,
        vec![(0, data.clone())],
        None,
    );
    let b_dir = store.lookup(store.root(), b"b").unwrap();
    store.link(id, b_dir, b"disk-copy.vmdk").unwrap();
    store.link(id, store.root(), b"top.vmdk").unwrap();
    drop(b);
    let code = seal(&store);
    drop(store);

    let ds = setup.dir.path().join("datastore");
    for run in ["first", "resumed"] {
        let o = setup.ingest(&ds, &[]);
        let r = json(&o);
        assert_eq!(common::code(&o), 0, "{run}: {r:#}\n{}", stderr(&o));
        assert_eq!(r["seal_code"], code.as_str());
        assert_eq!(r["files"], 1, "{run}: one file, whatever its names: {r:#}");
        assert_eq!(r["hard_links"], 2, "{run}: {r:#}");
        let names = ["a/disk.vmdk", "b/disk-copy.vmdk", "top.vmdk"];
        let meta: Vec<std::fs::Metadata> = names
            .iter()
            .map(|n| std::fs::symlink_metadata(ds.join(n)).unwrap())
            .collect();
        for (n, m) in names.iter().zip(&meta) {
            assert_eq!(m.ino(), meta[0].ino(), "{run}: {n} is not the same file");
            assert_eq!(m.nlink(), 3, "{run}: {n}");
        }
        assert_eq!(std::fs::read(ds.join("top.vmdk")).unwrap(), data, "{run}");
    }
}
