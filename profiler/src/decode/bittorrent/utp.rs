//! uTP (BEP 29, protocols.md §8.4): a 20-byte header (type and version, first extension,
//! connection id, timestamps, window, sequence and ack numbers), extensions, then peer-wire
//! bytes. A flow is uTP when it opens with a SYN, or when one end is a known BitTorrent endpoint.
//! The peer wire inside ST_DATA payloads is decoded in sequence-number order, per direction.

use super::wire::{WireLabels, WireStream};
use super::{PEER_WIRE, label};
use crate::decode::datagram::{Datagram, DatagramDecoder, Labelled};
use crate::decode::error::DecodeError;
use crate::decode::{DecodeCtx, LabelId, Side, Span};

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

/// Index of ST_DATA in [`KINDS`].
const DATA: usize = 0;
/// Where the sequence number is in the header.
const SEQ_NR: std::ops::Range<usize> = 16..18;

/// One direction of a uTP connection: the peer wire it carries and the next data packet's
/// sequence number.
#[derive(Default)]
pub struct UtpStream {
    next: Option<u16>,
    wire: WireStream,
    /// Bytes the peer wire holds (a split length prefix) that were already labelled as
    /// `utp` / `data` with the datagram that carried them.
    carried: u64,
}

impl UtpStream {
    /// Pushes spans for the `payload` of a data packet with sequence number `seq`: in order it
    /// feeds the peer wire, a repeat is left to the packet's label, a jump settles the stream.
    /// Returns the error when the payload broke the peer wire's framing.
    fn data(
        &mut self,
        seq: u16,
        payload: &[u8],
        l: &WireLabels,
        spans: &mut Vec<Span>,
    ) -> Option<DecodeError> {
        if let Some(next) = self.next {
            if (next.wrapping_sub(seq) as i16) > 0 {
                return None;
            }
            if seq != next {
                self.wire.settle();
            }
        }
        self.next = Some(seq.wrapping_add(1));
        let mut carried = self.carried;
        let broken = self.wire.feed(payload, l, &mut |len, label, units| {
            let old = len.min(carried);
            carried -= old;
            push(spans, len - old, label, units);
        });
        self.carried = self.wire.held();
        broken
    }
}

fn push(spans: &mut Vec<Span>, len: u64, label: LabelId, units: u32) {
    if len > 0 {
        spans.push(Span {
            side: Side::Initiator,
            len,
            label,
            units,
            framing: None,
        });
    }
}

/// The packet type of a valid uTP header at the start of `p` and the header's length with its
/// extension chain inside `p`; `None` otherwise.
pub fn header(p: &[u8]) -> Option<(usize, usize)> {
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
            return Some((kind, off));
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
        let (kind, header_len) = header(d.payload)?;
        let book = &mut ctx.udp.bittorrent;
        if kind == SYN {
            book.learn_utp_flow(d.src, d.dst);
            book.learn_peer(d.dst);
        } else if !book.is_utp_flow(d.src, d.dst) && !book.is_peer(&d.src) && !book.is_peer(&d.dst)
        {
            return None;
        }
        book.learn_peer(d.src);
        let packet = label(ctx.labels, PROTOCOL, KINDS[kind]);
        let whole = d.payload.len() == d.wire_payload as usize;
        if kind == DATA && whole {
            let wire = book
                .utp_wire
                .get_or_insert_with(|| WireLabels::new(ctx.labels, PEER_WIRE));
            let key = (d.src, d.dst);
            if !book.utp_streams.contains(&key) {
                book.utp_streams.insert(key, UtpStream::default());
            }
            let seq = d.payload.get(SEQ_NR).and_then(|b| b.try_into().ok());
            let body = d.payload.get(header_len..);
            if let (Some(stream), Some(seq), Some(body)) =
                (book.utp_streams.get_mut(&key), seq, body)
            {
                push(ctx.spans, header_len as u64, packet, 1);
                if let Some(e) = stream.data(u16::from_be_bytes(seq), body, wire, ctx.spans) {
                    ctx.malformed(e);
                }
            }
        }
        Some(Labelled {
            label: packet,
            units: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::LabelTable;

    fn kind(p: &[u8]) -> Option<usize> {
        header(p).map(|(kind, _)| kind)
    }

    #[test]
    fn header_and_extensions() {
        let mut syn = [0u8; HEADER_LEN];
        syn[0] = 0x41;
        assert_eq!(header(&syn), Some((SYN, HEADER_LEN)));
        for cut in 0..HEADER_LEN {
            assert_eq!(kind(&syn[..cut]), None);
        }
        let mut sack = vec![0x21, 1];
        sack.extend_from_slice(&[0; HEADER_LEN - 2]);
        sack.extend_from_slice(&[0, 4, 1, 2, 3, 4]);
        assert_eq!(header(&sack), Some((2, HEADER_LEN + 6)));
        assert_eq!(kind(&sack[..sack.len() - 1]), None);
        assert_eq!(kind(b"d1:ad2:id20:abcdefghij0123456789e"), None);
    }

    #[test]
    fn peer_wire_in_order_across_packets() {
        let mut labels = LabelTable::default();
        let l = WireLabels::new(&mut labels, PEER_WIRE);
        let mut s = UtpStream::default();
        let mut spans = Vec::new();
        // A have (9 bytes) whose length prefix is split over two packets, then a repeat.
        s.data(7, &[0, 0], &l, &mut spans);
        assert!(spans.is_empty());
        s.data(8, &[0, 5, 4, 0, 0, 0, 1], &l, &mut spans);
        s.data(8, &[0, 5, 4, 0, 0, 0, 1], &l, &mut spans);
        let got: Vec<(String, u64, u32)> = spans
            .iter()
            .map(|s| (labels.get(s.label).kind.to_string(), s.len, s.units))
            .collect();
        assert_eq!(got, vec![("have".to_owned(), 7, 1)]);
        s.data(10, &[0, 0, 0, 0], &l, &mut spans);
        assert_eq!(labels.get(spans[1].label).kind.as_ref(), "unparsed");
    }
}
