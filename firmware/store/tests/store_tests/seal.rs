//! The seal and the courier's check: a clean chain passes; every kind of tampering fails
//! with its own message.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use odt_store::error::{ErrorKind, StoreError};
use odt_store::format::seal_record;
use odt_store::format::superblock::{JOURNAL_START, SLOT};
use odt_store::trip::seal;
use odt_store::{Error, Locked};
use odt_test_support::prelude::*;

fn sealed_fixture() -> (Fixture, PathBuf, String) {
    let fx = Fixture::new(2, 64 * MIB);
    let s = fx.open();
    let d = s.mkdir(s.root(), b"vm1", 0o755).unwrap();
    let f = s.create(d.id, b"vm1-disk1.vmdk", 0o644).unwrap();
    s.write(f.id, 0, &pattern(1, 20 * MIB as usize)).unwrap();
    let g = s.create(d.id, b"vm1.ovf", 0o644).unwrap();
    s.write(g.id, 0, b"<Envelope/>").unwrap();
    let sealed = seal::seal(&s, vec![]).unwrap();
    assert_eq!(sealed.code.len(), 14);
    // Sealed: changes refused, reads still work.
    assert!(matches!(
        s.write(f.id, 0, b"x").map_err(Error::into_kind),
        Err(ErrorKind::Store(StoreError::ReadOnly))
    ));
    assert!(matches!(
        s.create(d.id, b"new", 0o644).map_err(Error::into_kind),
        Err(ErrorKind::Store(StoreError::ReadOnly))
    ));
    assert_eq!(s.read(g.id, 0, 100).unwrap().0, b"<Envelope/>");
    drop(s);
    let dir = fx.job_dir();
    (fx, dir, sealed.code)
}

fn poke(path: &Path, at: u64, data: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, at)
        .unwrap();
}

fn peek(path: &Path, at: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut v, at)
        .unwrap();
    v
}

fn problem(paths: &[PathBuf], job: &Path, expect: Option<&str>) -> String {
    let r = seal::check(paths, job, expect).unwrap();
    assert!(!r.intact, "tampering not detected");
    r.problem.unwrap()
}

#[test]
fn clean_seal_checks_and_survives_reopen() {
    let (fx, job, code) = sealed_fixture();
    let r = seal::check(&fx.paths, &job, Some(&code.to_lowercase())).unwrap();
    assert!(r.intact, "{:?}", r.problem);
    assert_eq!(r.seal_code.as_deref(), Some(code.as_str()));
    assert_eq!(r.files, Some(2));
    // Devices in any order.
    let rev: Vec<PathBuf> = fx.paths.iter().rev().cloned().collect();
    assert!(seal::check(&rev, &job, None).unwrap().intact);
    // Reopened read-write, the store stays sealed and unchanged.
    let s = fx.open();
    assert!(s.is_sealed());
    let d = s.lookup(s.root(), b"vm1").unwrap();
    assert!(matches!(
        s.mkdir(d, b"x", 0o755).map_err(Error::into_kind),
        Err(ErrorKind::Store(StoreError::ReadOnly))
    ));
    drop(s);
    assert!(seal::check(&fx.paths, &job, Some(&code)).unwrap().intact);
    // The keyless log check agrees with the seal on every device.
    let l = Locked::open(&fx.paths, odt_store::Access::ReadOnly).unwrap();
    let signed = seal_record::read(&l.devices()[0], &l.superblocks()[0])
        .unwrap()
        .unwrap();
    for (i, (dev, sb)) in l.devices().iter().zip(l.superblocks()).enumerate() {
        let tail = signed.record.devices[i].tail;
        let (sum, problems) = odt_store::trip::verify::check_log(dev, sb, Some(tail), &mut |_| {});
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sum.chain_head, signed.record.devices[i].chain_head);
    }
}

