//! What a client sees of a locked share: the root directory listing one read-only file,
//! [`NAME`], that says how to unlock. A client only gets "permission denied" from an NFS
//! status; a file it can list and read is a hint it can see.
//!
//! Safe while locked: the root and the hint are made up here (no store behind them, no
//! name or size of the data), everything else still answers ACCES, and nothing is
//! writable (SETATTR, WRITE and the namespace changes need the store and answer ACCES).
//! After the unlock the hint's handle is STALE (no store file has its id).

use nfsserve::nfs::{fattr3, fileid3, ftype3, nfstime3, specdata3};

use super::export::Export;
use odt_store::engine::ROOT;
use odt_store::trip::control_api::State;

/// Name of the hint file in the locked share's root.
pub const NAME: &[u8] = b"APPLIANCE-LOCKED.txt";
/// The hint's file id: never a store id (those count up from the root).
pub const ID: fileid3 = u64::MAX - 1;

/// ACCESS bits the hint and the locked root grant: read, lookup, execute (search).
pub const READ_ONLY: u32 = 0x01 | 0x02 | 0x20;

/// The hint's text.
pub fn text() -> &'static [u8] {
    b"This appliance is locked: its share shows nothing until it is unlocked.\n\
\n\
Unlock it with the unlock code your provider gave you, from any machine that reaches the\n\
appliance's control address:\n\
\n\
    odt unlock --appliance ADDRESS\n\
\n\
or on the appliance's web page (https://ADDRESS/ in a browser). Then list this folder\n\
again: your files appear here and this file goes away.\n"
}

impl Export {
    /// Whether the share is locked (no store to serve).
    pub fn is_locked(&self) -> bool {
        matches!(self.app.state(), State::Locked) || self.app.store().is_none()
    }

    /// While locked, the made-up attributes of the root (a read-only directory) or of the
    /// hint; `None` for anything else, or once unlocked.
    pub fn hint_attr(&self, id: fileid3) -> Option<fattr3> {
        if !self.is_locked() || (id != ROOT && id != ID) {
            return None;
        }
        let dir = id == ROOT;
        let size = if dir { 4096 } else { text().len() as u64 };
        Some(fattr3 {
            ftype: if dir { ftype3::NF3DIR } else { ftype3::NF3REG },
            mode: if dir { 0o555 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            size,
            used: size,
            rdev: specdata3::default(),
            fsid: self.app.info().set_id,
            fileid: id,
            atime: nfstime3::default(),
            mtime: nfstime3::default(),
            ctime: nfstime3::default(),
        })
    }

    /// Attributes as GETATTR, LOOKUP and ACCESS show them: the hint's while locked, the
    /// store's otherwise.
    pub async fn shown_attr(&self, id: fileid3) -> Result<fattr3, nfsserve::nfs::nfsstat3> {
        match self.hint_attr(id) {
            Some(a) => Ok(a),
            None => self.getattr(id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::nfsstat3;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_share_shows_only_the_hint() {
        let h = Harness::locked();
        let root = || Args::new().fh(&h.fh(h.root()));
        let readdir = || root().u64(0).u64(0).u32(4096);
        // The root lists the hint alone.
        let mut r = h.nfs(nfs3::READDIR, readdir()).await;
        assert_eq!(r.status(), 0);
        assert_eq!(r.post_attr().unwrap().mode, 0o555);
        r.u64();
        assert_eq!(r.u32(), 1);
        assert_eq!(r.u64(), super::ID);
        assert_eq!(r.opaque(), super::NAME);
        r.u64();
        assert_eq!((r.u32(), r.u32()), (0, 1), "one entry, end of directory");
        // It can be looked up and read, not written.
        let mut r = h
            .nfs(nfs3::LOOKUP, root().text("APPLIANCE-LOCKED.txt"))
            .await;
        assert_eq!(r.status(), 0);
        assert_eq!(h.id(&r.decode()), super::ID);
        let hint = || Args::new().fh(&h.fh(super::ID));
        let mut r = h.nfs(nfs3::READ, hint().u64(0).u32(4096)).await;
        assert_eq!(r.status(), 0);
        let a = r.post_attr().unwrap();
        assert_eq!((a.mode, a.size), (0o444, super::text().len() as u64));
        assert_eq!(r.u32() as usize, super::text().len());
        assert_eq!(r.u32(), 1, "eof");
        let body = String::from_utf8(r.opaque()).unwrap();
        assert!(body.contains("odt unlock --appliance"), "{body}");
        let mut r = h.nfs(nfs3::ACCESS, hint().u32(0x3f)).await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        assert_eq!(r.u32(), super::READ_ONLY & 0x3f, "read-only");
        let mut r = h
            .nfs(nfs3::WRITE, hint().u64(0).u32(1).u32(2).opaque(b"x"))
            .await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        // Anything else is still refused.
        let mut r = h.nfs(nfs3::LOOKUP, root().text("other")).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_ACCES as u32);
        // Unlocked: the share's own (empty) root, and the hint's handle is stale.
        h.unlock();
        let mut r = h.nfs(nfs3::READDIR, readdir()).await;
        assert_eq!(r.status(), 0);
        r.post_attr();
        r.u64();
        assert_eq!(r.u32(), 0, "no entries");
        let mut r = h.nfs(nfs3::GETATTR, hint()).await;
        assert_eq!(r.status(), nfsstat3::NFS3ERR_STALE as u32);
    }
}
