//! Deterministic test data: the same seed gives the same bytes, so a test can regenerate
//! what it wrote instead of keeping it.

/// A xorshift64 generator: fast, deterministic, and its output does not compress.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value; 0 works too).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `len` pseudo-random bytes for `seed` (incompressible; cheap to regenerate for checks).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_repeat_by_seed_and_differ_across_seeds() {
        assert_eq!(pattern(1, 1000), pattern(1, 1000));
        assert_ne!(pattern(1, 1000), pattern(2, 1000));
        // A prefix of a longer pattern is the shorter pattern.
        assert_eq!(pattern(7, 1003)[..13], pattern(7, 13)[..]);
        let zeros = pattern(0, 4096).iter().filter(|&&b| b == 0).count();
        assert!(zeros < 64, "{zeros} zero bytes in 4 KiB");
    }
}
