//! What the crash-test writer prints and the crash test reads back: one line per event,
//! flushed before the next operation starts, so every "ack" line the test sees was
//! acknowledged by the store before the process died.
//!
//! `ready` — the store is open; `begin T SEQ FILE OFFSET LEN` — thread T starts a write;
//! `ack T SEQ` — it returned.

use crate::data::XorShift;

/// Number of writer threads (each owns its files, so its acknowledgements are ordered).
pub const THREADS: u64 = 3;
/// Files per thread.
pub const FILES: u64 = 3;

/// Deterministic content of write `seq` of thread `t`: half the writes text-like
/// (compressible), half random.
pub fn data(t: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 64);
    if seq.is_multiple_of(2) {
        while v.len() < len {
            v.extend_from_slice(format!("t{t} seq{seq} line {} ok\n", v.len()).as_bytes());
        }
        v.truncate(len);
    } else {
        v.resize(len, 0);
        XorShift::new((t + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ seq).fill(&mut v);
    }
    v
}

/// Name of file `f` of thread `t`.
pub fn file_name(t: u64, f: u64) -> String {
    format!("t{t}-f{f}.bin")
}

/// The write thread `t` does as its `seq`-th: (file, offset, len). Mixes appends,
/// out-of-order pieces, overwrites, small and large sizes.
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

/// One line of the writer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The store is open and the threads start.
    Ready,
    /// Thread `t` begins its write `seq`: `len` bytes at `offset` of its file `file`.
    Begin {
        /// Thread.
        t: u64,
        /// Its write number.
        seq: u64,
        /// Which of its files.
        file: u64,
        /// Where.
        offset: u64,
        /// How much.
        len: usize,
    },
    /// Thread `t`'s write `seq` returned (it is durable).
    Ack {
        /// Thread.
        t: u64,
        /// Its write number.
        seq: u64,
    },
}

impl Event {
    /// The line the writer prints (with its newline).
    pub fn line(&self) -> String {
        match self {
            Event::Ready => "ready\n".into(),
            Event::Begin {
                t,
                seq,
                file,
                offset,
                len,
            } => format!("begin {t} {seq} {file} {offset} {len}\n"),
            Event::Ack { t, seq } => format!("ack {t} {seq}\n"),
        }
    }

    /// Parses a line (without its newline); `None` for a line cut short by the kill.
    pub fn parse(line: &str) -> Option<Event> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| w.get(i)?.parse::<u64>().ok();
        match *w.first()? {
            "ready" if w.len() == 1 => Some(Event::Ready),
            "begin" if w.len() == 6 => Some(Event::Begin {
                t: n(1)?,
                seq: n(2)?,
                file: n(3)?,
                offset: n(4)?,
                len: n(5)? as usize,
            }),
            "ack" if w.len() == 3 => Some(Event::Ack {
                t: n(1)?,
                seq: n(2)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_torn_lines_are_refused() {
        for e in [
            Event::Ready,
            Event::Begin {
                t: 2,
                seq: 77,
                file: 1,
                offset: 4096,
                len: 1 << 20,
            },
            Event::Ack { t: 0, seq: 5 },
        ] {
            assert_eq!(Event::parse(e.line().trim_end()), Some(e));
        }
        assert_eq!(Event::parse("begin 2 77 1 40"), None);
        assert_eq!(Event::parse("ack 1"), None);
        assert_eq!(data(1, 3, 5000), data(1, 3, 5000));
        assert_ne!(data(1, 3, 5000), data(1, 5, 5000));
        assert_eq!(data(0, 2, 100).len(), 100);
        let (file, _, len) = plan(2, 9);
        assert!(file < FILES && len > 0);
    }
}
