//! The procedures that take a name away: REMOVE, RMDIR and RENAME. Each is durable before
//! it answers and carries the wcc data of the directories it changed, also on failure.
//!
//! REMOVE of a directory answers ISDIR and RMDIR of anything else NOTDIR, as on Linux's
//! server; RENAME onto an existing name replaces it if the kinds agree (and a directory
//! only if it is empty).

use nfsserve::nfs::{fattr3, fileid3, nfs_fh3, nfsstat3, wcc_data};

use super::{Call, wcc};
use crate::nfs::export::{Export, Need};
use crate::nfs::status::Subject;

/// A directory named by handle, and its attributes before the change.
async fn directory(x: &Export, fh: &nfs_fh3) -> Result<(fileid3, fattr3), nfsstat3> {
    let id = x.id_of(fh)?;
    Ok((id, x.getattr(id).await?))
}

/// REMOVE (`dir == false`) or RMDIR (`dir == true`).
async fn remove_name(x: &Export, c: &Call<'_>, want_dir: bool) -> Vec<u8> {
    let Some((fh, name)) = c.reader().dirop() else {
        return c.garbage();
    };
    let (dir, before) = match directory(x, &fh).await {
        Ok(v) => v,
        Err(st) => return c.wcc_failed(st, wcc_data::default()),
    };
    let op = if want_dir { "RMDIR" } else { "REMOVE" };
    let removed = match x.store(Need::Write) {
        Ok(s) => x.blocking(|| {
            let r = if want_dir {
                s.rmdir(dir, &name)
            } else {
                s.remove(dir, &name)
            };
            r.map_err(|e| x.fail(op, Subject::Name, e, || x.path_in(s, dir, &name)))
        }),
        Err(st) => Err(st),
    };
    let dir_wcc = wcc(&before, x.getattr(dir).await);
    match removed {
        Ok(()) => {
            x.app.meter().removed();
            c.status(nfsstat3::NFS3_OK, |r| {
                r.put(&dir_wcc);
            })
        }
        Err(st) => c.wcc_failed(st, dir_wcc),
    }
}

/// REMOVE.
pub async fn remove(x: &Export, c: &Call<'_>) -> Vec<u8> {
    remove_name(x, c, false).await
}

/// RMDIR.
pub async fn rmdir(x: &Export, c: &Call<'_>) -> Vec<u8> {
    remove_name(x, c, true).await
}

/// RENAME.
pub async fn rename(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some(((from_fh, from_name), (to_fh, to_name))) =
        (|| Some((args.dirop()?, args.dirop()?)))()
    else {
        return c.garbage();
    };
    let failed = |st| {
        c.status(st, |r| {
            r.put(&wcc_data::default()).put(&wcc_data::default());
        })
    };
    let (from, from_before) = match directory(x, &from_fh).await {
        Ok(v) => v,
        Err(st) => return failed(st),
    };
    let (to, to_before) = match directory(x, &to_fh).await {
        Ok(v) => v,
        Err(st) => return failed(st),
    };
    let renamed = match x.store(Need::Write) {
        Ok(s) => x.blocking(|| {
            s.rename(from, &from_name, to, &to_name).map_err(|e| {
                x.fail("RENAME", Subject::Name, e, || {
                    format!(
                        "{} -> {}",
                        x.path_in(s, from, &from_name),
                        x.path_in(s, to, &to_name)
                    )
                })
            })
        }),
        Err(st) => Err(st),
    };
    let from_wcc = wcc(&from_before, x.getattr(from).await);
    let to_wcc = wcc(&to_before, x.getattr(to).await);
    c.status(renamed.err().unwrap_or(nfsstat3::NFS3_OK), |r| {
        r.put(&from_wcc).put(&to_wcc);
    })
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::nfsstat3;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remove_rmdir_rename() {
        let h = Harness::unlocked();
        let root = h.fh(h.root());
        let d = h.mkdir(h.root(), "vm").await;
        let f = h.create_file(h.root(), "disk.vmdk").await;
        h.create_file(d, "inside").await;

        let mut r = h
            .nfs(
                nfs3::RENAME,
                Args::new()
                    .fh(&root)
                    .text("disk.vmdk")
                    .fh(&h.fh(d))
                    .text("disk-1.vmdk"),
            )
            .await;
        assert_eq!(r.status(), 0);
        let (from_before, from_after) = r.wcc();
        let (to_before, to_after) = r.wcc();
        assert!(from_before.is_some() && from_after.is_some());
        assert!(to_before.is_some() && to_after.is_some());
        assert_eq!(h.export.lookup(d, b"disk-1.vmdk").await.unwrap(), f);
        let mut r = h
            .nfs(
                nfs3::RENAME,
                Args::new().fh(&root).text("gone").fh(&root).text("x"),
            )
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOENT as u32);

        // REMOVE of a directory and RMDIR of a file or of a full directory are refused.
        let mut r = h.nfs(nfs3::REMOVE, Args::new().fh(&root).text("vm")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ISDIR as u32);
        let mut r = h
            .nfs(nfs3::RMDIR, Args::new().fh(&h.fh(d)).text("inside"))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOTDIR as u32);
        let mut r = h.nfs(nfs3::RMDIR, Args::new().fh(&root).text("vm")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOTEMPTY as u32);
        assert!(r.wcc().1.is_some(), "wcc data on failure");

        h.remove(d, "inside").await;
        h.remove(d, "disk-1.vmdk").await;
        let mut r = h.nfs(nfs3::GETATTR, Args::new().fh(&h.fh(f))).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
        let mut r = h.nfs(nfs3::RMDIR, Args::new().fh(&root).text("vm")).await;
        assert_eq!(r.status(), 0);
        let mut r = h.nfs(nfs3::REMOVE, Args::new().fh(&root).text("vm")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_NOENT as u32);
    }
}
