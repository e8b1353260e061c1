//! Damage done to image files the way a failing disk or an attacker would: a flipped bit,
//! bytes overwritten in place.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Flips bit `bit` (0..8) of the byte at `offset` of the file at `path`.
pub fn flip(path: &Path, offset: u64, bit: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, offset).unwrap();
}

/// Overwrites the bytes at `offset` of the file at `path` with `data`.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    f.write_all_at(data, offset).unwrap();
}

/// `len` bytes at `offset` of the file at `path`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_one_bit_and_writes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, [0u8; 16]).unwrap();
        flip(&p, 3, 2);
        write_at(&p, 10, b"ab");
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b[3], 4);
        assert_eq!(&b[10..12], b"ab");
        assert_eq!(b.iter().filter(|&&x| x != 0).count(), 3);
        assert_eq!(read_at(&p, 10, 2), b"ab");
    }
}
