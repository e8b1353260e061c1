//! The metadata journal: every namespace change and every extent-map change, in order.
//!
//! The journal lives in its own region of device 0 as a run of batches, one per group
//! commit:
//! ```text
//! 0 magic "ODTJ"  4 version  5 cipher  6 reserved(2)  8 seq u64  16 session u64
//! 24 counter u64  32 payload len u32  36 crc32 over 0..36 and the payload  40 payload
//! ```
//! The payload is AEAD-encrypted (file names are customer data too) with bytes 0..36 as
//! associated data; its plaintext is the device tails after the batch followed by the ops.
//! The CRC separates a torn tail batch from a good one without the key.
//!
//! A checkpoint (see [`crate::format::checkpoint`]) is a run of batches of the same layout
//! under the magic "ODTC", whose plaintext carries checkpoint items instead of ops.

use serde::{Deserialize, Serialize};

use crate::crypto::cipher::{Cipher, SessionKey};
use crate::device::Device;
use crate::error::Result;
use crate::format::superblock::JOURNAL_START;

/// Bytes of a batch header.
pub const BATCH_HEADER: usize = 40;
const MAGIC: &[u8; 4] = b"ODTJ";
const CHECKPOINT_MAGIC: &[u8; 4] = b"ODTC";
const VERSION: u8 = 1;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Time {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nanos: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

/// Kind of a namespace entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// Where a record sits: device index, byte address, total bytes (header + ciphertext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loc {
    /// Device index.
    pub dev: u32,
    /// Byte address on the device.
    pub addr: u64,
    /// Bytes of header and ciphertext.
    pub len: u32,
}

/// Attributes a `SetAttr` changes (`None` = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncates or extends).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
}

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An appliance run began: its epoch (generation prefix) and session id.
    Session {
        /// Prefix of the generations this run writes.
        epoch: u32,
        /// Random id mixed into this run's keys.
        session: u64,
    },
    /// A new file, directory or symlink.
    Create {
        /// Its inode number.
        id: u64,
        /// The directory it is created in.
        parent: u64,
        /// Its name there.
        name: Vec<u8>,
        /// File, directory or symlink.
        kind: Kind,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Its times, and the parent's modification time.
        time: Time,
        /// Symlink target (empty otherwise).
        target: Vec<u8>,
    },
    /// A name removed (and its inode, if that was its last name).
    Remove {
        /// The directory.
        parent: u64,
        /// The name removed.
        name: Vec<u8>,
        /// The directory's new modification time.
        time: Time,
    },
    /// A name moved, replacing any target.
    Rename {
        /// The directory it leaves.
        from_parent: u64,
        /// Its name there.
        from_name: Vec<u8>,
        /// The directory it enters.
        to_parent: u64,
        /// Its new name.
        to_name: Vec<u8>,
        /// The directories' new modification time.
        time: Time,
    },
    /// Attributes changed (a size change truncates or extends).
    SetAttr {
        /// The entry.
        id: u64,
        /// What changes.
        change: AttrChange,
        /// Its new change time.
        time: Time,
    },
    /// File bytes `[offset, offset+len)` now come from a record (or are zeros if `loc` is
    /// `None`), written as generation `generation`; `hash` is BLAKE3 of the record's plaintext.
    Write {
        /// The file.
        id: u64,
        /// File offset of the first byte.
        offset: u64,
        /// Bytes written.
        len: u32,
        /// Write generation (newer overrides older).
        generation: u64,
        /// The record (`None`: zeros).
        loc: Option<Loc>,
        /// BLAKE3 of the record's plaintext.
        hash: [u8; 32],
        /// The file's new modification time.
        time: Time,
    },
    /// The store was sealed: what the seal signs, kept encrypted with the metadata.
    Seal {
        /// When.
        time: Time,
        /// Root over every file's manifest entry.
        manifest_root: [u8; 32],
        /// BLAKE3 of every file's content, by file id.
        roots: Vec<(u64, [u8; 32])>,
        /// The VM bundles found at the seal.
        bundles: Vec<SealedBundle>,
    },
    /// BLAKE3 chaining value of the whole chunk number `chunk` of file `id` (see
    /// [`crate::format::tree_hash`]), as of the writes journaled so far (lets the manifest
    /// hash a file without re-reading it).
    ChunkCv {
        /// The file.
        id: u64,
        /// Chunk number (file offset / `CHUNK`).
        chunk: u64,
        /// The chunk's chaining value.
        cv: [u8; 32],
    },
    /// Another name for an existing file or symlink (a hard link). Appended: the variants
    /// before it keep the numbers journals already use.
    Link {
        /// The file.
        id: u64,
        /// The directory the new name is in.
        parent: u64,
        /// The new name.
        name: Vec<u8>,
        /// The file's new change time, and the directory's modification time.
        time: Time,
    },
    /// An event of the custody log (see [`crate::trip::custody`]).
    Custody {
        /// The event.
        event: CustodyEvent,
    },
    /// The log of device `dev` continues in segment `segment` (never used, or freed by the
    /// cleaner), the `seq`-th segment opened on that device. Journaled with the first
    /// records placed in it.
    SegmentOpened {
        /// Device index.
        dev: u32,
        /// Segment number on the device.
        segment: u64,
        /// Its place in the device's write order.
        seq: u64,
    },
    /// The cleaner copied a live record, byte for byte, from `from` to `to` (its
    /// authentication binds file, offset and generation, not the address): the extents of
    /// file `id` served from `from` (the record starting at file offset `start`) are served
    /// from `to` from now on.
    Move {
        /// The file.
        id: u64,
        /// File offset of the record's first byte.
        start: u64,
        /// Where the record was.
        from: Loc,
        /// Where its copy is.
        to: Loc,
    },
    /// Segment `segment` of device `dev` holds no live record any more (the moves out of
    /// it are durable): it may be opened again.
    SegmentFreed {
        /// Device index.
        dev: u32,
        /// Segment number on the device.
        segment: u64,
    },
}

