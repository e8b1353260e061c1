//! `frame::decode(magic, bytes)`: CRC-framed blobs.
//!
//! Input: 8 bytes of magic, then the buffer. Contracts:
//! - no panic, whatever the buffer;
//! - a payload that decodes is the slice the length field names, and framing it again under
//!   the same magic gives back exactly the bytes it was decoded from;
//! - a wrong magic is `Magic`, whatever else the buffer holds;
//! - any buffer, framed with `encode`, decodes to itself (also with junk appended), and
//!   every truncation of that frame is refused.

use odt_store::format::frame::{self, FrameError, OVERHEAD};

pub fn run(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let magic: [u8; 8] = data[..8].try_into().unwrap();
    let buf = &data[8..];

    match frame::decode(&magic, buf) {
        Ok(p) => {
            let len = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
            assert_eq!(p.len(), len, "payload length differs from the length field");
            assert_eq!(p, &buf[12..12 + len], "payload is not the framed slice");
            let again = frame::encode(&magic, p);
            assert_eq!(
                again,
                &buf[..OVERHEAD + len],
                "a decoded frame re-encodes to other bytes"
            );
        }
        Err(FrameError::Magic) => {
            assert!(
                buf.len() < OVERHEAD || buf[..8] != magic,
                "Magic error for a buffer that starts with the magic"
            );
        }
        Err(FrameError::Length) | Err(FrameError::Crc) => {
            assert!(buf.len() >= OVERHEAD && buf[..8] == magic);
        }
    }

    // Another magic does not match (unless the buffer starts with that one).
    let mut other = magic;
    other[0] ^= 0x80;
    if buf.get(..8) != Some(&other[..]) {
        assert_eq!(frame::decode(&other, buf), Err(FrameError::Magic));
    }

    // Round trip of the buffer as a payload.
    let f = frame::encode(&magic, buf);
    assert_eq!(f.len(), buf.len() + OVERHEAD);
    assert_eq!(frame::decode(&magic, &f), Ok(buf), "round trip");
    let mut longer = f.clone();
    longer.extend_from_slice(&data[..data.len().min(8)]);
    assert_eq!(
        frame::decode(&magic, &longer),
        Ok(buf),
        "trailing bytes change the payload"
    );
    // Every truncation (checked at a few cut points to keep runs fast).
    for cut in [0, 1, 8, 12, f.len() / 2, f.len() - 4, f.len() - 1] {
        if cut < f.len() {
            assert!(
                frame::decode(&magic, &f[..cut]).is_err(),
                "truncated to {cut} decodes"
            );
        }
    }
}
