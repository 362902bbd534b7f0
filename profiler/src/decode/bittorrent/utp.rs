//! uTP (BEP 29, protocols.md §8.4): a 20-byte header (type and version, first extension,
//! connection id, timestamps, window, sequence and ack numbers), extensions, then peer-wire
//! bytes. A flow is uTP when it opens with a SYN, or when one end is a known BitTorrent endpoint.

use super::label;
use crate::decode::DecodeCtx;
use crate::decode::udp::{Datagram, DatagramDecoder, Labelled};

/// Protocol name of uTP.
pub const PROTOCOL: &str = "utp";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The only version defined.
pub const VERSION: u8 = 1;
/// Packet types by number: ST_DATA, ST_FIN, ST_STATE, ST_RESET, ST_SYN.
const KINDS: [&str; 5] = ["data", "fin", "state", "reset", "syn"];
/// Index of ST_SYN in [`KINDS`].
const SYN: usize = 4;
/// Most extensions followed before the header is taken as garbage.
const MAX_EXTENSIONS: usize = 8;

/// The packet type of a valid uTP header at the start of `p`, with its extension chain inside
/// `p`; `None` otherwise.
pub fn packet_type(p: &[u8]) -> Option<usize> {
    if p.len() < HEADER_LEN || p[0] & 0x0f != VERSION {
        return None;
    }
    let kind = usize::from(p[0] >> 4);
    if kind >= KINDS.len() {
        return None;
    }
    let (mut ext, mut off) = (p[1], HEADER_LEN);
    for _ in 0..MAX_EXTENSIONS {
        if ext == 0 {
            return Some(kind);
        }
        let (next, len) = (*p.get(off)?, *p.get(off + 1)?);
        off += 2 + usize::from(len);
        if off > p.len() {
            return None;
        }
        ext = next;
    }
    None
}

/// Labels uTP packets by type.
pub struct Utp;

impl DatagramDecoder for Utp {
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
        let kind = packet_type(d.payload)?;
        let book = &mut ctx.udp.bittorrent;
        if kind == SYN {
            book.learn_utp_flow(d.src, d.dst);
            book.learn_peer(d.dst);
        } else if !book.is_utp_flow(d.src, d.dst) && !book.is_peer(&d.src) && !book.is_peer(&d.dst)
        {
            return None;
        }
        book.learn_peer(d.src);
        Some(Labelled {
            label: label(ctx.labels, PROTOCOL, KINDS[kind]),
            units: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_extensions() {
        let mut syn = [0u8; HEADER_LEN];
        syn[0] = 0x41;
        assert_eq!(packet_type(&syn), Some(SYN));
        for cut in 0..HEADER_LEN {
            assert_eq!(packet_type(&syn[..cut]), None);
        }
        let mut sack = vec![0x21, 1];
        sack.extend_from_slice(&[0; HEADER_LEN - 2]);
        sack.extend_from_slice(&[0, 4, 1, 2, 3, 4]);
        assert_eq!(packet_type(&sack), Some(2));
        assert_eq!(packet_type(&sack[..sack.len() - 1]), None);
        assert_eq!(packet_type(b"d1:ad2:id20:abcdefghij0123456789e"), None);
    }
}
