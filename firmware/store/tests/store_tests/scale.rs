//! Scale: sparse files past 4 GiB, and ten thousand small files written concurrently.

use std::sync::Arc;

use odt_store::format::journal::AttrChange;
use odt_test_support::prelude::*;

const GIB: u64 = 1 << 30;

#[test]
fn sparse_file_larger_than_4_gib() {
    // Two sparse 4 GiB images: a file may not be larger than the set's capacity.
    let fx = Fixture::new(2, 4 * GIB);
    // (offset, data) pieces, non-overlapping, in the order written (deliberately unordered).
    let pieces: Vec<(u64, Vec<u8>)> = vec![
        (6 * GIB + 1, pattern(1, 3 * MIB as usize)),
        (4 * GIB - 1000, pattern(2, 5000)),
        (0, pattern(3, 4096)),
        (5 * GIB, pattern(4, MIB as usize)),
        (4 * GIB + 2 * MIB, vec![0u8; MIB as usize]),
    ];
    let size = 6 * GIB + 1 + 3 * MIB + 17;
    let id = {
        let s = fx.open();
        let f = s.create(s.root(), b"big-flat.vmdk", 0o644).unwrap();
        for (off, d) in &pieces {
            s.write(f.id, *off, d).unwrap();
        }
        s.setattr(
            f.id,
            AttrChange {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap();
        f.id
    };
    let s = fx.open();
    let a = s.getattr(id).unwrap();
    assert_eq!(a.size, size);
    assert!(s.stats().log_bytes < 16 * MIB, "holes must not be stored");
    for (off, d) in &pieces {
        let (got, _) = s.read(id, *off, d.len() as u32).unwrap();
        assert!(got == *d, "piece at {off}");
    }
    let (hole, _) = s.read(id, 3 * GIB, MIB as u32).unwrap();
    assert!(hole.len() == MIB as usize && hole.iter().all(|&b| b == 0));
    let (tail, eof) = s.read(id, size - 10, 100).unwrap();
    assert!(eof && tail == vec![0u8; 10]);
    // The manifest's root equals BLAKE3 of the whole (mostly zero) content, streamed.
    let mut sorted = pieces.clone();
    sorted.sort_by_key(|p| p.0);
    let mut h = blake3::Hasher::new();
    let zeros = vec![0u8; 8 * MIB as usize];
    let mut at = 0u64;
    let feed_zeros = |h: &mut blake3::Hasher, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64);
            h.update(&zeros[..k as usize]);
            n -= k;
        }
    };
    for (off, d) in &sorted {
        feed_zeros(&mut h, off - at);
        h.update(d);
        at = off + d.len() as u64;
    }
    feed_zeros(&mut h, size - at);
    let m = odt_store::trip::manifest::build(&s).unwrap();
    assert_eq!(m.files[0].blake3, *h.finalize().as_bytes());
}

#[test]
fn ten_thousand_small_files() {
    let fx = Fixture::new(1, 512 * MIB);
    let n_dirs = 20;
    let per_dir = 500;
    {
        let s = Arc::new(fx.open());
        let dirs: Vec<u64> = (0..n_dirs)
            .map(|d| {
                s.mkdir(s.root(), format!("d{d:02}").as_bytes(), 0o755)
                    .unwrap()
                    .id
            })
            .collect();
        std::thread::scope(|sc| {
            for t in 0..8 {
                let s = s.clone();
                let dirs = dirs.clone();
                sc.spawn(move || {
                    for (k, dir) in dirs.iter().enumerate().filter(|(k, _)| k % 8 == t) {
                        for i in 0..per_dir {
                            let name = format!("file-{i:04}.log");
                            let f = s.create(*dir, name.as_bytes(), 0o644).unwrap();
                            let len = 100 + (i * 37 + k) % 8000;
                            s.write(f.id, 0, &pattern((k * 100_000 + i) as u64, len))
                                .unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(s.stats().files, (n_dirs * per_dir) as u64);
    }
    let s = fx.open();
    assert_eq!(s.stats().files, (n_dirs * per_dir) as u64);
    for k in 0..n_dirs {
        let dir = s.lookup(s.root(), format!("d{k:02}").as_bytes()).unwrap();
        let list = s.list(dir).unwrap();
        assert_eq!(list.len(), per_dir);
        for (i, e) in list.iter().enumerate() {
            assert_eq!(e.name, format!("file-{i:04}.log").as_bytes());
            let len = 100 + (i * 37 + k) % 8000;
            let (got, _) = s.read(e.attr.id, 0, 10_000).unwrap();
            assert!(
                got == pattern((k * 100_000 + i) as u64, len),
                "d{k:02}/file-{i:04}"
            );
        }
    }
}
