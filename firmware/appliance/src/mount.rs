//! The MOUNT program (version 3), answered by the appliance itself: NULL, MNT, EXPORT,
//! UMNT and UMNTALL.
//!
//! Clients such as `nfs-cp` mount before every file; answered by `nfsserve` each call cost
//! a loopback round trip and the client's connection a backend connection of its own.
//! The answers are those `nfsserve` 0.11 gave with its default export name `/`: MNT of `/`
//! or of any path below it (looked up from the root, also while locked for `/` itself)
//! returns the handle and the flavors AUTH_NULL and AUTH_UNIX, anything else
//! MNT3ERR_NOENT; EXPORT lists `/` for everyone. The appliance keeps no mount list, so
//! UMNT and UMNTALL only acknowledge (with the void result RFC 1813 defines; `nfsserve`
//! appended a status word clients ignore). DUMP still goes to `nfsserve`.

use nfsserve::vfs::NFSFileSystem;

use crate::nfs::Export;
use crate::rpc::{AcceptStat, CallHeader, Reply, Xdr};

/// MOUNTPROC3_NULL.
pub const MOUNT_NULL: u32 = 0;
/// MOUNTPROC3_MNT.
pub const MOUNT_MNT: u32 = 1;
/// MOUNTPROC3_UMNT.
pub const MOUNT_UMNT: u32 = 3;
/// MOUNTPROC3_UMNTALL.
pub const MOUNT_UMNTALL: u32 = 4;
/// MOUNTPROC3_EXPORT.
pub const MOUNT_EXPORT: u32 = 5;

/// The one export's name.
pub const EXPORT_NAME: &str = "/";
/// Longest path a MNT or UMNT may name (MNTPATHLEN).
const MNTPATHLEN: usize = 1024;

/// mountstat3 values.
const MNT3_OK: u32 = 0;
const MNT3ERR_NOENT: u32 = 2;
const MNT3ERR_NAMETOOLONG: u32 = 63;

/// auth_flavor values offered to a mounting client.
const AUTH_NULL: u32 = 0;
const AUTH_UNIX: u32 = 1;

/// True for the MOUNT v3 procedures answered here.
pub fn answers(procedure: u32) -> bool {
    matches!(
        procedure,
        MOUNT_NULL | MOUNT_MNT | MOUNT_UMNT | MOUNT_UMNTALL | MOUNT_EXPORT
    )
}

fn void(xid: u32) -> Vec<u8> {
    Reply::accepted(xid, AcceptStat::Success).finish()
}

fn garbage(xid: u32) -> Vec<u8> {
    Reply::accepted(xid, AcceptStat::GarbageArgs).finish()
}

/// The path below the export that `dirpath` names (`/` for the export itself), or `None`
/// if it names no path of this export.
fn below_export(dirpath: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(dirpath).ok()?;
    let rest = text.strip_prefix(EXPORT_NAME)?;
    let rest = rest.trim_matches('/').trim();
    Some(format!("/{rest}").into_bytes())
}

impl Export {
    /// Answers a MOUNT v3 call of a procedure [`answers`] accepts (the message starts at
    /// `base` of `record`).
    pub async fn rpc_mount(&self, call: &CallHeader, record: &[u8], base: usize) -> Vec<u8> {
        let xid = call.xid;
        let mut x = Xdr::new(&record[base + call.args..]);
        match call.procedure {
            MOUNT_NULL | MOUNT_UMNTALL => void(xid),
            MOUNT_UMNT => match x.opaque(MNTPATHLEN) {
                Some(_) => void(xid),
                None => garbage(xid),
            },
            MOUNT_EXPORT => {
                let mut r = Reply::accepted(xid, AcceptStat::Success);
                // One export node: the path, no groups (everyone), no next node.
                r.word(1)
                    .put(&EXPORT_NAME.as_bytes().to_vec())
                    .word(0)
                    .word(0);
                r.finish()
            }
            MOUNT_MNT => self.mnt(xid, &mut x).await,
            p => unreachable!("MOUNT procedure {p} is not answered here"),
        }
    }

