//! A data device: a block device or a disk-image file, addressed by byte offset.
//!
//! All I/O is positional (pread/pwrite) so threads share one descriptor without seeking;
//! durability is `fdatasync`. Errors carry the device path and offset.
//!
//! A device opened for writing also gets an `O_DIRECT` descriptor for the log's large
//! aligned writes ([`Device::write_blocks`]): they skip the page-cache copy (a fifth of the
//! appliance's CPU time when it copied a large file) and the writeback. Where the file
//! system refuses `O_DIRECT` (tmpfs) or an alignment, writes go through the page cache.
//! Either way `fdatasync` on the main descriptor makes them durable (same file).

// Raw allocation for O_DIRECT alignment; each unsafe block says why it is sound.
#[allow(unsafe_code)]
pub mod aligned;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{DeviceError, Result};
use aligned::ALIGN;

/// Whether a writable device may use `O_DIRECT` for the log's aligned writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectIo {
    /// Where the device allows it.
    Auto,
    /// Never: every write goes through the page cache.
    Off,
}

/// An open data device.
#[derive(Debug)]
pub struct Device {
    file: File,
    /// The same file opened with `O_DIRECT`, if it could be.
    direct: Option<File>,
    /// Cleared when the device refused an `O_DIRECT` write.
    direct_ok: AtomicBool,
    path: PathBuf,
    size: u64,
}

impl Device {
    /// Opens an existing device (image file or block device) for reading and, if `write`,
    /// writing.
    pub fn open(path: &Path, write: bool) -> Result<Device> {
        Device::open_with(path, write, DirectIo::Auto)
    }

    /// Like [`Device::open`], choosing whether `O_DIRECT` may be used.
    pub fn open_with(path: &Path, write: bool, direct_io: DirectIo) -> Result<Device> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|source| DeviceError::open(path, source))?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| DeviceError::io("seek", path, 0, e))?;
        let direct = (write && direct_io == DirectIo::Auto)
            .then(|| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(path)
                    .ok()
            })
            .flatten();
        Ok(Device {
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Whether aligned writes currently bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Opens `path` for provisioning: an existing block device or image file is used as is;
    /// a missing path is created as a sparse image file of `create_size` bytes.
    pub fn create_or_open(path: &Path, create_size: Option<u64>) -> Result<Device> {
        if !path.exists() {
            let size = create_size.ok_or_else(|| DeviceError::Missing {
                path: path.to_path_buf(),
            })?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| DeviceError::open(path, source))?;
            f.set_len(size)
                .map_err(|e| DeviceError::io("set_len", path, size, e))?;
        } else if let Some(size) = create_size {
            let meta = std::fs::metadata(path).map_err(|source| DeviceError::open(path, source))?;
            if meta.is_file() && meta.len() < size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| DeviceError::open(path, source))?;
                f.set_len(size)
                    .map_err(|e| DeviceError::io("set_len", path, size, e))?;
            }
        }
        Device::open(path, true)
    }

    /// The device's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(DeviceError::ReadPastEnd {
                path: self.path.clone(),
                offset,
                len: buf.len(),
                size: self.size,
            }
            .into());
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| DeviceError::io("read", &self.path, offset, e))
    }

    /// Reads `len` bytes at `offset` into a new buffer.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_at(&mut v, offset)?;
        Ok(v)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if offset + buf.len() as u64 > self.size {
            return Err(DeviceError::WritePastEnd {
                path: self.path.clone(),
                offset,
                len: buf.len(),
            }
            .into());
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| DeviceError::io("write", &self.path, offset, e))
    }

    /// Writes whole blocks: `offset` and `buf`'s address and length are multiples of
    /// [`ALIGN`]. Uses `O_DIRECT` when the device allows it, else the page cache. Durable
    /// only after [`Device::sync`], like [`Device::write_at`].
    pub fn write_blocks(&self, buf: &[u8], offset: u64) -> Result<()> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && buf.len().is_multiple_of(ALIGN)
            && (buf.as_ptr() as usize).is_multiple_of(ALIGN);
        if let Some(direct) = &self.direct
            && aligned
            && self.is_direct()
        {
            if offset + buf.len() as u64 > self.size {
                return self.write_at(buf, offset);
            }
            match direct.write_all_at(buf, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // The device refuses this alignment: from now on go through the page
                    // cache (rewriting what part of the range may have been written is
                    // harmless: same bytes).
                    tracing::warn!(
                        device = %self.path.display(),
                        "O_DIRECT write refused ({e}); writing through the page cache"
                    );
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(DeviceError::io("write", &self.path, offset, e)),
            }
        }
        self.write_at(buf, offset)
    }

    /// Makes every completed write durable (fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| DeviceError::io("fdatasync", &self.path, 0, e))
    }

    /// Gives `[offset, offset+len)` back to the storage below where it can take it
    /// (punch-hole on image files, discard on block devices that support it); the range then
    /// reads as zeros. Returns false, changing nothing, where that is not supported.
    pub fn discard(&self, offset: u64, len: u64) -> Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::INVAL => {
                Ok(false)
            }
            Err(e) => Err(DeviceError::io("discard", &self.path, offset, e.into())),
        }
    }

    /// Writes zeros over `[offset, offset+len)`, punching a hole where the file system allows.
    pub fn zero(&self, offset: u64, len: u64) -> Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        let punched = fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
        if punched.is_ok() {
            return Ok(());
        }
        let chunk = vec![0u8; (1 << 20).min(len as usize)];
        let mut at = offset;
        while at < offset + len {
            let n = chunk.len().min((offset + len - at) as usize);
            self.write_at(&chunk[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::aligned::AlignedBuf;

    fn image(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(1 << 20).unwrap();
        p
    }

    #[test]
    fn block_writes_direct_or_buffered_land_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = AlignedBuf::with_capacity(3 * ALIGN);
        let data: Vec<u8> = (0..2 * ALIGN + 100).map(|i| (i * 31) as u8).collect();
        buf.extend_from_slice(&data);
        let mut seen = Vec::new();
        for (name, mode) in [
            ("direct.img", DirectIo::Auto),
            ("buffered.img", DirectIo::Off),
        ] {
            let dev = Device::open_with(&image(dir.path(), name), true, mode).unwrap();
            if mode == DirectIo::Off {
                assert!(!dev.is_direct());
            }
            dev.write_blocks(buf.blocks(), 8 * ALIGN as u64).unwrap();
            // Not aligned: goes through the page cache, whatever the device allows.
            dev.write_blocks(&data[..100], 3).unwrap();
            dev.sync().unwrap();
            let back = dev.read_vec(0, 12 * ALIGN).unwrap();
            assert_eq!(&back[3..103], &data[..100]);
            assert_eq!(&back[8 * ALIGN..8 * ALIGN + data.len()], &data[..]);
            assert!(back[8 * ALIGN + data.len()..].iter().all(|&b| b == 0));
            seen.push(back);
        }
        assert_eq!(seen[0], seen[1]);
    }

    #[test]
    fn a_device_refusing_o_direct_falls_back_to_the_page_cache() {
        // tmpfs refuses O_DIRECT at open on most kernels; where it accepts it, the write
        // must work all the same.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let dev = Device::open(&image(dir.path(), "shm.img"), true).unwrap();
        let mut buf = AlignedBuf::with_capacity(ALIGN);
        buf.extend_from_slice(b"on tmpfs");
        dev.write_blocks(buf.blocks(), 0).unwrap();
        dev.sync().unwrap();
        assert_eq!(dev.read_vec(0, 8).unwrap(), b"on tmpfs");
    }
}
