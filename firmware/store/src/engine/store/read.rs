//! File content out: records are read (adjacent ones with one `pread`), authenticated,
//! checked against the extent that names them, decompressed, and served; a damaged record
//! is reported with the file and byte range it covers.

use std::sync::Arc;

use super::{Store, lock};
use crate::crypto::cipher::Purpose;
use crate::device::Device;
use crate::engine::namespace::Extent;
use crate::error::{Error, ErrorKind, Result, StoreError, one_line};
use crate::format::journal::Loc;
use crate::format::record;
use crate::format::tree_hash::record_digest;

/// Records of decrypted plaintext kept for reads.
const READ_CACHE: usize = 16;

/// A file whose bytes `start..end` are damaged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// Path of the file from the root.
    pub path: String,
    /// First damaged byte.
    pub start: u64,
    /// End of the damaged range (exclusive).
    pub end: u64,
    /// What is wrong with the record behind it.
    pub why: String,
}

/// Largest run of adjacent records [`Store::read_into`] reads with one `pread`.
const BULK_READ_MAX: usize = 16 << 20;

/// Buffers [`Store::read_into`] reuses from call to call (one per reading thread).
#[derive(Debug, Default)]
pub struct ReadScratch {
    /// Record bytes as read from the device (decrypted in place).
    rec: Vec<u8>,
    /// The plaintext of a record only part of which was asked for.
    plain: Vec<u8>,
}

/// What [`Store::read_into`] filled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkRead {
    /// Bytes of the file in the range asked for (fewer than asked at the end of the file).
    pub len: usize,
    /// Ranges of this read whose records are damaged (zeroed in the buffer), by file offset.
    pub damaged: Vec<Damage>,
}

impl Store {
    /// Reads up to `len` bytes at `offset`; returns the bytes and whether the end of the file
    /// was reached. Every record is authenticated and its digest checked.
    pub fn read(&self, id: u64, offset: u64, len: u32) -> Result<(Vec<u8>, bool)> {
        self.read_inner(id, offset, len)
            .map_err(|e| self.naming_file(id, offset, e))
    }

    /// Names the file in a device or format error met while reading it (the other errors
    /// name it already or concern the request), so that the seal, verify and ingest say
    /// which file they could not read.
    pub(crate) fn naming_file(&self, id: u64, offset: u64, e: Error) -> Error {
        match e.kind() {
            ErrorKind::Device(_) | ErrorKind::Format(_) => StoreError::Unreadable {
                file: self.path(id),
                offset,
                source: e,
            }
            .into(),
            _ => e,
        }
    }

    fn read_inner(&self, id: u64, offset: u64, len: u32) -> Result<(Vec<u8>, bool)> {
        // Until the records are read, the cleaner may not reuse where they were.
        let _pin = self.pins.pin();
        let (size, pieces) = {
            let core = lock(&self.core);
            let i = core.ns.file(id)?;
            let end = (offset.saturating_add(len as u64)).min(i.size);
            if offset >= end {
                return Ok((Vec::new(), true));
            }
            (i.size, i.pieces(offset, end - offset))
        };
        let total: u64 = pieces.iter().map(|p| p.1).sum();
        let mut out = Vec::with_capacity(total as usize);
        for (at, n, ext) in pieces {
            match ext {
                None => out.resize(out.len() + n as usize, 0),
                Some(e) => {
                    let plain = self.record_plain(id, &e)?;
                    let s = (at - e.rec.start) as usize;
                    out.extend_from_slice(&plain[s..s + n as usize]);
                }
            }
        }
        let eof = offset + out.len() as u64 >= size;
        Ok((out, eof))
    }

