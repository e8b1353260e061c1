//! Whether a file in the datastore is the one an earlier run of this ingest placed there:
//! its BLAKE3 (what `b3sum` prints) against the one recorded before the rename
//! ([`super::state::State::intend`]). Holes are hashed without reading them, so a large
//! sparse file costs its data, not its apparent size, to read.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use odt_store::format::tree_hash::{self, CHUNK, RootBuilder};
use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

/// The offset of the first data at or after `at`, `None` if only a hole follows. A file
/// system that cannot tell holes counts everything as data.
fn data_from(file: &File, at: u64) -> std::io::Result<Option<u64>> {
    match rustix::fs::seek(file, SeekFrom::Data(at)) {
        Ok(d) => Ok(Some(d)),
        Err(Errno::NXIO) => Ok(None),
        Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => Ok(Some(at)),
        Err(e) => Err(e.into()),
    }
}

/// The BLAKE3 of the first `size` bytes of `file`.
pub fn root_of(file: &File, size: u64) -> std::io::Result<[u8; 32]> {
    let mut b = RootBuilder::new(size);
    let mut buf = vec![0u8; CHUNK.min(size) as usize];
    let mut next_data = data_from(file, 0)?;
    let mut at = 0;
    while at < size {
        let len = CHUNK.min(size - at);
        let value = match next_data {
            Some(d) if d < at + len => {
                let chunk = &mut buf[..len as usize];
                file.read_exact_at(chunk, at)?;
                tree_hash::chunk_value(size, at, chunk)
            }
            _ => tree_hash::zero_chunk_value(size, at, len),
        };
        b.push(value);
        at += len;
        if next_data.is_some_and(|d| d < at) {
            next_data = data_from(file, at)?;
        }
    }
    Ok(b.finish())
}

/// Whether the regular file `name` in `dir` has `size` bytes hashing to `blake3` (hex).
/// A file that cannot be read is not taken for the ingest's own.
pub fn is_placed(dir: &OwnedFd, name: &OsStr, size: u64, blake3: &str) -> bool {
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        // Non-blocking: a FIFO swapped in since the look must not hang the ingest.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let file = File::from(fd);
    let is_size = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == size);
    is_size && root_of(&file, size).is_ok_and(|r| hex::encode(r) == blake3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_of_a_file_with_holes_is_what_b3sum_prints() {
        let dir = tempfile::tempdir().unwrap();
        for (size, writes) in [
            (0u64, vec![]),
            (10, vec![(0u64, b"0123456789".to_vec())]),
            (3 * CHUNK + 5, vec![(CHUNK + 7, b"data".to_vec())]),
            (
                5 * CHUNK,
                vec![(0, vec![1u8; 4096]), (4 * CHUNK + 1, b"x".to_vec())],
            ),
            (2 * CHUNK, vec![]),
        ] {
            let p = dir.path().join(format!("f{size}"));
            let f = File::create(&p).unwrap();
            f.set_len(size).unwrap();
            let mut whole = vec![0u8; size as usize];
            for (at, data) in &writes {
                f.write_all_at(data, *at).unwrap();
                whole[*at as usize..*at as usize + data.len()].copy_from_slice(data);
            }
            let f = File::open(&p).unwrap();
            assert_eq!(
                root_of(&f, size).unwrap(),
                *blake3::hash(&whole).as_bytes(),
                "size {size}"
            );
        }
    }
}
