//! Round trips through real image files: write, read, reopen, read again.

use odt_test_support::prelude::*;

#[test]
fn write_read_reopen() {
    let fx = Fixture::new(1, 256 * MIB);
    let data = pattern(1, 3 * MIB as usize + 12345);
    let text: Vec<u8> = b"2026-11-23 INFO ok\n"
        .iter()
        .cycle()
        .take(2 << 20)
        .copied()
        .collect();
    {
        let s = fx.open();
        let d = s.mkdir(s.root(), b"vm1", 0o755).unwrap();
        let f = s.create(d.id, b"disk.vmdk", 0o644).unwrap();
        s.write(f.id, 0, &data).unwrap();
        let g = s.create(d.id, b"log.txt", 0o644).unwrap();
        s.write(g.id, 0, &text).unwrap();
        let (back, eof) = s.read(f.id, 0, data.len() as u32 + 10).unwrap();
        assert!(eof);
        assert_eq!(back, data);
        let st = s.stats();
        assert_eq!(st.files, 2);
        assert!(st.log_bytes < (data.len() + text.len() / 4) as u64 + MIB);
    }
    let s = fx.open();
    let d = s.lookup(s.root(), b"vm1").unwrap();
    let f = s.lookup(d, b"disk.vmdk").unwrap();
    let (back, _) = s.read(f, 0, data.len() as u32).unwrap();
    assert_eq!(back, data);
    let g = s.lookup(d, b"log.txt").unwrap();
    assert_eq!(s.read(g, 0, text.len() as u32).unwrap().0, text);
    let m = odt_store::trip::manifest::build(&s).unwrap();
    let fm = m.files.iter().find(|e| e.path == b"vm1/disk.vmdk").unwrap();
    assert_eq!(fm.blake3, *blake3::hash(&data).as_bytes());
}

#[test]
fn truncate_then_extend_reads_zeros() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let f = s.create(s.root(), b"f", 0o644).unwrap();
    s.write(f.id, 0, &pattern(3, 2 * MIB as usize)).unwrap();
    let shrink = odt_store::format::journal::AttrChange {
        size: Some(1000),
        ..Default::default()
    };
    s.setattr(f.id, shrink).unwrap();
    let grow = odt_store::format::journal::AttrChange {
        size: Some(2 * MIB),
        ..Default::default()
    };
    s.setattr(f.id, grow).unwrap();
    let (back, _) = s.read(f.id, 0, 2 * MIB as u32).unwrap();
    assert_eq!(&back[..1000], &pattern(3, 1000)[..]);
    assert!(back[1000..].iter().all(|&b| b == 0));
}

#[test]
fn a_truncate_to_the_current_size_journals_nothing_but_is_durable() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let f = s.create(s.root(), b"f", 0o644).unwrap();
    let same = |n: u64| odt_store::format::journal::AttrChange {
        size: Some(n),
        ..Default::default()
    };
    let before = s.journal_end();
    let a = s.setattr(f.id, same(0)).unwrap();
    assert_eq!(a.size, 0);
    assert_eq!(s.journal_end(), before, "nothing journaled for a no-op");
    // The size the reply reports came from a write not yet durable: the no-op commits it.
    s.write_unstable(f.id, 0, &pattern(4, 5000)).unwrap();
    let a = s.setattr(f.id, same(5000)).unwrap();
    assert_eq!(a.size, 5000);
    assert!(s.journal_end() > before, "the queued write was committed");
    let committed = s.journal_end();
    // A real change is journaled as before.
    s.setattr(f.id, same(10)).unwrap();
    assert!(s.journal_end() > committed);
    drop(s);
    let s = fx.open();
    let id = s.lookup(s.root(), b"f").unwrap();
    assert_eq!(s.getattr(id).unwrap().size, 10);
    assert_eq!(s.read(id, 0, 10).unwrap().0, pattern(4, 10));
}

#[test]
fn readdir_pages_resume_after_the_cookie() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let d = s.mkdir(s.root(), b"many", 0o755).unwrap().id;
    let mut want: Vec<Vec<u8>> = (0..500).map(|i| format!("f{i:04}").into_bytes()).collect();
    for n in &want {
        s.create(d, n, 0o644).unwrap();
    }
    want.sort();
    let page = |after| s.readdir(d, after, 37).unwrap();
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let (entries, end) = page(after);
        got.extend(entries.iter().map(|e| e.name.clone()));
        if end {
            break;
        }
        after = entries.last().unwrap().attr.id;
    }
    assert_eq!(got, want, "every entry once, in name order");
    // A cookie whose entry was removed meanwhile starts over rather than failing.
    let (first, _) = page(0);
    let gone = first[3].attr.id;
    s.remove(d, &first[3].name).unwrap();
    assert_eq!(page(gone).0[0].name, want[0]);
    // The cookie of an entry in another directory does not resume there either.
    assert_eq!(page(d).0[0].name, want[0]);
}

/// A view is the namespace as it was when taken: later changes copy the namespace rather
/// than show through, and a new view sees them.
#[test]
fn a_view_is_a_snapshot() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let d = s.mkdir(s.root(), b"vm1", 0o755).unwrap();
    let f = s.create(d.id, b"disk.vmdk", 0o644).unwrap();
    s.write(f.id, 0, &pattern(2, 100_000)).unwrap();
    let before = s.view();
    s.write(f.id, 100_000, &pattern(3, 50_000)).unwrap();
    s.create(d.id, b"vm1.ovf", 0o644).unwrap();
    s.remove(s.root(), b"nothing").unwrap_err();
    let after = s.view();

    let names = |v: &odt_store::engine::View| -> Vec<Vec<u8>> {
        let dir = v.get(d.id).unwrap();
        dir.children().map(|(n, _)| n.to_vec()).collect()
    };
    assert_eq!(names(&before), vec![b"disk.vmdk".to_vec()]);
    assert_eq!(
        names(&after),
        vec![b"disk.vmdk".to_vec(), b"vm1.ovf".to_vec()]
    );
    assert_eq!(before.get(f.id).unwrap().size(), 100_000);
    assert_eq!(after.get(f.id).unwrap().size(), 150_000);
    assert_eq!(before.path(f.id), b"vm1/disk.vmdk");
    assert_eq!(before.files().count(), 1);
    assert_eq!(after.files().count(), 2);
    assert_eq!(after.totals(), after.recount());
    assert!(before.seal().is_none());
}