/// Custody events kept at most (so that the seal record, which lists them, fits its slot;
/// later ones are counted). The custody log: [`crate::trip::custody`].
pub const CUSTODY_MAX_EVENTS: usize = 500;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CustodyWhat {
    /// An appliance run began (the time is the start, journaled at its first unlock).
    Started,
    /// The unlock code was accepted (unlock or sign-in).
    CodeAccepted,
    /// A wrong unlock code was tried.
    WrongCode,
    /// A seal was asked for.
    SealRequested,
    /// The appliance stopped cleanly (its keys left memory: locked).
    Stopped,
}

impl CustodyWhat {
    /// Words for people.
    pub fn describe(self) -> &'static str {
        match self {
            CustodyWhat::Started => "appliance started",
            CustodyWhat::CodeAccepted => "unlock code accepted",
            CustodyWhat::WrongCode => "WRONG unlock code",
            CustodyWhat::SealRequested => "seal requested",
            CustodyWhat::Stopped => "appliance stopped (locked)",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyEvent {
    /// When it happened.
    pub time: Time,
    /// What happened.
    pub what: CustodyWhat,
    /// Source address of the request (empty for the appliance's own events).
    pub from: String,
}

/// The log as replayed from the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyLog {
    /// The events, oldest first, at most [`CUSTODY_MAX_EVENTS`].
    pub events: Vec<CustodyEvent>,
    /// Events that came after [`CUSTODY_MAX_EVENTS`] and are not listed.
    pub omitted: u64,
}

impl CustodyLog {
    /// Adds a journaled event (replay and live alike).
    pub fn apply(&mut self, e: &CustodyEvent) {
        if self.events.len() < CUSTODY_MAX_EVENTS {
            self.events.push(e.clone());
        } else {
            self.omitted += 1;
        }
    }

    /// Wrong codes listed.
    pub fn wrong_codes(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.what == CustodyWhat::WrongCode)
            .count()
    }
}

/// A VM bundle as recorded at the seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBundle {
    /// Path of the bundle's descriptor (`.ovf`/`.ova`) from the root.
    pub path: Vec<u8>,
    /// Files of the bundle.
    pub files: u32,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Problems the bundle check found (sealed anyway with `--force`).
    pub problems: Vec<String>,
}

/// A device's log tail after a batch: the next free byte (0 = nothing written yet).
pub type Tails = Vec<u64>;

/// What a batch carries (told by its magic, which the associated data covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Journaled ops ("ODTJ").
    Ops,
    /// Part of a checkpoint ("ODTC").
    Checkpoint,
}

impl BatchKind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            BatchKind::Ops => MAGIC,
            BatchKind::Checkpoint => CHECKPOINT_MAGIC,
        }
    }
}

/// Decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Ops or checkpoint.
    pub kind: BatchKind,
    /// Cipher of the batch.
    pub cipher: Cipher,
    /// Batch number, from 0, one more per batch.
    pub seq: u64,
    /// Session of the appliance run that wrote it.
    pub session: u64,
    /// Nonce counter within the session.
    pub counter: u64,
    /// Bytes of ciphertext after the header.
    pub payload_len: u32,
    /// CRC32 of the header's other bytes and the payload.
    pub crc: u32,
}

