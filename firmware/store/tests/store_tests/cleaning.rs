//! Segment cleaning (issue 17): deleted and overwritten data gives its space back, the
//! bytes that stay live read back unchanged after their records moved, across a reopen,
//! and the seal, the courier's check and both verifications hold on a cleaned device.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Writes the files `(name, seed, len)` together, one 1 MiB piece of each in turn (as
/// clients copying in parallel do), so that every segment holds pieces of several files.
fn put_interleaved(s: &Store, files: &[(&str, u64, usize)]) -> Vec<u64> {
    let ids: Vec<u64> = files
        .iter()
        .map(|(name, _, _)| s.create(s.root(), name.as_bytes(), 0o644).unwrap().id)
        .collect();
    let datas: Vec<Vec<u8>> = files
        .iter()
        .map(|(_, seed, len)| data(*seed, *len))
        .collect();
    let longest = files.iter().map(|f| f.2).max().unwrap_or(0);
    let mut at = 0;
    while at < longest {
        for (id, d) in ids.iter().zip(&datas) {
            if at < d.len() {
                let end = d.len().min(at + MIB as usize);
                s.write_unstable(*id, at as u64, &d[at..end]).unwrap();
            }
        }
        at += MIB as usize;
    }
    s.sync().unwrap();
    ids
}

/// The records of a deleted 8 MiB file share their segments with live files (none of them
/// is even half dead, so the cleaner's while-writing policy takes none): once no client has
/// written for a second, the background cleaner gives the space back anyway, within
/// seconds, and every live file reads back.
#[test]
fn a_file_deleted_among_live_ones_is_free_again_within_seconds() {
    let fx = Fixture::new(1, 160 * MIB);
    let s = Arc::new(fx.open());
    let gone = 8 * MIB as usize;
    let mut files: Vec<(String, u64, usize)> = (0..4)
        .map(|k| (format!("live{k}"), 10 + k, 8 * MIB as usize))
        .collect();
    files.insert(2, ("gone".to_string(), 99, gone));
    let named: Vec<(&str, u64, usize)> = files
        .iter()
        .map(|(n, seed, len)| (n.as_str(), *seed, *len))
        .collect();
    put_interleaved(&s, &named);
    // More files after, so that none of the deleted records is in the open segment (never
    // cleaned).
    let tail: Vec<(String, u64)> = (0..6).map(|k| (format!("tail{k}"), 50 + k)).collect();
    for (name, seed) in &tail {
        put(&s, name, *seed, FILE);
    }
    let _cleaner = s.start_cleaner().unwrap();
    let before = s.stats();
    s.remove(s.root(), b"gone").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = s.stats();
        if now.free_bytes >= before.free_bytes + gone as u64 * 3 / 4 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "8 MiB deleted among live files, not free after 20 s: {before:?} -> {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(after.segments_cleaned > before.segments_cleaned);
    for (name, seed, len) in files.iter().filter(|f| f.0 != "gone") {
        let id = s.lookup(s.root(), name.as_bytes()).unwrap();
        assert!(read_all(&s, id, *len) == data(*seed, *len), "{name}");
    }
    for (name, seed) in &tail {
        let id = s.lookup(s.root(), name.as_bytes()).unwrap();
        assert!(read_all(&s, id, FILE) == data(*seed, FILE), "{name}");
    }
    let view = s.view();
    assert_eq!(
        view.live(),
        &view.recount_live(),
        "per-segment live counters"
    );
    drop(view);
    no_log_problems(&s);
}

/// Deleting a tiny file makes no segment worth a copy, even on an idle store; deleting a
/// mid-sized one among live files does (the same calls, so the first check can fail).
#[test]
fn a_tiny_delete_does_not_make_the_idle_cleaner_copy_a_segment() {
    let fx = Fixture::new(1, 100 * MIB);
    let s = fx.open();
    put_interleaved(
        &s,
        &[
            ("a", 1, 6 * MIB as usize),
            ("mid", 2, 6 * MIB as usize),
            ("b", 3, 6 * MIB as usize),
        ],
    );
    put(&s, "tiny", 4, 100);
    let mut files = BTreeMap::new();
    let mut seed = 10;
    put_more(&s, &mut files, &mut seed, 6);
    // Whatever the filling left worth cleaning goes first.
    std::thread::sleep(Duration::from_millis(1100));
    s.clean_background().unwrap();
    let before = s.stats();

    s.remove(s.root(), b"tiny").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let done = s.clean_background().unwrap();
    assert_eq!(
        (done.segments, done.moved_bytes),
        (0, 0),
        "a 100-byte delete: {done:?}"
    );
    assert_eq!(s.stats().segments_cleaned, before.segments_cleaned);

    s.remove(s.root(), b"mid").unwrap();
    let done = s.clean_background().unwrap();
    assert!(
        done.segments >= 1,
        "6 MiB deleted among live files: {done:?}"
    );
    assert!(
        s.stats().free_bytes >= before.free_bytes + 4 * MIB,
        "{before:?} -> {:?}",
        s.stats()
    );
    check_all(&s, &files);
    for (name, seed) in [("a", 1), ("b", 3)] {
        let id = s.lookup(s.root(), name.as_bytes()).unwrap();
        assert!(read_all(&s, id, 6 * MIB as usize) == data(seed, 6 * MIB as usize));
    }
    no_log_problems(&s);
}

/// The segment closed just before the open one may be cleaned: the keyless walk of the
/// chain finds nothing wrong, before and after a reopen (which resumes the chain without
/// it) and once more segments are written after it.
#[test]
fn the_segment_closed_before_the_open_one_is_cleaned_and_the_chain_still_checks() {
    let fx = Fixture::new(1, 100 * MIB);
    let mut files = BTreeMap::new();
    {
        let s = fx.open();
        // Seven 1 MiB records per 8 MiB segment: "a" and 2 MiB of "gone" fill segment 0,
        // the rest of "gone" and "b" segment 1, "c" opens segment 2.
        let sizes = [("a", 1, 5), ("gone", 2, 5), ("b", 3, 4), ("c", 4, 1)];
        for (name, seed, mib) in sizes {
            put(&s, name, seed, mib * MIB as usize);
        }
        s.remove(s.root(), b"gone").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let done = s.clean_background().unwrap();
        // Segment 1 holds the most dead bytes and is taken first, while it is the one
        // closed just before the open one.
        assert!(done.segments >= 2, "{done:?}");
        no_log_problems(&s);
        for (name, seed, mib) in sizes.iter().filter(|f| f.0 != "gone") {
            let id = s.lookup(s.root(), name.as_bytes()).unwrap();
            let len = *mib * MIB as usize;
            assert!(read_all(&s, id, len) == data(*seed, len), "{name}");
        }
    }
    let s = fx.open();
    no_log_problems(&s);
    let mut seed = 20;
    put_more(&s, &mut files, &mut seed, 8);
    check_all(&s, &files);
    no_log_problems(&s);
    for (name, seed, mib) in [("a", 1, 5), ("b", 3, 4), ("c", 4, 1)] {
        let id = s.lookup(s.root(), name.as_bytes()).unwrap();
        assert!(read_all(&s, id, mib * MIB as usize) == data(seed, mib * MIB as usize));
    }
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
