//! Persistent NFS file handles.
//!
//! `nfsserve`'s default handles embed the server's start time and turn STALE after every
//! restart. Ours embed what does not change: the device set's id and the store's file id
//! (ids are persisted in the journal and never reused), so a client's mount survives an
//! appliance restart or power cut.
//!
//! Layout, 20 bytes:
//! ```text
//! 0 "OD"  2 version (1)  3 reserved (0)  4 set id (u64, big-endian)  12 file id (u64, BE)
//! ```
//! A handle that does not have this shape fails with `NFS3ERR_BADHANDLE` (it was never one
//! of ours); a well-formed handle of another device set fails with `NFS3ERR_STALE` (the
//! export behind the address changed). A handle whose file was removed is reported STALE
//! by the operation that finds the id missing.

use nfsserve::nfs::{fileid3, nfs_fh3, nfsstat3};

/// Bytes of a handle.
pub const HANDLE_LEN: usize = 20;
const MAGIC: &[u8; 2] = b"OD";
const VERSION: u8 = 1;

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Not a handle this appliance makes.
    #[error("malformed file handle")]
    Malformed,
    /// A handle of another device set (another appliance, or the devices were replaced).
    #[error("file handle of another device set")]
    ForeignSet,
}

impl HandleError {
    /// The NFS status a client gets.
    pub fn status(self) -> nfsstat3 {
        match self {
            HandleError::Malformed => nfsstat3::NFS3ERR_BADHANDLE,
            HandleError::ForeignSet => nfsstat3::NFS3ERR_STALE,
        }
    }
}

/// Makes and checks the handles of one device set.
#[derive(Debug, Clone, Copy)]
pub struct Handles {
    set_id: u64,
}

impl Handles {
    /// Handles for the device set `set_id`.
    pub fn new(set_id: u64) -> Self {
        Handles { set_id }
    }

    /// The handle of file `id`.
    pub fn encode(&self, id: fileid3) -> nfs_fh3 {
        let mut data = Vec::with_capacity(HANDLE_LEN);
        data.extend_from_slice(MAGIC);
        data.push(VERSION);
        data.push(0);
        data.extend_from_slice(&self.set_id.to_be_bytes());
        data.extend_from_slice(&id.to_be_bytes());
        nfs_fh3 { data }
    }

    /// The file id inside a handle.
    pub fn decode(&self, fh: &nfs_fh3) -> Result<fileid3, HandleError> {
        let d = &fh.data;
        if d.len() != HANDLE_LEN || &d[..2] != MAGIC || d[2] != VERSION || d[3] != 0 {
            return Err(HandleError::Malformed);
        }
        let set = u64::from_be_bytes(d[4..12].try_into().expect("8 bytes"));
        let id = u64::from_be_bytes(d[12..20].try_into().expect("8 bytes"));
        if id == 0 {
            return Err(HandleError::Malformed);
        }
        if set != self.set_id {
            return Err(HandleError::ForeignSet);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_roundtrip_and_survive_a_new_codec() {
        let h = Handles::new(0x1234_5678_9abc_def0);
        let fh = h.encode(42);
        assert_eq!(fh.data.len(), HANDLE_LEN);
        // A restarted appliance builds a new codec from the same superblock.
        assert_eq!(Handles::new(0x1234_5678_9abc_def0).decode(&fh), Ok(42));
        assert_eq!(h.decode(&h.encode(1)), Ok(1));
    }

    #[test]
    fn foreign_and_malformed_handles_are_refused() {
        let ours = Handles::new(7);
        let theirs = Handles::new(8);
        assert_eq!(ours.decode(&theirs.encode(5)), Err(HandleError::ForeignSet));
        assert_eq!(
            HandleError::ForeignSet.status() as u32,
            nfsstat3::NFS3ERR_STALE as u32
        );
        let mut fh = ours.encode(5);
        fh.data[0] = b'X';
        assert_eq!(ours.decode(&fh), Err(HandleError::Malformed));
        let mut fh = ours.encode(5);
        fh.data[2] = 2;
        assert_eq!(ours.decode(&fh), Err(HandleError::Malformed));
        let mut fh = ours.encode(5);
        fh.data.push(0);
        assert_eq!(ours.decode(&fh), Err(HandleError::Malformed));
        assert_eq!(ours.decode(&ours.encode(0)), Err(HandleError::Malformed));
        // nfsserve's own default handle shape (16 bytes).
        let default_style = nfs_fh3 {
            data: [1u8; 16].to_vec(),
        };
        assert_eq!(ours.decode(&default_style), Err(HandleError::Malformed));
        assert_eq!(
            HandleError::Malformed.status() as u32,
            nfsstat3::NFS3ERR_BADHANDLE as u32
        );
    }
}
