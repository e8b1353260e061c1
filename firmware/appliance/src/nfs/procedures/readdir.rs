//! READDIR and READDIRPLUS.
//!
//! The cookie of an entry is its file id (and which of the file's names it is, for hard
//! links), and a page resumes after it in the directory's name order (the store's
//! `readdir`). The cookie verifier is always zero: a cookie stays
//! usable while the directory changes (an entry removed meanwhile makes the listing start
//! over rather than fail). A page holds as many entries as fit the client's byte counts
//! (`count`; for READDIRPLUS `maxcount` for the whole reply and `dircount` for the names
//! and cookies), never more than [`MAX_ENTRIES`]; if not even one fits, TOOSMALL. While
//! locked, the root lists only the hint file of [`locked_hint`].

use nfsserve::nfs::{fattr3, nfsstat3, post_op_attr, post_op_fh3};
use odt_store::engine::ROOT;

use super::{Call, post};
use crate::nfs::export::{Export, MAX_IO, Need};
use crate::nfs::locked_hint;
use crate::nfs::status::Subject;
use crate::nfs::xdr::MAX_NAME;

/// Bytes of the reply before the entries: status, dir attributes (bool + fattr3), verifier.
const HEAD: usize = 4 + 4 + 84 + 8;
/// Bytes after the entries: end of list, eof.
const TAIL: usize = 8;
/// Most entries fetched for one reply.
const MAX_ENTRIES: usize = 4096;
/// Bytes of an entry's name part: value follows, fileid, name (length + padded bytes),
/// cookie.
fn entry_size(name_len: usize) -> usize {
    4 + 8 + 4 + name_len.div_ceil(4) * 4 + 8
}
/// Bytes READDIRPLUS adds to an entry: attributes (bool + fattr3), handle (bool + opaque).
fn plus_size(handle_len: usize) -> usize {
    4 + 84 + 4 + 4 + handle_len.div_ceil(4) * 4
}

/// READDIR (`plus == false`) or READDIRPLUS.
async fn list(x: &Export, c: &Call<'_>, plus: bool) -> Vec<u8> {
    let mut args = c.reader();
    let parsed = (|| {
        let fh = args.handle()?;
        let cookie = args.u64()?;
        let _verifier = args.fixed::<8>()?;
        let first = args.u32()?;
        let counts = if plus {
            // dircount, maxcount
            (first as usize, args.u32()? as usize)
        } else {
            (usize::MAX, first as usize)
        };
        Some((fh, cookie, counts))
    })();
    let Some((fh, cookie, (dircount, maxcount))) = parsed else {
        return c.garbage();
    };
    let dir = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let budget = maxcount.min(MAX_IO as usize);
    let handle_len = x.handle_of(dir).data.len();
    if let Some(attr) = x.hint_attr(dir).filter(|_| dir == ROOT) {
        return locked_root(x, c, attr, cookie, plus, budget);
    }
    let store = match x.store(Need::Read) {
        Ok(s) => s.clone(),
        Err(st) => return c.failed_without_attributes(st),
    };
    let smallest = entry_size(1) + if plus { plus_size(handle_len) } else { 0 };
    let want = (budget / smallest).clamp(1, MAX_ENTRIES);
    let listed = (|| {
        let attr = store.getattr(dir)?;
        let (entries, end) = store.readdir(dir, cookie, want)?;
        Ok::<_, odt_store::Error>((attr, entries, end))
    })();
    let (attr, mut entries, end) = match listed {
        Ok(v) => v,
        Err(e) => {
            let st = x.fail(
                if plus { "READDIRPLUS" } else { "READDIR" },
                Subject::Object,
                e,
                || x.path_of(&store, dir),
            );
            let attr = post(match st {
                nfsstat3::NFS3ERR_NOTDIR => x.getattr(dir).await,
                _ => Err(st),
            });
            return c.status(st, |r| {
                r.put(&attr);
            });
        }
    };
    if plus {
        // Files with acknowledged writes still running: their size comes after them.
        for e in &mut entries {
            if x.pending.is_running(e.attr.id) {
                x.pending.settle(e.attr.id).await;
                if let Ok(a) = store.getattr(e.attr.id) {
                    e.attr = a;
                }
            }
        }
    }
    let mut used = HEAD + TAIL;
    let mut names = 0;
    let mut fit = 0;
    for e in &entries {
        let name = entry_size(e.name.len().min(MAX_NAME));
        let whole = name + if plus { plus_size(handle_len) } else { 0 };
        if used + whole > budget || names + name > dircount {
            break;
        }
        used += whole;
        names += name;
        fit += 1;
    }
    if fit == 0 && !entries.is_empty() {
        return c.status(nfsstat3::NFS3ERR_TOOSMALL, |r| {
            r.put(&post_op_attr::attributes(x.fattr(&attr)));
        });
    }
    let eof = fit == entries.len() && end;
    c.status(nfsstat3::NFS3_OK, |r| {
        r.reserve(used)
            .put(&post_op_attr::attributes(x.fattr(&attr)))
            .fixed(&[0; 8]);
        for e in &entries[..fit] {
            r.word(1).hyper(e.attr.id).opaque(&e.name).hyper(e.cookie);
            if plus {
                r.put(&post_op_attr::attributes(x.fattr(&e.attr)))
                    .put(&post_op_fh3::handle(x.handle_of(e.attr.id)));
            }
        }
        r.word(0).word(eof as u32);
    })
}

