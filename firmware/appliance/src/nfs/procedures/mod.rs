//! The NFSv3 and MOUNT v3 procedures, one file per family. Each procedure decodes its
//! arguments with the bounded reader ([`super::xdr`]), runs against the [`Export`] and
//! encodes its reply with `nfsserve`'s XDR types; malformed arguments get GARBAGE_ARGS.
//! Replies follow RFC 1813 to the letter, including the attributes and wcc data a failed
//! call must still carry.

pub mod attr;
pub mod create;
pub mod fs;
pub mod lookup;
pub mod mount;
pub mod read;
pub mod readdir;
pub mod remove;
pub mod write;

use nfsserve::nfs::{fattr3, nfsstat3, post_op_attr, pre_op_attr, wcc_attr, wcc_data};

use super::rpc::{AcceptStat, Caller, Reply};
use super::xdr::Xdr;

/// One decoded call as a procedure sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Transaction id.
    pub xid: u32,
    /// The credential.
    pub caller: Caller,
    /// The procedure's arguments.
    pub args: &'a [u8],
}

impl<'a> Call<'a> {
    /// A reader over the arguments.
    pub fn reader(&self) -> Xdr<'a> {
        Xdr::new(self.args)
    }

    /// Success with no results (NULL, UMNT, UMNTALL).
    pub fn void(&self) -> Vec<u8> {
        Reply::accepted(self.xid, AcceptStat::Success).finish()
    }

    /// GARBAGE_ARGS.
    pub fn garbage(&self) -> Vec<u8> {
        Reply::accepted(self.xid, AcceptStat::GarbageArgs).finish()
    }

    /// A reply holding `st` and whatever `then` appends.
    pub fn status(&self, st: nfsstat3, then: impl FnOnce(&mut Reply)) -> Vec<u8> {
        let mut r = Reply::accepted(self.xid, AcceptStat::Success);
        r.put(&st);
        then(&mut r);
        r.finish()
    }

    /// A failed call whose only result is empty post-op attributes.
    pub fn failed_without_attributes(&self, st: nfsstat3) -> Vec<u8> {
        self.status(st, |r| {
            r.put(&post_op_attr::Void);
        })
    }

    /// A failed change: the status and the object's wcc data.
    pub fn wcc_failed(&self, st: nfsstat3, wcc: wcc_data) -> Vec<u8> {
        self.status(st, |r| {
            r.put(&wcc);
        })
    }
}

/// Pre-op attributes for wcc data.
pub fn wcc_before(a: &fattr3) -> pre_op_attr {
    pre_op_attr::attributes(wcc_attr {
        size: a.size,
        mtime: a.mtime,
        ctime: a.ctime,
    })
}

/// Post-op attributes, if there are any.
pub fn post(r: Result<fattr3, nfsstat3>) -> post_op_attr {
    match r {
        Ok(a) => post_op_attr::attributes(a),
        Err(_) => post_op_attr::Void,
    }
}

/// wcc data from the attributes before and (if known) after a change.
pub fn wcc(before: &fattr3, after: Result<fattr3, nfsstat3>) -> wcc_data {
    wcc_data {
        before: wcc_before(before),
        after: post(after),
    }
}

/// The object behind `fh` and its attributes before a change, or the failure reply (the
/// status with empty wcc data).
pub async fn before_change(
    x: &super::export::Export,
    c: &Call<'_>,
    fh: &nfsserve::nfs::nfs_fh3,
) -> Result<(nfsserve::nfs::fileid3, fattr3), Vec<u8>> {
    let failed = |st| c.wcc_failed(st, wcc_data::default());
    let id = x.id_of(fh).map_err(failed)?;
    let attr = x.getattr(id).await.map_err(failed)?;
    Ok((id, attr))
}