    /// Decrypted, checked plaintext of the record behind an extent (cached).
    pub(crate) fn record_plain(&self, id: u64, e: &Extent) -> Result<Arc<Vec<u8>>> {
        let key = (e.rec.loc.dev, e.rec.loc.addr);
        if let Some((_, p)) = lock(&self.cache).iter().find(|(k, _)| *k == key) {
            return Ok(p.clone());
        }
        let loc = e.rec.loc;
        let queued = lock(&self.core)
            .logs
            .get(loc.dev as usize)
            .and_then(|l| l.queued(loc.addr, loc.len as usize));
        let damaged = |why: String| StoreError::Damaged {
            file: self.path(id),
            start: e.rec.start,
            end: e.rec.start + e.rec.plain_len as u64,
            why,
        };
        let mut bytes = match queued {
            Some(b) => b,
            None => self
                .device_of(loc)
                .and_then(|dev| {
                    dev.read_vec(loc.addr, loc.len as usize)
                        .map_err(|err| format!("cannot read the record: {}", one_line(&err)))
                })
                .map_err(damaged)?,
        };
        let mut plain = vec![0u8; e.rec.plain_len as usize];
        self.open_record(id, e, &mut bytes, &mut plain)
            .map_err(damaged)?;
        let plain = Arc::new(plain);
        let mut cache = lock(&self.cache);
        if cache.len() >= READ_CACHE {
            cache.remove(0);
        }
        cache.push((key, plain.clone()));
        Ok(plain)
    }

    fn device_of(&self, loc: Loc) -> std::result::Result<&Device, String> {
        self.devs
            .get(loc.dev as usize)
            .ok_or_else(|| format!("record on device {} which is not attached", loc.dev + 1))
    }

    /// Opens the record behind `e` (its bytes in `bytes`, decrypted in place) into `out`
    /// (`e.rec.plain_len` bytes) and checks that it is this extent's record: binding,
    /// length and plaintext digest. The error is the reason, for [`StoreError::Damaged`].
    pub(super) fn open_record(
        &self,
        id: u64,
        e: &Extent,
        bytes: &mut [u8],
        out: &mut [u8],
    ) -> std::result::Result<(), String> {
        let loc = e.rec.loc;
        let at = |er: record::RecordError| {
            format!("record at device {} byte {}: {er}", loc.dev + 1, loc.addr)
        };
        let h = record::Header::decode(bytes).map_err(at)?;
        if h.plain_len != e.rec.plain_len {
            return Err("plaintext digest mismatch".into());
        }
        let rkey = if h.session == self.session {
            None
        } else {
            Some(self.key_for_session(h.session, Purpose::Record))
        };
        let h = record::open_into(rkey.as_deref().unwrap_or(&self.record_key), bytes, out)
            .map_err(at)?;
        if h.file_id != id || h.offset != e.rec.start || h.generation != e.rec.generation {
            return Err(format!(
                "record at device {} byte {} belongs to file {} offset {} generation {:#x}, \
                 not to this file's offset {} generation {:#x} (swapped or replayed)",
                loc.dev + 1,
                loc.addr,
                h.file_id,
                h.offset,
                h.generation,
                e.rec.start,
                e.rec.generation
            ));
        }
        if record_digest(h.offset, out) != e.rec.hash {
            return Err("plaintext digest mismatch".into());
        }
        Ok(())
    }

    /// Reads file `id` from `offset` into `buf` in bulk: every record is authenticated and
    /// its digest checked as by [`Store::read`], but records adjacent on a device are read
    /// with one large `pread` and whole records are decrypted and decompressed straight into
    /// `buf` (no intermediate copies, no read cache). Holes read as zeros. A damaged record
    /// does not stop the read: its bytes in `buf` are zeroed and it is listed, with the
    /// file and the range of this read it covers. Bytes past the end of the file are left
    /// untouched; [`BulkRead::len`] says how many were filled.
    pub fn read_into(
        &self,
        id: u64,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut ReadScratch,
    ) -> Result<BulkRead> {
        self.read_into_inner(id, offset, buf, scratch)
            .map_err(|e| self.naming_file(id, offset, e))
    }