/// The locked share's root: the hint file alone (cookie 1), see [`locked_hint`].
fn locked_root(
    x: &Export,
    c: &Call<'_>,
    attr: fattr3,
    cookie: u64,
    plus: bool,
    budget: usize,
) -> Vec<u8> {
    let handle = x.handle_of(locked_hint::ID);
    let whole = entry_size(locked_hint::NAME.len())
        + if plus {
            plus_size(handle.data.len())
        } else {
            0
        };
    let listed = cookie == 0;
    if listed && HEAD + TAIL + whole > budget {
        return c.status(nfsstat3::NFS3ERR_TOOSMALL, |r| {
            r.put(&post_op_attr::attributes(attr));
        });
    }
    c.status(nfsstat3::NFS3_OK, |r| {
        r.put(&post_op_attr::attributes(attr)).fixed(&[0; 8]);
        if listed {
            r.word(1)
                .hyper(locked_hint::ID)
                .opaque(locked_hint::NAME)
                .hyper(1);
            if plus {
                r.put(&post_op_attr::attributes(
                    x.hint_attr(locked_hint::ID).expect("locked"),
                ))
                .put(&post_op_fh3::handle(handle));
            }
        }
        r.word(0).word(1);
    })
}

/// READDIR.
pub async fn readdir(x: &Export, c: &Call<'_>) -> Vec<u8> {
    list(x, c, false).await
}

/// READDIRPLUS.
pub async fn readdirplus(x: &Export, c: &Call<'_>) -> Vec<u8> {
    list(x, c, true).await
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness, ReplyReader};
    use nfsserve::nfs::nfsstat3;

    /// (entries (id, name, cookie, attributes' file id, handle's id), eof).
    fn entries(h: &Harness, r: &mut ReplyReader, plus: bool) -> (Vec<(u64, String, u64)>, bool) {
        assert!(r.post_attr().is_some());
        r.u64();
        let mut out = Vec::new();
        while r.u32() == 1 {
            let id = r.u64();
            let name = String::from_utf8(r.opaque()).unwrap();
            let cookie = r.u64();
            if plus {
                assert_eq!(r.post_attr().unwrap().fileid, id);
                assert_eq!(h.id(&r.post_fh().unwrap()), id);
            }
            out.push((id, name, cookie));
        }
        (out, r.u32() == 1)
    }

    async fn list_all(h: &Harness, dir: u64, plus: bool, count: u32) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cookie = 0;
        for _ in 0..200 {
            let mut args = Args::new().fh(&h.fh(dir)).u64(cookie).u64(0);
            args = if plus {
                args.u32(count / 2).u32(count)
            } else {
                args.u32(count)
            };
            let proc_ = if plus {
                nfs3::READDIRPLUS
            } else {
                nfs3::READDIR
            };
            let mut r = h.nfs(proc_, args).await;
            assert_eq!(r.status(), 0);
            let (page, eof) = entries(h, &mut r, plus);
            seen.extend(page.iter().map(|e| e.1.clone()));
            if eof {
                return seen;
            }
            cookie = page
                .last()
                .expect("a page that is not the last has entries")
                .2;
        }
        panic!("the listing does not end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_resume_after_the_cookie() {
        let h = Harness::unlocked();
        let d = h.mkdir(h.root(), "d").await;
        for i in 0..300 {
            h.create_file(d, &format!("entry-{i:04}-{}", "n".repeat(i % 50)))
                .await;
        }
        for plus in [false, true] {
            let seen = list_all(&h, d, plus, 4096).await;
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!((seen.len(), unique.len()), (300, 300), "every entry once");
        }
        // Errors: too small a count, a file handle, a locked appliance.
        let mut r = h
            .nfs(
                nfs3::READDIR,
                Args::new().fh(&h.fh(d)).u64(0).u64(0).u32(10),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_TOOSMALL as u32);
        let f = h.export.lookup(d, b"entry-0000-").await.unwrap();
        let mut r = h
            .nfs(
                nfs3::READDIRPLUS,
                Args::new().fh(&h.fh(f)).u64(0).u64(0).u32(512).u32(4096),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOTDIR as u32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readdirplus_sizes_include_acknowledged_writes() {
        let h = Harness::unlocked();
        let f = h.create_file(h.root(), "f").await;
        assert_eq!(h.write(f, 0, 0, &[7; 5000]).await, 0);
        let mut r = h
            .nfs(
                nfs3::READDIRPLUS,
                Args::new()
                    .fh(&h.fh(h.root()))
                    .u64(0)
                    .u64(0)
                    .u32(4096)
                    .u32(65536),
            )
            .await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        r.u64();
        assert_eq!(r.u32(), 1);
        r.u64();
        assert_eq!(r.opaque(), b"f");
        r.u64();
        assert_eq!(r.post_attr().unwrap().size, 5000);
    }
}
