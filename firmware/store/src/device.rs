//! A data device: a block device or a disk-image file, addressed by byte offset.
//!
//! All I/O is positional (pread/pwrite) so threads share one descriptor without seeking;
//! durability is `fdatasync`. Errors carry the device path and offset.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An open data device.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Device {
    /// Opens an existing device (image file or block device) for reading and, if `write`,
    /// writing.
    pub fn open(path: &Path, write: bool) -> Result<Device> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek", path, 0, e))?;
        Ok(Device {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Opens `path` for provisioning: an existing block device or image file is used as is;
    /// a missing path is created as a sparse image file of `create_size` bytes.
    pub fn create_or_open(path: &Path, create_size: Option<u64>) -> Result<Device> {
        if !path.exists() {
            let size = create_size.ok_or_else(|| Error::Open {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "does not exist; give --size to create a disk-image file",
                ),
            })?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| Error::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
            f.set_len(size)
                .map_err(|e| Error::io("set_len", path, size, e))?;
        } else if let Some(size) = create_size {
            let meta = std::fs::metadata(path).map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
            if meta.is_file() && meta.len() < size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| Error::Open {
                        path: path.to_path_buf(),
                        source,
                    })?;
                f.set_len(size)
                    .map_err(|e| Error::io("set_len", path, size, e))?;
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
            return Err(Error::corrupt(
                "address",
                &self.path,
                offset,
                format!("{} bytes past the device end ({})", buf.len(), self.size),
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", &self.path, offset, e))
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
            return Err(Error::NoSpace(format!(
                "write of {} bytes at {offset} passes the end of {}",
                buf.len(),
                self.path.display()
            )));
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write", &self.path, offset, e))
    }

    /// Makes every completed write durable (fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, 0, e))
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
