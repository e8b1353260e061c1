//! The BLAKE3 root of a file (what `b3sum` prints), put together from its [`CHUNK`]s in any
//! order: by the write path (each whole chunk's chaining value, journaled), by the seal's
//! manifest (merging those instead of reading the file back) and by the provider's ingest
//! (several workers hashing different parts of one file).
//!
//! A chunk's value is its chaining value as the BLAKE3 subtree at its file offset (CHUNK is a
//! power-of-two multiple of BLAKE3's 1 KiB chunk, as the tree needs); the root joins them as
//! BLAKE3 builds its tree: a subtree of `n` chunks has a left part of the largest power of
//! two below `n` chunks. A file of one chunk or less has no tree: its root is the plain hash.
//!
//! The same values are the records' digests: a record that is one whole aligned chunk
//! carries that chunk's chaining value ([`record_digest`]), so a reader that checked the
//! record has the chunk's value without hashing it again ([`record_is_chunk`]).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes of file content per chunk: records never cross a chunk boundary, and the tree hash
/// is merged from chunk values. (Not BLAKE3's own 1 KiB "chunk".)
pub const CHUNK: u64 = 1 << 20;

/// The chaining value of `data` as the subtree at file offset `at`.
fn chaining_value(at: u64, data: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(at);
    h.update(data);
    h.finalize_non_root()
}

/// Digest of a record's plaintext starting at file offset `offset`: the chunk's chaining
/// value when the record is one whole aligned chunk, its plain BLAKE3 hash otherwise.
pub fn record_digest(offset: u64, plain: &[u8]) -> [u8; 32] {
    if record_is_chunk(offset, plain.len() as u64, offset) {
        chaining_value(offset, plain)
    } else {
        *blake3::hash(plain).as_bytes()
    }
}

/// Whether a record whose plaintext starts at file offset `start` and holds `len` bytes is
/// exactly the chunk at `chunk_start`, so that its digest is that chunk's chaining value.
pub fn record_is_chunk(start: u64, len: u64, chunk_start: u64) -> bool {
    start == chunk_start && len == CHUNK && chunk_start.is_multiple_of(CHUNK)
}

/// Whether a chunk's chaining value stands for the chunk at `chunk_start` in the root of a
/// file of `file_size` bytes: the chunk is whole and the file has more than one (a file of
/// one chunk is hashed plainly).
pub fn chaining_value_counts(file_size: u64, chunk_start: u64) -> bool {
    file_size > CHUNK && chunk_start + CHUNK <= file_size
}

/// What the chunk at `chunk_start` (holding `data`, all of the chunk that the file has)
/// contributes to the root of a file of `file_size` bytes.
pub fn chunk_value(file_size: u64, chunk_start: u64, data: &[u8]) -> [u8; 32] {
    if file_size <= CHUNK {
        return *blake3::hash(data).as_bytes();
    }
    chaining_value(chunk_start, data)
}

/// Joins the values of chunks `0..n` (in order) into the file's root.
pub fn root(values: &[[u8; 32]]) -> [u8; 32] {
    match values {
        [] => *blake3::hash(b"").as_bytes(),
        [one] => *one,
        _ => join(values, true),
    }
}

fn join(values: &[ChainingValue], is_root: bool) -> ChainingValue {
    if values.len() == 1 {
        return values[0];
    }
    // Left side: the largest power of two strictly below the count.
    let left = 1usize << (usize::BITS - 1 - (values.len() - 1).leading_zeros());
    let (l, r) = (join(&values[..left], false), join(&values[left..], false));
    if is_root {
        *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_chunks(data: &[u8]) -> [u8; 32] {
        let size = data.len() as u64;
        let mut values = Vec::new();
        let mut at = 0u64;
        while at < size {
            let end = (at + CHUNK).min(size);
            values.push(chunk_value(size, at, &data[at as usize..end as usize]));
            at += CHUNK;
        }
        root(&values)
    }

    #[test]
    fn equals_plain_blake3_for_every_shape() {
        let c = CHUNK as usize;
        for size in [
            0,
            1,
            1000,
            c - 1,
            c,
            c + 1,
            2 * c,
            3 * c - 7,
            4 * c,
            5 * c + 3,
            7 * c + 4096,
            8 * c,
            9 * c,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
            assert_eq!(
                by_chunks(&data),
                *blake3::hash(&data).as_bytes(),
                "size {size}"
            );
        }
    }

    #[test]
    fn a_changed_byte_changes_the_root() {
        let mut data = vec![7u8; 3 * CHUNK as usize];
        let r1 = by_chunks(&data);
        data[2 * CHUNK as usize + 5] ^= 1;
        assert_ne!(r1, by_chunks(&data));
    }

    #[test]
    fn a_whole_chunk_records_digest_is_its_chaining_value() {
        let data = vec![3u8; CHUNK as usize];
        assert_eq!(
            record_digest(2 * CHUNK, &data),
            chunk_value(5 * CHUNK, 2 * CHUNK, &data)
        );
        assert!(record_is_chunk(2 * CHUNK, CHUNK, 2 * CHUNK));
        // Not whole, not aligned, not that chunk: a plain hash.
        assert_eq!(record_digest(10, &data), *blake3::hash(&data).as_bytes());
        assert!(!record_is_chunk(10, CHUNK, 10));
        assert!(!record_is_chunk(CHUNK, CHUNK - 1, CHUNK));
        assert!(!record_is_chunk(CHUNK, CHUNK, 2 * CHUNK));
        // A one-chunk file is hashed plainly; a tail chunk is not whole.
        assert!(!chaining_value_counts(CHUNK, 0));
        assert!(chaining_value_counts(CHUNK + 1, 0));
        assert!(!chaining_value_counts(CHUNK + 1, CHUNK));
    }
}
