//! GETATTR, SETATTR and ACCESS.
//!
//! - SETATTR whose ctime guard does not match answers NOT_SYNC with the object's wcc data
//!   and changes nothing (RFC 1813); a failed SETATTR carries its wcc data too.
//! - A size beyond the store's capacity ([`Export::max_file_size`]) is refused with FBIG
//!   before the store sees it.
//! - While locked, GETATTR and ACCESS answer for the root and the hint file of
//!   [`locked_hint`] (read-only); everything else is refused with ACCES.
//! - ACCESS grants everything asked, also once sealed: a change then fails with ROFS, which
//!   tells the user why, where a denied ACCESS would only say "permission denied".

use nfsserve::nfs::{
    fattr3, fileid3, nfsstat3, post_op_attr, sattr3, set_atime, set_gid3, set_mode3, set_mtime,
    set_size3, set_uid3,
};
use odt_store::format::journal::{AttrChange, Time};

use super::{Call, before_change, wcc};
use crate::nfs::export::{Export, Need, from_time};
use crate::nfs::locked_hint;
use crate::nfs::status::Subject;

/// The attribute changes a `sattr3` asks for.
pub fn attr_change(s: &sattr3) -> AttrChange {
    let now = Time::now();
    AttrChange {
        mode: match s.mode {
            set_mode3::mode(m) => Some(m & 0o7777),
            set_mode3::Void => None,
        },
        uid: match s.uid {
            set_uid3::uid(u) => Some(u),
            set_uid3::Void => None,
        },
        gid: match s.gid {
            set_gid3::gid(g) => Some(g),
            set_gid3::Void => None,
        },
        size: match s.size {
            set_size3::size(n) => Some(n),
            set_size3::Void => None,
        },
        atime: match s.atime {
            set_atime::DONT_CHANGE => None,
            set_atime::SET_TO_SERVER_TIME => Some(now),
            set_atime::SET_TO_CLIENT_TIME(t) => Some(from_time(t)),
        },
        mtime: match s.mtime {
            set_mtime::DONT_CHANGE => None,
            set_mtime::SET_TO_SERVER_TIME => Some(now),
            set_mtime::SET_TO_CLIENT_TIME(t) => Some(from_time(t)),
        },
    }
}

/// Applies `change` to `id` (once its acknowledged writes are in) and returns the
/// attributes after it; an empty change only reads them.
pub async fn apply(x: &Export, id: fileid3, change: AttrChange) -> Result<fattr3, nfsstat3> {
    let s = x.store(Need::Write)?;
    if change.size.is_some_and(|n| n > x.max_file_size()) {
        return Err(nfsstat3::NFS3ERR_FBIG);
    }
    x.pending.settle(id).await;
    x.blocking(|| {
        let r = if change == AttrChange::default() {
            s.getattr(id)
        } else {
            s.setattr(id, change)
        };
        r.map(|a| x.fattr(&a))
            .map_err(|e| x.fail("SETATTR", Subject::Object, e, || x.path_of(s, id)))
    })
}

/// GETATTR.
pub async fn getattr(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some(fh) = c.reader().handle() else {
        return c.garbage();
    };
    let shown = match x.id_of(&fh) {
        Ok(id) => x.shown_attr(id).await,
        Err(st) => Err(st),
    };
    match shown {
        Ok(a) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&a);
        }),
        Err(st) => c.status(st, |_| {}),
    }
}

/// SETATTR.
pub async fn setattr(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let parsed = (|| {
        let fh = args.handle()?;
        let change = args.sattr()?;
        let guard = match args.bool()? {
            false => None,
            true => Some(args.time()?),
        };
        Some((fh, change, guard))
    })();
    let Some((fh, change, guard)) = parsed else {
        return c.garbage();
    };
    let (id, before) = match before_change(x, c, &fh).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    if let Some(ctime) = guard
        && (ctime.seconds, ctime.nseconds) != (before.ctime.seconds, before.ctime.nseconds)
    {
        // The client's view is out of date: change nothing.
        return c.wcc_failed(nfsstat3::NFS3ERR_NOT_SYNC, wcc(&before, Ok(before)));
    }
    match apply(x, id, attr_change(&change)).await {
        Ok(after) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&wcc(&before, Ok(after)));
        }),
        Err(st) => c.wcc_failed(st, wcc(&before, Err(st))),
    }
}

