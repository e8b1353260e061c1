//! Byte buffers whose start is aligned for `O_DIRECT` writes.
//!
//! The log queues record bytes in these, so the leader of a group commit can hand them to
//! the device without another copy. The bytes between the length and the next block
//! boundary are always zero: [`AlignedBuf::blocks`] is the content padded to whole blocks.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

/// Alignment of buffers, offsets and lengths of `O_DIRECT` I/O (covers devices with 512-byte
/// and 4 KiB logical blocks).
pub const ALIGN: usize = 4096;

/// A growable byte buffer starting on an [`ALIGN`] boundary.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Allocated bytes, a multiple of [`ALIGN`] (0: nothing allocated).
    cap: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access is read-only.
unsafe impl Sync for AlignedBuf {}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

fn layout(cap: usize) -> Layout {
    Layout::from_size_align(cap, ALIGN).expect("buffer size within isize")
}

impl AlignedBuf {
    /// An empty buffer with room for `cap` bytes (rounded up to whole blocks). The memory is
    /// not touched until it is written, so a large capacity costs address space only.
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let cap = cap.max(1).next_multiple_of(ALIGN);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc(layout(cap)) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout(cap));
        };
        AlignedBuf { ptr, len: 0, cap }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room without reallocating.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The content followed by zeros up to the next block boundary.
    pub fn blocks(&self) -> &[u8] {
        // SAFETY: bytes up to the block boundary after `len` are initialised (zeroed by
        // `extend_from_slice`) and within the allocation, whose size is a multiple of ALIGN.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len.next_multiple_of(ALIGN)) }
    }

    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`, growing the allocation if needed, and zeroes the rest of the last
    /// block.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end > self.cap {
            self.grow(end);
        }
        // SAFETY: `end <= cap`, and the padding ends at a block boundary `<= cap` because
        // `cap` is a multiple of ALIGN; source and destination do not overlap.
        unsafe {
            let dst = self.ptr.as_ptr();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(self.len), bytes.len());
            let pad_end = end.next_multiple_of(ALIGN);
            std::ptr::write_bytes(dst.add(end), 0, pad_end - end);
        }
        self.len = end;
    }

    fn grow(&mut self, need: usize) {
        let cap = need.max(self.cap * 2).next_multiple_of(ALIGN);
        let mut bigger = AlignedBuf::with_capacity(cap);
        // SAFETY: `bigger` has room for `len` bytes; distinct allocations.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), bigger.ptr.as_ptr(), self.len);
        }
        bigger.len = self.len;
        std::mem::swap(self, &mut bigger);
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout(self.cap)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_padded_and_growing() {
        let mut b = AlignedBuf::with_capacity(10);
        assert_eq!(b.capacity(), ALIGN);
        assert_eq!(b.as_ptr_for_test() as usize % ALIGN, 0);
        b.extend_from_slice(&[7u8; 100]);
        assert_eq!(b.as_slice(), &[7u8; 100][..]);
        assert_eq!(b.blocks().len(), ALIGN);
        assert!(b.blocks()[100..].iter().all(|&x| x == 0));
        // Growing keeps the content and the alignment.
        let more: Vec<u8> = (0..3 * ALIGN).map(|i| i as u8).collect();
        b.extend_from_slice(&more);
        assert_eq!(b.len(), 100 + 3 * ALIGN);
        assert_eq!(&b.as_slice()[..100], &[7u8; 100][..]);
        assert_eq!(&b.as_slice()[100..], &more[..]);
        assert_eq!(b.as_ptr_for_test() as usize % ALIGN, 0);
        assert_eq!(b.blocks().len(), 4 * ALIGN);
        assert!(b.blocks()[b.len()..].iter().all(|&x| x == 0));
        // Reused after clear: old bytes past the new length read as zero padding.
        b.clear();
        assert!(b.is_empty());
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(b.blocks().len(), ALIGN);
        assert_eq!(&b.blocks()[..4], &[1, 2, 3, 0]);
        assert!(b.blocks()[3..].iter().all(|&x| x == 0));
    }

    impl AlignedBuf {
        fn as_ptr_for_test(&self) -> *const u8 {
            self.ptr.as_ptr()
        }
    }
}
