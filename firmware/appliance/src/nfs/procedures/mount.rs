//! The MOUNT program, version 3: NULL, MNT, DUMP, UMNT, UMNTALL and EXPORT.
//!
//! One export, `/`. MNT of `/` or of any directory or file below it (looked up from the
//! root; `/` itself also while locked, so a client can mount and then learn from ACCES that
//! the appliance waits for `odt unlock`) returns the handle and the flavors AUTH_NONE and
//! AUTH_SYS; anything else MNT3ERR_NOENT, a path over 1024 bytes MNT3ERR_NAMETOOLONG.
//! EXPORT lists `/` for everyone. The appliance keeps no list of mounts (a client that
//! never unmounts would grow it forever), so DUMP answers an empty list and UMNT and
//! UMNTALL only acknowledge.

use super::Call;
use crate::nfs::export::Export;
use crate::nfs::rpc::{AUTH_NONE, AUTH_SYS, AcceptStat, Reply};
use crate::nfs::xdr::MAX_PATH;

/// The one export's name.
pub const EXPORT_NAME: &str = "/";

/// mountstat3 values.
const MNT3_OK: u32 = 0;
const MNT3ERR_NOENT: u32 = 2;
const MNT3ERR_NAMETOOLONG: u32 = 63;

/// The components of the path below the export that `dirpath` names (none for the export
/// itself), or `None` if it names no path of this export.
fn below_export(dirpath: &[u8]) -> Option<Vec<&[u8]>> {
    let text = std::str::from_utf8(dirpath).ok()?;
    let rest = text.strip_prefix(EXPORT_NAME)?.trim();
    Some(
        rest.split('/')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::as_bytes)
            .collect(),
    )
}

/// UMNT: checks the path is well formed, then acknowledges.
pub fn umnt(c: &Call<'_>) -> Vec<u8> {
    match c.reader().opaque(MAX_PATH) {
        Some(_) => c.void(),
        None => c.garbage(),
    }
}

/// DUMP: no mounts are remembered; the list is empty.
pub fn dump(c: &Call<'_>) -> Vec<u8> {
    let mut r = Reply::accepted(c.xid, AcceptStat::Success);
    r.word(0);
    r.finish()
}

/// EXPORT: one export node, the path, no groups (everyone), no next node.
pub fn export(c: &Call<'_>) -> Vec<u8> {
    let mut r = Reply::accepted(c.xid, AcceptStat::Success);
    r.word(1).opaque(EXPORT_NAME.as_bytes()).word(0).word(0);
    r.finish()
}

/// MNT.
pub async fn mnt(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let mut r = Reply::accepted(c.xid, AcceptStat::Success);
    // A path over the limit is answered from its length alone.
    if args.clone().u32().is_some_and(|n| n as usize > MAX_PATH) {
        r.word(MNT3ERR_NAMETOOLONG);
        return r.finish();
    }
    let Some(dirpath) = args.opaque(MAX_PATH) else {
        return c.garbage();
    };
    let mut found = None;
    if let Some(components) = below_export(dirpath) {
        let mut id = odt_store::engine::namespace::ROOT;
        let mut ok = true;
        for name in components {
            match x.lookup(id, name).await {
                Ok(next) => id = next,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            found = Some(id);
        }
    }
    let Some(id) = found else {
        tracing::debug!(
            "MNT of {:?}: no such export or directory",
            String::from_utf8_lossy(dirpath)
        );
        r.word(MNT3ERR_NOENT);
        return r.finish();
    };
    r.word(MNT3_OK)
        .put(&x.handle_of(id))
        .word(2)
        .word(AUTH_NONE)
        .word(AUTH_SYS);
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::{MNT3ERR_NAMETOOLONG, MNT3ERR_NOENT};
    use crate::nfs::program::mount3;
    use crate::nfs::rpc::{AUTH_NONE, AUTH_SYS};
    use crate::testutil::{Args, Harness};

    /// The handle's file id and the auth flavors of a MNT, or its mountstat3.
    async fn mnt(h: &Harness, path: &[u8]) -> Result<(u64, Vec<u32>), u32> {
        let mut r = h.mount(mount3::MNT, Args::new().opaque(path)).await;
        assert_eq!(r.accept_stat(), 0);
        let status = r.u32();
        if status != 0 {
            assert_eq!(r.remaining(), 0, "a failed MNT has no more results");
            return Err(status);
        }
        let fh = nfsserve::nfs::nfs_fh3 { data: r.opaque() };
        let n = r.u32();
        Ok((h.id(&fh), (0..n).map(|_| r.u32()).collect()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mount_procedures() {
        let h = Harness::locked();
        let r = h.mount(mount3::NULL, Args::new()).await;
        assert_eq!((r.accept_stat(), r.remaining()), (0, 0));
        // The root mounts while locked (the client then sees ACCES until unlock).
        assert_eq!(mnt(&h, b"/").await, Ok((1, vec![AUTH_NONE, AUTH_SYS])));
        assert_eq!(
            mnt(&h, b"/vm").await,
            Err(MNT3ERR_NOENT),
            "no lookups while locked"
        );
        h.unlock();
        let d = h.mkdir(h.root(), "vm").await;
        h.create_file(d, "disk").await;
        for p in [&b"/vm"[..], b"/vm/", b"//vm//", b"/ vm "] {
            assert_eq!(mnt(&h, p).await.map(|m| m.0), Ok(d), "{p:?}");
        }
        assert!(mnt(&h, b"/vm/disk").await.is_ok());
        for p in [&b"vm"[..], b"", b"/missing", &[b'/', 0xff]] {
            assert_eq!(mnt(&h, p).await, Err(MNT3ERR_NOENT), "{p:?}");
        }
        assert_eq!(mnt(&h, &[b'/'; 1025]).await, Err(MNT3ERR_NAMETOOLONG));
        // A path length announcing 1 GiB: answered from the length alone.
        let mut r = h.mount(mount3::MNT, Args::new().u32(1 << 30)).await;
        assert_eq!((r.accept_stat(), r.u32()), (0, MNT3ERR_NAMETOOLONG));
        let r = h.mount(mount3::MNT, Args::new().u32(8)).await;
        assert_eq!(r.accept_stat(), 4, "GARBAGE_ARGS");

        let mut r = h.mount(mount3::EXPORT, Args::new()).await;
        assert_eq!(r.accept_stat(), 0);
        assert_eq!(r.u32(), 1, "one export");
        assert_eq!(r.opaque(), b"/");
        assert_eq!((r.u32(), r.u32(), r.remaining()), (0, 0, 0));
        let mut r = h.mount(mount3::DUMP, Args::new()).await;
        assert_eq!(
            (r.accept_stat(), r.u32(), r.remaining()),
            (0, 0, 0),
            "empty list"
        );
        let r = h.mount(mount3::UMNT, Args::new().text("/")).await;
        assert_eq!((r.accept_stat(), r.remaining()), (0, 0));
        let r = h.mount(mount3::UMNT, Args::new()).await;
        assert_eq!(r.accept_stat(), 4);
        let r = h.mount(mount3::UMNTALL, Args::new()).await;
        assert_eq!((r.accept_stat(), r.remaining()), (0, 0));
        let r = h.mount(99, Args::new()).await;
        assert_eq!(r.accept_stat(), 3, "PROC_UNAVAIL");
    }
}
