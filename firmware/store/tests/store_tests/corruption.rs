//! Damage and tampering on real image files: every flipped bit is caught and named, every
//! rearrangement of records is refused, bad devices and keys get clear errors.

use std::fs::OpenOptions;
use std::path::Path;

use odt_store::error::{ErrorKind, FormatError, KeyError, StoreError};
use odt_store::format::journal::Loc;
use odt_store::format::superblock::JOURNAL_START;
use odt_store::trip::verify::{check_files, check_log};
use odt_store::{Access, Error, Locked, Store};
use odt_test_support::prelude::*;
use rand::{Rng, SeedableRng};

fn extents(s: &Store, id: u64) -> Vec<(u64, u64, Loc)> {
    s.view()
        .get(id)
        .unwrap()
        .extents()
        .map(|(o, e)| (o, e.len, e.rec.loc))
        .collect()
}

/// Two files, one spanning several segments; returns their ids.
fn populate(fx: &Fixture) -> (u64, u64) {
    let s = fx.open();
    let d = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let a = s.create(d.id, b"disk-flat.vmdk", 0o644).unwrap();
    s.write(a.id, 0, &pattern(11, 12 * MIB as usize)).unwrap();
    let b = s.create(d.id, b"vm.ovf", 0o644).unwrap();
    s.write(b.id, 0, &pattern(12, 300_000)).unwrap();
    (a.id, b.id)
}

fn open_checked(fx: &Fixture) -> Store {
    fx.open_ro().expect("store opens")
}

