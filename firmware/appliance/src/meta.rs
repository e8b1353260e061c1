//! The NFSv3 procedures every file a client copies goes through, answered by the appliance
//! itself: NULL, GETATTR, SETATTR, LOOKUP, ACCESS, CREATE, FSINFO and PATHCONF.
//!
//! Forwarded to `nfsserve` each cost a loopback round trip through the gate, and a client
//! needed a backend connection at all; for small files (`nfs-cp` sends about ten of these
//! per file) that overhead was most of the gap to other servers. Only the XDR is here: the
//! operations are the export's [`NFSFileSystem`] methods ([`crate::nfs`]), so state checks
//! (locked → ACCES, sealed → ROFS), error mapping and logging are those of `nfsserve`'s
//! path. Replies have the shapes `nfsserve` 0.11 gave, except where it was wrong:
//! - SETATTR whose ctime guard does not match answers NOT_SYNC (with the object's wcc
//!   data) and changes nothing; `nfsserve` wrote NOT_SYNC and then applied the change and
//!   appended a second reply.
//! - CREATE EXCLUSIVE keeps the client's verifier in the new file's mtime and atime
//!   seconds (as Linux's server does), so a retransmitted CREATE finds its own file and
//!   succeeds instead of answering EXIST; `nfsserve` ignored the verifier. The client sets
//!   the real times with the SETATTR that follows.
//! - CREATE GUARDED creates only if the name is free, in one store call; `nfsserve` looked
//!   the name up first and then created UNCHECKED, which reused a file made in between.
//! - ACCESS and PATHCONF answer the object's error (ACCES while locked, STALE once removed)
//!   instead of success without attributes; PATHCONF reports the store's real name limit.
//! - A failed SETATTR carries its wcc data, as RFC 1813 requires.

use nfsserve::nfs::{
    self, fattr3, fileid3, filename3, nfs_fh3, nfsstat3, nfstime3, post_op_attr, post_op_fh3,
    pre_op_attr, sattr3, set_atime, set_mtime, wcc_attr, wcc_data,
};
use nfsserve::vfs::NFSFileSystem;

use crate::nfs::Export;
use crate::rpc::{
    AcceptStat, CallHeader, PROC_ACCESS, PROC_CREATE, PROC_FSINFO, PROC_GETATTR, PROC_LOOKUP,
    PROC_NULL, PROC_PATHCONF, PROC_SETATTR, Reply, Xdr,
};

/// Longest name accepted on the wire; the store answers NAMETOOLONG beyond its own limit
/// (the record itself is bounded by the gate).
const WIRE_NAME_MAX: usize = 64 * 1024;

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

fn garbage(xid: u32) -> Vec<u8> {
    Reply::accepted(xid, AcceptStat::GarbageArgs).finish()
}

/// A failed change's reply: the status and the object's wcc data.
fn wcc_failed(xid: u32, st: nfsstat3, wcc: wcc_data) -> Vec<u8> {
    status(xid, st, |r| {
        r.put(&wcc);
    })
}

/// A failed call's reply whose only body is empty post-op attributes.
fn failed_without_attributes(xid: u32, st: nfsstat3) -> Vec<u8> {
    status(xid, st, |r| {
        r.put(&post_op_attr::Void);
    })
}

/// A reply holding a status and whatever `then` appends.
fn status(xid: u32, st: nfsstat3, then: impl FnOnce(&mut Reply)) -> Vec<u8> {
    let mut r = Reply::accepted(xid, AcceptStat::Success);
    r.put(&st);
    then(&mut r);
    r.finish()
}

fn handle(x: &mut Xdr) -> Option<nfs_fh3> {
    Some(nfs_fh3 {
        data: x.opaque(nfs::NFS3_FHSIZE as usize)?.to_vec(),
    })
}

fn name(x: &mut Xdr) -> Option<filename3> {
    Some(x.opaque(WIRE_NAME_MAX)?.into())
}

fn wcc_before(a: &fattr3) -> pre_op_attr {
    pre_op_attr::attributes(wcc_attr {
        size: a.size,
        mtime: a.mtime,
        ctime: a.ctime,
    })
}