#[test]
fn each_tampering_has_its_own_message() {
    let (fx, job, code) = sealed_fixture();
    let dev0 = fx.paths[0].clone();
    let l = Locked::open(&fx.paths, odt_store::Access::ReadOnly).unwrap();
    let sbs = l.superblocks().to_vec();
    let signed = seal_record::read(&l.devices()[0], &sbs[0])
        .unwrap()
        .unwrap();
    drop(l);

    // Wrong expected code.
    let msg = problem(&fx.paths, &job, Some("AAAA-BBBB-CCCC"));
    assert!(msg.contains("not the expected"), "{msg}");

    // A byte of the seal record changed.
    let slot = peek(&dev0, SLOT, 64);
    let mut bad = slot.clone();
    bad[30] ^= 1;
    poke(&dev0, SLOT, &bad);
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("seal record"), "{msg}");
    poke(&dev0, SLOT, &slot);

    // The seal record rewritten with a changed field and a fixed checksum: the signature fails.
    let mut forged = signed.clone();
    forged.record.files += 1;
    let img = odt_store::format::frame::encode(b"ODTSEAL1", &postcard::to_stdvec(&forged).unwrap());
    let saved: Vec<Vec<u8>> = fx
        .paths
        .iter()
        .zip(&sbs)
        .flat_map(|(p, sb)| sb.seal_slots().map(|at| peek(p, at, SLOT as usize)))
        .collect();
    for (p, sb) in fx.paths.iter().zip(&sbs) {
        for at in sb.seal_slots() {
            poke(p, at, &vec![0; SLOT as usize]);
            poke(p, at, &img);
        }
    }
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("signature"), "{msg}");
    let mut i = 0;
    for (p, sb) in fx.paths.iter().zip(&sbs) {
        for at in sb.seal_slots() {
            poke(p, at, &saved[i]);
            i += 1;
        }
    }
    assert!(seal::check(&fx.paths, &job, Some(&code)).unwrap().intact);

    // A byte of the manifest / metadata journal changed.
    let end = signed.record.journal_end;
    let at = JOURNAL_START + end - 100;
    let orig = peek(&dev0, at, 1);
    poke(&dev0, at, &[orig[0] ^ 0x40]);
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("journal changed"), "{msg}");
    poke(&dev0, at, &orig);

    // A record appended to the log after the seal.
    let sd = &signed.record.devices[0];
    poke(&dev0, sd.tail, b"ODTR appended record");
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("after the seal"), "{msg}");
    poke(&dev0, sd.tail, &[0u8; 20]);

    // Metadata appended to the journal after the seal.
    poke(&dev0, JOURNAL_START + end, b"ODTJ");
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("journal after the seal"), "{msg}");
    poke(&dev0, JOURNAL_START + end, &[0u8; 4]);

    // The log cut short: the last footer no longer where the seal says.
    let seg = (sd.tail - 1 - sbs[0].data_start()) / sbs[0].segment_size;
    let footer_at = sbs[0].segment_start(seg) + sbs[0].segment_size - 4096;
    let footer = peek(&dev0, footer_at, 4096);
    poke(&dev0, footer_at, &vec![0u8; 4096]);
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("footer"), "{msg}");
    poke(&dev0, footer_at, &footer);

    // A missing device of the striped set.
    let msg = problem(&fx.paths[..1], &job, None);
    assert!(msg.contains("missing device(s) 2"), "{msg}");

    // A device from another job.
    let (other, _, _) = sealed_fixture();
    let mixed = vec![fx.paths[0].clone(), other.paths[1].clone()];
    let msg = problem(&mixed, &job, None);
    assert!(msg.contains("belongs to job"), "{msg}");

    // Device 2 swapped for an unsealed copy of itself taken before the seal is simulated by
    // blanking its seal slots.
    let saved2: Vec<Vec<u8>> = sbs[1]
        .seal_slots()
        .map(|at| peek(&fx.paths[1], at, SLOT as usize))
        .to_vec();
    for at in sbs[1].seal_slots() {
        poke(&fx.paths[1], at, &vec![0u8; SLOT as usize]);
    }
    let msg = problem(&fx.paths, &job, None);
    assert!(msg.contains("is not sealed"), "{msg}");
    for (at, b) in sbs[1].seal_slots().iter().zip(&saved2) {
        poke(&fx.paths[1], *at, b);
    }
    assert!(seal::check(&fx.paths, &job, Some(&code)).unwrap().intact);
}

