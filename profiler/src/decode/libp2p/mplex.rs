//! mplex (`/mplex/6.7.0`, protocols.md §1.8): each frame is `uvarint header ‖ uvarint length ‖
//! data` with `header = stream id << 3 | flag`. Stream ids are chosen by each stream's opener, so a
//! stream is (id, which side opened it); the flag says whether the sender is that opener.

use crate::decode::error::DecodeError;
use crate::decode::libp2p::muxer::{MuxFramer, MuxPiece, StreamEnd};
use crate::decode::{Side, uvarint};

/// The protocol id multistream-select names.
pub const ID: &[u8] = b"/mplex/6.7.0";

/// Longest header (two varints of at most 9 bytes each, as [`uvarint`] reads them).
const MAX_HEADER: usize = 18;
/// Largest frame body accepted; the spec caps messages at 1 MiB.
pub const MAX_BODY: u64 = 1 << 20;

/// What a frame does (the header's low three bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// Opens a stream; the body is an optional stream name.
    NewStream,
    /// Stream data; `opener` is the side that opened the stream.
    Message,
    /// Half-closes the stream for the sender.
    Close,
    /// Aborts the stream.
    Reset,
}

/// A frame's header: its stream (id and opener) and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u64,
    pub opener: Side,
    pub flag: Flag,
}

impl Header {
    /// The header `value` of a frame sent by `sender`; `None` for the undefined flag 7.
    fn parse(value: u64, sender: Side) -> Option<Header> {
        let other = match sender {
            Side::Initiator => Side::Responder,
            Side::Responder => Side::Initiator,
        };
        // Even flags (but 0) come from the stream's initiator, odd ones from its receiver.
        let (flag, from_opener) = match value & 7 {
            0 => (Flag::NewStream, true),
            1 => (Flag::Message, false),
            2 => (Flag::Message, true),
            3 => (Flag::Close, false),
            4 => (Flag::Close, true),
            5 => (Flag::Reset, false),
            6 => (Flag::Reset, true),
            _ => return None,
        };
        Some(Header {
            id: value >> 3,
            opener: if from_opener { sender } else { other },
            flag,
        })
    }

    /// A 32-bit key for the stream, distinct for the two openers.
    pub fn stream_key(&self) -> u32 {
        ((self.id as u32) << 1) | self.opener.index() as u32
    }
}

/// A piece of a chunk: `len` bytes of the frame with `header`; `starts` when the frame's header
/// is in this piece (its header bytes come first, then `body`).
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    pub len: usize,
    pub header: Header,
    pub body_len: u64,
    pub starts: bool,
    pub body: &'a [u8],
}

/// The frame stream was not mplex: a varint too long, flag 7, or a body over [`MAX_BODY`].
/// `unreported` bytes (held ones and the rest of the chunk) were given to no piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub unreported: u64,
}

/// Walks one direction's mplex frames fed in arbitrary chunks.
#[derive(Debug, Default)]
pub struct Framer {
    head: Vec<u8>,
    current: Option<Header>,
    body_left: u64,
}