fn post(r: Result<fattr3, nfsstat3>) -> post_op_attr {
    match r {
        Ok(a) => post_op_attr::attributes(a),
        Err(_) => post_op_attr::Void,
    }
}

fn same_time(a: nfstime3, b: nfstime3) -> bool {
    (a.seconds, a.nseconds) == (b.seconds, b.nseconds)
}

/// The times an EXCLUSIVE create stores its verifier in: (mtime, atime).
fn verifier_times(v: &[u8; 8]) -> (nfstime3, nfstime3) {
    let word = |b: &[u8]| nfstime3 {
        seconds: u32::from_be_bytes(b.try_into().expect("4 bytes")),
        nseconds: 0,
    };
    (word(&v[..4]), word(&v[4..]))
}

impl Export {
    /// Answers an NFSv3 call of one of this module's procedures (the message starts at
    /// `base` of `record`).
    pub async fn rpc_meta(&self, call: &CallHeader, record: &[u8], base: usize) -> Vec<u8> {
        let args = &record[base + call.args..];
        let xid = call.xid;
        match call.procedure {
            PROC_NULL => Reply::accepted(xid, AcceptStat::Success).finish(),
            PROC_GETATTR => self.rpc_getattr(xid, args).await,
            PROC_SETATTR => self.rpc_setattr(xid, args).await,
            PROC_LOOKUP => self.rpc_lookup(xid, args).await,
            PROC_ACCESS => self.rpc_access(xid, args).await,
            PROC_CREATE => self.rpc_create(xid, args).await,
            PROC_FSINFO => self.rpc_fsinfo(xid, args).await,
            PROC_PATHCONF => self.rpc_pathconf(xid, args).await,
            p => unreachable!("NFS procedure {p} is not answered here"),
        }
    }

