//! `Store::read_into` (the bulk read the ingest uses) against `Store::read`: same bytes for
//! every range (holes, partial records, ranges crossing records, past the end), records
//! still queued in memory, and damaged records reported with their file and range while the
//! rest of the read is served.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use odt_store::{ReadScratch, Store};
use odt_test_support::prelude::*;

/// A file of `size` bytes with holes, an overwritten middle and unaligned records.
fn messy_file(s: &Store) -> (u64, u64) {
    let d = s.mkdir(s.root(), b"vm", 0o755).unwrap();
    let f = s.create(d.id, b"disk.vmdk", 0o644).unwrap();
    let mb = MIB as usize;
    // 0..3 MiB data, 3..4 MiB zeros (a hole), 4..5 MiB data, 5..7 MiB never written (hole).
    let mut head = pattern(1, 5 * mb);
    head[3 * mb..4 * mb].fill(0);
    s.write(f.id, 0, &head).unwrap();
    // An overwrite that splits the records under it.
    s.write(f.id, MIB + 1000, &pattern(2, 70_001)).unwrap();
    // Unaligned records at the end.
    s.write(f.id, 7 * MIB + 13, &pattern(3, MIB as usize + 4099))
        .unwrap();
    (f.id, 8 * MIB + 13 + 4099)
}

fn bulk(s: &Store, id: u64, off: u64, len: usize, sc: &mut ReadScratch) -> (Vec<u8>, usize) {
    let mut buf = vec![0xee_u8; len];
    let r = s.read_into(id, off, &mut buf, sc).unwrap();
    assert!(r.damaged.is_empty(), "{:?}", r.damaged);
    assert!(
        buf[r.len..].iter().all(|&b| b == 0xee),
        "bytes past the end are left alone"
    );
    buf.truncate(r.len);
    (buf, r.len)
}

#[test]
fn equals_read_for_every_range() {
    let fx = Fixture::new(1, 64 * MIB);
    let (id, size) = {
        let s = fx.open();
        messy_file(&s)
    };
    let s = fx.open_ro().unwrap();
    assert_eq!(s.getattr(id).unwrap().size, size);
    let mut sc = ReadScratch::default();
    let mb = MIB;
    let offsets = [
        0,
        1,
        4095,
        mb - 1,
        mb,
        mb + 999,
        mb + 1000,
        3 * mb - 5,
        3 * mb,
        4 * mb + 7,
        5 * mb - 1,
        6 * mb,
        7 * mb,
        7 * mb + 13,
        8 * mb,
        size - 1,
        size,
        size + 5,
    ];
    let lens = [
        1usize,
        4096,
        70_001,
        MIB as usize,
        3 * MIB as usize + 17,
        9 * MIB as usize,
    ];
    for &off in &offsets {
        for &len in &lens {
            let (want, _) = s.read(id, off, len as u32).unwrap();
            let (got, n) = bulk(&s, id, off, len, &mut sc);
            assert_eq!(n, want.len(), "length at {off}+{len}");
            assert!(got == want, "bytes differ at {off}+{len}");
        }
    }
}

#[test]
fn serves_records_still_queued_for_the_device() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let f = s.create(s.root(), b"f", 0o644).unwrap();
    s.write_unstable(f.id, 0, &pattern(5, 3 * MIB as usize + 77))
        .unwrap();
    let mut sc = ReadScratch::default();
    let (want, _) = s.read(f.id, 0, 4 * MIB as u32).unwrap();
    let (got, n) = bulk(&s, f.id, 0, 4 * MIB as usize, &mut sc);
    assert_eq!(n, 3 * MIB as usize + 77);
    assert!(got == want);
    assert!(got == pattern(5, 3 * MIB as usize + 77));
}

#[test]
fn a_damaged_record_is_named_and_the_rest_is_served() {
    let fx = Fixture::new(1, 64 * MIB);
    let data = pattern(9, 4 * MIB as usize);
    let id = {
        let s = fx.open();
        let f = s.create(s.root(), b"disk", 0o644).unwrap();
        s.write(f.id, 0, &data).unwrap();
        f.id
    };
    // Flip one byte inside the ciphertext of the record holding [1 MiB, 2 MiB).
    let loc = {
        let s = fx.open_ro().unwrap();
        let view = s.view();
        let (_, e) = view
            .get(id)
            .unwrap()
            .extents()
            .find(|(o, _)| *o == MIB)
            .unwrap();
        e.rec.loc
    };
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fx.paths[loc.dev as usize])
        .unwrap();
    let mut b = [0u8; 1];
    let at = loc.addr + loc.len as u64 / 2;
    dev.read_exact_at(&mut b, at).unwrap();
    dev.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    drop(dev);

    let s = fx.open_ro().unwrap();
    let mut sc = ReadScratch::default();
    // The whole file: one damaged range, exactly that record's bytes.
    let mut buf = vec![0xee_u8; 4 * MIB as usize];
    let r = s.read_into(id, 0, &mut buf, &mut sc).unwrap();
    assert_eq!(r.len, 4 * MIB as usize);
    assert_eq!(r.damaged.len(), 1, "{:?}", r.damaged);
    let d = &r.damaged[0];
    assert_eq!((d.path.as_str(), d.start, d.end), ("disk", MIB, 2 * MIB));
    assert!(d.why.contains("checksum"), "{}", d.why);
    let m = MIB as usize;
    assert!(buf[..m] == data[..m] && buf[2 * m..] == data[2 * m..]);
    assert!(
        buf[m..2 * m].iter().all(|&b| b == 0),
        "damaged bytes are zeroed"
    );
    // A read starting inside the damaged record reports only the part it asked for.
    let mut buf = vec![0u8; m];
    let r = s.read_into(id, MIB + MIB / 2, &mut buf, &mut sc).unwrap();
    let d = &r.damaged[0];
    assert_eq!((d.start, d.end), (MIB + MIB / 2, 2 * MIB));
    assert!(buf[m / 2..] == data[2 * m..2 * m + m / 2]);
    // The plain read path agrees that this record is damaged.
    assert!(s.read(id, MIB, 10).is_err());
}
