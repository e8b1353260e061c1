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

/// The chaining value of an all-zero chunk at `chunk_start` in a file of `file_size` bytes
/// (`len` bytes of it): hashed from a static buffer, so a hole costs no read and no
/// allocation. (Standard BLAKE3 puts each 1 KiB chunk's position into its hash, so zero
/// chunks at different offsets have different values: nothing can be precomputed.)
pub fn zero_chunk_value(file_size: u64, chunk_start: u64, len: u64) -> [u8; 32] {
    static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];
    chunk_value(file_size, chunk_start, &ZEROS[..len.min(CHUNK) as usize])
}

/// A file's root built from its chunk values given in order, in O(log n) memory: a stack
/// of completed subtrees, merged as BLAKE3 merges them (the same result as [`root`] over
/// all the values, without holding them).
#[derive(Debug, Clone)]
pub struct RootBuilder {
    /// Chunks of the file (`file_size` in chunks, rounded up).
    chunks: u64,
    /// Values pushed so far.
    pushed: u64,
    /// Completed subtrees, largest first; at most one per bit of `pushed`.
    stack: Vec<ChainingValue>,
    /// The last chunk's value (kept apart: it is merged with the root flag at the end).
    last: Option<ChainingValue>,
}

impl RootBuilder {
    /// A builder for a file of `file_size` bytes.
    pub fn new(file_size: u64) -> Self {
        RootBuilder {
            chunks: file_size.div_ceil(CHUNK),
            pushed: 0,
            stack: Vec::with_capacity(64),
            last: None,
        }
    }

    /// Chunks still expected.
    pub fn remaining(&self) -> u64 {
        self.chunks - self.pushed
    }

    /// Adds the next chunk's value (see [`chunk_value`]). Panics past the file's chunks: a
    /// caller bug, not a property of the data.
    pub fn push(&mut self, value: [u8; 32]) {
        assert!(
            self.pushed < self.chunks,
            "more chunk values than the file has"
        );
        self.pushed += 1;
        if self.pushed == self.chunks {
            self.last = Some(value);
            return;
        }
        // More chunks follow, so this one is no root: merge every subtree it completes
        // (one per trailing zero bit of the count so far).
        let mut cv = value;
        let mut n = self.pushed;
        while n & 1 == 0 {
            let left = self.stack.pop().expect("a left subtree per trailing zero");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            n >>= 1;
        }
        self.stack.push(cv);
    }

    /// The root, once every chunk's value was pushed. Panics before: a caller bug.
    pub fn finish(self) -> [u8; 32] {
        assert_eq!(self.pushed, self.chunks, "chunk values missing");
        let Some(mut cv) = self.last else {
            return *blake3::hash(b"").as_bytes();
        };
        let mut stack = self.stack;
        while let Some(left) = stack.pop() {
            cv = if stack.is_empty() {
                *merge_subtrees_root(&left, &cv, Mode::Hash).as_bytes()
            } else {
                merge_subtrees_non_root(&left, &cv, Mode::Hash)
            };
        }
        cv
    }
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

    /// The streaming root of `data`, with holes (all-zero chunks) from the zero buffer.
    fn streamed(data: &[u8]) -> [u8; 32] {
        let size = data.len() as u64;
        let mut b = RootBuilder::new(size);
        let mut at = 0u64;
        while at < size {
            let end = (at + CHUNK).min(size);
            let chunk = &data[at as usize..end as usize];
            b.push(if chunk.iter().all(|&x| x == 0) {
                zero_chunk_value(size, at, end - at)
            } else {
                chunk_value(size, at, chunk)
            });
            at += CHUNK;
        }
        assert_eq!(b.remaining(), 0);
        b.finish()
    }

    #[test]
    fn streaming_equals_root_for_many_counts() {
        // Arbitrary values (not real chunk hashes): the merge order alone is under test.
        for n in 1..=300u64 {
            let values: Vec<[u8; 32]> = (0..n)
                .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
                .collect();
            let mut b = RootBuilder::new(n * CHUNK);
            for v in &values {
                b.push(*v);
            }
            assert_eq!(b.finish(), root(&values), "{n} chunks");
        }
        assert_eq!(RootBuilder::new(0).finish(), root(&[]));
    }

    #[test]
    fn streaming_memory_is_logarithmic() {
        let mut b = RootBuilder::new(u64::MAX / 2);
        for i in 0..100_000u64 {
            b.push([i as u8; 32]);
            assert!(b.stack.len() <= 64 - b.pushed.leading_zeros() as usize);
        }
    }

    #[test]
    fn zero_chunk_value_is_the_value_of_zeros() {
        let c = CHUNK as usize;
        let zeros = vec![0u8; c];
        for (size, at, len) in [(5 * CHUNK, 2 * CHUNK, CHUNK), (CHUNK, 0, CHUNK), (7, 0, 7)] {
            assert_eq!(
                zero_chunk_value(size, at, len),
                chunk_value(size, at, &zeros[..len as usize])
            );
        }
        let sparse = {
            let mut d = vec![0u8; 4 * c + 100];
            d[c + 5] = 1;
            d
        };
        assert_eq!(streamed(&sparse), *blake3::hash(&sparse).as_bytes());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Sizes around chunk boundaries, data in some chunks and holes in the others: the
        /// streaming root is plain BLAKE3 (what `b3sum` prints) and the batch root.
        #[test]
        fn streaming_equals_blake3(
            chunks in 0u64..12,
            delta in -2i64..=2,
            filled in proptest::collection::vec(proptest::bool::ANY, 12),
            seed in 0u8..=255,
        ) {
            let size = (chunks as i64 * CHUNK as i64 + delta).max(0) as u64;
            let mut data = vec![0u8; size as usize];
            for (i, b) in data.iter_mut().enumerate() {
                if filled[i / CHUNK as usize] {
                    *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
                }
            }
            proptest::prop_assert_eq!(streamed(&data), *blake3::hash(&data).as_bytes());
            proptest::prop_assert_eq!(streamed(&data), by_chunks(&data));
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
