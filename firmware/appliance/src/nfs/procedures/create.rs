//! The procedures that make a name: CREATE, MKDIR, SYMLINK, LINK (a hard link: one file,
//! several names), and MKNOD (answered NOTSUPP: the appliance stores files, directories and
//! symbolic links only).
//!
//! Each is durable before it answers (the store's change returns once journaled).
//! - CREATE UNCHECKED of an existing file succeeds and applies the attributes (a size of 0
//!   truncates), as RFC 1813 asks; GUARDED creates only if the name is free, in one store
//!   call (a lookup first would reuse a file made in between).
//! - CREATE EXCLUSIVE keeps the client's verifier in the new file's mtime and atime
//!   seconds (as Linux's server does), so a retransmitted CREATE finds its own file and
//!   succeeds instead of answering EXIST; the client sets the real times with the SETATTR
//!   that follows.
//! - Every reply carries the directory's wcc data, also on failure.

use nfsserve::nfs::{
    fattr3, fileid3, filename3, ftype3, nfsstat3, nfstime3, post_op_attr, post_op_fh3, sattr3,
    set_atime, set_mtime,
};
use odt_store::format::journal::AttrChange;

use super::attr::{apply, attr_change};
use super::{Call, before_change, post, wcc};
use crate::nfs::export::{Export, Need};
use crate::nfs::status::Subject;

/// createmode3 values.
const UNCHECKED: u32 = 0;
const GUARDED: u32 = 1;
const EXCLUSIVE: u32 = 2;

/// How a CREATE asks for its file.
#[derive(Debug, Clone, Copy)]
enum How {
    Unchecked(sattr3),
    Guarded(sattr3),
    Exclusive([u8; 8]),
}

/// What kind of entry a procedure makes.
#[derive(Debug, Clone, Copy)]
enum Make<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
}

impl Make<'_> {
    fn op(&self) -> &'static str {
        match self {
            Make::File => "CREATE",
            Make::Dir => "MKDIR",
            Make::Symlink(_) => "SYMLINK",
        }
    }
}

/// Makes `name` in `dir` (failing with EXIST if it is taken), then applies `change` (its
/// mode, if any, is given at creation).
async fn make(
    x: &Export,
    dir: fileid3,
    name: &filename3,
    what: Make<'_>,
    mut change: AttrChange,
) -> Result<(fileid3, fattr3), nfsstat3> {
    let s = x.store(Need::Write)?;
    let id = x.blocking(|| {
        let made = match what {
            Make::File => s.create(dir, name, change.mode.take().unwrap_or(0o644)),
            Make::Dir => s.mkdir(dir, name, change.mode.take().unwrap_or(0o755)),
            Make::Symlink(target) => {
                change.mode = None;
                s.symlink(dir, name, target)
            }
        };
        made.map(|a| a.id)
            .map_err(|e| x.fail(what.op(), Subject::Name, e, || x.path_in(s, dir, name)))
    })?;
    x.app.meter().created();
    let a = apply(x, id, change).await?;
    Ok((id, a))
}

/// CREATE UNCHECKED: makes the file, or uses the existing regular file of that name.
async fn create_unchecked(
    x: &Export,
    dir: fileid3,
    name: &filename3,
    attr: sattr3,
) -> Result<(fileid3, fattr3), nfsstat3> {
    match make(x, dir, name, Make::File, attr_change(&attr)).await {
        Err(nfsstat3::NFS3ERR_EXIST) => {
            let id = x.lookup(dir, name).await?;
            if !matches!(x.getattr(id).await?.ftype, ftype3::NF3REG) {
                return Err(nfsstat3::NFS3ERR_EXIST);
            }
            let a = apply(x, id, attr_change(&attr)).await?;
            Ok((id, a))
        }
        r => r,
    }
}

/// The times an EXCLUSIVE create stores its verifier in: (mtime, atime).
fn verifier_times(v: &[u8; 8]) -> (nfstime3, nfstime3) {
    let word = |b: &[u8]| nfstime3 {
        seconds: u32::from_be_bytes(b.try_into().expect("4 bytes")),
        nseconds: 0,
    };
    (word(&v[..4]), word(&v[4..]))
}

