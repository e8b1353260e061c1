//! Property test: random writes (out of order, overlapping, zeros, text, random), truncates,
//! renames, creates, removes and reopens against an in-memory model, on a real image file.

use std::collections::BTreeMap;

use odt_store::error::{ErrorKind, NamespaceError};
use odt_store::format::journal::AttrChange;
use odt_store::{Error, Store};
use odt_test_support::prelude::*;
use proptest::prelude::*;

const NAMES: u8 = 8;

#[derive(Debug, Clone)]
enum Fill {
    Random(u64),
    Zero,
    Text,
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Remove(u8),
    Write {
        f: u8,
        off: u64,
        len: usize,
        fill: Fill,
    },
    Truncate {
        f: u8,
        size: u64,
    },
    Rename {
        from: u8,
        to: u8,
    },
    Reopen,
}

fn fill_bytes(fill: &Fill, len: usize) -> Vec<u8> {
    match fill {
        Fill::Random(seed) => pattern(*seed, len),
        Fill::Zero => vec![0; len],
        Fill::Text => b"Nov 23 05:25:06 esx01 vmkernel: scsi ok\n"
            .iter()
            .cycle()
            .take(len)
            .copied()
            .collect(),
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![
        (0u64..4).prop_map(|b| b * MIB),
        (0u64..1024).prop_map(|p| p * 4096),
        0u64..(4 * MIB),
    ];
    let len = prop_oneof![
        Just(MIB as usize),
        1usize..70_000,
        (1usize..64).prop_map(|p| p * 4096),
        (MIB as usize)..(2 * MIB as usize + 3),
    ];
    let fill = prop_oneof![
        any::<u64>().prop_map(Fill::Random),
        Just(Fill::Zero),
        Just(Fill::Text)
    ];
    prop_oneof![
        2 => (0..NAMES).prop_map(Op::Create),
        1 => (0..NAMES).prop_map(Op::Remove),
        8 => ((0..NAMES).prop_map(|n| n & !1), offset, len, fill).prop_map(|(f, off, len, fill)| Op::Write { f, off, len, fill }),
        3 => ((0..NAMES).prop_map(|n| n & !1), 0u64..(5 * MIB)).prop_map(|(f, size)| Op::Truncate { f, size }),
        1 => (0..NAMES, 0..NAMES).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => Just(Op::Reopen),
    ]
}

fn place(s: &Store, n: u8) -> (u64, Vec<u8>) {
    let dir = if n < NAMES / 2 {
        s.root()
    } else {
        s.lookup(s.root(), b"sub dir").unwrap()
    };
    (dir, format!("file {n} ü").into_bytes())
}

fn id_of(s: &Store, n: u8) -> Option<u64> {
    let (d, name) = place(s, n);
    s.lookup(d, &name).ok()
}

fn check_all(s: &Store, model: &BTreeMap<u8, Vec<u8>>) {
    for n in 0..NAMES {
        match (id_of(s, n), model.get(&n)) {
            (None, None) => {}
            (Some(id), Some(want)) => {
                let a = s.getattr(id).unwrap();
                assert_eq!(a.size, want.len() as u64, "size of file {n}");
                let (got, eof) = s.read(id, 0, want.len() as u32 + 100).unwrap();
                assert!(eof);
                assert!(got == *want, "content of file {n} differs");
            }
            (a, b) => panic!("file {n}: store has {:?}, model has {}", a, b.is_some()),
        }
    }
    // The totals kept as ops apply (status, FSSTAT) equal a walk and the model.
    let st = s.stats();
    assert_eq!(st.files, model.len() as u64, "files in stats");
    assert_eq!(st.dirs, 2, "root and \"sub dir\"");
    assert_eq!(
        st.logical_bytes,
        model.values().map(|v| v.len() as u64).sum::<u64>(),
        "bytes in stats"
    );
    let view = s.view();
    assert_eq!(view.totals(), view.recount());
    assert_eq!(view.live(), &view.recount_live(), "live records");
    assert_eq!(st.live_bytes, view.live().bytes());
    assert_eq!(
        st.free_bytes + st.live_bytes + st.dead_bytes,
        st.capacity_bytes,
        "free, live and dead bytes make the capacity: {st:?}"
    );
    drop(view);
    let m = odt_store::trip::manifest::build(s).unwrap();
    for n in 0..NAMES {
        if let Some(want) = model.get(&n) {
            let (d, name) = place(s, n);
            let path = if d == s.root() {
                name
            } else {
                [b"sub dir/".as_slice(), &name].concat()
            };
            let e = m
                .files
                .iter()
                .find(|e| e.path == path)
                .expect("file in manifest");
            assert_eq!(
                e.blake3,
                *blake3::hash(want).as_bytes(),
                "manifest root of file {n}"
            );
        }
    }
}

fn run(ops: Vec<Op>) {
    let fx = Fixture::new(if ops.len().is_multiple_of(2) { 1 } else { 2 }, 128 * MIB);
    let mut s = fx.open();
    s.mkdir(s.root(), b"sub dir", 0o755).unwrap();
    let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    // Start with half the names taken so that data ops mostly hit a file.
    for n in (0..NAMES).step_by(2) {
        let (d, name) = place(&s, n);
        s.create(d, &name, 0o600).unwrap();
        model.insert(n, Vec::new());
    }
    for op in ops {
        match op {
            Op::Create(n) => {
                let (d, name) = place(&s, n);
                let r = s.create(d, &name, 0o640);
                if let std::collections::btree_map::Entry::Vacant(e) = model.entry(n) {
                    r.unwrap();
                    e.insert(Vec::new());
                } else {
                    assert!(matches!(
                        r.map_err(Error::into_kind),
                        Err(ErrorKind::Namespace(NamespaceError::Exists))
                    ));
                }
            }
            Op::Remove(n) => {
                let (d, name) = place(&s, n);
                let r = s.remove(d, &name);
                if model.remove(&n).is_some() {
                    r.unwrap();
                } else {
                    assert!(matches!(
                        r.map_err(Error::into_kind),
                        Err(ErrorKind::Namespace(NamespaceError::NotFound))
                    ));
                }
            }
            Op::Write { f, off, len, fill } => {
                let Some(id) = id_of(&s, f) else {
                    assert!(!model.contains_key(&f));
                    continue;
                };
                let data = fill_bytes(&fill, len);
                s.write(id, off, &data).unwrap();
                let m = model.get_mut(&f).unwrap();
                let end = off as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { f, size } => {
                let Some(id) = id_of(&s, f) else { continue };
                s.setattr(
                    id,
                    AttrChange {
                        size: Some(size),
                        ..Default::default()
                    },
                )
                .unwrap();
                model.get_mut(&f).unwrap().resize(size as usize, 0);
            }
            Op::Rename { from, to } => {
                let (fd, fname) = place(&s, from);
                let (td, tname) = place(&s, to);
                let r = s.rename(fd, &fname, td, &tname);
                if let Some(v) = model.remove(&from) {
                    r.unwrap();
                    model.insert(to, v);
                } else {
                    assert!(matches!(
                        r.map_err(Error::into_kind),
                        Err(ErrorKind::Namespace(NamespaceError::NotFound))
                    ));
                }
            }
            Op::Reopen => {
                drop(s);
                s = fx.open();
                check_all(&s, &model);
            }
        }
    }
    check_all(&s, &model);
    drop(s);
    let s = fx.open();
    check_all(&s, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        run(ops);
    }
}
