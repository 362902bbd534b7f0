//! The streams of a muxed libp2p connection. Each stream opens with its own multistream-select
//! exchange (protocols.md §1.9) that names the protocol of the bytes after it; its bytes are
//! labelled with that protocol. Labels never wait: a negotiation message split across frames is
//! labelled as plain multistream until it is complete.

use rustc_hash::FxHashMap;

use crate::account::record::Category;
use crate::decode::libp2p::multistream::{self, Parsed};
use crate::decode::ordered::{Ordered, Pending};
use crate::decode::relay::gossipsub::{RelayLabels, RpcWalker};
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side, protocols};

/// Open streams tracked per connection; the bytes of further streams get the plain multistream
/// label. Streams are forgotten when reset or closed by both sides.
pub const MAX_STREAMS: usize = 1024;

/// Labels of one stream protocol.
#[derive(Clone, Copy)]
struct ProtocolLabels {
    negotiation: LabelId,
    data: LabelId,
    /// Set for gossipsub protocols, whose RPCs are split field by field.
    relay: Option<RelayLabels>,
}

/// One direction of one stream.
#[derive(Default)]
struct StreamSide {
    /// An incomplete multistream message.
    held: Vec<u8>,
    /// Bytes of `held` already labelled as plain multistream.
    emitted: usize,
    /// Negotiation is over: everything further is protocol data.
    data: bool,
    /// The RPC walker of a relay stream's data.
    rpc: Option<Box<RpcWalker>>,
    /// This side closed the stream.
    closed: bool,
}

impl StreamSide {
    /// Labels protocol data: RPCs of relay streams field by field, other protocols whole.
    fn data(
        &mut self,
        side: Side,
        protocol: Option<ProtocolLabels>,
        plain: LabelId,
        bytes: &[u8],
        ctx: &mut DecodeCtx<'_>,
        out: &mut Ordered,
    ) {
        match protocol {
            Some(ProtocolLabels {
                relay: Some(relay), ..
            }) => self
                .rpc
                .get_or_insert_with(|| Box::new(RpcWalker::new(relay)))
                .feed(side, bytes, ctx, out),
            Some(p) => out.push(bytes.len() as u64, Pending::Now(p.data), 0),
            None => out.push(bytes.len() as u64, Pending::Now(plain), 0),
        }
    }
}

#[derive(Default)]
struct Stream {
    /// The protocol proposed last by the opener, and its labels.
    protocol: Option<(Vec<u8>, ProtocolLabels)>,
    sides: [StreamSide; 2],
}

impl Stream {
    /// Heap bytes the stream holds beyond its table slot.
    fn heap_bytes(&self) -> usize {
        let sides: usize = self
            .sides
            .iter()
            .map(|s| s.held.capacity() + s.rpc.as_ref().map_or(0, |r| r.heap_bytes()))
            .sum();
        sides + self.protocol.as_ref().map_or(0, |p| p.0.capacity())
    }
}

/// All streams of one connection, keyed by the muxer's stream id.
pub struct Streams {
    streams: FxHashMap<u32, Stream>,
    /// `libp2p` / `/multistream/1.0.0` / `negotiation`.
    plain: LabelId,
    /// Σ heap bytes of the streams beyond their slots, kept as streams change.
    held: usize,
}

impl Streams {
    /// No streams yet.
    pub fn new(labels: &mut LabelTable) -> Streams {
        let protocol = std::str::from_utf8(multistream::HEADER).unwrap_or("multistream");
        Streams {
            streams: FxHashMap::default(),
            plain: labels.decoded(Category::Libp2p, protocol, "negotiation"),
            held: 0,
        }
    }

