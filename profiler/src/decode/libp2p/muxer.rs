//! The muxer layer of a libp2p connection: a muxer's framer cuts one direction's bytes into frame
//! pieces, and every muxer feeds the same stream table ([`Streams`]) through [`route`]. Muxers
//! are found by protocol id in [`MUXERS`]; a new one is a framer and one line there.

use crate::decode::error::DecodeError;
use crate::decode::framing::Framer;
use crate::decode::libp2p::mplex;
use crate::decode::libp2p::streams::Streams;
use crate::decode::libp2p::yamux;
use crate::decode::ordered::{Ordered, Pending};
use crate::decode::{DecodeCtx, LabelId, Side};

/// How a frame ends a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The sender half-closed the stream.
    Close,
    /// The stream was aborted.
    Reset,
}

/// A piece of one muxer frame, as the stream table needs it.
#[derive(Clone, Copy, Debug)]
pub struct MuxPiece<'a> {
    /// Header bytes of the frame in this piece (0 when the piece continues a frame).
    pub header: u64,
    /// The frame's header is in this piece.
    pub starts: bool,
    /// For stream data: the side that opened the stream and the stream's key.
    pub data: Option<(Side, u32)>,
    /// The frame is stream data with a body, so its header is carried by the body's first unit.
    pub carries: bool,
    /// The stream the frame is about, and how it ends it (reported with the header).
    pub end: Option<(u32, StreamEnd)>,
    /// The body bytes of this piece, after its header bytes.
    pub body: &'a [u8],
}

/// A muxer's frame walker for one direction.
pub trait MuxFramer {
    /// Splits `bytes` sent by `side` into pieces of consecutive frames; an error when they are
    /// not this muxer's frames, with the bytes given to no piece.
    fn feed(
        &mut self,
        side: Side,
        bytes: &[u8],
        piece: &mut dyn FnMut(MuxPiece<'_>),
    ) -> Result<(), (DecodeError, u64)>;
    /// Header bytes received but not yet reported.
    fn held(&self) -> usize;
}

/// A muxer the decoder follows: its protocol id and how to make a framer for one direction.
pub struct MuxerEntry {
    pub id: &'static [u8],
    pub framer: fn() -> Box<dyn MuxFramer>,
}

/// The muxers whose streams are followed, by the id multistream-select (or ALPN) names.
pub static MUXERS: &[MuxerEntry] = &[
    MuxerEntry {
        id: yamux::ID,
        framer: || Box::new(Framer::<{ yamux::HEADER_LEN }>::default()),
    },
    MuxerEntry {
        id: mplex::ID,
        framer: || Box::new(mplex::Framer::default()),
    },
];

/// The framer of muxer `id`, if it is followed.
pub fn framer(id: &[u8]) -> Option<Box<dyn MuxFramer>> {
    MUXERS.iter().find(|m| m.id == id).map(|m| (m.framer)())
}

/// Routes one piece sent by `side` into `out`: a data frame's header belongs to the first unit
/// its body carries, other frames (and their bodies) are muxer `framing`; stream data goes to
/// the stream table, which labels it by the stream's protocol.
pub fn route(
    p: MuxPiece<'_>,
    side: Side,
    framing: LabelId,
    streams: &mut Streams,
    ctx: &mut DecodeCtx<'_>,
    out: &mut Ordered,
) {
    if p.starts {
        if p.carries {
            out.push(p.header, Pending::Next { fallback: framing }, 0);
        } else {
            out.push(p.header, Pending::Now(framing), 1);
        }
    }
    match p.data {
        Some((opener, key)) => streams.body(side, opener, key, p.body, ctx, out),
        None => out.push(p.body.len() as u64, Pending::Now(framing), 0),
    }
    match p.end {
        Some((key, StreamEnd::Reset)) => streams.reset(key),
        Some((key, StreamEnd::Close)) => streams.close(side, key),
        None => {}
    }
}
