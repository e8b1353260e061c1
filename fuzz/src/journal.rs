//! Journal batches: `BatchHeader::decode`, `BatchHeader::crc_ok`, `journal::open_batch`.
//!
//! Keys: `SessionKey::derive(cipher, &[0; 32], 1, Purpose::Journal)` for both ciphers.
//! `open_batch` is documented as taking a batch whose CRC was checked (it slices
//! `total_len()` bytes), so the targets call it only after `crc_ok`, as recovery does.
//! Modes (first byte):
//! - raw: the bytes as a batch. No panic; a header that decodes accounts for every one of its
//!   40 bytes (laid out again from its fields it gives the same bytes: no bit escapes both
//!   the checks and the associated data); `crc_ok` is false on a short batch; a batch that
//!   opens is exactly what `build_batch` makes of what it opened to.
//! - mutated: a batch made by `journal::build_batch` from fuzzer-chosen tails and ops
//!   (postcard-decoded from fuzzer bytes), damaged, its CRC optionally fixed: it must fail
//!   to decode, to pass `crc_ok` or to open unless the damage left its bytes as they were
//!   (bytes appended after it are not part of it); an unchanged one opens to what was built.
//! - authentic: fuzzer bytes as the plaintext of a batch sealed with the right key and CRC:
//!   hostile tails and ops behind a valid tag. `open_batch` may answer `Ok` or `Decode`,
//!   never `Auth` or a panic; what opens, rebuilt and opened again, gives the same values.
//! - checkpoint: the same for a checkpoint batch (magic "ODTC"): its items go through
//!   `open_batch_of` and then the namespace's `Rebuild` (head, inodes, extents, end), which
//!   must refuse what does not make a namespace without panicking; an ops batch is never
//!   opened as a checkpoint batch nor the reverse. This is the checkpoint decoder's target.

use libfuzzer_sys::arbitrary::Unstructured;
use odt_store::crypto::cipher::{Cipher, Purpose, SessionKey, TAG_LEN};
use odt_store::engine::namespace::Rebuild;
use odt_store::format::checkpoint::Item;
use odt_store::format::journal::{
    self, BATCH_HEADER, BatchError, BatchHeader, BatchKind, Op, Tails,
};

use crate::util::{cipher, damage, fix_crc, key, u32_at};

/// The batch header laid out from its fields as the module doc of `journal.rs` describes it
/// (reserved bytes 6..8 zero), CRC included.
pub fn layout(h: &BatchHeader) -> [u8; BATCH_HEADER] {
    let mut b = [0u8; BATCH_HEADER];
    b[..4].copy_from_slice(match h.kind {
        BatchKind::Ops => b"ODTJ",
        BatchKind::Checkpoint => b"ODTC",
    });
    b[4] = 1;
    b[5] = h.cipher.code();
    b[8..16].copy_from_slice(&h.seq.to_le_bytes());
    b[16..24].copy_from_slice(&h.session.to_le_bytes());
    b[24..32].copy_from_slice(&h.counter.to_le_bytes());
    b[32..36].copy_from_slice(&h.payload_len.to_le_bytes());
    b[36..40].copy_from_slice(&h.crc.to_le_bytes());
    b
}

fn fix_batch_crc(b: &mut [u8]) {
    if let Some(n) = u32_at(b, 32) {
        fix_crc(b, 36, BATCH_HEADER, n as usize);
    }
}

fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        journal::encode_op(op, &mut out);
    }
    out
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    match u.arbitrary::<u8>().unwrap_or(0) % 4 {
        0 => raw(u.take_rest()),
        1 => mutated(&mut u),
        2 => authentic(&mut u),
        _ => checkpoint(&mut u),
    }
}

type Opened = Result<(Tails, Vec<Op>), BatchError>;

/// Decodes, checks and opens with the key of the header's cipher.
fn open(b: &[u8]) -> Option<(BatchHeader, Opened)> {
    let h = BatchHeader::decode(b)?;
    if !h.crc_ok(b) {
        return None;
    }
    Some((
        h,
        journal::open_batch(key(h.cipher, Purpose::Journal), &h, b),
    ))
}

fn raw(b: &[u8]) {
    let Some(h) = BatchHeader::decode(b) else {
        return;
    };
    assert_eq!(
        layout(&h)[..],
        b[..BATCH_HEADER],
        "BatchHeader::decode ignored some header bits"
    );
    assert_eq!(h.total_len(), BATCH_HEADER + h.payload_len as usize);
    if b.len() < h.total_len() {
        assert!(!h.crc_ok(b), "crc_ok on a short batch");
        return;
    }
    if let Some((_, Ok((tails, ops)))) = open(b) {
        let again = journal::build_batch(
            key(h.cipher, Purpose::Journal),
            h.cipher,
            h.seq,
            h.session,
            h.counter,
            &tails,
            &encode_ops(&ops),
        );
        assert_eq!(
            again,
            &b[..h.total_len()],
            "an opened batch rebuilds to other bytes"
        );
    }
}

fn tails_and_ops(u: &mut Unstructured) -> (Tails, Vec<Op>) {
    let n = u.int_in_range(0..=512usize).unwrap_or(0);
    let raw = u.bytes(n).unwrap_or(&[]);
    let ops: Vec<Op> = postcard::from_bytes(raw).unwrap_or_else(|_| {
        vec![Op::Session {
            epoch: 1,
            session: 1,
        }]
    });
    let tails: Tails = (0..u.int_in_range(0..=4usize).unwrap_or(1))
        .map(|_| u.arbitrary().unwrap_or(0))
        .collect();
    (tails, ops)
}

