//! Integrity checks.
//!
//! [`check_log`] needs no key and reads no plaintext: superblock copies, segment headers,
//! the footer chain and every record's CRC. [`check_files`] needs the data key: it
//! authenticates and hashes every live record and reports each damaged file with the byte
//! range that cannot be served.

use std::path::PathBuf;

use crate::device::Device;
use crate::engine::{Damage, Store};
use crate::error::{ErrorKind, Result, StoreError, one_line};
use crate::format::is_zero;
use crate::format::record;
use crate::format::segment::{self, SegmentFooter, SegmentHeader};
use crate::format::superblock::Superblock;

/// A problem found by the keyless pass: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The device image or block device.
    pub device: PathBuf,
    /// Byte offset on that device.
    pub offset: u64,
    /// What is wrong there, as one sentence.
    pub what: String,
}

/// What the keyless pass saw of one device's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Closed segments whose hash and chain link verified.
    pub closed_segments: u64,
    /// Records whose CRC verified.
    pub records: u64,
    /// End of the last good record (the log's tail as far as the device shows).
    pub tail: u64,
    /// Hash of the last footer (the chain head).
    pub chain_head: [u8; 32],
    /// Bytes read.
    pub bytes_read: u64,
}

/// Walks records from `from` to `to` in a segment image; returns (records, end of last good,
/// problems).
fn walk_records(
    dev: &Device,
    base: u64,
    img: &[u8],
    from: usize,
    to: usize,
) -> (u64, usize, Vec<Problem>) {
    let mut at = from;
    let mut n = 0;
    let mut problems = Vec::new();
    while at + record::HEADER_LEN <= to {
        let h = match record::Header::decode(&img[at..]) {
            Ok(h) if at + h.total_len() <= to => h,
            Ok(_) | Err(_) => break,
        };
        if h.check_crc(&img[at..]).is_err() {
            problems.push(Problem {
                device: dev.path().to_path_buf(),
                offset: base + at as u64,
                what: format!(
                    "record of {} bytes fails its checksum (bit rot or tampering)",
                    h.total_len()
                ),
            });
        } else {
            n += 1;
        }
        at += h.total_len();
    }
    (n, at, problems)
}

