//! Segment header and footer blocks: `SegmentHeader::decode`, `SegmentFooter::decode`.
//!
//! Modes (first byte): raw bytes, or the bytes framed with the right magic and CRC so the
//! postcard payload decoder is reached. Contracts: no panic; what decodes encodes to a
//! 4 KiB block that decodes to the same value (the payload's bytes themselves need not come
//! back: postcard accepts trailing bytes after a value); a footer's `hash()` is the BLAKE3
//! of that block, as the chain check assumes.

use odt_store::format::frame;
use odt_store::format::segment::{BLOCK, SegmentFooter, SegmentHeader};

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let b = match mode % 3 {
        0 => rest,
        1 => {
            framed = frame::encode(b"ODTSEGH1", rest);
            &framed[..]
        }
        _ => {
            framed = frame::encode(b"ODTSEGF1", rest);
            &framed[..]
        }
    };
    if let Ok(h) = SegmentHeader::decode(b) {
        let block = h.encode();
        assert_eq!(block.len(), BLOCK as usize);
        assert_eq!(SegmentHeader::decode(&block), Ok(h), "header round trip");
    }
    if let Ok(f) = SegmentFooter::decode(b) {
        let block = f.encode();
        assert_eq!(block.len(), BLOCK as usize);
        assert_eq!(f.hash(), *blake3::hash(&block).as_bytes());
        assert_eq!(SegmentFooter::decode(&block), Ok(f), "footer round trip");
    }
}
