//! Segment cleaning (issue 17): deleted and overwritten data gives its space back, the
//! bytes that stay live read back unchanged after their records moved, across a reopen,
//! and the seal, the courier's check and both verifications hold on a cleaned device.

use std::collections::BTreeMap;

use odt_store::Store;
use odt_store::trip::seal;
use odt_store::trip::verify::{check_files, check_log};
use odt_test_support::prelude::*;

const FILE: usize = 3 * MIB as usize;

/// Incompressible content (stored raw, so the device fills as the test counts).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Writes file `name` with `seed`'s content in 1 MiB pieces, as an NFS client does.
fn put(s: &Store, name: &str, seed: u64, len: usize) -> u64 {
    let f = s.create(s.root(), name.as_bytes(), 0o644).unwrap();
    let d = data(seed, len);
    for (k, piece) in d.chunks(MIB as usize).enumerate() {
        s.write_unstable(f.id, k as u64 * MIB, piece).unwrap();
    }
    s.sync().unwrap();
    f.id
}

/// Writes `n` more files of [`FILE`] bytes, named and seeded from `seed` on.
fn put_more(s: &Store, files: &mut BTreeMap<String, u64>, seed: &mut u64, n: usize) {
    for _ in 0..n {
        *seed += 1;
        let name = format!("f{seed}");
        put(s, &name, *seed, FILE);
        files.insert(name, *seed);
    }
}

fn read_all(s: &Store, id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let (b, eof) = s.read(id, out.len() as u64, MIB as u32).unwrap();
        out.extend_from_slice(&b);
        if eof {
            break;
        }
    }
    out
}

/// Every file of `files` (name -> seed) reads back as written.
fn check_all(s: &Store, files: &BTreeMap<String, u64>) {
    for (name, seed) in files {
        let id = s.lookup(s.root(), name.as_bytes()).unwrap();
        assert!(
            read_all(s, id, FILE) == data(*seed, FILE),
            "{name} does not read back as written"
        );
    }
}

fn no_log_problems(s: &Store) {
    for (dev, sb) in s.devices().iter().zip(s.superblocks()) {
        let (_, problems) = check_log(dev, sb, None, &mut |_| {});
        assert!(problems.is_empty(), "{problems:?}");
    }
}

#[test]
fn fill_delete_refill_past_the_raw_capacity_reads_back_and_seals() {
    // 2 devices, 8 MiB segments: about 2 x 9 segments of room.
    let fx = Fixture::new(2, 100 * MIB);
    let s = fx.open();
    let capacity = s.stats().capacity_bytes;
    let mut files = BTreeMap::new();
    let mut seed = 0;
    let mut written = 0u64;
    // Fill, delete every other file, refill, over and over: more than twice the capacity
    // goes through the devices.
    // No background cleaner here: the writes that would not fit clean.
    while written < 2 * capacity + capacity / 2 {
        while ((files.len() + 1) * FILE) as u64 <= capacity * 7 / 10 {
            seed += 1;
            let name = format!("f{seed}");
            put(&s, &name, seed, FILE);
            files.insert(name, seed);
            written += FILE as u64;
        }
        let names: Vec<String> = files.keys().cloned().collect();
        for name in names.iter().step_by(2) {
            s.remove(s.root(), name.as_bytes()).unwrap();
            files.remove(name);
        }
    }
    let st = s.stats();
    assert_eq!(st.written_bytes, written);
    check_all(&s, &files);
    no_log_problems(&s);

    // Reopened: the moves and frees replay, the same bytes read back.
    drop(s);
    let s = fx.open();
    check_all(&s, &files);
    // And the log continues after the restart: writes that clean to find room.
    put_more(&s, &mut files, &mut seed, 4);
    check_all(&s, &files);
    no_log_problems(&s);

    // A journal compacted after cleaning: the checkpoint carries the segment allocation,
    // so the reopened store reads the moved records and goes on reusing freed segments.
    let before = s.stats().segments_cleaned;
    assert!(s.compact_journal().unwrap(), "the journal was compacted");
    drop(s);
    let s = fx.open();
    assert_eq!(s.stats().segments_cleaned, before);
    check_all(&s, &files);
    put_more(&s, &mut files, &mut seed, 4);
    check_all(&s, &files);
    no_log_problems(&s);

    // The seal, the courier's check and both verifications hold.
    let sealed = seal::seal(&s, vec![]).unwrap();
    assert!(check_files(&s, &mut |_| {}).unwrap().is_empty());
    no_log_problems(&s);
    drop(s);
    let r = seal::check(&fx.paths, &fx.job_dir(), Some(&sealed.code)).unwrap();
    assert!(r.intact, "{:?}", r.problem);
    let ro = fx.open_ro().unwrap();
    check_all(&ro, &files);
    assert!(check_files(&ro, &mut |_| {}).unwrap().is_empty());
}

