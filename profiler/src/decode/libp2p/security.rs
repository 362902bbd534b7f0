//! The security layer of a libp2p connection: what multistream-select agreed on (`/noise`,
//! `/tls/1.0.0`, `/plaintext/2.0.0`) decodes or infers the bytes above it. Layers are found by
//! protocol id in [`SECURITY`]; a new one is a type implementing [`Security`] and one line there.
//! A security protocol that only wraps the connection (plaintext) hands the bytes after its
//! handshake back to the connection, which negotiates the muxer next; an encrypted one labels
//! every further byte itself, by inference.

use crate::decode::error::DecodeError;
use crate::decode::libp2p::noise;
use crate::decode::libp2p::plaintext;
use crate::decode::libp2p::tls;
use crate::decode::{Conn, DecodeCtx, LabelTable, Side};

/// One security protocol on one connection (both directions).
pub trait Security {
    /// Labels `bytes` that `side` sent. `Ok(Some(rest))` when the layer is done with this side:
    /// `rest` (the bytes after its handshake) goes to the next layer. An error when the bytes are
    /// not this protocol's, with the bytes given no label (held ones and the rest).
    fn data<'b>(
        &mut self,
        side: Side,
        bytes: &'b [u8],
        ctx: &mut DecodeCtx<'_>,
    ) -> Result<Option<&'b [u8]>, (DecodeError, u64)>;
    /// Bytes of `side` held and not yet labelled (a header split across chunks).
    fn held(&self, side: Side) -> usize;
    /// Approximate heap memory the layer holds (for the memory budget): itself, boxed, and the
    /// bytes it holds.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self) + self.held(Side::Initiator) + self.held(Side::Responder)
    }
}

/// A security protocol the decoder knows: its id and how to make its layer for a connection.
pub struct SecurityEntry {
    pub id: &'static [u8],
    pub layer: fn(Conn, &mut LabelTable) -> Box<dyn Security>,
}

/// The security protocols a Waku stack offers (protocols.md §1.2, §1.5).
pub static SECURITY: &[SecurityEntry] = &[
    SecurityEntry {
        id: noise::ID,
        layer: |conn, labels| Box::new(noise::NoiseLayer::new(conn, labels)),
    },
    SecurityEntry {
        id: tls::ID,
        layer: |conn, labels| Box::new(tls::TlsLayer::new(conn, labels)),
    },
    SecurityEntry {
        id: plaintext::ID,
        layer: |_, labels| Box::new(plaintext::PlaintextLayer::new(labels)),
    },
];

/// The layer of security protocol `id` on `conn`, if it is known.
pub fn layer(id: &[u8], conn: Conn, labels: &mut LabelTable) -> Option<Box<dyn Security>> {
    SECURITY
        .iter()
        .find(|s| s.id == id)
        .map(|s| (s.layer)(conn, labels))
}