#[test]
fn bit_flips_in_records_name_the_file_and_range() {
    let fx = Fixture::new(1, 64 * MIB);
    let (a, b) = populate(&fx);
    let s = open_checked(&fx);
    let mut recs: Vec<(u64, u64, Loc, &str)> = extents(&s, a)
        .into_iter()
        .map(|(o, l, loc)| (o, l, loc, "vm/disk-flat.vmdk"))
        .collect();
    recs.extend(
        extents(&s, b)
            .into_iter()
            .map(|(o, l, loc)| (o, l, loc, "vm/vm.ovf")),
    );
    assert!(check_files(&s, &mut |_| {}).unwrap().is_empty());
    drop(s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..24 {
        let (off, len, loc, path) = recs[rng.random_range(0..recs.len())];
        let at = loc.addr + rng.random_range(0..loc.len as u64);
        let bit = rng.random_range(0..8u8);
        flip(&fx.paths[0], at, bit);
        let s = open_checked(&fx);
        let damage = check_files(&s, &mut |_| {}).unwrap();
        assert_eq!(damage.len(), 1, "flip at {at}: {damage:?}");
        assert_eq!(damage[0].path, path);
        assert_eq!((damage[0].start, damage[0].end), (off, off + len));
        let id = if path.ends_with("vmdk") { a } else { b };
        match s.read(id, off, len as u32).map_err(Error::into_kind) {
            Err(ErrorKind::Store(StoreError::Damaged { file, start, .. })) => {
                assert_eq!(file, path);
                assert_eq!(start, off);
            }
            other => panic!("read of damaged range gave {other:?}"),
        }
        let sb = s.superblock().clone();
        let (_, problems) = check_log(&s.devices()[0], &sb, None, &mut |_| {});
        assert!(
            problems
                .iter()
                .any(|p| p.offset == loc.addr || p.what.contains("hash")),
            "keyless check missed flip at {at}: {problems:?}"
        );
        drop(s);
        flip(&fx.paths[0], at, bit);
    }
    let s = open_checked(&fx);
    assert!(check_files(&s, &mut |_| {}).unwrap().is_empty());
}

#[test]
fn metadata_damage_is_detected() {
    let fx = Fixture::new(1, 64 * MIB);
    populate(&fx);
    let path = fx.paths[0].clone();
    // A bit in the first journal batch (not the last one): opening must fail and say where.
    flip(&path, JOURNAL_START + 50, 3);
    let err = fx.open_ro().err().expect("damaged journal refused");
    let msg = err.to_string();
    assert!(
        msg.contains("journal") && msg.contains(&format!("{}", JOURNAL_START)),
        "{msg}"
    );
    flip(&path, JOURNAL_START + 50, 3);
    open_checked(&fx);

    // A bit in the first superblock copy: the end copy still opens the store, the keyless
    // check names the damaged copy.
    flip(&path, 100, 0);
    let s = open_checked(&fx);
    let sb = s.superblock().clone();
    let (_, problems) = check_log(&s.devices()[0], &sb, None, &mut |_| {});
    assert!(
        problems
            .iter()
            .any(|p| p.offset == 0 && p.what.contains("superblock")),
        "{problems:?}"
    );
    drop(s);
    flip(&path, 100, 0);

    // Segment header and footer bits: named by the keyless check.
    let s = open_checked(&fx);
    let sb = s.superblock().clone();
    drop(s);
    let seg1 = sb.segment_start(1);
    let footer0 = sb.segment_start(0) + sb.segment_size - 4096;
    for at in [seg1 + 20, footer0 + 30] {
        flip(&path, at, 5);
        let s = open_checked(&fx);
        let (_, problems) = check_log(&s.devices()[0], &sb, None, &mut |_| {});
        assert!(!problems.is_empty(), "flip at {at} not seen");
        drop(s);
        flip(&path, at, 5);
    }
    let s = open_checked(&fx);
    let (sum, problems) = check_log(&s.devices()[0], &sb, None, &mut |_| {});
    assert!(problems.is_empty(), "{problems:?}");
    assert!(sum.closed_segments >= 1 && sum.records >= 13);
}

/// Start and length of every journal batch on device 0, walked from the headers.
fn batches(path: &Path, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < end {
        let h = odt_store::format::journal::BatchHeader::decode(&read_at(
            path,
            JOURNAL_START + pos,
            odt_store::format::journal::BATCH_HEADER,
        ))
        .expect("batch header");
        out.push((JOURNAL_START + pos, h.total_len() as u64));
        pos += h.total_len() as u64;
    }
    out
}

#[test]
fn damage_in_the_last_journal_batch_is_not_taken_for_a_torn_write() {
    let fx = Fixture::new(1, 64 * MIB);
    populate(&fx);
    let s = fx.open();
    s.create(s.root(), b"made-last.txt", 0o644).unwrap();
    let end = s.journal_end();
    drop(s);
    let path = fx.paths[0].clone();
    let (at, len) = *batches(&path, end).last().unwrap();

    // One flipped bit anywhere in it (header or payload): refused, with the offset.
    for off in [0, 9, 37, len / 2, len - 1] {
        flip(&path, at + off, 2);
        let msg = fx
            .open_ro()
            .err()
            .expect("damaged last batch refused")
            .to_string();
        assert!(msg.contains(&format!("{at}")), "flip at +{off}: {msg}");
        assert!(
            msg.contains("written in full") || msg.contains("belongs"),
            "flip at +{off}: {msg}"
        );
        flip(&path, at + off, 2);
    }

    // A tear: the batch's last sector never reached the device. That is a crash, not damage:
    // the store opens at the commit before, without the file the torn batch created.
    let sector = (at + len - 1) / 512 * 512;
    write_at(&path, sector, &vec![0u8; (at + len - sector) as usize]);
    {
        let s = fx.open();
        assert!(s.lookup(s.root(), b"made-last.txt").is_err());
        assert!(s.lookup(s.root(), b"vm").is_ok());
        // The torn tail was cleared: new commits land where it was and survive a reopen.
        s.create(s.root(), b"after-tear", 0o644).unwrap();
    }
    let s = open_checked(&fx);
    assert!(s.lookup(s.root(), b"after-tear").is_ok());
    // (By name: the rolled-back create's inode number is free again and may be reused.)
    assert!(
        s.lookup(s.root(), b"made-last.txt").is_err(),
        "the torn batch's file came back"
    );
}

/// A small commit (a 16 KiB file's COMMIT) writes its records and its journal batch under
/// one sync. A crash before that sync returns can leave the batch on the device while a
/// record it names never arrived: recovery must roll that (never acknowledged) commit
/// back, and must not take a record damaged later for such a tear.
#[test]
fn a_last_commit_whose_record_never_arrived_is_rolled_back() {
    for devices in [1, 2] {
        let fx = Fixture::new(devices, 64 * MIB);
        populate(&fx);
        let (id, first) = {
            let s = fx.open();
            let id = s.create(s.root(), b"small.bin", 0o644).unwrap().id;
            s.write(id, 0, &pattern(5, 16 * 1024)).unwrap();
            (id, s.journal_end())
        };
        let s = open_checked(&fx);
        let (_, _, loc) = extents(&s, id)[0];
        drop(s);
        let path = fx.paths[loc.dev as usize].clone();
        let sound = read_at(&path, loc.addr, loc.len as usize);

        // Damage (every sector of the record is there, one bit differs): the commit stays
        // and reads name the file and range.
        flip(&path, loc.addr + loc.len as u64 / 2, 3);
        let s = open_checked(&fx);
        assert_eq!(s.getattr(id).unwrap().size, 16 * 1024);
        match s.read(id, 0, 100).map_err(Error::into_kind) {
            Err(ErrorKind::Store(StoreError::Damaged { file, start, .. })) => {
                assert_eq!((file.as_str(), start), ("small.bin", 0))
            }
            other => panic!("read of the damaged record gave {other:?}"),
        }
        drop(s);
        write_at(&path, loc.addr, &sound);

        // A tear: one sector in the middle of the record never reached the device.
        let sector = (loc.addr + loc.len as u64 / 2) / 512 * 512;
        write_at(&path, sector, &[0u8; 512]);
        let s = open_checked(&fx);
        assert_eq!(
            s.getattr(id).unwrap().size,
            0,
            "{devices} devices: write not rolled back"
        );
        assert!(
            s.lookup(s.root(), b"small.bin").is_ok(),
            "the create before it stays"
        );
        drop(s);
        {
            // Read-write: the torn commit is cleared and the store goes on from there.
            let s = fx.open();
            assert_eq!(s.getattr(id).unwrap().size, 0);
            assert!(s.journal_end() < first + 4096);
            s.write(id, 0, &pattern(6, 16 * 1024)).unwrap();
        }
        let s = open_checked(&fx);
        assert_eq!(s.read(id, 0, 16 * 1024).unwrap().0, pattern(6, 16 * 1024));
        assert!(check_files(&s, &mut |_| {}).unwrap().is_empty());
        for (i, dev) in s.devices().iter().enumerate() {
            let (_, problems) = check_log(dev, &s.superblocks()[i], None, &mut |_| {});
            assert!(
                problems.is_empty(),
                "{devices} devices, device {i}: {problems:?}"
            );
        }
    }
}

#[test]
fn swapped_reordered_replayed_and_dropped_records_fail() {
    let fx = Fixture::new(1, 64 * MIB);
    let (x, y, z) = {
        let s = fx.open();
        let x = s.create(s.root(), b"x", 0o644).unwrap().id;
        let y = s.create(s.root(), b"y", 0o644).unwrap().id;
        let z = s.create(s.root(), b"z", 0o644).unwrap().id;
        // Incompressible and equal-sized, so records can be swapped byte for byte.
        s.write(x, 0, &pattern(1, 200_000)).unwrap();
        s.write(y, 0, &pattern(2, 200_000)).unwrap();
        s.write(z, 0, &pattern(3, 100_000)).unwrap();
        s.write(z, 100_000, &pattern(4, 100_000)).unwrap();
        (x, y, z)
    };
    let path = fx.paths[0].clone();
    let s = open_checked(&fx);
    let lx = extents(&s, x)[0].2;
    let ly = extents(&s, y)[0].2;
    let lz: Vec<Loc> = extents(&s, z).iter().map(|e| e.2).collect();
    drop(s);
    let swap = |a: Loc, b: Loc| {
        let ra = read_at(&path, a.addr, a.len as usize);
        let rb = read_at(&path, b.addr, b.len as usize);
        assert_eq!(ra.len(), rb.len());
        write_at(&path, a.addr, &rb);
        write_at(&path, b.addr, &ra);
    };
    // Between files.
    swap(lx, ly);
    let s = open_checked(&fx);
    let msg = s.read(x, 0, 10).unwrap_err().to_string();
    assert!(
        msg.contains("swapped or replayed") && msg.contains("file x"),
        "{msg}"
    );
    assert_eq!(check_files(&s, &mut |_| {}).unwrap().len(), 2);
    drop(s);
    swap(lx, ly);
    // Within a file.
    swap(lz[0], lz[1]);
    let s = open_checked(&fx);
    assert!(matches!(
        s.read(z, 0, 10).map_err(Error::into_kind),
        Err(ErrorKind::Store(StoreError::Damaged { .. }))
    ));
    drop(s);
    swap(lz[0], lz[1]);
    // Replay: an older generation of the same file and offset put back in place.
    let old = read_at(&path, lx.addr, lx.len as usize);
    {
        let s = fx.open();
        s.write(x, 0, &pattern(9, 200_000)).unwrap();
    }
    let s = open_checked(&fx);
    let lnew = extents(&s, x)[0].2;
    drop(s);
    assert_eq!(lnew.len, lx.len);
    let newer = read_at(&path, lnew.addr, lnew.len as usize);
    write_at(&path, lnew.addr, &old);
    let s = open_checked(&fx);
    let msg = s.read(x, 0, 10).unwrap_err().to_string();
    assert!(msg.contains("generation"), "{msg}");
    drop(s);
    write_at(&path, lnew.addr, &newer);
    // A record dropped (zeroed).
    write_at(&path, ly.addr, &vec![0u8; ly.len as usize]);
    let s = open_checked(&fx);
    let d = check_files(&s, &mut |_| {}).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].path.as_str(), d[0].start, d[0].end),
        ("y", 0, 200_000)
    );
}