/// Keyless check of one device: superblock copies, segment headers and footers, the footer
/// chain, record CRCs. `expected_tail`, when known (from the seal), must be where the log
/// ends. `progress` is called with bytes read.
pub fn check_log(
    dev: &Device,
    sb: &Superblock,
    expected_tail: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> (LogSummary, Vec<Problem>) {
    let mut problems = Vec::new();
    let problem = |offset: u64, what: String| Problem {
        device: dev.path().to_path_buf(),
        offset,
        what,
    };
    let mut sum = LogSummary::default();
    // Both superblock copies must be intact and equal.
    let img = sb.encode();
    for at in sb.copies() {
        match dev.read_vec(at, img.len()) {
            Ok(b) if b == img => {}
            Ok(_) => problems.push(problem(at, "superblock copy differs or is damaged".into())),
            Err(e) => problems.push(problem(
                at,
                format!("superblock copy unreadable: {}", one_line(&e)),
            )),
        }
    }
    // The segments holding the log, in write order: a zero header is a segment never used
    // or freed by the cleaner (its header and footer are zeroed before it is freed).
    let mut order: Vec<(u64, u64)> = Vec::new();
    for seg in 0..sb.segment_count() {
        let start = sb.segment_start(seg);
        let hdr = match dev.read_vec(start, segment::BLOCK as usize) {
            Ok(h) => h,
            Err(e) => {
                problems.push(problem(
                    start,
                    format!("segment {seg} unreadable: {}", one_line(&e)),
                ));
                continue;
            }
        };
        sum.bytes_read += hdr.len() as u64;
        if is_zero(&hdr) {
            continue;
        }
        match SegmentHeader::decode(&hdr) {
            Ok(h)
                if h.set_id == sb.set_id
                    && h.device_index == sb.device_index
                    && h.segment == seg =>
            {
                order.push((h.seq, seg))
            }
            Ok(h) => problems.push(problem(
                start,
                format!(
                    "segment {seg} header belongs elsewhere (set {:x} device {} segment {})",
                    h.set_id,
                    h.device_index + 1,
                    h.segment
                ),
            )),
            Err(why) => problems.push(problem(start, format!("segment {seg}: {why}"))),
        }
    }
    order.sort_unstable();
    for w in order.windows(2) {
        if w[0].0 == w[1].0 {
            problems.push(problem(
                sb.segment_start(w[1].1),
                format!(
                    "segments {} and {} claim the same place in the write order",
                    w[0].1, w[1].1
                ),
            ));
        }
    }
    let mut prev = [0u8; 32];
    let mut prev_seq: Option<u64> = None;
    for (k, &(seq, seg)) in order.iter().enumerate() {
        let start = sb.segment_start(seg);
        let footer_at = sb.footer_start(seg);
        let footer = dev
            .read_vec(footer_at, segment::BLOCK as usize)
            .ok()
            .and_then(|b| (!is_zero(&b)).then(|| SegmentFooter::decode(&b)));
        let used_guess = match &footer {
            Some(Ok(f)) => f.used.min(footer_at - start),
            _ => footer_at - start,
        };
        let body = match dev.read_vec(start, used_guess as usize) {
            Ok(b) => b,
            Err(e) => {
                problems.push(problem(
                    start,
                    format!("segment {seg} unreadable: {}", one_line(&e)),
                ));
                break;
            }
        };
        sum.bytes_read += body.len() as u64;
        progress(body.len() as u64);
        let (n, end, mut bad) =
            walk_records(dev, start, &body, segment::BLOCK as usize, body.len());
        sum.records += n;
        problems.append(&mut bad);
        match footer {
            Some(Ok(f)) => {
                if f.segment != seg || f.device_index != sb.device_index || f.seq != seq {
                    problems.push(problem(
                        footer_at,
                        format!("segment {seg} footer belongs elsewhere"),
                    ));
                }
                // The link is checked between segments written one after the other; where
                // the cleaner freed the segments in between, the one before is gone.
                let follows = match prev_seq {
                    None => seq == 0,
                    Some(p) => p + 1 == seq,
                };
                if follows && f.prev_footer != prev {
                    problems.push(problem(
                        footer_at,
                        format!(
                            "segment {seg} does not follow the segment written before it \
                             (chain broken or reordered)"
                        ),
                    ));
                }
                if *blake3::hash(&body).as_bytes() != f.content_hash {
                    problems.push(problem(
                        start,
                        format!("segment {seg} content hash mismatch"),
                    ));
                }
                if end as u64 != f.used {
                    problems.push(problem(
                        start + end as u64,
                        format!(
                            "segment {seg}: records end at {end} but the footer says {}",
                            f.used
                        ),
                    ));
                }
                prev = f.hash();
                prev_seq = Some(seq);
                sum.closed_segments += 1;
                sum.tail = start + f.used;
            }
            Some(Err(why)) => {
                problems.push(problem(footer_at, format!("segment {seg}: {why}")));
                sum.tail = start + end as u64;
                break;
            }
            None => {
                // The open segment: the log ends at the last whole record.
                sum.tail = start + end as u64;
                let rest = &body[end..];
                if !is_zero(&rest[..rest.len().min(64 * 1024)]) {
                    problems.push(problem(
                        start + end as u64,
                        format!("segment {seg}: unreadable bytes after the last whole record"),
                    ));
                }
                if k + 1 < order.len() {
                    problems.push(problem(
                        footer_at,
                        format!(
                            "segment {seg} has no footer but {} segment(s) were written after it \
                             (footer removed or log altered)",
                            order.len() - k - 1
                        ),
                    ));
                }
                break;
            }
        }
    }
    sum.chain_head = prev;
    if let Some(t) = expected_tail
        && t != sum.tail
        && !(t == 0 && sum.tail == 0)
    {
        problems.push(problem(
            sum.tail,
            format!("the log ends at byte {} but the seal says {t}", sum.tail),
        ));
    }
    (sum, problems)
}

/// Keyed check of every file: authenticates and hashes every live record. `progress` is
/// called with plaintext bytes checked.
pub fn check_files(store: &Store, progress: &mut dyn FnMut(u64)) -> Result<Vec<Damage>> {
    let view = store.view();
    let mut out: Vec<Damage> = Vec::new();
    for f in view.files() {
        let id = f.id();
        for (off, e) in f.extents() {
            match store.record_plain(id, &e) {
                Ok(_) => progress(e.len),
                Err(err) => match err.kind() {
                    ErrorKind::Store(StoreError::Damaged { file, why, .. }) => {
                        let (start, end) = (off, off + e.len);
                        match out.last_mut() {
                            Some(d) if d.path == *file && d.end == start && d.why == *why => {
                                d.end = end
                            }
                            _ => out.push(Damage {
                                path: file.clone(),
                                start,
                                end,
                                why: why.clone(),
                            }),
                        }
                    }
                    _ => return Err(store.naming_file(id, off, err)),
                },
            }
        }
    }
    Ok(out)
}
