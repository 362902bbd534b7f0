//! `/plaintext/2.0.0` (protocols.md §1.5): each side sends one length-prefixed Exchange message
//! (its peer id and public key), then the connection is in the clear and the muxer is negotiated
//! with multistream-select.

use crate::account::record::Category;
use crate::decode::error::DecodeError;
use crate::decode::libp2p::security::Security;
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side, uvarint};

/// The protocol id multistream-select names.
pub const ID: &[u8] = b"/plaintext/2.0.0";
/// Longest uvarint length prefix accepted.
const MAX_VARINT_LEN: usize = 9;

/// One side's Exchange message: its length prefix (held until complete), then `body_left` bytes.
#[derive(Default)]
struct Exchange {
    prefix: Vec<u8>,
    body_left: Option<u64>,
}

/// The Exchange messages of one connection.
pub struct PlaintextLayer {
    sides: [Exchange; 2],
    handshake: LabelId,
}

impl PlaintextLayer {
    /// The layer of a connection that agreed on plaintext.
    pub fn new(labels: &mut LabelTable) -> PlaintextLayer {
        PlaintextLayer {
            sides: Default::default(),
            handshake: labels.decoded(Category::Libp2p, "/plaintext/2.0.0", "handshake"),
        }
    }
}

impl Security for PlaintextLayer {
    fn data<'b>(
        &mut self,
        side: Side,
        bytes: &'b [u8],
        ctx: &mut DecodeCtx<'_>,
    ) -> Result<Option<&'b [u8]>, (DecodeError, u64)> {
        let x = &mut self.sides[side.index()];
        let mut rest = bytes;
        while x.body_left.is_none() && !rest.is_empty() {
            x.prefix.push(rest[0]);
            rest = &rest[1..];
            if let Some((len, used)) = uvarint(&x.prefix) {
                ctx.emit(side, used as u64, self.handshake, 1);
                x.body_left = Some(len);
            } else if x.prefix.len() >= MAX_VARINT_LEN {
                let e = DecodeError::new("/plaintext/2.0.0", "Exchange length prefix too long");
                return Err((e, (x.prefix.len() + rest.len()) as u64));
            }
        }
        let Some(left) = &mut x.body_left else {
            return Ok(None);
        };
        let n = rest.len().min(*left as usize);
        ctx.emit(side, n as u64, self.handshake, 0);
        *left -= n as u64;
        Ok((*left == 0).then_some(&rest[n..]))
    }

    fn held(&self, side: Side) -> usize {
        let x = &self.sides[side.index()];
        x.body_left.map_or(x.prefix.len(), |_| 0)
    }
}