    async fn rpc_getattr(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let Some(fh) = handle(&mut Xdr::new(args)) else {
            return garbage(xid);
        };
        let got = self.attributes_of(&fh).await;
        match got {
            Ok(a) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&a);
            }),
            Err(st) => status(xid, st, |_| {}),
        }
    }

    /// The attributes of the object behind `fh`.
    async fn attributes_of(&self, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
        self.getattr(self.fh_to_id(fh)?).await
    }

    /// The object behind `fh` and its attributes before a change, or the failure reply
    /// (the status with empty wcc data).
    async fn before_change(&self, xid: u32, fh: &nfs_fh3) -> Result<(fileid3, fattr3), Vec<u8>> {
        let id = self
            .fh_to_id(fh)
            .map_err(|st| wcc_failed(xid, st, wcc_data::default()))?;
        let attr = self
            .getattr(id)
            .await
            .map_err(|st| wcc_failed(xid, st, wcc_data::default()))?;
        Ok((id, attr))
    }

    async fn rpc_setattr(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let mut x = Xdr::new(args);
        let parsed = (|| {
            let fh = handle(&mut x)?;
            let change: sattr3 = x.decode()?;
            let guard = match x.u32()? {
                0 => None,
                1 => Some(x.decode::<nfstime3>()?),
                _ => return None,
            };
            Some((fh, change, guard))
        })();
        let Some((fh, change, guard)) = parsed else {
            return garbage(xid);
        };
        let fail = |st, wcc: wcc_data| wcc_failed(xid, st, wcc);
        let (id, before) = match self.before_change(xid, &fh).await {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        if let Some(ctime) = guard
            && !same_time(ctime, before.ctime)
        {
            // The client's view is out of date: change nothing (RFC 1813, SETATTR).
            let wcc = wcc_data {
                before: wcc_before(&before),
                after: post_op_attr::attributes(before),
            };
            return fail(nfsstat3::NFS3ERR_NOT_SYNC, wcc);
        }
        match self.setattr(id, change).await {
            Ok(after) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&wcc_data {
                    before: wcc_before(&before),
                    after: post_op_attr::attributes(after),
                });
            }),
            Err(st) => fail(
                st,
                wcc_data {
                    before: wcc_before(&before),
                    after: post_op_attr::Void,
                },
            ),
        }
    }

    async fn rpc_lookup(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let mut x = Xdr::new(args);
        let Some((fh, what)) = (|| Some((handle(&mut x)?, name(&mut x)?)))() else {
            return garbage(xid);
        };
        let dir = match self.fh_to_id(&fh) {
            Ok(id) => id,
            Err(st) => return failed_without_attributes(xid, st),
        };
        let dir_attr = post(self.getattr(dir).await);
        match self.lookup(dir, &what).await {
            Ok(id) => {
                let obj_attr = post(self.getattr(id).await);
                status(xid, nfsstat3::NFS3_OK, |r| {
                    r.put(&self.id_to_fh(id)).put(&obj_attr).put(&dir_attr);
                })
            }
            Err(st) => status(xid, st, |r| {
                r.put(&dir_attr);
            }),
        }
    }

    async fn rpc_access(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let mut x = Xdr::new(args);
        let Some((fh, access)) = (|| Some((handle(&mut x)?, x.u32()?)))() else {
            return garbage(xid);
        };
        let got = self.attributes_of(&fh).await;
        match got {
            // Everything asked is granted, also once sealed: a change then fails with ROFS,
            // which tells the user why (see `capabilities` in nfs.rs).
            Ok(a) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&post_op_attr::attributes(a)).word(access);
            }),
            Err(st) => failed_without_attributes(xid, st),
        }
    }

    async fn rpc_create(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let mut x = Xdr::new(args);
        let parsed = (|| {
            let fh = handle(&mut x)?;
            let file = name(&mut x)?;
            let how = match x.u32()? {
                UNCHECKED => How::Unchecked(x.decode()?),
                GUARDED => How::Guarded(x.decode()?),
                EXCLUSIVE => How::Exclusive(x.fixed(8)?.try_into().expect("8 bytes")),
                _ => return None,
            };
            Some((fh, file, how))
        })();
        let Some((fh, file, how)) = parsed else {
            return garbage(xid);
        };
        let fail = |st, wcc: wcc_data| wcc_failed(xid, st, wcc);
        let (dir, before) = match self.before_change(xid, &fh).await {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let made = match how {
            How::Unchecked(attr) => self.create(dir, &file, attr).await,
            How::Guarded(attr) => self.create_guarded(dir, &file, attr).await,
            How::Exclusive(verifier) => self.create_verified(dir, &file, &verifier).await,
        };
        let wcc = wcc_data {
            before: wcc_before(&before),
            after: post(self.getattr(dir).await),
        };
        match made {
            Ok((id, attr)) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&post_op_fh3::handle(self.id_to_fh(id)))
                    .put(&post_op_attr::attributes(attr))
                    .put(&wcc);
            }),
            Err(st) => fail(st, wcc),
        }
    }

    /// CREATE GUARDED: the name must be free when the file is made (one store call), then
    /// the requested attributes are applied.
    async fn create_guarded(
        &self,
        dir: fileid3,
        file: &filename3,
        attr: sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let id = self.create_exclusive(dir, file).await?;
        let a = self.setattr(id, attr).await?;
        Ok((id, a))
    }

    /// CREATE EXCLUSIVE: makes the file with `verifier` in its times, or finds the file an
    /// earlier transmission of the same CREATE made.
    async fn create_verified(
        &self,
        dir: fileid3,
        file: &filename3,
        verifier: &[u8; 8],
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let (mtime, atime) = verifier_times(verifier);
        match self.create_exclusive(dir, file).await {
            Ok(id) => {
                let times = sattr3 {
                    atime: set_atime::SET_TO_CLIENT_TIME(atime),
                    mtime: set_mtime::SET_TO_CLIENT_TIME(mtime),
                    ..sattr3::default()
                };
                let a = self.setattr(id, times).await?;
                Ok((id, a))
            }
            Err(nfsstat3::NFS3ERR_EXIST) => {
                let id = self.lookup(dir, file).await?;
                let a = self.getattr(id).await?;
                let ours = matches!(a.ftype, nfs::ftype3::NF3REG)
                    && same_time(a.mtime, mtime)
                    && same_time(a.atime, atime);
                if ours {
                    Ok((id, a))
                } else {
                    Err(nfsstat3::NFS3ERR_EXIST)
                }
            }
            Err(st) => Err(st),
        }
    }

    async fn rpc_fsinfo(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let Some(fh) = handle(&mut Xdr::new(args)) else {
            return garbage(xid);
        };
        let got = match self.fh_to_id(&fh) {
            Ok(id) => self.fsinfo(id).await,
            Err(st) => Err(st),
        };
        match got {
            Ok(info) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&info);
            }),
            Err(st) => failed_without_attributes(xid, st),
        }
    }

    async fn rpc_pathconf(&self, xid: u32, args: &[u8]) -> Vec<u8> {
        let Some(fh) = handle(&mut Xdr::new(args)) else {
            return garbage(xid);
        };
        let got = self.attributes_of(&fh).await;
        match got {
            Ok(a) => status(xid, nfsstat3::NFS3_OK, |r| {
                r.put(&post_op_attr::attributes(a))
                    // linkmax: the store has no hard links; name_max: its limit.
                    .word(1)
                    .word(odt_store::engine::MAX_NAME as u32)
                    // no_trunc, chown_restricted, case_insensitive, case_preserving
                    .put(&true)
                    .put(&true)
                    .put(&false)
                    .put(&true);
            }),
            Err(st) => failed_without_attributes(xid, st),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER;
    use crate::nfs::MAX_IO;
    use crate::testutil::{Fixture, call_record};
    use nfsserve::nfs::set_mode3;
    use nfsserve::xdr::XDR;

    /// A call record of NFSv3 `procedure` with `args`.
    fn call(procedure: u32, args: &[u8]) -> (CallHeader, Vec<u8>) {
        call_record(9, crate::rpc::NFS_PROGRAM, procedure, args)
    }

    /// Appends one XDR item.
    type Item<'a> = &'a dyn Fn(&mut Vec<u8>);
    /// wcc_data as read back: (before, after).
    type Wcc = (Option<wcc_attr>, Option<fattr3>);

    /// XDR of `items` in turn.
    fn args(items: &[Item]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in items {
            f(&mut v);
        }
        v
    }

    fn fh(x: &Export, id: u64) -> impl Fn(&mut Vec<u8>) {
        let h = x.id_to_fh(id);
        move |v| h.serialize(v).unwrap()
    }

    fn raw_fh(data: Vec<u8>) -> impl Fn(&mut Vec<u8>) {
        move |v| nfs_fh3 { data: data.clone() }.serialize(v).unwrap()
    }

    fn text(s: &str) -> impl Fn(&mut Vec<u8>) {
        let s = s.as_bytes().to_vec();
        move |v| s.serialize(v).unwrap()
    }

    fn word(w: u32) -> impl Fn(&mut Vec<u8>) {
        move |v| v.extend_from_slice(&w.to_be_bytes())
    }

    fn sattr(a: sattr3) -> impl Fn(&mut Vec<u8>) {
        move |v| a.serialize(v).unwrap()
    }

    async fn ask(x: &Export, procedure: u32, a: Vec<u8>) -> Vec<u8> {
        let (h, rec) = call(procedure, &a);
        let r = x.rpc_meta(&h, &rec, HEADER).await;
        assert_eq!(
            u32::from_be_bytes(r[..4].try_into().unwrap()) & !crate::framing::LAST_FRAGMENT,
            (r.len() - HEADER) as u32,
            "record mark"
        );
        assert_eq!(&r[HEADER..HEADER + 4], &9u32.to_be_bytes(), "xid");
        r
    }

    /// An owned reader of a reply's results (replies are temporaries in the tests).
    struct R {
        buf: Vec<u8>,
        pos: usize,
    }

    impl R {
        fn with<T>(&mut self, f: impl FnOnce(&mut Xdr) -> Option<T>) -> Option<T> {
            let mut x = Xdr::new(&self.buf[self.pos..]);
            let v = f(&mut x);
            self.pos += x.pos();
            v
        }
        fn u32(&mut self) -> Option<u32> {
            self.with(|x| x.u32())
        }
        fn u64(&mut self) -> Option<u64> {
            self.with(|x| x.u64())
        }
        fn opaque(&mut self) -> Option<Vec<u8>> {
            self.with(|x| x.opaque(1024).map(<[u8]>::to_vec))
        }
        fn decode<T: XDR + Default>(&mut self) -> Option<T> {
            self.with(|x| x.decode())
        }
    }

    /// The accept_stat and a reader at the results.
    fn results(r: &[u8]) -> (u32, R) {
        let mut x = R {
            buf: r[HEADER + 20..].to_vec(),
            pos: 0,
        };
        (x.u32().unwrap(), x)
    }

    /// The status and a reader after it (the call must have been accepted).
    fn reply(r: &[u8]) -> (u32, R) {
        let (stat, mut x) = results(r);
        assert_eq!(stat, 0, "accepted");
        (x.u32().unwrap(), x)
    }

    fn post_attr(x: &mut R) -> Option<fattr3> {
        match x.u32().unwrap() {
            0 => None,
            1 => Some(x.decode().unwrap()),
            b => panic!("bad post_op_attr discriminant {b}"),
        }
    }

    /// wcc_data: (before (size, mtime, ctime), after).
    fn wcc(x: &mut R) -> Wcc {
        let before = match x.u32().unwrap() {
            0 => None,
            _ => Some(x.decode().unwrap()),
        };
        (before, post_attr(x))
    }

    fn st(s: nfsstat3) -> u32 {
        s as u32
    }

    fn name3(s: &str) -> filename3 {
        s.as_bytes().into()
    }

    /// The handle, attributes and directory wcc of an OK CREATE reply, or the status.
    fn created(r: &[u8]) -> Result<(nfs_fh3, fattr3, Wcc), u32> {
        let (status, mut x) = reply(r);
        if status != 0 {
            return Err(status);
        }
        assert_eq!(x.u32(), Some(1), "a handle follows");
        let h = nfs_fh3 {
            data: x.opaque().unwrap(),
        };
        let a = post_attr(&mut x).expect("attributes follow");
        Ok((h, a, wcc(&mut x)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_of_metadata() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let (f, fa) = x
            .create(1, &name3("a.vmdk"), sattr3::default())
            .await
            .unwrap();

        let r = ask(&x, PROC_NULL, Vec::new()).await;
        assert_eq!(results(&r).0, 0);
        assert_eq!(r.len(), HEADER + 24, "NULL has no results");

        let (status, mut y) = reply(&ask(&x, PROC_GETATTR, args(&[&fh(&x, f)])).await);
        assert_eq!(status, 0);
        let a: fattr3 = y.decode().unwrap();
        assert_eq!((a.fileid, a.size, a.mode), (f, 0, fa.mode));

        let (status, mut y) =
            reply(&ask(&x, PROC_LOOKUP, args(&[&fh(&x, 1), &text("a.vmdk")])).await);
        assert_eq!(status, 0);
        let h = nfs_fh3 {
            data: y.opaque().unwrap(),
        };
        assert_eq!(x.fh_to_id(&h).unwrap(), f);
        assert_eq!(post_attr(&mut y).unwrap().fileid, f);
        assert_eq!(post_attr(&mut y).unwrap().fileid, 1, "directory attributes");
        let (status, mut y) =
            reply(&ask(&x, PROC_LOOKUP, args(&[&fh(&x, 1), &text("nope")])).await);
        assert_eq!(status, st(nfsstat3::NFS3ERR_NOENT));
        assert_eq!(post_attr(&mut y).unwrap().fileid, 1);

        let (status, mut y) = reply(&ask(&x, PROC_ACCESS, args(&[&fh(&x, f), &word(0x3f)])).await);
        assert_eq!(status, 0);
        assert_eq!(post_attr(&mut y).unwrap().fileid, f);
        assert_eq!(y.u32(), Some(0x3f), "what was asked is granted");

        let (status, mut y) = reply(&ask(&x, PROC_FSINFO, args(&[&fh(&x, 1)])).await);
        assert_eq!(status, 0);
        assert_eq!(post_attr(&mut y).unwrap().fileid, 1);
        let limits: Vec<u32> = (0..7).map(|_| y.u32().unwrap()).collect();
        assert_eq!(
            limits,
            [MAX_IO, MAX_IO, 4096, MAX_IO, MAX_IO, 4096, 64 * 1024]
        );
        assert_eq!(y.u64(), Some(i64::MAX as u64), "maxfilesize");

        let (status, mut y) = reply(&ask(&x, PROC_PATHCONF, args(&[&fh(&x, f)])).await);
        assert_eq!(status, 0);
        assert_eq!(post_attr(&mut y).unwrap().fileid, f);
        let rest: Vec<u32> = (0..6).map(|_| y.u32().unwrap()).collect();
        assert_eq!(rest, [1, 255, 1, 1, 0, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_handles_and_garbage() {
        let fx = Fixture::new(64 << 20);
        let other = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let y = Export::new(other.appliance(false));
        let (f, _) = x.create(1, &name3("f"), sattr3::default()).await.unwrap();
        x.remove(1, &name3("f")).await.unwrap();
        let badhandle = st(nfsstat3::NFS3ERR_BADHANDLE);
        let stale = st(nfsstat3::NFS3ERR_STALE);
        for procedure in [PROC_GETATTR, PROC_FSINFO, PROC_PATHCONF] {
            let r = ask(&x, procedure, args(&[&raw_fh(vec![7; 8])])).await;
            assert_eq!(reply(&r).0, badhandle, "procedure {procedure}");
            let r = ask(&x, procedure, args(&[&fh(&y, 1)])).await;
            assert_eq!(reply(&r).0, stale, "procedure {procedure}: another set");
        }
        let r = ask(&x, PROC_GETATTR, args(&[&fh(&x, f)])).await;
        assert_eq!(reply(&r).0, stale, "a removed file");
        let r = ask(&x, PROC_ACCESS, args(&[&fh(&x, f), &word(1)])).await;
        let (status, mut z) = reply(&r);
        assert_eq!(status, stale);
        assert!(post_attr(&mut z).is_none());
        let r = ask(&x, PROC_LOOKUP, args(&[&raw_fh(vec![1; 16]), &text("a")])).await;
        assert_eq!(reply(&r).0, badhandle);
        let r = ask(
            &x,
            PROC_SETATTR,
            args(&[&fh(&y, 1), &sattr(sattr3::default()), &word(0)]),
        )
        .await;
        let (status, mut z) = reply(&r);
        assert_eq!(status, stale);
        assert!(matches!(wcc(&mut z), (None, None)), "wcc data follows");
        let r = ask(
            &x,
            PROC_CREATE,
            args(&[
                &raw_fh(vec![0; 20]),
                &text("n"),
                &word(UNCHECKED),
                &sattr(sattr3::default()),
            ]),
        )
        .await;
        assert_eq!(created(&r).unwrap_err(), badhandle);

        // Arguments that cannot be decoded: GARBAGE_ARGS, no results.
        let garbage = AcceptStat::GarbageArgs as u32;
        for (procedure, a) in [
            (PROC_GETATTR, Vec::new()),
            (PROC_GETATTR, args(&[&raw_fh(vec![0; 65])])),
            (PROC_LOOKUP, args(&[&fh(&x, 1)])),
            (PROC_ACCESS, args(&[&fh(&x, 1)])),
            (PROC_SETATTR, args(&[&fh(&x, 1), &sattr(sattr3::default())])),
            (
                PROC_SETATTR,
                args(&[&fh(&x, 1), &sattr(sattr3::default()), &word(2)]),
            ),
            (PROC_CREATE, args(&[&fh(&x, 1), &text("n"), &word(3)])),
            (
                PROC_CREATE,
                args(&[&fh(&x, 1), &text("n"), &word(EXCLUSIVE), &word(1)]),
            ),
        ] {
            let r = ask(&x, procedure, a).await;
            assert_eq!(results(&r).0, garbage, "procedure {procedure}");
            assert_eq!(r.len(), HEADER + 24);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_answers_acces_and_sealed_answers_rofs() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let x = Export::new(app.clone());
        let acces = st(nfsstat3::NFS3ERR_ACCES);
        let create = |how: u32| {
            args(&[
                &fh(&x, 1),
                &text("new"),
                &word(how),
                &sattr(sattr3::default()),
            ])
        };
        let chmod = args(&[
            &fh(&x, 1),
            &sattr(sattr3 {
                mode: set_mode3::mode(0o700),
                ..sattr3::default()
            }),
            &word(0),
        ]);
        assert_eq!(
            reply(&ask(&x, PROC_GETATTR, args(&[&fh(&x, 1)])).await).0,
            acces
        );
        let r = ask(&x, PROC_LOOKUP, args(&[&fh(&x, 1), &text("a")])).await;
        assert_eq!(reply(&r).0, acces);
        let r = ask(&x, PROC_ACCESS, args(&[&fh(&x, 1), &word(1)])).await;
        assert_eq!(reply(&r).0, acces);
        assert_eq!(
            reply(&ask(&x, PROC_PATHCONF, args(&[&fh(&x, 1)])).await).0,
            acces
        );
        assert_eq!(
            created(&ask(&x, PROC_CREATE, create(UNCHECKED)).await).err(),
            Some(acces)
        );
        let (status, mut y) = reply(&ask(&x, PROC_SETATTR, chmod.clone()).await);
        assert_eq!(status, acces);
        assert!(matches!(wcc(&mut y), (None, None)));
        // FSINFO still answers (clients mount before unlock), without attributes.
        let (status, mut y) = reply(&ask(&x, PROC_FSINFO, args(&[&fh(&x, 1)])).await);
        assert_eq!(status, 0);
        assert!(post_attr(&mut y).is_none());

        app.unlock(&fx.code).unwrap();
        let (f, _) = x.create(1, &name3("f"), sattr3::default()).await.unwrap();
        app.test_seal().unwrap();
        let rofs = st(nfsstat3::NFS3ERR_ROFS);
        for how in [UNCHECKED, GUARDED] {
            let (status, mut y) = reply(&ask(&x, PROC_CREATE, create(how)).await);
            assert_eq!(status, rofs, "createmode {how}");
            let (before, after) = wcc(&mut y);
            assert!(before.is_some() && after.is_some(), "directory wcc data");
        }
        let exclusive = args(&[&fh(&x, 1), &text("new"), &word(EXCLUSIVE), &raw_fh(vec![])]);
        let exclusive = [&exclusive[..exclusive.len() - 4], &[1u8; 8][..]].concat();
        assert_eq!(
            created(&ask(&x, PROC_CREATE, exclusive).await).err(),
            Some(rofs)
        );
        let (status, mut y) = reply(&ask(&x, PROC_SETATTR, chmod).await);
        assert_eq!(status, rofs);
        assert!(wcc(&mut y).0.is_some(), "the object's attributes before");
        assert_eq!(x.getattr(1).await.unwrap().mode, 0o755, "nothing changed");
        let (status, mut y) = reply(&ask(&x, PROC_GETATTR, args(&[&fh(&x, f)])).await);
        assert_eq!(status, 0, "reading still works");
        assert_eq!(y.decode::<fattr3>().unwrap().fileid, f);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_modes() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let mode = |m| sattr3 {
            mode: set_mode3::mode(m),
            ..sattr3::default()
        };
        let create = |name: &str, how: u32, a: sattr3| {
            args(&[&fh(&x, 1), &text(name), &word(how), &sattr(a)])
        };

        let (h, a, (before, after)) =
            created(&ask(&x, PROC_CREATE, create("u", UNCHECKED, mode(0o600))).await).unwrap();
        let u = x.fh_to_id(&h).unwrap();
        assert_eq!((a.fileid, a.mode), (u, 0o600));
        assert!(before.is_some());
        assert_eq!(after.unwrap().fileid, 1, "directory attributes after");
        x.write(u, 0, b"data").await.unwrap();
        // UNCHECKED on an existing file: the same file, attributes applied.
        let truncate = sattr3 {
            size: nfs::set_size3::size(0),
            ..sattr3::default()
        };
        let (h, a, _) =
            created(&ask(&x, PROC_CREATE, create("u", UNCHECKED, truncate)).await).unwrap();
        assert_eq!((x.fh_to_id(&h).unwrap(), a.size), (u, 0));

        // GUARDED: only a free name, then the attributes.
        let (status, mut y) = reply(&ask(&x, PROC_CREATE, create("u", GUARDED, mode(0o600))).await);
        assert_eq!(status, st(nfsstat3::NFS3ERR_EXIST));
        let (before, after) = wcc(&mut y);
        assert!(before.is_some() && after.is_some(), "directory wcc data");
        let (h, a, _) =
            created(&ask(&x, PROC_CREATE, create("g", GUARDED, mode(0o640))).await).unwrap();
        assert_eq!(a.mode, 0o640);
        assert_eq!(
            x.lookup(1, &name3("g")).await.unwrap(),
            x.fh_to_id(&h).unwrap()
        );

        // EXCLUSIVE: the verifier lands in the times; the same CREATE again finds its file.
        let exclusive = |name: &str, verifier: [u8; 8]| {
            let mut a = args(&[&fh(&x, 1), &text(name), &word(EXCLUSIVE)]);
            a.extend_from_slice(&verifier);
            a
        };
        let v = [0, 0, 1, 2, 0xf0, 0, 0, 9];
        let (h, a, _) = created(&ask(&x, PROC_CREATE, exclusive("e", v)).await).unwrap();
        let e = x.fh_to_id(&h).unwrap();
        assert_eq!((a.mtime.seconds, a.atime.seconds), (0x0102, 0xf000_0009));
        let (h, _, _) = created(&ask(&x, PROC_CREATE, exclusive("e", v)).await).unwrap();
        assert_eq!(x.fh_to_id(&h).unwrap(), e, "a retransmission succeeds");
        let other = [9; 8];
        assert_eq!(
            created(&ask(&x, PROC_CREATE, exclusive("e", other)).await).err(),
            Some(st(nfsstat3::NFS3ERR_EXIST)),
            "another client's verifier"
        );
        assert_eq!(
            created(&ask(&x, PROC_CREATE, exclusive("u", v)).await).err(),
            Some(st(nfsstat3::NFS3ERR_EXIST)),
            "a file made otherwise"
        );
        x.mkdir(1, &name3("d")).await.unwrap();
        assert_eq!(
            created(&ask(&x, PROC_CREATE, exclusive("d", v)).await).err(),
            Some(st(nfsstat3::NFS3ERR_EXIST))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn setattr_and_its_guard() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let (f, a) = x.create(1, &name3("f"), sattr3::default()).await.unwrap();
        let chmod = |m, guard: Option<nfstime3>| {
            let mut v = args(&[
                &fh(&x, f),
                &sattr(sattr3 {
                    mode: set_mode3::mode(m),
                    ..sattr3::default()
                }),
            ]);
            match guard {
                None => v.extend_from_slice(&0u32.to_be_bytes()),
                Some(t) => {
                    v.extend_from_slice(&1u32.to_be_bytes());
                    t.serialize(&mut v).unwrap();
                }
            }
            v
        };
        let (status, mut y) = reply(&ask(&x, PROC_SETATTR, chmod(0o600, None)).await);
        assert_eq!(status, 0);
        let (before, after) = wcc(&mut y);
        assert_eq!(before.unwrap().size, 0);
        assert_eq!(after.unwrap().mode, 0o600);

        let now = x.getattr(f).await.unwrap().ctime;
        let (status, mut y) = reply(&ask(&x, PROC_SETATTR, chmod(0o640, Some(now))).await);
        assert_eq!(status, 0, "a matching guard");
        assert_eq!(wcc(&mut y).1.unwrap().mode, 0o640);

        let old = a.ctime;
        let stale = nfstime3 {
            seconds: old.seconds.wrapping_sub(100),
            ..old
        };
        let (status, mut y) = reply(&ask(&x, PROC_SETATTR, chmod(0o777, Some(stale))).await);
        assert_eq!(status, st(nfsstat3::NFS3ERR_NOT_SYNC));
        let (before, after) = wcc(&mut y);
        assert!(before.is_some());
        assert_eq!(after.unwrap().mode, 0o640);
        assert!(y.u32().is_none(), "one reply, nothing after the wcc data");
        assert_eq!(x.getattr(f).await.unwrap().mode, 0o640, "nothing changed");
    }
}