/// CREATE EXCLUSIVE: makes the file with `verifier` in its times, or finds the file an
/// earlier transmission of the same CREATE made.
async fn create_verified(
    x: &Export,
    dir: fileid3,
    name: &filename3,
    verifier: &[u8; 8],
) -> Result<(fileid3, fattr3), nfsstat3> {
    let (mtime, atime) = verifier_times(verifier);
    let times = sattr3 {
        atime: set_atime::SET_TO_CLIENT_TIME(atime),
        mtime: set_mtime::SET_TO_CLIENT_TIME(mtime),
        ..sattr3::default()
    };
    match make(x, dir, name, Make::File, attr_change(&times)).await {
        Err(nfsstat3::NFS3ERR_EXIST) => {
            let id = x.lookup(dir, name).await?;
            let a = x.getattr(id).await?;
            let same =
                |t: nfstime3, u: nfstime3| (t.seconds, t.nseconds) == (u.seconds, u.nseconds);
            let ours =
                matches!(a.ftype, ftype3::NF3REG) && same(a.mtime, mtime) && same(a.atime, atime);
            if ours {
                Ok((id, a))
            } else {
                Err(nfsstat3::NFS3ERR_EXIST)
            }
        }
        r => r,
    }
}

/// The reply of CREATE, MKDIR and SYMLINK: the new handle and attributes, and the
/// directory's wcc data.
async fn made_reply(
    x: &Export,
    c: &Call<'_>,
    dir: fileid3,
    before: &fattr3,
    made: Result<(fileid3, fattr3), nfsstat3>,
) -> Vec<u8> {
    let dir_wcc = wcc(before, x.getattr(dir).await);
    match made {
        Ok((id, attr)) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&post_op_fh3::handle(x.handle_of(id)))
                .put(&post_op_attr::attributes(attr))
                .put(&dir_wcc);
        }),
        Err(st) => c.wcc_failed(st, dir_wcc),
    }
}

/// CREATE.
pub async fn create(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let parsed = (|| {
        let (fh, name) = args.dirop()?;
        let how = match args.u32()? {
            UNCHECKED => How::Unchecked(args.sattr()?),
            GUARDED => How::Guarded(args.sattr()?),
            EXCLUSIVE => How::Exclusive(args.fixed()?),
            _ => return None,
        };
        Some((fh, name, how))
    })();
    let Some((fh, name, how)) = parsed else {
        return c.garbage();
    };
    let (dir, before) = match before_change(x, c, &fh).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let made = match how {
        How::Unchecked(attr) => create_unchecked(x, dir, &name, attr).await,
        How::Guarded(attr) => make(x, dir, &name, Make::File, attr_change(&attr)).await,
        How::Exclusive(verifier) => create_verified(x, dir, &name, &verifier).await,
    };
    made_reply(x, c, dir, &before, made).await
}

/// MKDIR.
pub async fn mkdir(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some((fh, name, attr)) = (|| {
        let (fh, name) = args.dirop()?;
        Some((fh, name, args.sattr()?))
    })() else {
        return c.garbage();
    };
    let (dir, before) = match before_change(x, c, &fh).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let made = make(x, dir, &name, Make::Dir, attr_change(&attr)).await;
    made_reply(x, c, dir, &before, made).await
}

/// SYMLINK.
pub async fn symlink(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some((fh, name, attr, target)) = (|| {
        let (fh, name) = args.dirop()?;
        let attr = args.sattr()?;
        Some((fh, name, attr, args.path()?))
    })() else {
        return c.garbage();
    };
    let (dir, before) = match before_change(x, c, &fh).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let made = make(x, dir, &name, Make::Symlink(&target), attr_change(&attr)).await;
    made_reply(x, c, dir, &before, made).await
}

/// MKNOD: device files, sockets and FIFOs are not stored; NOTSUPP with the directory's
/// wcc data.
pub async fn mknod(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some((fh, _name)) = c.reader().dirop() else {
        return c.garbage();
    };
    match before_change(x, c, &fh).await {
        Ok((_, before)) => c.wcc_failed(nfsstat3::NFS3ERR_NOTSUPP, wcc(&before, Ok(before))),
        Err(reply) => reply,
    }
}

/// LINK: a second name for the file behind the first handle.
pub async fn link(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some((file_fh, dir_fh, name)) = (|| {
        let file = args.handle()?;
        let (dir, name) = args.dirop()?;
        Some((file, dir, name))
    })() else {
        return c.garbage();
    };
    // The reply's first item is the file's attributes, then the directory's wcc data.
    let reply = |st, file: Result<fattr3, nfsstat3>, dir_wcc| {
        c.status(st, |r| {
            r.put(&post(file)).put(&dir_wcc);
        })
    };
    // A file that is gone is a stale handle, not a missing name.
    let file = match x.id_of(&file_fh) {
        Ok(id) => id,
        Err(st) => return reply(st, Err(st), Default::default()),
    };
    if let Err(st) = x.getattr(file).await {
        return reply(st, Err(st), Default::default());
    }
    let dir = match x.id_of(&dir_fh) {
        Ok(id) => id,
        Err(st) => return reply(st, x.getattr(file).await, Default::default()),
    };
    let before = match x.getattr(dir).await {
        Ok(a) => a,
        Err(st) => return reply(st, x.getattr(file).await, Default::default()),
    };
    let linked = link_to(x, file, dir, &name).await;
    let dir_wcc = wcc(&before, x.getattr(dir).await);
    match linked {
        Ok(a) => reply(nfsstat3::NFS3_OK, Ok(a), dir_wcc),
        Err(st) => reply(st, x.getattr(file).await, dir_wcc),
    }
}

