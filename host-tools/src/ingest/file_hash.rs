//! The BLAKE3 root of a file (what `b3sum` prints) computed from its 1 MiB blocks in any
//! order, so that several workers can hash different parts of one file.
//!
//! Each whole or final block is hashed as the subtree at its offset (its chaining value);
//! the root joins them the way BLAKE3 builds its tree: a subtree of `n` blocks has a left
//! part of the largest power of two below `n` blocks.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Block size the chaining values are taken over (a power of two multiple of BLAKE3's
/// 1 KiB chunk, as the tree needs).
pub const BLOCK: u64 = 1 << 20;

/// What one block contributes: its chaining value, or for a file of one block the finished
/// hash of that block (a single-block file's root is not a merge).
pub fn block_value(file_size: u64, block_start: u64, data: &[u8]) -> [u8; 32] {
    if file_size <= BLOCK {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(block_start);
    h.update(data);
    h.finalize_non_root()
}

/// Joins the values of blocks `0..n` (in order) into the file's root.
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

    fn by_blocks(data: &[u8]) -> [u8; 32] {
        let size = data.len() as u64;
        let mut values = Vec::new();
        let mut at = 0u64;
        while at < size || (size == 0 && values.is_empty()) {
            let end = (at + BLOCK).min(size);
            values.push(block_value(size, at, &data[at as usize..end as usize]));
            at += BLOCK;
            if size == 0 {
                break;
            }
        }
        root(&values)
    }

    #[test]
    fn equals_plain_blake3_for_every_shape() {
        let b = BLOCK as usize;
        for size in [
            0,
            1,
            1000,
            b - 1,
            b,
            b + 1,
            2 * b,
            3 * b - 7,
            4 * b,
            5 * b + 3,
            8 * b,
            9 * b,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
            assert_eq!(
                by_blocks(&data),
                *blake3::hash(&data).as_bytes(),
                "size {size}"
            );
        }
    }

    #[test]
    fn a_changed_byte_changes_the_root() {
        let mut data = vec![7u8; 3 * BLOCK as usize];
        let r1 = by_blocks(&data);
        data[2 * BLOCK as usize + 5] ^= 1;
        assert_ne!(r1, by_blocks(&data));
    }
}
