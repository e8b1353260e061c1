//! What the crash-test writer prints and the test reads back: one line per event, flushed
//! before the next operation starts, so every "ack" line the test sees was acknowledged by
//! the store before the process died.
//!
//! `begin T SEQ FILE OFFSET LEN` — thread T starts a write; `ack T SEQ` — it returned.

/// Number of writer threads (each owns its files, so its acknowledgements are ordered).
pub const THREADS: u64 = 3;
/// Files per thread.
pub const FILES: u64 = 3;

/// Deterministic content of write `seq` of thread `t`.
pub fn data(t: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut x =
        (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let mut v = Vec::with_capacity(len + 8);
    // Half the writes are text-like (compressible), half random.
    if seq.is_multiple_of(2) {
        while v.len() < len {
            v.extend_from_slice(format!("t{t} seq{seq} line {} ok\n", v.len()).as_bytes());
        }
    } else {
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// Name of file `f` of thread `t`.
pub fn file_name(t: u64, f: u64) -> String {
    format!("t{t}-f{f}.bin")
}

/// The write thread `t` does as its `seq`-th: (file, offset, len). Mixes appends, out-of-order
/// pieces, overwrites, small and large sizes.
pub fn plan(t: u64, seq: u64) -> (u64, u64, usize) {
    let h = (t * 1_000_003 + seq).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let file = h % FILES;
    let mib = 1u64 << 20;
    let offset = match (h >> 8) % 4 {
        0 => ((h >> 16) % 6) * mib,
        1 => ((h >> 16) % 1500) * 4096,
        2 => (h >> 16) % (5 * mib),
        _ => ((h >> 16) % 3) * mib + mib / 2,
    };
    let len = match (h >> 40) % 3 {
        0 => mib as usize,
        1 => 4096 * (1 + ((h >> 44) % 32) as usize),
        _ => 1 + ((h >> 44) % (2 * mib)) as usize,
    };
    (file, offset, len)
}