#[test]
fn bad_devices_and_keys_get_clear_errors() {
    let fx = Fixture::new(2, 32 * MIB);
    // Wrong unlock code and wrong ingest identity.
    let l = Locked::open(&fx.paths, Access::ReadOnly).unwrap();
    let wrong: odt_store::crypto::keys::UnlockCode = "AAAAA-BBBBB-CCCCC-DDDDD".parse().unwrap();
    assert!(matches!(
        l.secrets_from_code(&wrong).map_err(Error::into_kind),
        Err(ErrorKind::Key(KeyError::Wrong(_)))
    ));
    let other = age::x25519::Identity::generate();
    let e = l.secrets_from_identity(&other).unwrap_err().to_string();
    assert!(e.contains("ingest identity"), "{e}");
    drop(l);
    // Only one device of two.
    let e = Locked::open(&fx.paths[..1], Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing device(s) 2"), "{e}");
    // Same device twice.
    let twice = vec![fx.paths[0].clone(), fx.paths[0].clone()];
    let e = Locked::open(&twice, Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("both device 1"), "{e}");
    // A device of another job.
    let other_fx = Fixture::new(2, 32 * MIB);
    let mixed = vec![fx.paths[0].clone(), other_fx.paths[1].clone()];
    let e = Locked::open(&mixed, Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("belongs to job"), "{e}");
    // Truncated.
    let t = fx.dir.path().join("trunc.img");
    std::fs::copy(&fx.paths[0], &t).unwrap();
    let f = OpenOptions::new().write(true).open(&t).unwrap();
    f.set_len(20 * MIB).unwrap();
    let e = Locked::open(std::slice::from_ref(&t), Access::ReadOnly).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Format(FormatError::Truncated { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("truncated"));
    // Blank, foreign, tiny, missing.
    let blank = fx.dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let e = Locked::open(&[blank], Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blank"), "{e}");
    let foreign = fx.dir.path().join("foreign.img");
    std::fs::write(&foreign, pattern(5, 4 * MIB as usize)).unwrap();
    let e = Locked::open(std::slice::from_ref(&foreign), Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("foreign"), "{e}");
    let tiny = fx.dir.path().join("tiny.img");
    std::fs::write(&tiny, b"ODTSUPR1").unwrap();
    let e = Locked::open(&[tiny], Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("only 8 bytes"), "{e}");
    let e = Locked::open(&[fx.dir.path().join("nope.img")], Access::ReadOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.img"), "{e}");
    // Random damage to both superblock copies: an error, never a panic.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let victim = fx.dir.path().join("victim.img");
    std::fs::copy(&fx.paths[0], &victim).unwrap();
    let size = std::fs::metadata(&victim).unwrap().len();
    let good_head = read_at(&victim, 0, 4096);
    let good_tail = read_at(&victim, size - 65536, 4096);
    for _ in 0..300 {
        let mut h = good_head.clone();
        let mut t = good_tail.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..600);
            h[i] = rng.random();
            t[i] = rng.random();
        }
        write_at(&victim, 0, &h);
        write_at(&victim, size - 65536, &t);
        let _ = Locked::open(std::slice::from_ref(&victim), Access::ReadOnly);
    }
}