#[test]
fn broken_bundles_refuse_the_seal_unless_forced() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let d = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let f = s.create(d.id, b"vm.ovf", 0o644).unwrap();
    let desc = br#"<Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="vm-disk1.vmdk" ovf:size="10"/></References></Envelope>"#;
    s.write(f.id, 0, desc).unwrap();
    let out = seal::check_and_seal(&s, false).unwrap();
    assert!(out.sealed.is_none());
    assert!(
        out.refused
            .unwrap()
            .contains("1 of 1 bundle(s) have errors")
    );
    assert!(
        out.bundles.bundles[0]
            .findings
            .iter()
            .any(|f| f.message.contains("missing file vm/vm-disk1.vmdk"))
    );
    assert!(!s.is_sealed());
    s.mkdir(s.root(), b"still writable", 0o755).unwrap();
    let out = seal::check_and_seal(&s, true).unwrap();
    let sealed = out.sealed.unwrap();
    assert!(s.is_sealed());
    assert!(matches!(
        seal::check_and_seal(&s, true).map_err(Error::into_kind),
        Err(ErrorKind::Store(StoreError::ReadOnly))
    ));
    drop(s);
    let job = fx.job_dir();
    let r = seal::check(&fx.paths, &job, Some(&sealed.code)).unwrap();
    assert!(r.intact, "{:?}", r.problem);
    // The bundle list, with its problem, is in the sealed (encrypted) metadata.
    let s = fx.open_ro().unwrap();
    let bundles = s.view().seal().expect("a seal op").bundles.to_vec();
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].path, b"vm/vm.ovf");
    assert!(!bundles[0].problems.is_empty());
}

/// The capacity bounds every file's size: SETATTR and writes past it are refused naming the
/// file; a store that holds a larger file anyway (written before the limit) is not sealed,
/// the error names the file, its size and the limit, and the store still takes the fix.
#[test]
fn the_capacity_bounds_file_sizes_and_an_oversize_file_blocks_the_seal() {
    use odt_store::format::journal::AttrChange;
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let limit = s.max_file_size();
    assert!(limit > 0 && limit < 64 * MIB, "{limit}");
    let d = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let f = s.create(d.id, b"big.img", 0o644).unwrap();
    let too_large = |e: Error| match e.into_kind() {
        ErrorKind::Store(StoreError::FileTooLarge { file, size, limit }) => (file, size, limit),
        other => panic!("not FileTooLarge: {other}"),
    };
    let resize = |n| AttrChange {
        size: Some(n),
        ..AttrChange::default()
    };
    assert_eq!(
        too_large(s.setattr(f.id, resize(limit + 1)).unwrap_err()),
        ("vm/big.img".to_string(), limit + 1, limit)
    );
    assert_eq!(
        too_large(s.write(f.id, limit, b"x").unwrap_err()).1,
        limit + 1
    );
    // Up to the limit is an ordinary sparse file.
    s.setattr(f.id, resize(limit)).unwrap();
    s.write(f.id, limit - 1, b"x").unwrap();

    // One written before the limit existed.
    s.resize_without_limit(f.id, 1 << 50).unwrap();
    let e = seal::check_and_seal(&s, true).unwrap_err();
    let line = odt_store::error::one_line(&e);
    assert!(
        line.contains("vm/big.img")
            && line.contains(&(1u64 << 50).to_string())
            && line.contains(&limit.to_string()),
        "{line}"
    );
    assert!(!s.is_sealed(), "a refused seal leaves the store open");
    // The customer truncates it; then the seal goes through.
    s.setattr(f.id, resize(3 * MIB)).unwrap();
    let m = odt_store::trip::manifest::build(&s).unwrap();
    let want = vec![0u8; 3 * MIB as usize];
    let e = m.files.iter().find(|e| e.path == b"vm/big.img").unwrap();
    assert_eq!(e.blake3, *blake3::hash(&want).as_bytes());
    seal::check_and_seal(&s, true).unwrap().sealed.unwrap();
}
