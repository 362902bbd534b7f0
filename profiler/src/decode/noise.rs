//! Noise framing (`/noise`, protocols.md §1.3–1.4): every handshake and transport message is
//! `u16 BE len || body`, body = ciphertext + 16-byte tag. Only lengths are read.

/// Length of the frame-length prefix.
pub const PREFIX_LEN: usize = 2;

/// Body length of a Noise frame from its 2-byte prefix.
pub fn body_len(header: &[u8; PREFIX_LEN]) -> u64 {
    u64::from(u16::from_be_bytes(*header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::framing::Framer;

    /// Three frames of 2, 0 and 3 body bytes, fed one byte at a time and whole.
    const STREAM: &[u8] = &[0, 2, 0xaa, 0xbb, 0, 0, 0, 3, 1, 2, 3];

    fn pieces(chunks: &[&[u8]]) -> Vec<(usize, bool)> {
        let mut f = Framer::<PREFIX_LEN>::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, body_len, |p| out.push((p.len, p.starts)));
        }
        out
    }

    #[test]
    fn whole_stream() {
        assert_eq!(pieces(&[STREAM]), vec![(4, true), (2, true), (5, true)]);
    }

    #[test]
    fn byte_by_byte_covers_every_byte_once() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let p = pieces(&chunks);
        assert_eq!(p.iter().map(|x| x.0).sum::<usize>(), STREAM.len());
        assert_eq!(p.iter().filter(|x| x.1).count(), 3);
    }
}