/// ACCESS.
pub async fn access(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some((fh, asked)) = (|| Some((args.handle()?, args.u32()?)))() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    // The locked share's root and hint are read-only.
    if let Some(a) = x.hint_attr(id) {
        return c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&post_op_attr::attributes(a))
                .word(asked & locked_hint::READ_ONLY);
        });
    }
    match x.getattr(id).await {
        Ok(a) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&post_op_attr::attributes(a)).word(asked);
        }),
        Err(st) => c.failed_without_attributes(st),
    }
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::{nfsstat3, nfstime3, sattr3, set_mode3, set_mtime, set_size3};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn getattr_setattr_access() {
        let h = Harness::unlocked();
        let f = h.create_file(h.root(), "a.vmdk").await;
        let mut r = h.nfs(nfs3::GETATTR, Args::new().fh(&h.fh(f))).await;
        assert_eq!(r.status(), 0);
        let a = r.fattr();
        assert_eq!((a.fileid, a.size), (f, 0));

        let t = nfstime3 {
            seconds: 1_600_000_000,
            nseconds: 5,
        };
        let change = sattr3 {
            mode: set_mode3::mode(0o640),
            size: set_size3::size(10),
            mtime: set_mtime::SET_TO_CLIENT_TIME(t),
            ..sattr3::default()
        };
        let mut r = h
            .nfs(
                nfs3::SETATTR,
                Args::new().fh(&h.fh(f)).sattr(&change).u32(0),
            )
            .await;
        assert_eq!(r.status(), 0);
        let (before, after) = r.wcc();
        assert_eq!(before.unwrap().size, 0);
        let after = after.unwrap();
        assert_eq!((after.mode, after.size), (0o640, 10));
        assert_eq!(
            (after.mtime.seconds, after.mtime.nseconds),
            (1_600_000_000, 5)
        );

        // A ctime guard that does not match changes nothing.
        let stale = Args::new()
            .fh(&h.fh(f))
            .sattr(&sattr3 {
                mode: set_mode3::mode(0o600),
                ..sattr3::default()
            })
            .u32(1)
            .u32(1)
            .u32(2);
        let mut r = h.nfs(nfs3::SETATTR, stale).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOT_SYNC as u32);
        let (_, after) = r.wcc();
        assert_eq!(after.unwrap().mode, 0o640);

        // Too large a size is FBIG, with wcc data.
        let huge = sattr3 {
            size: set_size3::size(u64::MAX),
            ..sattr3::default()
        };
        let mut r = h
            .nfs(nfs3::SETATTR, Args::new().fh(&h.fh(f)).sattr(&huge).u32(0))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_FBIG as u32);
        assert!(r.wcc().0.is_some(), "a failed SETATTR carries its wcc data");
        // The limit is the store's capacity: one byte past it is FBIG, the limit itself is
        // a (sparse) file like any other.
        let max = h.app.info().max_file_size;
        let size = |n| sattr3 {
            size: set_size3::size(n),
            ..sattr3::default()
        };
        let mut r = h
            .nfs(
                nfs3::SETATTR,
                Args::new().fh(&h.fh(f)).sattr(&size(max + 1)).u32(0),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_FBIG as u32);
        let mut r = h
            .nfs(
                nfs3::SETATTR,
                Args::new().fh(&h.fh(f)).sattr(&size(max)).u32(0),
            )
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(r.wcc().1.unwrap().size, max);

        let mut r = h
            .nfs(nfs3::ACCESS, Args::new().fh(&h.fh(f)).u32(0x3f))
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(r.post_attr().unwrap().fileid, f);
        assert_eq!(r.u32(), 0x3f);

        // Malformed: a handle length beyond the bytes sent.
        let r = h.nfs(nfs3::GETATTR, Args::new().u32(64)).await;
        assert_eq!(r.accept_stat(), 4, "GARBAGE_ARGS");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_and_removed() {
        let h = Harness::locked();
        // Locked: the root is a read-only directory holding the hint (see locked_hint);
        // any other object is refused.
        let mut r = h.nfs(nfs3::GETATTR, Args::new().fh(&h.fh(h.root()))).await;
        assert_eq!(r.status(), 0);
        assert_eq!(r.fattr().mode, 0o555);
        let mut r = h
            .nfs(nfs3::ACCESS, Args::new().fh(&h.fh(h.root())).u32(0x3f))
            .await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        assert_eq!(r.u32(), 0x01 | 0x02 | 0x20, "read, lookup, execute only");
        let mut r = h.nfs(nfs3::GETATTR, Args::new().fh(&h.fh(2))).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        let mut r = h.nfs(nfs3::ACCESS, Args::new().fh(&h.fh(2)).u32(1)).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        assert!(r.post_attr().is_none());
        h.unlock();
        let f = h.create_file(h.root(), "gone").await;
        h.remove(h.root(), "gone").await;
        let mut r = h.nfs(nfs3::GETATTR, Args::new().fh(&h.fh(f))).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
        let mut r = h
            .nfs(
                nfs3::SETATTR,
                Args::new().fh(&h.fh(f)).sattr(&sattr3::default()).u32(0),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
    }
}