/// Gives file `id` the name `name` in `dir` too.
async fn link_to(
    x: &Export,
    id: fileid3,
    dir: fileid3,
    name: &filename3,
) -> Result<fattr3, nfsstat3> {
    let s = x.store(Need::Write)?;
    x.pending.settle(id).await;
    x.blocking(|| {
        s.link(id, dir, name)
            .map(|a| x.fattr(&a))
            .map_err(|e| x.fail("LINK", Subject::Name, e, || x.path_in(s, dir, name)))
    })
}

#[cfg(test)]
mod tests {
    use super::{EXCLUSIVE, GUARDED, UNCHECKED};
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::{ftype3, nfsstat3, sattr3, set_mode3, set_size3};

    fn mode(m: u32) -> sattr3 {
        sattr3 {
            mode: set_mode3::mode(m),
            ..sattr3::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_modes() {
        let h = Harness::unlocked();
        let root = h.fh(h.root());
        let create = |name: &str, how: u32, tail: Args| {
            Args::new().fh(&root).text(name).u32(how).raw(tail.bytes())
        };
        let mut r = h
            .nfs(
                nfs3::CREATE,
                create("a", UNCHECKED, Args::new().sattr(&mode(0o600))),
            )
            .await;
        assert_eq!(r.status(), 0);
        let fh = r.post_fh().unwrap();
        let a = r.post_attr().unwrap();
        assert_eq!((a.mode, matches!(a.ftype, ftype3::NF3REG)), (0o600, true));
        let (before, after) = r.wcc();
        assert!(before.is_some() && after.is_some(), "directory wcc data");
        let id = h.id(&fh);
        assert_eq!(h.write(id, 0, 2, b"content").await, 0);

        // UNCHECKED of an existing file reuses it and applies the size.
        let truncate = sattr3 {
            size: set_size3::size(0),
            ..sattr3::default()
        };
        let mut r = h
            .nfs(
                nfs3::CREATE,
                create("a", UNCHECKED, Args::new().sattr(&truncate)),
            )
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(h.id(&r.post_fh().unwrap()), id);
        assert_eq!(r.post_attr().unwrap().size, 0);

        // GUARDED of a taken name: EXIST with the directory's wcc data.
        let mut r = h
            .nfs(
                nfs3::CREATE,
                create("a", GUARDED, Args::new().sattr(&mode(0o644))),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_EXIST as u32);
        assert!(r.wcc().1.is_some());

        // EXCLUSIVE: a retransmission with the same verifier finds its own file.
        let verf = Args::new().u32(0xdead_beef).u32(7);
        let mut r = h
            .nfs(nfs3::CREATE, create("x", EXCLUSIVE, verf.clone()))
            .await;
        assert_eq!(r.status(), 0);
        let first = h.id(&r.post_fh().unwrap());
        let mut r = h.nfs(nfs3::CREATE, create("x", EXCLUSIVE, verf)).await;
        assert_eq!(r.status(), 0, "the same CREATE again");
        assert_eq!(h.id(&r.post_fh().unwrap()), first);
        let other = Args::new().u32(1).u32(2);
        let mut r = h.nfs(nfs3::CREATE, create("x", EXCLUSIVE, other)).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_EXIST as u32);

        // Names: a slash is INVAL, 256 bytes are refused before anything is allocated.
        let mut r = h
            .nfs(
                nfs3::CREATE,
                create("b/c", UNCHECKED, Args::new().sattr(&sattr3::default())),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_INVAL as u32);
        let long = "é".repeat(128);
        let r = h
            .nfs(
                nfs3::CREATE,
                create(&long, UNCHECKED, Args::new().sattr(&sattr3::default())),
            )
            .await;
        assert_eq!(r.accept_stat(), 4, "GARBAGE_ARGS");
        let ok255 = format!("{}a", "é".repeat(127));
        h.create_file(h.root(), &ok255).await;
        // An unknown create mode.
        let r = h.nfs(nfs3::CREATE, create("y", 3, Args::new())).await;
        assert_eq!(r.accept_stat(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mkdir_symlink_mknod() {
        let h = Harness::unlocked();
        let root = h.fh(h.root());
        let mut r = h
            .nfs(
                nfs3::MKDIR,
                Args::new().fh(&root).text("vm").sattr(&mode(0o700)),
            )
            .await;
        assert_eq!(r.status(), 0);
        let d = h.id(&r.post_fh().unwrap());
        let a = r.post_attr().unwrap();
        assert_eq!((a.mode, matches!(a.ftype, ftype3::NF3DIR)), (0o700, true));
        let mut r = h
            .nfs(
                nfs3::MKDIR,
                Args::new().fh(&root).text("vm").sattr(&mode(0o700)),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_EXIST as u32);

        let mut r = h
            .nfs(
                nfs3::SYMLINK,
                Args::new()
                    .fh(&h.fh(d))
                    .text("latest")
                    .sattr(&sattr3::default())
                    .text("disk-1.vmdk"),
            )
            .await;
        assert_eq!(r.status(), 0);
        let l = r.post_fh().unwrap();
        assert!(matches!(r.post_attr().unwrap().ftype, ftype3::NF3LNK));
        let mut r = h.nfs(nfs3::READLINK, Args::new().fh(&l)).await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        assert_eq!(r.opaque(), b"disk-1.vmdk");
        // Symlink data over 1024 bytes is refused as garbage.
        let r = h
            .nfs(
                nfs3::SYMLINK,
                Args::new()
                    .fh(&h.fh(d))
                    .text("long")
                    .sattr(&sattr3::default())
                    .opaque(&[b'a'; 1025]),
            )
            .await;
        assert_eq!(r.accept_stat(), 4);
        // READLINK of a directory.
        let mut r = h.nfs(nfs3::READLINK, Args::new().fh(&h.fh(d))).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_INVAL as u32);

        // MKNOD: not supported, with the directory's wcc data.
        let mut r = h
            .nfs(nfs3::MKNOD, Args::new().fh(&root).text("fifo").u32(7))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOTSUPP as u32);
        assert!(r.wcc().1.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn link() {
        let h = Harness::unlocked();
        let d = h.mkdir(h.root(), "d").await;
        let f = h.create_file(h.root(), "f").await;
        let link =
            |file: u64, dir: u64, name: &str| Args::new().fh(&h.fh(file)).fh(&h.fh(dir)).text(name);
        let mut r = h.nfs(nfs3::LINK, link(f, d, "g")).await;
        assert_eq!(r.status(), 0);
        assert_eq!(r.post_attr().unwrap().nlink, 2, "the file's attributes");
        let (before, after) = r.wcc();
        assert!(
            before.is_some() && after.is_some(),
            "the directory's wcc data"
        );
        assert_eq!(h.export.lookup(d, b"g").await.unwrap(), f);
        // A taken name, a directory, a removed file.
        let mut r = h.nfs(nfs3::LINK, link(f, d, "g")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_EXIST as u32);
        assert!(r.post_attr().is_some());
        let mut r = h.nfs(nfs3::LINK, link(d, h.root(), "dd")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ISDIR as u32);
        h.remove(h.root(), "f").await;
        h.remove(d, "g").await;
        let mut r = h.nfs(nfs3::LINK, link(f, d, "h")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
        // PATHCONF tells clients links work.
        let mut r = h.nfs(nfs3::PATHCONF, Args::new().fh(&h.fh(d))).await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        assert!(r.u32() > 1, "linkmax");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_and_locked_refusals() {
        let h = Harness::locked();
        let root = h.fh(h.root());
        let mut r = h
            .nfs(
                nfs3::MKDIR,
                Args::new().fh(&root).text("d").sattr(&sattr3::default()),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        h.unlock();
        h.app.test_seal().unwrap();
        let mut r = h
            .nfs(
                nfs3::MKDIR,
                Args::new().fh(&root).text("d").sattr(&sattr3::default()),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ROFS as u32);
        let mut r = h
            .nfs(
                nfs3::CREATE,
                Args::new()
                    .fh(&root)
                    .text("f")
                    .u32(0)
                    .sattr(&sattr3::default()),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ROFS as u32);
        let mut r = h
            .nfs(
                nfs3::SYMLINK,
                Args::new()
                    .fh(&root)
                    .text("l")
                    .sattr(&sattr3::default())
                    .text("t"),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ROFS as u32);
    }
}
