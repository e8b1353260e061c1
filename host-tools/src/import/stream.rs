//! The bytes of a bundle, from the device to the uploads in one pass: a reader thread
//! reads each store file front to back (every record authenticated and its digest checked
//! by the store), hashes all of it with BLAKE3 and compares the root with the sealed one,
//! and hands the ranges that make up each uploaded file to the uploading thread through a
//! small bounded queue. No staging copy; memory is bounded by the queue.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use odt_store::{ReadScratch, Store};

use super::plan::{Bundle, Range, Source};

/// Bytes per message.
const READ_SIZE: usize = 4 << 20;
/// Messages in flight between the reader and the uploader.
pub const QUEUE: usize = 4;

/// What the reader sends.
pub enum Msg {
    /// The next bytes of the file being uploaded.
    Data(Vec<u8>),
    /// The end of one uploaded file.
    End,
    /// Every file read checked out against the seal.
    Verified,
    /// Reading or verifying failed (why): the upload must be abandoned.
    Failed(String),
}

/// One store file read front to back and hashed.
struct VerifiedFile<'a> {
    store: &'a Store,
    src: &'a Source,
    pos: u64,
    hasher: blake3::Hasher,
    scratch: ReadScratch,
    buf: Vec<u8>,
}

impl<'a> VerifiedFile<'a> {
    fn new(store: &'a Store, src: &'a Source) -> VerifiedFile<'a> {
        VerifiedFile {
            store,
            src,
            pos: 0,
            hasher: blake3::Hasher::new(),
            scratch: ReadScratch::default(),
            buf: vec![0; READ_SIZE],
        }
    }

    /// Reads, checks and hashes the next `n` (≤ READ_SIZE) bytes into `self.buf[..n]`.
    fn next(&mut self, n: usize) -> Result<usize, String> {
        let n = n.min(READ_SIZE).min((self.src.size - self.pos) as usize);
        if n == 0 {
            return Ok(0);
        }
        let got = self
            .store
            .read_into(self.src.id, self.pos, &mut self.buf[..n], &mut self.scratch)
            .map_err(|e| {
                format!(
                    "{}: cannot read: {}",
                    self.src.path,
                    odt_store::error::one_line(&e)
                )
            })?;
        if let Some(d) = got.damaged.first() {
            return Err(format!(
                "{} bytes {}..{} are damaged on the device: {}",
                self.src.path, d.start, d.end, d.why
            ));
        }
        if got.len != n {
            return Err(format!(
                "{} ends at byte {} but the seal recorded {} bytes",
                self.src.path,
                self.pos + got.len as u64,
                self.src.size
            ));
        }
        self.hasher.update(&self.buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    /// Reads (and hashes) up to `to` without keeping the bytes.
    fn skip_to(&mut self, to: u64) -> Result<(), String> {
        while self.pos < to {
            self.next((to - self.pos) as usize)?;
        }
        Ok(())
    }

    /// Reads the rest and compares the root with the sealed one.
    fn finish(mut self) -> Result<(), String> {
        self.skip_to(self.src.size)?;
        let root = *self.hasher.finalize().as_bytes();
        if root != self.src.root {
            return Err(format!(
                "{} hashes to BLAKE3 {} but the seal recorded {}",
                self.src.path,
                hex::encode(root),
                hex::encode(self.src.root)
            ));
        }
        Ok(())
    }
}

/// Reads the sources behind `uploads` (each a list of ranges, in upload order) and sends
/// their bytes, an `End` after each upload, then `Verified` or `Failed`. Stops quietly when
/// the receiver is gone.
pub fn produce(store: &Store, bundle: &Bundle, uploads: &[Vec<Range>], tx: SyncSender<Msg>) {
    let r = (|| -> Result<bool, String> {
        let mut open: Option<(usize, VerifiedFile)> = None;
        for ranges in uploads {
            for r in ranges {
                if open.as_ref().map(|(s, _)| *s) != Some(r.source) {
                    if let Some((_, f)) = open.take() {
                        f.finish()?;
                    }
                    open = Some((
                        r.source,
                        VerifiedFile::new(store, &bundle.sources[r.source]),
                    ));
                }
                let (_, f) = open.as_mut().expect("opened above");
                if f.pos > r.start {
                    return Err(format!(
                        "{}: its parts overlap or are out of order in the archive",
                        f.src.path
                    ));
                }
                f.skip_to(r.start)?;
                let end = r.start + r.len;
                while f.pos < end {
                    let n = f.next((end - f.pos) as usize)?;
                    if tx.send(Msg::Data(f.buf[..n].to_vec())).is_err() {
                        return Ok(false);
                    }
                }
            }
            if tx.send(Msg::End).is_err() {
                return Ok(false);
            }
        }
        if let Some((_, f)) = open.take() {
            f.finish()?;
        }
        Ok(true)
    })();
    let _ = match r {
        Ok(true) => tx.send(Msg::Verified),
        Ok(false) => Ok(()),
        Err(why) => tx.send(Msg::Failed(why)),
    };
}

/// The uploading side: one upload's bytes as a reader; a reader failure is kept for the
/// report (it says more than the broken upload does).
pub struct Upload<'a> {
    /// What the reader sends.
    pub rx: &'a Receiver<Msg>,
    /// The reader's failure, kept for the report.
    pub failure: &'a Mutex<Option<String>>,
    /// Bytes handed to the upload so far.
    pub sent: &'a AtomicU64,
    /// The bar those bytes advance.
    pub progress: &'a crate::progress::Progress,
    cur: Vec<u8>,
    at: usize,
    ended: bool,
}

impl<'a> Upload<'a> {
    /// An upload fed from `rx`.
    pub fn new(
        rx: &'a Receiver<Msg>,
        failure: &'a Mutex<Option<String>>,
        sent: &'a AtomicU64,
        progress: &'a crate::progress::Progress,
    ) -> Upload<'a> {
        Upload {
            rx,
            failure,
            sent,
            progress,
            cur: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    fn fail(&self, why: String) -> std::io::Error {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(why.clone());
        std::io::Error::other(why)
    }
}

impl Read for Upload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.at = 0;
                }
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Verified) => {
                    return Err(self.fail("the reader ended before this upload".into()));
                }
                Ok(Msg::Failed(why)) => return Err(self.fail(why)),
                Err(_) => return Err(self.fail("the device reader stopped".into())),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// A reader that counts the bytes it hands on (what an upload sent).
pub struct Counted<'a, R> {
    inner: R,
    n: &'a mut u64,
}

impl<'a, R> Counted<'a, R> {
    /// Counts what `inner` yields into `n`.
    pub fn new(inner: R, n: &'a mut u64) -> Counted<'a, R> {
        Counted { inner, n }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        *self.n += k as u64;
        Ok(k)
    }
}

/// After the last upload: whether the reader verified everything.
pub fn outcome(rx: &Receiver<Msg>) -> Result<(), String> {
    match rx.recv() {
        Ok(Msg::Verified) => Ok(()),
        Ok(Msg::Failed(why)) => Err(why),
        Ok(Msg::Data(_)) | Ok(Msg::End) => Err("the device held more than the uploads took".into()),
        Err(_) => Err("the device reader stopped".into()),
    }
}