impl Framer {
    /// Splits `chunk`, sent by `sender`, into pieces of consecutive frames. An incomplete header
    /// is held and reported with the piece that completes it.
    pub fn feed(
        &mut self,
        sender: Side,
        mut chunk: &[u8],
        mut piece: impl FnMut(Piece<'_>),
    ) -> Result<(), Malformed> {
        while !chunk.is_empty() {
            if let (Some(header), true) = (self.current, self.body_left > 0) {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                piece(Piece {
                    len: n,
                    header,
                    body_len: 0,
                    starts: false,
                    body: &chunk[..n],
                });
                chunk = &chunk[n..];
                continue;
            }
            let held = self.head.len();
            let take = (MAX_HEADER - held).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            let parsed = uvarint(&self.head)
                .and_then(|(h, a)| uvarint(&self.head[a..]).map(|(len, b)| (h, len, a + b)));
            let malformed = |head: &mut Vec<u8>| {
                let unreported = (head.len() + chunk.len() - take) as u64;
                head.clear();
                Err(Malformed { unreported })
            };
            let Some((value, len, used)) = parsed else {
                if self.head.len() >= MAX_HEADER {
                    return malformed(&mut self.head);
                }
                chunk = &chunk[take..];
                continue;
            };
            let Some(header) = Header::parse(value, sender).filter(|_| len <= MAX_BODY) else {
                return malformed(&mut self.head);
            };
            // Bytes of this chunk that belong to the header.
            let Some(rest) = used.checked_sub(held).and_then(|n| chunk.get(n..)) else {
                return malformed(&mut self.head);
            };
            self.head.clear();
            chunk = rest;
            let n = chunk.len().min(usize::try_from(len).unwrap_or(usize::MAX));
            self.current = Some(header);
            self.body_left = len - n as u64;
            piece(Piece {
                len: used + n,
                header,
                body_len: len,
                starts: true,
                body: &chunk[..n],
            });
            chunk = &chunk[n..];
        }
        Ok(())
    }

    /// Header bytes received but not yet reported.
    pub fn held(&self) -> usize {
        self.head.len()
    }
}

impl MuxFramer for Framer {
    fn feed(
        &mut self,
        side: Side,
        bytes: &[u8],
        piece: &mut dyn FnMut(MuxPiece<'_>),
    ) -> Result<(), (DecodeError, u64)> {
        Framer::feed(self, side, bytes, |p| {
            let h = p.header;
            let key = h.stream_key();
            let data = h.flag == Flag::Message;
            let end = match h.flag {
                Flag::Reset => Some((key, StreamEnd::Reset)),
                Flag::Close => Some((key, StreamEnd::Close)),
                Flag::NewStream | Flag::Message => None,
            };
            piece(MuxPiece {
                header: (p.len - p.body.len()) as u64,
                starts: p.starts,
                data: data.then_some((h.opener, key)),
                carries: data && p.body_len > 0,
                end: end.filter(|_| p.starts),
                body: p.body,
            });
        })
        .map_err(|m| {
            let e = DecodeError::new("/mplex/6.7.0", "not an mplex frame header");
            (e, m.unreported)
        })
    }

    fn held(&self) -> usize {
        Framer::held(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NewStream 3 named "3", then a 5-byte message on it, as the opener sends them.
    const FRAMES: &[u8] = &[0x18, 1, b'3', 0x1a, 5, b'h', b'e', b'l', b'l', b'o'];

    fn pieces(chunks: &[&[u8]]) -> Vec<(usize, Header, bool, Vec<u8>)> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(Side::Initiator, c, |p| {
                out.push((p.len, p.header, p.starts, p.body.to_vec()));
            })
            .expect("mplex");
        }
        out
    }

    #[test]
    fn frames_split_anywhere_keep_their_bytes() {
        for cut in 0..=FRAMES.len() {
            let got = pieces(&[&FRAMES[..cut], &FRAMES[cut..]]);
            assert_eq!(
                got.iter().map(|p| p.0).sum::<usize>(),
                FRAMES.len(),
                "cut {cut}"
            );
            let body: Vec<u8> = got
                .iter()
                .filter(|p| p.1.flag == Flag::Message)
                .flat_map(|p| p.3.clone())
                .collect();
            assert_eq!(body, b"hello", "cut {cut}");
            assert!(
                got.iter()
                    .all(|p| p.1.id == 3 && p.1.opener == Side::Initiator)
            );
        }
    }

    #[test]
    fn receiver_flags_name_the_other_side_as_opener() {
        let h = Header::parse(3 << 3 | 1, Side::Responder).expect("flag 1");
        assert_eq!((h.flag, h.opener), (Flag::Message, Side::Initiator));
        assert_ne!(
            h.stream_key(),
            Header::parse(3 << 3 | 2, Side::Responder).map_or(0, |h| h.stream_key())
        );
    }

    #[test]
    fn flag_seven_and_huge_bodies_are_malformed() {
        let mut f = Framer::default();
        let err = |unreported| Err(Malformed { unreported });
        assert_eq!(f.feed(Side::Initiator, &[0x0f, 0, 9], |_| {}), err(3));
        let mut f = Framer::default();
        assert_eq!(f.feed(Side::Initiator, &[0x0a], |_| {}), Ok(()));
        assert_eq!(
            f.feed(Side::Initiator, &[0xff, 0xff, 0xff, 0x7f], |_| {}),
            err(5)
        );
    }
}
