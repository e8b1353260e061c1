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
        let mut id = odt_store::namespace::ROOT;
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
