//! libp2p over a byte stream (protocols.md §1), decoded as a stack of layers: multistream-select
//! picks the security layer (found by id in [`security::SECURITY`]), which decodes or infers what
//! it carries; a plaintext connection then negotiates its muxer (found by id in
//! [`muxer::MUXERS`]), whose frames feed one stream table where each stream is labelled with the
//! protocol it negotiated. The decoder takes its bytes from TCP or from a layer below it
//! (WebSocket), so the same stack serves every transport.

pub mod encrypted;
pub mod mplex;
pub mod multistream;
pub mod muxer;
pub mod noise;
pub mod plaintext;
pub mod security;
pub mod streams;
pub mod tls;
pub mod ws_stream;
pub mod wss;
pub mod yamux;

use crate::account::record::Category;
use crate::decode::ordered::{Ordered, Pending};
use crate::decode::{
    Conn, DecodeCtx, LabelId, LabelTable, Probe, Side, StreamDecoder, StreamProbe,
};
use multistream::Parsed;
use muxer::MuxFramer;
use security::Security;
use streams::Streams;

/// Recognises a libp2p connection by the multistream header either side sends first.
pub struct Libp2pProbe;

impl StreamProbe for Libp2pProbe {
    fn probe(&self, _side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        match multistream::starts_with_header(first) {
            Some(true) => Probe::Yes(Box::new(Libp2pDecoder::new(*conn, ctx.labels))),
            Some(false) => Probe::NeedMore,
            None => Probe::No,
        }
    }
}

/// What one direction is carrying at the moment.
enum Phase {
    /// multistream-select messages for `layer`; `held` keeps an incomplete message.
    Negotiating { held: Vec<u8>, layer: Layer },
    /// Bytes of the security layer.
    Secured,
    /// Frames of the muxer; bodies go to the stream they belong to.
    Muxed(Box<dyn MuxFramer>),
    /// Every further byte gets this label.
    Settled(LabelId),
}

/// What a multistream negotiation selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Security,
    Muxer,
}

/// Decoder of the libp2p stack of one connection.
pub struct Libp2pDecoder {
    conn: Conn,
    phases: [Phase; 2],
    /// The initiator's latest proposal: what its next non-multistream bytes speak.
    proposal: Option<Vec<u8>>,
    /// The security protocol once accepted (or assumed from the initiator's bytes), and its layer.
    security: Option<(Vec<u8>, Box<dyn Security>)>,
    negotiation: LabelId,
    connection: LabelId,
    /// The streams of a muxed session, once a muxer was negotiated.
    streams: Option<Streams>,
    /// `libp2p` / `<muxer>` / `framing`: muxer headers, and frames that carry no stream data.
    framing: LabelId,
    /// Per side, the spans of muxed streams waiting for their labels, in stream order.
    ordered: [Ordered; 2],
}

impl Libp2pDecoder {
    /// The decoder of connection `conn` from its first byte (the multistream header).
    pub fn new(conn: Conn, labels: &mut LabelTable) -> Libp2pDecoder {
        let protocol = std::str::from_utf8(multistream::HEADER).unwrap_or("multistream");
        Libp2pDecoder {
            conn,
            phases: [Side::Initiator, Side::Responder].map(|_| Phase::Negotiating {
                held: Vec::new(),
                layer: Layer::Security,
            }),
            proposal: None,
            security: None,
            negotiation: labels.decoded(Category::Libp2p, protocol, "negotiation"),
            connection: labels.decoded(Category::Libp2p, protocol, "unparsed"),
            streams: None,
            framing: labels.decoded(Category::Libp2p, "/yamux/1.0.0", "framing"),
            ordered: [Ordered::default(), Ordered::default()],
        }
    }

    /// Switches `side` to the muxer `id`: the muxers of [`muxer::MUXERS`] are followed, others
    /// are opaque.
    fn enter_muxer(&mut self, side: Side, id: &[u8], labels: &mut LabelTable) {
        let name = String::from_utf8_lossy(id);
        let Some(framer) = muxer::framer(id) else {
            let muxed = labels.decoded(Category::Libp2p, &name, "muxed");
            self.phases[side.index()] = Phase::Settled(muxed);
            return;
        };
        self.streams.get_or_insert_with(|| Streams::new(labels));
        self.framing = labels.decoded(Category::Libp2p, &name, "framing");
        self.phases[side.index()] = Phase::Muxed(framer);
    }

    /// Switches `side` to the security protocol `id` and labels the connection with it; a
    /// protocol no layer knows leaves the side `encrypted`.
    fn enter_security(&mut self, side: Side, id: &[u8], labels: &mut LabelTable) {
        let name = String::from_utf8_lossy(id);
        self.connection = labels.decoded(Category::Libp2p, &name, "unparsed");
        if self.security.is_none()
            && let Some(layer) = security::layer(id, self.conn, labels)
        {
            self.security = Some((id.to_vec(), layer));
        }
        self.phases[side.index()] = match &self.security {
            Some((agreed, _)) if agreed == id => Phase::Secured,
            _ => Phase::Settled(labels.decoded(Category::Libp2p, &name, "encrypted")),
        };
    }