impl BatchHeader {
    fn encode_aad(&self) -> [u8; BATCH_HEADER] {
        let mut b = [0u8; BATCH_HEADER];
        b[..4].copy_from_slice(self.kind.magic());
        b[4] = VERSION;
        b[5] = self.cipher.code();
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.session.to_le_bytes());
        b[24..32].copy_from_slice(&self.counter.to_le_bytes());
        b[32..36].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parses a header; `None` if these bytes do not start a batch.
    pub fn decode(b: &[u8]) -> Option<BatchHeader> {
        // Reserved bytes 6..8 enter the AAD as zeros: anything else would go unauthenticated.
        if b.len() < BATCH_HEADER || b[4] != VERSION || b[6..8] != [0, 0] {
            return None;
        }
        let kind = match &b[..4] {
            m if m == MAGIC => BatchKind::Ops,
            m if m == CHECKPOINT_MAGIC => BatchKind::Checkpoint,
            _ => return None,
        };
        Some(BatchHeader {
            kind,
            cipher: Cipher::from_code(b[5])?,
            seq: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            session: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            counter: u64::from_le_bytes(b[24..32].try_into().unwrap()),
            payload_len: u32::from_le_bytes(b[32..36].try_into().unwrap()),
            crc: u32::from_le_bytes(b[36..40].try_into().unwrap()),
        })
    }

    /// Bytes of the whole batch.
    pub fn total_len(&self) -> usize {
        BATCH_HEADER + self.payload_len as usize
    }

    /// Checks the CRC of a complete batch.
    pub fn crc_ok(&self, batch: &[u8]) -> bool {
        if batch.len() < self.total_len() {
            return false;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&batch[..36]);
        h.update(&batch[BATCH_HEADER..self.total_len()]);
        h.finalize() == self.crc
    }
}

/// Puts the constant fields of a batch header (magic, version, reserved bytes; the cipher
/// byte if it is not a known cipher) back to what they must be, so that a header whose
/// constants were damaged still yields its length and sequence number for diagnosis.
pub fn restore_constants(head: &mut [u8; BATCH_HEADER], cipher: Cipher) {
    head[..4].copy_from_slice(MAGIC);
    head[4] = VERSION;
    if Cipher::from_code(head[5]).is_none() {
        head[5] = cipher.code();
    }
    head[6..8].fill(0);
}

/// Serialises one op for a batch's plaintext.
pub fn encode_op(op: &Op, out: &mut Vec<u8>) {
    let bytes = postcard::to_stdvec(op).expect("op serialises");
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Builds an encrypted batch from the tails and the already-encoded ops.
pub fn build_batch(
    key: &SessionKey,
    cipher: Cipher,
    seq: u64,
    session: u64,
    counter: u64,
    tails: &Tails,
    ops: &[u8],
) -> Vec<u8> {
    build_batch_of(
        BatchKind::Ops,
        key,
        cipher,
        seq,
        session,
        counter,
        tails,
        ops,
    )
}

/// Builds an encrypted batch of `kind` from the tails and the already-encoded entries
/// (ops, or checkpoint items), each a little-endian u32 length and its postcard bytes.
#[allow(clippy::too_many_arguments)]
pub fn build_batch_of(
    kind: BatchKind,
    key: &SessionKey,
    cipher: Cipher,
    seq: u64,
    session: u64,
    counter: u64,
    tails: &Tails,
    ops: &[u8],
) -> Vec<u8> {
    let mut payload = postcard::to_stdvec(tails).expect("tails serialise");
    let mut framed = Vec::with_capacity(4 + payload.len() + ops.len() + 16);
    framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    framed.append(&mut payload);
    framed.extend_from_slice(ops);
    let mut h = BatchHeader {
        kind,
        cipher,
        seq,
        session,
        counter,
        payload_len: (framed.len() + crate::crypto::cipher::TAG_LEN) as u32,
        crc: 0,
    };
    let aad = h.encode_aad();
    key.seal(counter, &aad[..36], &mut framed);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&aad[..36]);
    crc.update(&framed);
    h.crc = crc.finalize();
    let mut out = h.encode_aad().to_vec();
    out[36..40].copy_from_slice(&h.crc.to_le_bytes());
    out.extend_from_slice(&framed);
    out
}

/// Why a batch did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The tag does not verify: wrong key or tampered metadata.
    Auth,
    /// Authentic, but the plaintext does not decode (a format bug or version skew).
    Decode(String),
}

