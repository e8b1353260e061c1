//! FSSTAT, answered by the appliance itself: `nfsserve` 0.11 reports a fixed 1 TiB free, so
//! `df` on a client would show nothing true. Here: the devices' data capacity and free
//! space, and entries left by the metadata journal's free space. Once sealed nothing is
//! available to write.

use nfsserve::nfs::{self, nfsstat3, post_op_attr};
use odt_store::trip::control_api::State;

use crate::nfs::{Export, Need};
use crate::nfsstat::Subject;
use crate::rpc::{AcceptStat, CallHeader, Reply, Xdr};

/// Journal bytes a new entry takes, roughly (its create op and a few attribute changes).
const JOURNAL_PER_ENTRY: u64 = 512;

fn failed(xid: u32, status: nfsstat3) -> Vec<u8> {
    let mut r = Reply::accepted(xid, AcceptStat::Success);
    r.put(&status).put(&post_op_attr::Void);
    r.finish()
}

impl Export {
    /// Answers an NFSv3 FSSTAT call (the message starts at `base` of `record`).
    pub async fn rpc_fsstat(&self, call: &CallHeader, record: &[u8], base: usize) -> Vec<u8> {
        let xid = call.xid;
        let mut x = Xdr::new(&record[base + call.args..]);
        let Some(fh) = x.opaque(nfs::NFS3_FHSIZE as usize).map(<[u8]>::to_vec) else {
            return Reply::accepted(xid, AcceptStat::GarbageArgs).finish();
        };
        let id = match self.handles.decode(&nfs::nfs_fh3 { data: fh }) {
            Ok(id) => id,
            Err(e) => return failed(xid, e.status()),
        };
        let store = match self.store(Need::Read) {
            Ok(s) => s.clone(),
            Err(st) => return failed(xid, st),
        };
        let sealed = self.app.state() == State::Sealed;
        let got = self.blocking(|| Ok::<_, odt_store::Error>((store.getattr(id)?, store.stats())));
        let (attr, st) = match got {
            Ok(x) => x,
            Err(e) => {
                return failed(
                    xid,
                    self.fail("FSSTAT", Subject::Object, e, || self.path_of(&store, id)),
                );
            }
        };
        let entries = st.files + st.dirs + st.symlinks;
        let free_entries = st.journal_len.saturating_sub(st.journal_used) / JOURNAL_PER_ENTRY;
        let avail = |n: u64| if sealed { 0 } else { n };
        let mut r = Reply::accepted(xid, AcceptStat::Success);
        r.put(&nfsstat3::NFS3_OK)
            .put(&post_op_attr::attributes(self.fattr(&attr)))
            .put(&st.capacity_bytes)
            .put(&st.free_bytes)
            .put(&avail(st.free_bytes))
            .put(&(entries + free_entries))
            .put(&free_entries)
            .put(&avail(free_entries))
            .word(0);
        r.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER;
    use crate::testutil::{Fixture, call_record};
    use nfsserve::vfs::NFSFileSystem;

    fn call(x: &Export) -> (CallHeader, Vec<u8>) {
        let fh = x.id_to_fh(1).data;
        let mut args = (fh.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(&fh);
        call_record(5, crate::rpc::NFS_PROGRAM, 18, &args)
    }

    /// (status, [tbytes, fbytes, abytes, tfiles, ffiles, afiles]).
    fn parse(r: &[u8]) -> (u32, Vec<u64>) {
        let mut x = Xdr::new(&r[HEADER + 24..]);
        let status = x.u32().unwrap();
        if status != 0 {
            return (status, Vec::new());
        }
        assert_eq!(x.u32(), Some(1));
        for _ in 0..84 / 4 {
            x.u32().unwrap();
        }
        (status, (0..6).map(|_| x.u64().unwrap()).collect())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_capacity_and_nothing_available_once_sealed() {
        let fx = Fixture::new(128 << 20);
        let app = fx.appliance(true);
        let x = Export::new(app.clone());
        let (h, rec) = call(&x);
        assert_eq!(
            parse(&x.rpc_fsstat(&h, &rec, HEADER).await).0,
            nfsstat3::NFS3ERR_ACCES as u32
        );
        app.unlock(&fx.code).unwrap();
        let st = app.store().unwrap().stats();
        let (status, v) = parse(&x.rpc_fsstat(&h, &rec, HEADER).await);
        assert_eq!(status, 0);
        assert_eq!(v[0], st.capacity_bytes);
        assert!(v[0] < 128 << 20, "not nfsserve's fixed 1 TiB");
        assert_eq!((v[1], v[2]), (st.free_bytes, st.free_bytes));
        assert!(v[4] > 1000 && v[3] == v[4] + 1, "{v:?}");
        app.test_seal().unwrap();
        let (_, v) = parse(&x.rpc_fsstat(&h, &rec, HEADER).await);
        assert_eq!((v[2], v[5]), (0, 0), "nothing available once sealed");
        assert_eq!(v[1], st.free_bytes);
    }
}