    fn read_into_inner(
        &self,
        id: u64,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut ReadScratch,
    ) -> Result<BulkRead> {
        // Until the records are read, the cleaner may not reuse where they were.
        let _pin = self.pins.pin();
        let (pieces, queued) = {
            let core = lock(&self.core);
            let i = core.ns.file(id)?;
            let end = offset.saturating_add(buf.len() as u64).min(i.size);
            if offset >= end {
                return Ok(BulkRead::default());
            }
            let pieces = i.pieces(offset, end - offset);
            // Records still queued for the device (a writable store) are served from memory.
            let queued: Vec<Option<Vec<u8>>> = pieces
                .iter()
                .map(|(_, _, e)| {
                    e.and_then(|e| {
                        core.logs
                            .get(e.rec.loc.dev as usize)
                            .and_then(|l| l.queued(e.rec.loc.addr, e.rec.loc.len as usize))
                    })
                })
                .collect();
            (pieces, queued)
        };
        let mut out = BulkRead {
            len: pieces.iter().map(|p| p.1).sum::<u64>() as usize,
            damaged: Vec::new(),
        };
        let mut k = 0;
        while k < pieces.len() {
            let (at, n, ext) = pieces[k];
            let s = (at - offset) as usize;
            let Some(e) = ext else {
                buf[s..s + n as usize].fill(0);
                k += 1;
                continue;
            };
            // A run of records that follow each other on one device: one read.
            let mut stop = k + 1;
            let mut run_len = e.rec.loc.len as usize;
            if queued[k].is_none() {
                while let Some((_, _, Some(next))) = pieces.get(stop) {
                    let prev = pieces[stop - 1].2.expect("in a run").rec.loc;
                    if queued[stop].is_some()
                        || next.rec.loc.dev != prev.dev
                        || next.rec.loc.addr != prev.addr + prev.len as u64
                        || run_len + next.rec.loc.len as usize > BULK_READ_MAX
                    {
                        break;
                    }
                    run_len += next.rec.loc.len as usize;
                    stop += 1;
                }
            }
            let fetched: std::result::Result<(), String> = match &queued[k] {
                Some(b) => {
                    scratch.rec.clear();
                    scratch.rec.extend_from_slice(b);
                    Ok(())
                }
                None => {
                    scratch.rec.resize(run_len, 0);
                    self.device_of(e.rec.loc).and_then(|dev| {
                        dev.read_at(&mut scratch.rec[..run_len], e.rec.loc.addr)
                            .map_err(|err| format!("cannot read the record: {}", one_line(&err)))
                    })
                }
            };
            let mut rec_at = 0usize;
            for (at, n, e) in &pieces[k..stop] {
                let e = e.expect("in a run");
                let (s, n) = ((at - offset) as usize, *n as usize);
                let rec = &mut scratch.rec[rec_at..rec_at + e.rec.loc.len as usize];
                rec_at += e.rec.loc.len as usize;
                let whole = *at == e.rec.start && n == e.rec.plain_len as usize;
                let opened = fetched.clone().and_then(|()| {
                    if whole {
                        self.open_record(id, &e, rec, &mut buf[s..s + n])
                    } else {
                        // Part of a record: open it aside, keep the part asked for.
                        scratch.plain.resize(e.rec.plain_len as usize, 0);
                        self.open_record(id, &e, rec, &mut scratch.plain)?;
                        let from = (at - e.rec.start) as usize;
                        buf[s..s + n].copy_from_slice(&scratch.plain[from..from + n]);
                        Ok(())
                    }
                });
                if let Err(why) = opened {
                    buf[s..s + n].fill(0);
                    let (start, end) = (*at, at + n as u64);
                    match out.damaged.last_mut() {
                        Some(d) if d.end == start && d.why == why => d.end = end,
                        _ => out.damaged.push(Damage {
                            path: self.path(id),
                            start,
                            end,
                            why,
                        }),
                    }
                }
            }
            k = stop;
        }
        Ok(out)
    }
}
