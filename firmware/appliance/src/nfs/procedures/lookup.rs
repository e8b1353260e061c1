//! LOOKUP and READLINK.
//!
//! A name missing from a directory is NOENT (routine, not logged); a directory handle whose
//! directory is gone is STALE.

use nfsserve::nfs::nfsstat3;

use super::{Call, post};
use crate::nfs::export::{Export, Need};
use crate::nfs::status::Subject;

/// LOOKUP.
pub async fn lookup(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some((fh, name)) = c.reader().dirop() else {
        return c.garbage();
    };
    let dir = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let dir_attr = post(x.getattr(dir).await);
    match x.lookup(dir, &name).await {
        Ok(id) => {
            let obj_attr = post(x.getattr(id).await);
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
        Ok(s) => x.blocking(|| {
            s.readlink(id)
                .map_err(|e| x.fail("READLINK", Subject::Object, e, || x.path_of(s, id)))
        }),
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