    /// Approximate heap bytes of the stream table and its streams.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::table_bytes::<(u32, Stream)>(self.streams.capacity()) + self.held
    }

    /// Labels `bytes` that `side` sent on stream `id` (the side that opened the stream sends the
    /// proposals). Appends spans covering every byte to `out`.
    pub fn body(
        &mut self,
        side: Side,
        opener: Side,
        id: u32,
        bytes: &[u8],
        ctx: &mut DecodeCtx<'_>,
        out: &mut Ordered,
    ) {
        let before = self.streams.get(&id).map_or(0, Stream::heap_bytes);
        self.feed(side, opener, id, bytes, ctx, out);
        let after = self.streams.get(&id).map_or(0, Stream::heap_bytes);
        self.held = (self.held + after).saturating_sub(before);
    }

    fn feed(
        &mut self,
        side: Side,
        opener: Side,
        id: u32,
        bytes: &[u8],
        ctx: &mut DecodeCtx<'_>,
        out: &mut Ordered,
    ) {
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_STREAMS {
            out.push(bytes.len() as u64, Pending::Now(self.plain), 0);
            return;
        }
        let plain = self.plain;
        let stream = self.streams.entry(id).or_default();
        let s = side.index();
        let labels_of = |stream: &Stream| stream.protocol.as_ref().map(|p| p.1);
        if stream.sides[s].data {
            let p = labels_of(stream);
            stream.sides[s].data(side, p, plain, bytes, ctx, out);
            return;
        }
        stream.sides[s].held.extend_from_slice(bytes);
        loop {
            let st = &mut stream.sides[s];
            match multistream::parse(&st.held) {
                Parsed::Message(m) => {
                    let text = m.text.to_vec();
                    let wire = m.wire_len;
                    let label = if text == multistream::HEADER || text == multistream::NA {
                        plain
                    } else if side == opener {
                        let l = protocol_labels(&text, ctx.labels);
                        stream.protocol = Some((text.clone(), l));
                        l.negotiation
                    } else {
                        match &stream.protocol {
                            Some((p, l)) if *p == text => {
                                stream.sides[s].data = true;
                                l.negotiation
                            }
                            _ => plain,
                        }
                    };
                    let st = &mut stream.sides[s];
                    // A parsed message is held whole, and only a prefix of it was emitted.
                    out.push(
                        wire.saturating_sub(st.emitted) as u64,
                        Pending::Now(label),
                        1,
                    );
                    st.held.drain(..wire.min(st.held.len()));
                    st.emitted = 0;
                    if st.data {
                        let rest = std::mem::take(&mut st.held);
                        let p = labels_of(stream);
                        stream.sides[s].data(side, p, plain, &rest, ctx, out);
                        return;
                    }
                }
                Parsed::Incomplete => {
                    out.push((st.held.len() - st.emitted) as u64, Pending::Now(plain), 0);
                    st.emitted = st.held.len();
                    return;
                }
                Parsed::Invalid => {
                    st.data = true;
                    let rest = std::mem::take(&mut st.held);
                    // Bytes already labelled as multistream are still parsed, not labelled again.
                    out.skip(std::mem::take(&mut st.emitted) as u64);
                    let p = labels_of(stream);
                    stream.sides[s].data(side, p, plain, &rest, ctx, out);
                    return;
                }
            }
        }
    }

    /// Forgets a stream that was reset.
    pub fn reset(&mut self, id: u32) {
        self.forget(id);
    }

    fn forget(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            self.held = self.held.saturating_sub(s.heap_bytes());
        }
    }

    /// Notes that `side` closed stream `id`; the stream is forgotten once both sides have.
    pub fn close(&mut self, side: Side, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.sides[side.index()].closed = true;
            if stream.sides.iter().all(|s| s.closed) {
                self.forget(id);
            }
        }
    }
}

fn protocol_labels(id: &[u8], labels: &mut LabelTable) -> ProtocolLabels {
    let name = String::from_utf8_lossy(id);
    let (category, kind) = protocols::classify(&name);
    ProtocolLabels {
        negotiation: labels.decoded(category, &name, "negotiation"),
        data: labels.decoded(category, &name, kind),
        relay: protocols::RELAY
            .contains(&name.as_ref())
            .then(|| RelayLabels::new(&name, labels)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    fn run(chunks: &[(Side, &[u8])]) -> (Vec<(u64, String, String, u32)>, u64) {
        let mut t = TestCtx::default();
        let mut streams = Streams::new(&mut t.labels);
        let mut ordered = [Ordered::default(), Ordered::default()];
        let mut total = 0;
        for &(side, bytes) in chunks {
            total += bytes.len() as u64;
            let out = &mut ordered[side.index()];
            streams.body(side, Side::Initiator, 1, bytes, &mut t.ctx(), out);
        }
        for side in Side::BOTH {
            ordered[side.index()].flush(side, &mut t.ctx());
        }
        let TestCtx { labels, spans, .. } = t;
        let named = spans
            .iter()
            .map(|s| {
                let label = labels.get(s.label);
                (
                    s.len,
                    label.protocol.to_string(),
                    label.kind.to_string(),
                    s.units,
                )
            })
            .filter(|x| x.0 > 0)
            .collect();
        (named, total)
    }

    const OPEN: &[u8] = b"\x13/multistream/1.0.0\n\x0f/ipfs/id/1.0.0\n";

    #[test]
    fn negotiation_then_data_on_both_sides() {
        let (out, total) = run(&[
            (Side::Initiator, OPEN),
            (Side::Responder, OPEN),
            (Side::Responder, b"\x05hello"),
        ]);
        assert_eq!(out.iter().map(|x| x.0).sum::<u64>(), total);
        assert_eq!(
            out[1],
            (16, "/ipfs/id/1.0.0".into(), "negotiation".into(), 1)
        );
        assert_eq!(
            out.last(),
            Some(&(6, "/ipfs/id/1.0.0".into(), "data".into(), 0))
        );
    }

    #[test]
    fn closed_streams_are_forgotten() {
        let mut t = TestCtx::default();
        let mut streams = Streams::new(&mut t.labels);
        for id in 0..(2 * MAX_STREAMS as u32) {
            let mut out = Ordered::default();
            streams.body(
                Side::Initiator,
                Side::Initiator,
                id,
                OPEN,
                &mut t.ctx(),
                &mut out,
            );
            streams.close(Side::Initiator, id);
            streams.close(Side::Responder, id);
        }
        assert!(streams.streams.is_empty());
    }

    #[test]
    fn a_message_split_anywhere_still_covers_every_byte() {
        for cut in 0..OPEN.len() {
            let (out, total) = run(&[
                (Side::Initiator, &OPEN[..cut]),
                (Side::Initiator, &OPEN[cut..]),
            ]);
            assert_eq!(out.iter().map(|x| x.0).sum::<u64>(), total, "cut {cut}");
            assert_eq!(out.iter().map(|x| x.3).sum::<u32>(), 2, "cut {cut}");
        }
    }
}
