//! Noise framing (`/noise`, protocols.md §1.3–1.4): every handshake and transport message is
//! `u16 BE len || body`, body = ciphertext + 16-byte tag. Only lengths are read: the handshake
//! frames are labelled as such, the transport frames by [`Inference`].

use crate::account::record::Category;
use crate::decode::error::DecodeError;
use crate::decode::frames::FrameEvent;
use crate::decode::framing::Framer;
use crate::decode::libp2p::encrypted::Inference;
use crate::decode::libp2p::security::Security;
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side};

/// The protocol id multistream-select names.
pub const ID: &[u8] = b"/noise";
/// Noise XX: the initiator sends messages 1 and 3, the responder message 2.
const HANDSHAKE_FRAMES: [u32; 2] = [2, 1];

/// Length of the frame-length prefix.
pub const PREFIX_LEN: usize = 2;

/// Body length of a Noise frame from its 2-byte prefix.
pub fn body_len(header: &[u8; PREFIX_LEN]) -> u64 {
    u64::from(u16::from_be_bytes(*header))
}

/// The Noise frames of one connection.
pub struct NoiseLayer {
    conn: Conn,
    framers: [Framer<PREFIX_LEN>; 2],
    frames: [u32; 2],
    handshake: LabelId,
    /// The labels inferred for transport frames, from the first one on.
    inference: Option<Inference>,
}

impl NoiseLayer {
    /// The layer of connection `conn`.
    pub fn new(conn: Conn, labels: &mut LabelTable) -> NoiseLayer {
        NoiseLayer {
            conn,
            framers: Default::default(),
            frames: [0; 2],
            handshake: labels.decoded(Category::Libp2p, "/noise", "handshake"),
            inference: None,
        }
    }
}

/// Puts a Noise frame of `body` bytes, taken for `kind`, in the frames table.
fn log_frame(ctx: &mut DecodeCtx<'_>, side: Side, body: u64, kind: &'static str) {
    ctx.frames.push(FrameEvent {
        side,
        time_ns: ctx.now_ns,
        security: "/noise",
        bytes: (PREFIX_LEN as u64 + body) as u32,
        kind,
    });
}

impl Security for NoiseLayer {
    fn data<'b>(
        &mut self,
        side: Side,
        bytes: &'b [u8],
        ctx: &mut DecodeCtx<'_>,
    ) -> Result<Option<&'b [u8]>, (DecodeError, u64)> {
        let i = side.index();
        let (limit, handshake, conn) = (HANDSHAKE_FRAMES[i], self.handshake, self.conn);
        let frames = &mut self.frames[i];
        let inference = self
            .inference
            .get_or_insert_with(|| Inference::noise(conn, ctx.labels));
        self.framers[i].feed(bytes, body_len, |p| {
            *frames += u32::from(p.starts);
            let body = body_len(&p.header);
            if *frames <= limit {
                if p.starts {
                    log_frame(ctx, side, body, "handshake");
                }
                ctx.emit(side, p.len as u64, handshake, u32::from(p.starts));
                return;
            }
            if p.starts {
                let guess = inference.start(side, body, ctx);
                log_frame(ctx, side, body, guess.as_str());
            }
            inference.consume(side, p.len as u64, ctx);
        });
        Ok(None)
    }

    fn held(&self, side: Side) -> usize {
        self.framers[side.index()].held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