    async fn mnt(&self, xid: u32, x: &mut Xdr<'_>) -> Vec<u8> {
        let Some(dirpath) = x.opaque(usize::MAX) else {
            return garbage(xid);
        };
        let mut r = Reply::accepted(xid, AcceptStat::Success);
        if dirpath.len() > MNTPATHLEN {
            r.word(MNT3ERR_NAMETOOLONG);
            return r.finish();
        }
        let found = match below_export(dirpath) {
            Some(path) => self.path_to_id(&path).await.ok(),
            None => None,
        };
        let Some(id) = found else {
            tracing::debug!(
                "MNT of {:?}: no such export or directory",
                String::from_utf8_lossy(dirpath)
            );
            r.word(MNT3ERR_NOENT);
            return r.finish();
        };
        r.word(MNT3_OK)
            .put(&self.id_to_fh(id))
            .word(2)
            .word(AUTH_NULL)
            .word(AUTH_UNIX);
        r.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER;
    use crate::testutil::{Fixture, call_record};
    use nfsserve::nfs::{nfs_fh3, sattr3};
    use nfsserve::xdr::XDR;

    fn call(procedure: u32, args: &[u8]) -> (CallHeader, Vec<u8>) {
        let (h, v) = call_record(4, crate::rpc::MOUNT_PROGRAM, procedure, args);
        assert!(h.answered_locally());
        (h, v)
    }

    fn path(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        p.to_vec().serialize(&mut v).unwrap();
        v
    }

    /// (accept_stat, the words after it).
    async fn ask(x: &Export, procedure: u32, args: &[u8]) -> (u32, Vec<u8>) {
        let (h, rec) = call(procedure, args);
        let r = x.rpc_mount(&h, &rec, HEADER).await;
        assert_eq!(&r[HEADER..HEADER + 4], &4u32.to_be_bytes(), "xid");
        let stat = u32::from_be_bytes(r[HEADER + 20..HEADER + 24].try_into().unwrap());
        (stat, r[HEADER + 24..].to_vec())
    }

    /// The handle's file id and the auth flavors of a MNT reply, or its mountstat3.
    fn mounted(x: &Export, results: &[u8]) -> Result<(u64, Vec<u32>), u32> {
        let mut r = Xdr::new(results);
        let status = r.u32().unwrap();
        if status != MNT3_OK {
            assert!(r.u32().is_none(), "a failed MNT has no more results");
            return Err(status);
        }
        let fh = nfs_fh3 {
            data: r.opaque(64).unwrap().to_vec(),
        };
        let n = r.u32().unwrap();
        let flavors = (0..n).map(|_| r.u32().unwrap()).collect();
        Ok((x.fh_to_id(&fh).unwrap(), flavors))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mount_procedures() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let x = Export::new(app.clone());

        assert_eq!(ask(&x, MOUNT_NULL, &[]).await, (0, Vec::new()));
        // The root mounts while locked (the client then sees ACCES until unlock).
        let (stat, r) = ask(&x, MOUNT_MNT, &path(b"/")).await;
        assert_eq!(stat, 0);
        assert_eq!(mounted(&x, &r), Ok((1, vec![AUTH_NULL, AUTH_UNIX])));
        let (_, r) = ask(&x, MOUNT_MNT, &path(b"/vm")).await;
        assert_eq!(
            mounted(&x, &r),
            Err(MNT3ERR_NOENT),
            "no lookups while locked"
        );

        app.unlock(&fx.code).unwrap();
        let (d, _) = x.mkdir(1, &b"vm"[..].into()).await.unwrap();
        x.create(d, &b"disk"[..].into(), sattr3::default())
            .await
            .unwrap();
        for p in [&b"/vm"[..], b"/vm/", b"//vm//", b"/ vm "] {
            let (_, r) = ask(&x, MOUNT_MNT, &path(p)).await;
            assert_eq!(mounted(&x, &r).map(|m| m.0), Ok(d), "{p:?}");
        }
        let (_, r) = ask(&x, MOUNT_MNT, &path(b"/vm/disk")).await;
        assert!(mounted(&x, &r).is_ok(), "nfsserve mounted files too");
        for p in [&b"vm"[..], b"", b"/missing", &[b'/', 0xff]] {
            let (_, r) = ask(&x, MOUNT_MNT, &path(p)).await;
            assert_eq!(mounted(&x, &r), Err(MNT3ERR_NOENT), "{p:?}");
        }
        let long = [b'/'; MNTPATHLEN + 1];
        let (_, r) = ask(&x, MOUNT_MNT, &path(&long)).await;
        assert_eq!(mounted(&x, &r), Err(MNT3ERR_NAMETOOLONG));
        assert_eq!(ask(&x, MOUNT_MNT, &[0, 0]).await.0, 4, "GARBAGE_ARGS");

        let (stat, r) = ask(&x, MOUNT_EXPORT, &[]).await;
        assert_eq!(stat, 0);
        let mut e = Xdr::new(&r);
        assert_eq!(e.u32(), Some(1), "one export");
        assert_eq!(e.opaque(1024), Some(&b"/"[..]));
        assert_eq!((e.u32(), e.u32(), e.u32()), (Some(0), Some(0), None));

        assert_eq!(ask(&x, MOUNT_UMNT, &path(b"/")).await, (0, Vec::new()));
        assert_eq!(ask(&x, MOUNT_UMNT, &[]).await.0, 4, "GARBAGE_ARGS");
        assert_eq!(ask(&x, MOUNT_UMNTALL, &[]).await, (0, Vec::new()));
        assert!(!answers(2), "DUMP goes to nfsserve");
    }
}
