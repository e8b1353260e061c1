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

#[test]
fn hard_links_survive_a_reopen_and_are_in_the_manifest() {
    let fx = Fixture::new(1, 64 * MIB);
    let data = pattern(5, 300 * 1024);
    let (f, a, b) = {
        let s = fx.open();
        let a = s.mkdir(s.root(), b"a", 0o755).unwrap();
        let b = s.mkdir(a.id, b"b", 0o755).unwrap();
        let f = s.create(a.id, b"data", 0o644).unwrap();
        s.write(f.id, 0, &data).unwrap();
        assert_eq!(s.link(f.id, b.id, b"data-link").unwrap().nlink, 2);
        assert_eq!(s.link(f.id, s.root(), b"top").unwrap().nlink, 3);
        // Names are checked as for any new entry; directories cannot be linked.
        assert!(s.link(f.id, b.id, b"data-link").is_err(), "name taken");
        assert!(s.link(b.id, s.root(), b"dir-link").is_err(), "a directory");
        (f.id, a.id, b.id)
    };
    let s = fx.open();
    assert_eq!(s.lookup(b, b"data-link").unwrap(), f);
    assert_eq!(s.lookup(s.root(), b"top").unwrap(), f);
    assert_eq!(s.getattr(f).unwrap().nlink, 3);
    assert_eq!(s.stats().files, 1, "one file, three names");
    let m = odt_store::trip::manifest::build(&s).unwrap();
    let named: Vec<_> = m
        .files
        .iter()
        .filter(|e| e.id == f)
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(
        named,
        [
            b"a/b/data-link".to_vec(),
            b"a/data".to_vec(),
            b"top".to_vec()
        ]
    );
    assert!(
        m.files
            .iter()
            .filter(|e| e.id == f)
            .all(|e| e.blake3 == *blake3::hash(&data).as_bytes())
    );
    // Removing the first name keeps the file under the others; renaming a link moves it.
    s.remove(a, b"data").unwrap();
    assert_eq!(s.path(f), "a/b/data-link");
    s.rename(s.root(), b"top", a, b"back").unwrap();
    assert_eq!(s.getattr(f).unwrap().nlink, 2);
    assert_eq!(s.read(f, 0, data.len() as u32).unwrap().0, data);
    s.remove(b, b"data-link").unwrap();
    assert_eq!(s.path(f), "a/back");
    s.remove(a, b"back").unwrap();
    assert!(s.getattr(f).is_err(), "gone with its last name");
    assert_eq!(s.stats().files, 0);
    drop(s);
    let s = fx.open();
    assert!(s.getattr(f).is_err());
    assert!(s.lookup(a, b"back").is_err());
}

#[test]
fn readdir_cookies_tell_apart_names_of_one_file() {
    let fx = Fixture::new(1, 64 * MIB);
    let s = fx.open();
    let f = s.create(s.root(), b"m", 0o644).unwrap();
    for n in [&b"a"[..], b"z", b"q"] {
        s.link(f.id, s.root(), n).unwrap();
    }
    for i in 0..20 {
        s.create(s.root(), format!("f{i:02}").as_bytes(), 0o644)
            .unwrap();
    }
    // One entry per page: every name once, in order, and the listing ends.
    let mut names = Vec::new();
    let mut cookie = 0;
    for _ in 0..100 {
        let (page, end) = s.readdir(s.root(), cookie, 1).unwrap();
        if let Some(e) = page.last() {
            names.push(String::from_utf8(e.name.clone()).unwrap());
            cookie = e.cookie;
        }
        if end {
            break;
        }
    }
    let mut want: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    want.extend(["a", "m", "q", "z"].map(String::from));
    want.sort();
    assert_eq!(names, want);
}
