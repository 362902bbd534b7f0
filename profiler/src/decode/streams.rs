//! The streams of a muxed libp2p connection. Each stream opens with its own multistream-select
//! exchange (protocols.md §1.9) that names the protocol of the bytes after it; its bytes are
//! labelled with that protocol. Labels never wait: a negotiation message split across frames is
//! labelled as plain multistream until it is complete.

use rustc_hash::FxHashMap;

use super::multistream::{self, Parsed};
use super::{LabelId, LabelTable, Side, protocols};
use crate::account::record::Category;

/// Streams tracked per connection; the bytes of further streams get the plain multistream label.
pub const MAX_STREAMS: usize = 1024;

/// Labels of one stream protocol.
#[derive(Clone, Copy)]
struct ProtocolLabels {
    negotiation: LabelId,
    data: LabelId,
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
}

#[derive(Default)]
struct Stream {
    /// The protocol proposed last by the opener, and its labels.
    protocol: Option<(Vec<u8>, ProtocolLabels)>,
    sides: [StreamSide; 2],
}

/// All streams of one connection, keyed by the muxer's stream id.
pub struct Streams {
    streams: FxHashMap<u32, Stream>,
    /// `libp2p` / `/multistream/1.0.0` / `negotiation`.
    plain: LabelId,
}

impl Streams {
    /// No streams yet.
    pub fn new(labels: &mut LabelTable) -> Streams {
        let protocol = std::str::from_utf8(multistream::HEADER).unwrap_or("multistream");
        Streams {
            streams: FxHashMap::default(),
            plain: labels.decoded(Category::Libp2p, protocol, "negotiation"),
        }
    }

    /// Labels `bytes` that `side` sent on stream `id` (the side that opened the stream sends the
    /// proposals). Calls `out(len, label, units)` in order, covering every byte.
    pub fn body(
        &mut self,
        side: Side,
        opener: Side,
        id: u32,
        bytes: &[u8],
        labels: &mut LabelTable,
        out: &mut impl FnMut(u64, LabelId, u32),
    ) {
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_STREAMS {
            out(bytes.len() as u64, self.plain, 0);
            return;
        }
        let plain = self.plain;
        let stream = self.streams.entry(id).or_default();
        let s = side.index();
        if stream.sides[s].data {
            let label = stream.protocol.as_ref().map_or(plain, |p| p.1.data);
            out(bytes.len() as u64, label, 0);
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
                        let l = protocol_labels(&text, labels);
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
                    out((wire - st.emitted) as u64, label, 1);
                    st.held.drain(..wire);
                    st.emitted = 0;
                    if st.data {
                        let rest = std::mem::take(&mut st.held);
                        let data = stream.protocol.as_ref().map_or(plain, |p| p.1.data);
                        out(rest.len() as u64, data, 0);
                        return;
                    }
                }
                Parsed::Incomplete => {
                    out((st.held.len() - st.emitted) as u64, plain, 0);
                    st.emitted = st.held.len();
                    return;
                }
                Parsed::Invalid => {
                    st.data = true;
                    let rest = std::mem::take(&mut st.held);
                    let fresh = (rest.len() - st.emitted) as u64;
                    st.emitted = 0;
                    let data = stream.protocol.as_ref().map_or(plain, |p| p.1.data);
                    out(fresh, data, 0);
                    return;
                }
            }
        }
    }

    /// Forgets a stream that was reset or closed.
    pub fn close(&mut self, id: u32) {
        self.streams.remove(&id);
    }
}

fn protocol_labels(id: &[u8], labels: &mut LabelTable) -> ProtocolLabels {
    let name = String::from_utf8_lossy(id);
    let (category, kind) = protocols::classify(&name);
    ProtocolLabels {
        negotiation: labels.decoded(category, &name, "negotiation"),
        data: labels.decoded(category, &name, kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[(Side, &[u8])]) -> (Vec<(u64, String, String, u32)>, u64) {
        let mut labels = LabelTable::default();
        let mut streams = Streams::new(&mut labels);
        let mut out = Vec::new();
        let mut total = 0;
        for &(side, bytes) in chunks {
            total += bytes.len() as u64;
            streams.body(
                side,
                Side::Initiator,
                1,
                bytes,
                &mut labels,
                &mut |n, l, u| {
                    out.push((n, l, u));
                },
            );
        }
        let named = out
            .iter()
            .map(|&(n, l, u)| {
                let label = labels.get(l);
                (n, label.protocol.to_string(), label.kind.to_string(), u)
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
