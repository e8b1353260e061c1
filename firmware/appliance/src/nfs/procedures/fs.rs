//! FSSTAT, FSINFO and PATHCONF: what the file system is and holds.
//!
//! - FSSTAT reports the devices' real data capacity and free space, and entries left by the
//!   metadata journal's free space; once sealed nothing is available to write.
//! - FSINFO advertises 1 MiB reads and writes (the store's record size: clients that write
//!   whole records give the best throughput) and the store's largest file size. It never
//!   fails for a valid handle: while locked the limits are still true, the attributes are
//!   left out and the next GETATTR says ACCES.
//! - PATHCONF reports the store's real name limit.

use nfsserve::nfs::{self, fsinfo3, nfsstat3, nfstime3, post_op_attr};
use odt_store::trip::control_api::State;

use super::Call;
use crate::nfs::export::{Export, MAX_IO, Need};
use crate::nfs::status::Subject;

/// Journal bytes a new entry takes, roughly (its create op and a few attribute changes).
const JOURNAL_PER_ENTRY: u64 = 512;

/// FSSTAT.
pub async fn fsstat(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some(fh) = c.reader().handle() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let store = match x.store(Need::Read) {
        Ok(s) => s.clone(),
        Err(st) => return c.failed_without_attributes(st),
    };
    let sealed = x.app.state() == State::Sealed;
    let got = store.getattr(id).map(|a| (a, store.stats()));
    let (attr, st) = match got {
        Ok(v) => v,
        Err(e) => {
            let status = x.fail("FSSTAT", Subject::Object, e, || x.path_of(&store, id));
            return c.failed_without_attributes(status);
        }
    };
    let entries = st.files + st.dirs + st.symlinks;
    let free_entries = st.journal_len.saturating_sub(st.journal_used) / JOURNAL_PER_ENTRY;
    let avail = |n: u64| if sealed { 0 } else { n };
    c.status(nfsstat3::NFS3_OK, |r| {
        r.put(&post_op_attr::attributes(x.fattr(&attr)))
            .hyper(st.capacity_bytes)
            .hyper(st.free_bytes)
            .hyper(avail(st.free_bytes))
            .hyper(entries + free_entries)
            .hyper(free_entries)
            .hyper(avail(free_entries))
            .word(0);
    })
}

/// FSINFO.
pub async fn fsinfo(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some(fh) = c.reader().handle() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return c.failed_without_attributes(st),
    };
    let attr = match x.getattr(id).await {
        Ok(a) => post_op_attr::attributes(a),
        Err(nfsstat3::NFS3ERR_ACCES) => post_op_attr::Void,
        Err(st) => return c.failed_without_attributes(st),
    };
    let info = fsinfo3 {
        obj_attributes: attr,
        rtmax: MAX_IO,
        rtpref: MAX_IO,
        rtmult: 4096,
        wtmax: MAX_IO,
        wtpref: MAX_IO,
        wtmult: 4096,
        dtpref: 64 * 1024,
        maxfilesize: x.max_file_size(),
        time_delta: nfstime3 {
            seconds: 0,
            nseconds: 1,
        },
        properties: nfs::FSF_LINK | nfs::FSF_SYMLINK | nfs::FSF_HOMOGENEOUS | nfs::FSF_CANSETTIME,
    };
    c.status(nfsstat3::NFS3_OK, |r| {
        r.put(&info);
    })
}

/// PATHCONF.
pub async fn pathconf(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let Some(fh) = c.reader().handle() else {
        return c.garbage();
    };
    match x.attributes_of(&fh).await {
        Ok(a) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&post_op_attr::attributes(a))
                // linkmax, name_max
                .word(odt_store::engine::namespace::MAX_LINKS)
                .word(odt_store::engine::namespace::MAX_NAME as u32)
                // no_trunc, chown_restricted, case_insensitive, case_preserving
                .put(&true)
                .put(&true)
                .put(&false)
                .put(&true);
        }),
        Err(st) => c.failed_without_attributes(st),
    }
}

#[cfg(test)]
mod tests {
    use crate::nfs::export::MAX_IO;
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::{fsinfo3, nfsstat3};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsstat_is_real_and_nothing_is_available_once_sealed() {
        let h = Harness::locked();
        let root = Args::new().fh(&h.fh(h.root()));
        let mut r = h.nfs(nfs3::FSSTAT, root.clone()).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        h.unlock();
        let st = h.app.store().unwrap().stats();
        let read = |mut r: crate::testutil::ReplyReader| {
            assert_eq!(r.status(), 0);
            r.post_attr().unwrap();
            (0..6).map(|_| r.u64()).collect::<Vec<_>>()
        };
        let v = read(h.nfs(nfs3::FSSTAT, root.clone()).await);
        assert_eq!(v[0], st.capacity_bytes);
        assert!(v[0] < 64 << 20, "the device's capacity");
        assert_eq!((v[1], v[2]), (st.free_bytes, st.free_bytes));
        assert!(v[4] > 1000 && v[3] == v[4] + 1, "{v:?}");
        h.app.test_seal().unwrap();
        let v = read(h.nfs(nfs3::FSSTAT, root).await);
        assert_eq!((v[2], v[5]), (0, 0), "nothing available once sealed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsinfo_and_pathconf() {
        let h = Harness::locked();
        let root = Args::new().fh(&h.fh(h.root()));
        // FSINFO answers while locked, without attributes.
        let mut r = h.nfs(nfs3::FSINFO, root.clone()).await;
        assert_eq!(r.status(), 0);
        let info: fsinfo3 = r.decode();
        assert!(matches!(
            info.obj_attributes,
            nfsserve::nfs::post_op_attr::Void
        ));
        assert_eq!(
            (info.rtpref, info.wtpref, info.rtmax),
            (MAX_IO, MAX_IO, MAX_IO)
        );
        assert_eq!(info.maxfilesize, h.app.info().max_file_size);
        assert!(info.maxfilesize > 0 && info.maxfilesize < 1 << 40);
        let mut r = h.nfs(nfs3::PATHCONF, root.clone()).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        h.unlock();
        let mut r = h.nfs(nfs3::PATHCONF, root).await;
        assert_eq!(r.status(), 0);
        r.post_attr().unwrap();
        r.u32();
        assert_eq!(r.u32(), 255, "name_max");
    }
}
