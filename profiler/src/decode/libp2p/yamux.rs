//! yamux (`/yamux/1.0.0`, protocols.md §1.7): every frame is a 12-byte big-endian header, and
//! only Data frames carry a body of `length` bytes.

use crate::decode::framing::Framer;
use crate::decode::libp2p::muxer::{MuxFramer, MuxPiece, StreamEnd};
use crate::decode::{Side, error::DecodeError};

/// The protocol id multistream-select or ALPN names.
pub const ID: &[u8] = b"/yamux/1.0.0";

/// Length of a frame header.
pub const HEADER_LEN: usize = 12;

/// Field offsets in the header.
mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const FLAGS: Range<usize> = 2..4;
    pub const STREAM_ID: Range<usize> = 4..8;
    pub const LENGTH: Range<usize> = 8..12;
}

/// Frame type (the header's second byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data,
    WindowUpdate,
    Ping,
    GoAway,
    Unknown(u8),
}

/// Flag of the frame that opens a stream.
pub const SYN: u16 = 0x1;
/// Flag of the frame that half-closes a stream.
pub const FIN: u16 = 0x4;
/// Flag of the frame that aborts a stream.
pub const RST: u16 = 0x8;

/// A view of a complete header.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a>(pub &'a [u8; HEADER_LEN]);

impl Header<'_> {
    /// Protocol version; 0 is the only one defined.
    pub fn version(&self) -> u8 {
        self.0[field::VERSION]
    }

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self.0[field::TYPE] {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            t => FrameType::Unknown(t),
        }
    }

    /// SYN, ACK, FIN, RST bits.
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.0[field::FLAGS.start], self.0[field::FLAGS.start + 1]])
    }

    /// The stream the frame belongs to (0: the session).
    pub fn stream_id(&self) -> u32 {
        let b = &self.0[field::STREAM_ID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Data: body length; window update: delta; ping: opaque value; go away: code.
    pub fn length(&self) -> u32 {
        let b = &self.0[field::LENGTH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Body length of a frame from its header: `length` for Data frames, 0 otherwise.
pub fn body_len(header: &[u8; HEADER_LEN]) -> u64 {
    let h = Header(header);
    match h.frame_type() {
        FrameType::Data => u64::from(h.length()),
        _ => 0,
    }
}

impl MuxFramer for Framer<HEADER_LEN> {
    fn feed(
        &mut self,
        _side: Side,
        bytes: &[u8],
        piece: &mut dyn FnMut(MuxPiece<'_>),
    ) -> Result<(), (DecodeError, u64)> {
        Framer::feed(self, bytes, body_len, |p| {
            let h = Header(&p.header);
            let id = h.stream_id();
            let data = h.frame_type() == FrameType::Data;
            // Stream ids of the initiator are odd, those of the responder even.
            let opener = if id % 2 == 1 {
                Side::Initiator
            } else {
                Side::Responder
            };
            let end = if h.flags() & RST != 0 {
                Some((id, StreamEnd::Reset))
            } else if h.flags() & FIN != 0 {
                Some((id, StreamEnd::Close))
            } else {
                None
            };
            piece(MuxPiece {
                header: (p.len - p.body.len()) as u64,
                starts: p.starts,
                data: data.then_some((opener, id)),
                carries: data && h.length() > 0,
                end: end.filter(|_| p.starts),
                body: p.body,
            });
        });
        Ok(())
    }

    fn held(&self) -> usize {
        Framer::held(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frame_with_syn() {
        let raw = [0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 20];
        let h = Header(&raw);
        assert_eq!(h.version(), 0);
        assert_eq!(h.frame_type(), FrameType::Data);
        assert_eq!(h.flags() & SYN, SYN);
        assert_eq!((h.stream_id(), h.length()), (3, 20));
        assert_eq!(body_len(&raw), 20);
    }

    #[test]
    fn window_updates_have_no_body() {
        let raw = [0, 1, 0, 2, 0, 0, 0, 3, 0, 4, 0, 0];
        assert_eq!(Header(&raw).frame_type(), FrameType::WindowUpdate);
        assert_eq!(body_len(&raw), 0);
    }
}