    /// Parses multistream messages from `bytes` (after what `side` held); returns the bytes that
    /// follow the negotiation when the side switched to the layer it selected.
    fn negotiate(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) -> Option<Vec<u8>> {
        let Phase::Negotiating { held, layer } = &mut self.phases[side.index()] else {
            return None;
        };
        let layer = *layer;
        let mut buf = std::mem::take(held);
        buf.extend_from_slice(bytes);
        let mut off = 0;
        let mut next: Option<Vec<u8>> = None;
        loop {
            match multistream::parse(&buf[off..]) {
                Parsed::Message(m) => {
                    ctx.emit(side, m.wire_len as u64, self.negotiation, 1);
                    off += m.wire_len;
                    let text = m.text;
                    if text == multistream::HEADER || text == multistream::NA || text == b"ls" {
                        continue;
                    }
                    match side {
                        Side::Initiator => self.proposal = Some(text.to_vec()),
                        Side::Responder => {
                            next = Some(text.to_vec());
                            break;
                        }
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Invalid => {
                    next = Some(self.proposal.clone().unwrap_or_default());
                    break;
                }
            }
        }
        let rest = buf.split_off(off);
        match next {
            Some(id) => {
                match layer {
                    Layer::Security => self.enter_security(side, &id, ctx.labels),
                    Layer::Muxer => self.enter_muxer(side, &id, ctx.labels),
                }
                Some(rest)
            }
            None => {
                if let Phase::Negotiating { held, .. } = &mut self.phases[side.index()] {
                    *held = rest;
                }
                None
            }
        }
    }

    /// Labels the rest of `side` (`unlabelled` bytes held or given, and all that follows) with
    /// the connection's label.
    fn settle(&mut self, side: Side, unlabelled: u64, ctx: &mut DecodeCtx<'_>) {
        let out = &mut self.ordered[side.index()];
        out.push(unlabelled, Pending::Now(self.connection), 0);
        out.flush(side, ctx);
        self.phases[side.index()] = Phase::Settled(self.connection);
    }
}

impl StreamDecoder for Libp2pDecoder {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        match &mut self.phases[i] {
            Phase::Negotiating { .. } => {
                if let Some(rest) = self.negotiate(side, bytes, ctx) {
                    self.data(side, &rest, ctx);
                }
            }
            Phase::Secured => {
                let Some((_, layer)) = self.security.as_mut() else {
                    return;
                };
                match layer.data(side, bytes, ctx) {
                    Ok(None) => {}
                    Ok(Some(rest)) => {
                        self.phases[i] = Phase::Negotiating {
                            held: Vec::new(),
                            layer: Layer::Muxer,
                        };
                        self.data(side, rest, ctx);
                    }
                    Err((e, unlabelled)) => {
                        ctx.malformed(e);
                        self.settle(side, unlabelled, ctx);
                    }
                }
            }
            Phase::Muxed(framer) => {
                let framing = self.framing;
                let out = &mut self.ordered[i];
                let Some(streams) = self.streams.as_mut() else {
                    return;
                };
                let fed = framer.feed(side, bytes, &mut |p| {
                    muxer::route(p, side, framing, streams, ctx, out);
                });
                match fed {
                    Ok(()) => out.drain(side, ctx),
                    Err((e, unlabelled)) => {
                        // Not this muxer after all: the rest of this side is unparsed.
                        ctx.malformed(e);
                        self.settle(side, unlabelled, ctx);
                    }
                }
            }
            Phase::Settled(label) => ctx.emit(side, bytes.len() as u64, *label, 0),
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        self.ordered[side.index()].flush(side, ctx);
        let held = match &self.phases[side.index()] {
            Phase::Negotiating { held, .. } => held.len(),
            Phase::Secured => self.security.as_ref().map_or(0, |(_, l)| l.held(side)),
            Phase::Muxed(framer) => framer.held(),
            Phase::Settled(_) => 0,
        };
        let label = match self.phases[side.index()] {
            Phase::Settled(l) => l,
            _ => self.connection,
        };
        ctx.emit(side, held as u64 + len, label, 0);
        self.phases[side.index()] = Phase::Settled(label);
    }

    fn connection_label(&self) -> LabelId {
        self.connection
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        match self.phases[side.index()] {
            Phase::Settled(l) => Some(l),
            _ => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        let held: usize = self
            .phases
            .iter()
            .map(|p| match p {
                Phase::Negotiating { held, .. } => held.capacity(),
                Phase::Muxed(framer) => framer.held(),
                _ => 0,
            })
            .sum();
        held + self.proposal.as_ref().map_or(0, Vec::capacity)
            + self
                .security
                .as_ref()
                .map_or(0, |(id, layer)| id.capacity() + layer.heap_bytes())
            + self.streams.as_ref().map_or(0, Streams::heap_bytes)
            + self.ordered.iter().map(Ordered::heap_bytes).sum::<usize>()
    }
}
