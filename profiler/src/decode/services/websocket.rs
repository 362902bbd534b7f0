//! WebSocket frames (RFC 6455 §5.2) after an HTTP upgrade: the frame header, and the payload
//! unmasked when the client masked it, so that JSON-RPC inside can be read.

/// Largest frame held whole to read its payload; larger frames are counted unread.
pub const MAX_HELD_FRAME: usize = 1 << 20;

/// Opcodes of data frames; 8 and above are control frames (close, ping, pong).
const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// A frame header as read from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header, mask key included.
    pub len: usize,
    pub payload_len: u64,
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
}

impl Header {
    /// Whether this frame is a whole text or binary message.
    pub fn is_whole_message(&self) -> bool {
        self.fin && matches!(self.opcode, TEXT | BINARY)
    }

    /// Whether this is a close, ping or pong.
    pub fn is_control(&self) -> bool {
        self.opcode >= 8
    }
}

/// The header at the start of `buf`, or `None` if more bytes are needed.
pub fn header(buf: &[u8]) -> Option<Header> {
    let (&b0, rest) = buf.split_first()?;
    let &b1 = rest.first()?;
    let (payload_len, mut len) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let ext: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(ext), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = buf.get(len..len + 4)?.try_into().ok()?;
        len += 4;
        Some(key)
    } else {
        None
    };
    Some(Header {
        len,
        payload_len,
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask,
    })
}

/// Unmasks a payload in place (masking is its own inverse).
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_all_three_lengths_and_masks() {
        let h = header(&[0x81, 0x85, 1, 2, 3, 4]).expect("masked text");
        assert_eq!((h.len, h.payload_len, h.mask), (6, 5, Some([1, 2, 3, 4])));
        assert!(h.is_whole_message());
        let h = header(&[0x82, 126, 1, 0]).expect("16-bit length");
        assert_eq!((h.len, h.payload_len, h.mask), (4, 256, None));
        let mut long = vec![0x89, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        let h = header(&long).expect("64-bit length");
        assert_eq!((h.len, h.payload_len), (10, 70_000));
        assert!(h.is_control());
        assert_eq!(header(&[0x81, 0xfe, 1]), None);
    }

    #[test]
    fn unmasks_the_rfc_example() {
        // RFC 6455 §5.7: a masked text frame of "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = header(&frame).expect("header");
        assert_eq!((h.len, h.payload_len), (6, 5));
        let mut payload = frame[h.len..].to_vec();
        unmask(&mut payload, h.mask.expect("masked"));
        assert_eq!(payload, b"Hello");
    }
}