/// Decrypts a complete ops batch (CRC already checked) into its tails and ops.
pub fn open_batch(
    key: &SessionKey,
    h: &BatchHeader,
    batch: &[u8],
) -> Result<(Tails, Vec<Op>), BatchError> {
    open_batch_of(BatchKind::Ops, key, h, batch)
}

/// Decrypts a complete batch of `kind` (CRC already checked) into its tails and entries.
pub fn open_batch_of<T: serde::de::DeserializeOwned>(
    kind: BatchKind,
    key: &SessionKey,
    h: &BatchHeader,
    batch: &[u8],
) -> Result<(Tails, Vec<T>), BatchError> {
    if h.kind != kind {
        return Err(BatchError::Decode(format!(
            "a {:?} batch where a {kind:?} batch belongs",
            h.kind
        )));
    }
    let aad = h.encode_aad();
    let mut body = batch[BATCH_HEADER..h.total_len()].to_vec();
    key.open(h.counter, &aad[..36], &mut body)
        .map_err(|_| BatchError::Auth)?;
    decode_plain(&body)
}

fn decode_plain<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(Tails, Vec<T>), BatchError> {
    let bad = |w: &str| BatchError::Decode(w.to_string());
    let take_len = |b: &[u8], at: usize| -> Result<(usize, usize), BatchError> {
        let end = at
            .checked_add(4)
            .filter(|&e| e <= b.len())
            .ok_or(bad("short"))?;
        let n = u32::from_le_bytes(b[at..end].try_into().unwrap()) as usize;
        let stop = end
            .checked_add(n)
            .filter(|&e| e <= b.len())
            .ok_or(bad("length"))?;
        Ok((end, stop))
    };
    let (s, e) = take_len(body, 0)?;
    let tails: Tails = postcard::from_bytes(&body[s..e]).map_err(|e| bad(&e.to_string()))?;
    let mut ops = Vec::new();
    let mut at = e;
    while at < body.len() {
        let (s, e) = take_len(body, at)?;
        ops.push(postcard::from_bytes(&body[s..e]).map_err(|e| bad(&e.to_string()))?);
        at = e;
    }
    Ok((tails, ops))
}

/// BLAKE3 of the journal bytes `[start, end)` on device 0 (what the seal record pins:
/// the journal from its start, a checkpoint or byte 0, to its end).
pub fn hash(dev0: &Device, start: u64, end: u64) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut at = start;
    while at < end {
        let n = (end - at).min(8 << 20);
        h.update(&dev0.read_vec(JOURNAL_START + at, n as usize)?);
        at += n;
    }
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cipher::Purpose;

    #[test]
    fn batch_roundtrip_and_tamper() {
        let key = SessionKey::derive(Cipher::Aes256Gcm, &[3; 32], 1, Purpose::Journal);
        let mut ops = Vec::new();
        let op = Op::Create {
            id: 2,
            parent: 1,
            name: b"vm.ovf".to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            time: Time::now(),
            target: vec![],
        };
        encode_op(&op, &mut ops);
        let b = build_batch(&key, Cipher::Aes256Gcm, 7, 1, 99, &vec![5, 6], &ops);
        let h = BatchHeader::decode(&b).unwrap();
        assert!(h.crc_ok(&b));
        let (tails, got) = open_batch(&key, &h, &b).unwrap();
        assert_eq!(tails, vec![5, 6]);
        assert_eq!(got, vec![op]);
        assert!(
            !b.windows(6).any(|w| w == b"vm.ovf"),
            "file name leaked in clear"
        );
        let mut t = b.clone();
        t[60] ^= 1;
        assert!(!h.crc_ok(&t));
        assert_eq!(open_batch(&key, &h, &t), Err(BatchError::Auth));
    }

    #[test]
    fn the_custody_log_is_bounded() {
        let mut l = CustodyLog::default();
        let e = CustodyEvent {
            time: Time { secs: 1, nanos: 0 },
            what: CustodyWhat::WrongCode,
            from: "192.0.2.1".into(),
        };
        for _ in 0..CUSTODY_MAX_EVENTS + 3 {
            l.apply(&e);
        }
        assert_eq!(l.events.len(), CUSTODY_MAX_EVENTS);
        assert_eq!(l.omitted, 3);
        assert_eq!(l.wrong_codes(), CUSTODY_MAX_EVENTS);
        // The whole log fits a seal slot with room to spare.
        let worst = CustodyEvent {
            from: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".into(),
            ..e
        };
        let mut l = CustodyLog::default();
        for _ in 0..CUSTODY_MAX_EVENTS {
            l.apply(&worst);
        }
        assert!(postcard::to_stdvec(&l).unwrap().len() < 40 * 1024);
    }
}
