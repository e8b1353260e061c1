//! A file being written under its temporary name, and the aligned buffers its spans come
//! in: whole pages may go through `O_DIRECT`, the ragged edges through the page cache.

use std::fs::File;

use rustix::io::Errno;

/// A file being written under its temporary name.
pub struct Temp {
    /// Name in the temporary directory.
    pub name: String,
    /// Buffered descriptor.
    pub file: File,
    /// `O_DIRECT` descriptor of the same file, if the file system supports it.
    pub direct: Option<File>,
}

/// Alignment `O_DIRECT` needs of buffers, offsets and lengths.
pub const DIRECT_ALIGN: usize = 4096;

impl Temp {
    /// Writes an aligned run through the `O_DIRECT` descriptor (through the page cache if
    /// the file system refuses this alignment after all).
    fn write_direct(&self, run: &[u8], at: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(d) = &self.direct {
            match d.write_all_at(run, at) {
                Ok(()) => return Ok(()),
                // Some file systems accept O_DIRECT at open but not every alignment.
                Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(run, at)
    }

    /// Writes file bytes `[start, end)`, found in `span` (a buffer holding the file from
    /// offset `span_off`, aligned for `O_DIRECT`): the whole pages inside the range
    /// bypass the page cache, the partial pages at its edges go through it. A page is never
    /// written both ways as long as ranges do not overlap: whole pages of one range are
    /// never part of another.
    pub fn write_range(
        &self,
        span: &[u8],
        span_off: u64,
        start: u64,
        end: u64,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let align = DIRECT_ALIGN as u64;
        let bytes = |a: u64, b: u64| &span[(a - span_off) as usize..(b - span_off) as usize];
        let (ds, de) = (start.next_multiple_of(align), end / align * align);
        if self.direct.is_none() || de <= ds {
            return self.file.write_all_at(bytes(start, end), start);
        }
        debug_assert!(span_off.is_multiple_of(align));
        debug_assert!((span.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN));
        if start < ds {
            self.file.write_all_at(bytes(start, ds), start)?;
        }
        self.write_direct(bytes(ds, de), ds)?;
        if de < end {
            self.file.write_all_at(bytes(de, end), de)?;
        }
        Ok(())
    }
}

/// A buffer whose start is aligned for `O_DIRECT`.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes starting on a [`DIRECT_ALIGN`] boundary.
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    /// The aligned bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// The aligned bytes, to read.
    pub fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}