fn mutated(u: &mut Unstructured) {
    let c = cipher(u);
    let k = key(c, Purpose::Journal);
    let (seq, session, counter) = (
        u.arbitrary().unwrap_or(1),
        u.arbitrary().unwrap_or(1),
        u.arbitrary().unwrap_or(0),
    );
    let (tails, ops) = tails_and_ops(u);
    let orig = journal::build_batch(k, c, seq, session, counter, &tails, &encode_ops(&ops));
    let (h0, r0) = open(&orig).expect("a batch fresh from build_batch decodes");
    assert_eq!(
        r0,
        Ok((tails.clone(), ops.clone())),
        "a fresh batch opens to what was built"
    );

    let mut m = orig.clone();
    damage(u, &mut m);
    if u.arbitrary::<bool>().unwrap_or(true) {
        fix_batch_crc(&mut m);
    }
    let got = open(&m);
    if m.starts_with(&orig) {
        let (h, r) = got.expect("an unchanged batch decodes");
        assert_eq!(h, h0);
        assert_eq!(r, Ok((tails, ops)));
    } else if let Some((h, r)) = got {
        assert!(
            r.is_err(),
            "a damaged batch opened: header {h:?}, first difference at byte {:?} of {}, {} bytes now",
            orig.iter().zip(&m).position(|(x, y)| x != y),
            orig.len(),
            m.len()
        );
    }
}

fn authentic(u: &mut Unstructured) {
    let c = if u.arbitrary::<bool>().unwrap_or(false) {
        Cipher::ChaCha20Poly1305
    } else {
        Cipher::Aes256Gcm
    };
    let k = key(c, Purpose::Journal);
    let (seq, session, counter): (u64, u64, u64) = (
        u.arbitrary().unwrap_or(1),
        u.arbitrary().unwrap_or(1),
        u.arbitrary().unwrap_or(0),
    );
    let (h, b) = seal_batch(u, BatchKind::Ops, c, k, seq, session, counter);
    let (h2, r) = open(&b).expect("an authentic batch decodes and passes its CRC");
    assert_eq!(h2, h);
    match r {
        Ok((tails, ops)) => {
            let again =
                journal::build_batch(k, c, seq, session, counter, &tails, &encode_ops(&ops));
            let (_, r2) = open(&again).expect("a rebuilt batch decodes");
            assert_eq!(
                r2,
                Ok((tails, ops)),
                "opened values do not survive a rebuild"
            );
        }
        Err(BatchError::Decode(_)) => {}
        Err(BatchError::Auth) => panic!("an authentic batch fails authentication"),
    }
}

/// A batch of `kind` whose payload is the fuzzer's remaining bytes, sealed with `k` and
/// framed with a right CRC: its header, and the whole batch.
fn seal_batch(
    u: &mut Unstructured,
    kind: BatchKind,
    c: Cipher,
    k: &SessionKey,
    seq: u64,
    session: u64,
    counter: u64,
) -> (BatchHeader, Vec<u8>) {
    let mut body = u.bytes(u.len()).unwrap_or(&[]).to_vec();
    let mut h = BatchHeader {
        kind,
        cipher: c,
        seq,
        session,
        counter,
        payload_len: (body.len() + TAG_LEN) as u32,
        crc: 0,
    };
    let aad = layout(&h);
    k.seal(counter, &aad[..36], &mut body);
    let mut b = aad.to_vec();
    b.extend_from_slice(&body);
    fix_batch_crc(&mut b);
    h.crc = u32_at(&b, 36).unwrap();
    (h, b)
}

/// A checkpoint batch sealed with the right key around fuzzer bytes, opened and rebuilt.
fn checkpoint(u: &mut Unstructured) {
    let c = cipher(u);
    let k = key(c, Purpose::Journal);
    let counter: u64 = u.arbitrary().unwrap_or(0);
    let (h, b) = seal_batch(u, BatchKind::Checkpoint, c, k, 0, 1, counter);
    let h2 = BatchHeader::decode(&b).expect("a checkpoint header decodes");
    assert_eq!(h2, h);
    assert!(h2.crc_ok(&b));
    assert!(
        matches!(journal::open_batch(k, &h2, &b), Err(BatchError::Decode(_))),
        "a checkpoint batch opened as ops"
    );
    let r: Result<(Tails, Vec<Item>), BatchError> =
        journal::open_batch_of(BatchKind::Checkpoint, k, &h2, &b);
    match r {
        Ok((_, items)) => {
            let mut it = items.into_iter();
            if let Some(Item::Head(head)) = it.next()
                && let Ok(mut rb) = Rebuild::new(&head)
            {
                for i in it {
                    if matches!(i, Item::End { .. }) {
                        break;
                    }
                    if rb.add(i).is_err() {
                        return;
                    }
                }
                if let Ok(ns) = rb.finish() {
                    // What rebuilds is a namespace: it goes out and back to itself.
                    let mut again = Rebuild::new(&ns.checkpoint_head(0, Vec::new())).unwrap();
                    ns.for_each_item(|i| again.add(i)).unwrap();
                    let back = again.finish().unwrap();
                    assert_eq!(back, ns, "a rebuilt namespace does not survive a rebuild");
                }
            }
        }
        Err(BatchError::Decode(_)) => {}
        Err(BatchError::Auth) => panic!("an authentic checkpoint batch fails authentication"),
    }
}