#[test]
fn overwriting_a_large_file_in_place_reuses_its_space() {
    let fx = Fixture::new(1, 100 * MIB);
    let s = fx.open();
    let capacity = s.stats().capacity_bytes;
    // 60 % of the capacity, overwritten in place three times: each version needs the
    // space of the one before.
    let len = (capacity * 6 / 10) as usize / MIB as usize * MIB as usize;
    let f = s.create(s.root(), b"big.vmdk", 0o644).unwrap();
    for version in 0..4u64 {
        let d = data(100 + version, len);
        for (k, piece) in d.chunks(MIB as usize).enumerate() {
            s.write(f.id, k as u64 * MIB, piece).unwrap();
        }
        assert!(read_all(&s, f.id, len) == d, "version {version}");
    }
    // The background pass leaves no segment below half live.
    let before = s.stats();
    s.clean().unwrap();
    let after = s.stats();
    assert!(
        after.free_bytes >= before.free_bytes,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.dead_bytes < 2 * 8 * MIB,
        "at most the open segments' ends and the reserve stay dead: {after:?}"
    );
    drop(s);
    let s = fx.open();
    assert!(read_all(&s, f.id, len) == data(103, len));
    no_log_problems(&s);
}

#[test]
fn a_deleted_file_frees_its_segments_within_one_pass() {
    let fx = Fixture::new(1, 100 * MIB);
    let s = fx.open();
    let keep = put(&s, "keep", 1, FILE);
    let gone = put(&s, "gone", 2, 30 * MIB as usize);
    let tail = put(&s, "tail", 3, FILE);
    let before = s.stats();
    s.remove(s.root(), b"gone").unwrap();
    let done = s.clean().unwrap();
    assert!(done.segments >= 2, "{done:?}");
    let after = s.stats();
    assert!(
        after.free_bytes >= before.free_bytes + 16 * MIB,
        "{before:?} -> {after:?}"
    );
    let _ = gone;
    assert!(read_all(&s, keep, FILE) == data(1, FILE));
    assert!(read_all(&s, tail, FILE) == data(3, FILE));
    no_log_problems(&s);
}

#[test]
fn tampering_with_a_cleaned_device_is_caught() {
    let fx = Fixture::new(1, 100 * MIB);
    let s = fx.open();
    let mut files = BTreeMap::new();
    for seed in 1..=12 {
        let name = format!("f{seed}");
        put(&s, &name, seed, FILE);
        files.insert(name, seed);
    }
    for seed in (1..=12).step_by(2) {
        let name = format!("f{seed}");
        s.remove(s.root(), name.as_bytes()).unwrap();
        files.remove(&name);
    }
    assert!(s.clean().unwrap().segments > 0);
    for seed in 13..=20 {
        let name = format!("f{seed}");
        put(&s, &name, seed, FILE);
        files.insert(name, seed);
    }
    let sealed = seal::seal(&s, vec![]).unwrap();
    let sb = s.superblock().clone();
    let next = sealed.seal.record.devices[0].next_segment;
    // A live record of a moved extent: its bytes are damaged.
    let id = s.lookup(s.root(), b"f2").unwrap();
    let view = s.view();
    let (_, e) = view.get(id).unwrap().extents().next().unwrap();
    let at = e.rec.loc.addr + 100;
    drop(view);
    drop(s);
    let job = fx.job_dir();
    assert!(seal::check(&fx.paths, &job, None).unwrap().intact);
    flip(&fx.paths[0], at, 3);
    let s = fx.open_ro().unwrap();
    let (_, problems) = check_log(&s.devices()[0], &sb, None, &mut |_| {});
    assert!(!problems.is_empty(), "keyless check missed a flipped bit");
    assert_eq!(check_files(&s, &mut |_| {}).unwrap().len(), 1);
    drop(s);
    flip(&fx.paths[0], at, 3);
    // Data written after the seal where the log would have continued.
    if next < sb.segment_count() {
        write_at(&fx.paths[0], sb.segment_start(next), b"ODTSEGH2 forged");
        let r = seal::check(&fx.paths, &job, None).unwrap();
        assert!(!r.intact);
        assert!(r.problem.unwrap().contains("after the seal"));
    }
}
