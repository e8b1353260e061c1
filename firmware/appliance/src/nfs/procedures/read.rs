//! READ: every record read is authenticated and its digest checked by the store; a damaged
//! record answers NFS3ERR_IO (and is logged with the file and range). The count is capped
//! at [`MAX_IO`] whatever the client asks; the file's acknowledged writes are in first.
//! While locked, only the hint file of [`locked_hint`] can be read.

use nfsserve::nfs::{nfsstat3, post_op_attr};

use super::{Call, post};
use crate::nfs::export::{Export, MAX_IO, Need};
use crate::nfs::locked_hint;
use crate::nfs::status::Subject;

/// READ.
pub async fn read(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some((fh, offset, count)) = (|| Some((args.handle()?, args.u64()?, args.u32()?)))() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    if let Some(a) = x.hint_attr(id).filter(|_| id == locked_hint::ID) {
        let text = locked_hint::text();
        let start = offset.min(text.len() as u64) as usize;
        let data = &text[start..(start + count.min(MAX_IO) as usize).min(text.len())];
        let eof = start + data.len() == text.len();
        return c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&post_op_attr::attributes(a))
                .word(data.len() as u32)
                .put(&eof)
                .opaque(data);
        });
    }
    let got = match x.store(Need::Read) {
        Ok(s) => {
            x.pending.settle(id).await;
            x.blocking(|| {
                s.read(id, offset, count.min(MAX_IO))
                    .map_err(|e| x.fail("READ", Subject::Object, e, || x.path_of(s, id)))
            })
        }
        Err(st) => Err(st),
    };
    let attr = post(match got {
        Err(st @ (nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_ACCES)) => Err(st),
        _ => x.getattr(id).await,
    });
    match got {
        Ok((data, eof)) => {
            x.app.meter().read(data.len() as u64);
            c.status(nfsstat3::NFS3_OK, |r| {
                r.reserve(data.len() + 128)
                    .put(&attr)
                    .word(data.len() as u32)
                    .put(&eof)
                    .opaque(&data);
            })
        }
        Err(st) => c.status(st, |r| {
            r.put(&attr);
        }),
    }
}
