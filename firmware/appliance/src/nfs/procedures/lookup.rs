//! LOOKUP and READLINK.
//!
//! A name missing from a directory is NOENT (routine, not logged); a directory handle whose
//! directory is gone is STALE.

use nfsserve::nfs::nfsstat3;

use super::{Call, post};
use crate::nfs::export::{Export, Need};
use crate::nfs::locked_hint;
use crate::nfs::status::Subject;
use odt_store::engine::ROOT;

/// LOOKUP.
pub async fn lookup(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some((fh, name)) = c.reader().dirop() else {
        return c.garbage();
    };
    let dir = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let dir_attr = post(x.shown_attr(dir).await);
    let found = if x.is_locked() && dir == ROOT && name.as_slice() == locked_hint::NAME {
        Ok(locked_hint::ID)
    } else {
        x.lookup(dir, &name).await
    };
    match found {
        Ok(id) => {
            let obj_attr = post(x.shown_attr(id).await);
            c.status(nfsstat3::NFS3_OK, |r| {
                r.put(&x.handle_of(id)).put(&obj_attr).put(&dir_attr);
            })
        }
        Err(st) => c.status(st, |r| {
            r.put(&dir_attr);
        }),
    }
}

/// READLINK.
pub async fn readlink(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some(fh) = c.reader().handle() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let target = match x.store(Need::Read) {
        Ok(s) => s
            .readlink(id)
            .map_err(|e| x.fail("READLINK", Subject::Object, e, || x.path_of(s, id))),
        Err(st) => Err(st),
    };
    let attr = post(x.getattr(id).await);
    match target {
        Ok(t) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&attr).opaque(&t);
        }),
        Err(st) => c.status(st, |r| {
            r.put(&attr);
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::nfsstat3;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups() {
        let h = Harness::unlocked();
        let d = h.mkdir(h.root(), "vm").await;
        let f = h.create_file(d, "a.vmdk").await;
        let mut r = h
            .nfs(nfs3::LOOKUP, Args::new().fh(&h.fh(d)).text("a.vmdk"))
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(h.id(&nfsserve::nfs::nfs_fh3 { data: r.opaque() }), f);
        assert_eq!(r.post_attr().unwrap().fileid, f);
        assert_eq!(r.post_attr().unwrap().fileid, d, "directory attributes");
        let mut r = h
            .nfs(nfs3::LOOKUP, Args::new().fh(&h.fh(d)).text(".."))
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(h.id(&nfsserve::nfs::nfs_fh3 { data: r.opaque() }), h.root());
        let mut r = h
            .nfs(nfs3::LOOKUP, Args::new().fh(&h.fh(d)).text("missing"))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOENT as u32);
        assert_eq!(r.post_attr().unwrap().fileid, d);
        // A lookup in a removed directory is a stale handle, not a missing name.
        let e = h.mkdir(h.root(), "empty").await;
        let mut r = h
            .nfs(nfs3::RMDIR, Args::new().fh(&h.fh(h.root())).text("empty"))
            .await;
        assert_eq!(r.status(), 0);
        let mut r = h
            .nfs(nfs3::LOOKUP, Args::new().fh(&h.fh(e)).text("x"))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
        // A handle that was never ours.
        let mut r = h
            .nfs(
                nfs3::LOOKUP,
                Args::new()
                    .fh(&nfsserve::nfs::nfs_fh3 { data: vec![9; 8] })
                    .text("x"),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_BADHANDLE as u32);
    }
}
