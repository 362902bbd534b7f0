//! libp2p over TCP (protocols.md §1): the multistream-select prelude, then Noise frames, TLS
//! records or the `/plaintext/2.0.0` exchange. Encrypted channels stay `libp2p` / `encrypted`; on
//! plaintext connections the muxer is negotiated and yamux or mplex streams are labelled with the
//! protocol each one negotiated.

use super::frames::FrameEvent;
use super::framing::{Framer, Piece};
use super::multistream::{self, Parsed};
use super::ordered::{Ordered, Pending};
use super::streams::Streams;
use super::{Conn, DecodeCtx, LabelId, LabelTable, Probe, Side, StreamDecoder, StreamProbe};
use super::{encrypted, mplex, noise, tls, uvarint, yamux};
use crate::account::record::Category;

/// Security protocol ids a Waku stack offers (protocols.md §1.2, §1.5).
const NOISE: &[u8] = b"/noise";
const TLS: &[u8] = b"/tls/1.0.0";
const PLAINTEXT: &[u8] = b"/plaintext/2.0.0";
/// The muxers whose streams are followed.
const YAMUX: &[u8] = b"/yamux/1.0.0";
const MPLEX: &[u8] = b"/mplex/6.7.0";

/// Noise XX: the initiator sends messages 1 and 3, the responder message 2.
const NOISE_HANDSHAKE_FRAMES: [u32; 2] = [2, 1];

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
    /// Noise frames: the first ones of each side are the XX handshake, the others are labelled
    /// by [`encrypted::Inference`].
    Noise {
        framer: Framer<{ noise::PREFIX_LEN }>,
        frames: u32,
        handshake: LabelId,
    },
    /// TLS records, labelled by record type.
    Tls {
        framer: Framer<{ tls::RECORD_HEADER_LEN }>,
        labels: Pair,
    },
    /// The `/plaintext/2.0.0` Exchange message: its length prefix (held until complete), then
    /// `body_left` bytes of body; after it, the muxer's negotiation.
    PlaintextExchange {
        prefix: Vec<u8>,
        body_left: Option<u64>,
        handshake: LabelId,
    },
    /// yamux frames; bodies go to the stream they belong to.
    Yamux {
        framer: Framer<{ yamux::HEADER_LEN }>,
    },
    /// mplex frames; bodies go to the stream they belong to.
    Mplex { framer: mplex::Framer },
    /// Every further byte gets this label.
    Settled(LabelId),
}

/// What a multistream negotiation selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Security,
    Muxer,
}

/// The handshake label and the label of what follows it, for one security protocol.
#[derive(Clone, Copy)]
struct Pair {
    handshake: LabelId,
    after: LabelId,
}

/// Longest uvarint length prefix accepted.
const MAX_VARINT_LEN: usize = 9;

/// Decoder of the libp2p prelude of one connection.
pub struct Libp2pDecoder {
    conn: Conn,
    phases: [Phase; 2],
    /// The initiator's latest proposal: what its next non-multistream bytes speak.
    proposal: Option<Vec<u8>>,
    /// The security protocol once accepted (or assumed from the initiator's bytes).
    security: Option<Vec<u8>>,
    negotiation: LabelId,
    connection: LabelId,
    /// The streams of a yamux or mplex session, once one was negotiated.
    streams: Option<Streams>,
    /// `libp2p` / `<muxer>` / `framing`: muxer headers, and frames that carry no stream data.
    framing: LabelId,
    /// Per side, the spans of muxed streams waiting for their labels, in stream order.
    ordered: [Ordered; 2],
    /// The labels inferred for Noise transport frames, from the first one on.
    inference: Option<encrypted::Inference>,
}

impl Libp2pDecoder {
    fn new(conn: Conn, labels: &mut LabelTable) -> Libp2pDecoder {
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
            inference: None,
        }
    }

    /// Switches `side` to the muxer `id`: yamux and mplex streams are followed, other muxers
    /// are opaque.
    fn enter_muxer(&mut self, side: Side, id: &[u8], labels: &mut LabelTable) {
        let name = String::from_utf8_lossy(id);
        let phase = match id {
            YAMUX => Phase::Yamux {
                framer: Framer::default(),
            },
            MPLEX => Phase::Mplex {
                framer: mplex::Framer::default(),
            },
            _ => {
                let muxed = labels.decoded(Category::Libp2p, &name, "muxed");
                self.phases[side.index()] = Phase::Settled(muxed);
                return;
            }
        };
        self.streams.get_or_insert_with(|| Streams::new(labels));
        self.framing = labels.decoded(Category::Libp2p, &name, "framing");
        self.phases[side.index()] = phase;
    }

    /// Switches `side` to the security protocol `id` and labels the connection with it.
    fn enter_security(&mut self, side: Side, id: &[u8], labels: &mut LabelTable) {
        let name = String::from_utf8_lossy(id);
        self.connection = labels.decoded(Category::Libp2p, &name, "unparsed");
        self.security.get_or_insert_with(|| id.to_vec());
        let handshake = labels.decoded(Category::Libp2p, &name, "handshake");
        let encrypted = labels.decoded(Category::Libp2p, &name, "encrypted");
        let pair = Pair {
            handshake,
            after: encrypted,
        };
        self.phases[side.index()] = match id {
            NOISE => Phase::Noise {
                framer: Framer::default(),
                frames: 0,
                handshake,
            },
            TLS => Phase::Tls {
                framer: Framer::default(),
                labels: pair,
            },
            PLAINTEXT => Phase::PlaintextExchange {
                prefix: Vec::new(),
                body_left: None,
                handshake,
            },
            _ => Phase::Settled(encrypted),
        };
    }

    /// Parses multistream messages from `bytes` (after what `side` held); returns the bytes that
    /// follow the negotiation when the side switched to its security protocol.
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
}

/// Puts a Noise frame of `body` bytes, taken for `kind`, in the frames table.
fn log_noise(ctx: &mut DecodeCtx<'_>, side: Side, body: u64, kind: &'static str) {
    ctx.frames.push(FrameEvent {
        side,
        time_ns: ctx.now_ns,
        security: "/noise",
        bytes: (noise::PREFIX_LEN as u64 + body) as u32,
        kind,
    });
}

/// Emits a framer's piece with the handshake or the data label.
fn emit_piece<const H: usize>(
    ctx: &mut DecodeCtx<'_>,
    side: Side,
    p: Piece<'_, H>,
    label: LabelId,
) {
    ctx.emit(side, p.len as u64, label, u32::from(p.starts));
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
            Phase::Noise {
                framer,
                frames,
                handshake,
            } => {
                let (limit, handshake) = (NOISE_HANDSHAKE_FRAMES[i], *handshake);
                let conn = self.conn;
                let inference = self
                    .inference
                    .get_or_insert_with(|| encrypted::Inference::new(conn, ctx.labels));
                framer.feed(bytes, noise::body_len, |p| {
                    *frames += u32::from(p.starts);
                    let body = noise::body_len(&p.header);
                    if *frames <= limit {
                        if p.starts {
                            log_noise(ctx, side, body, "handshake");
                        }
                        emit_piece(ctx, side, p, handshake);
                        return;
                    }
                    if p.starts {
                        let guess = inference.start(side, body, ctx);
                        log_noise(ctx, side, body, guess.as_str());
                    }
                    inference.consume(side, p.len as u64, ctx);
                });
            }
            Phase::Tls { framer, labels } => {
                let pair = (labels.handshake, labels.after);
                tls::feed_records(framer, bytes, pair, side, ctx, true);
            }
            Phase::PlaintextExchange {
                prefix,
                body_left,
                handshake,
            } => {
                let handshake = *handshake;
                let mut rest = bytes;
                while body_left.is_none() && !rest.is_empty() {
                    prefix.push(rest[0]);
                    rest = &rest[1..];
                    if let Some((len, used)) = uvarint(prefix) {
                        ctx.emit(side, used as u64, handshake, 1);
                        *body_left = Some(len);
                    } else if prefix.len() >= MAX_VARINT_LEN {
                        let n = prefix.len() as u64;
                        self.phases[i] = Phase::Settled(self.connection);
                        ctx.emit(side, n + rest.len() as u64, self.connection, 0);
                        return;
                    }
                }
                let Some(left) = body_left else { return };
                let n = rest.len().min(*left as usize);
                ctx.emit(side, n as u64, handshake, 0);
                *left -= n as u64;
                if *left == 0 {
                    self.phases[i] = Phase::Negotiating {
                        held: Vec::new(),
                        layer: Layer::Muxer,
                    };
                    self.data(side, &rest[n..], ctx);
                }
            }
            Phase::Yamux { framer } => {
                let framing = self.framing;
                let out = &mut self.ordered[i];
                let Some(streams) = self.streams.as_mut() else {
                    return;
                };
                framer.feed(bytes, yamux::body_len, |p| {
                    let h = yamux::Header(&p.header);
                    let id = h.stream_id();
                    let data = h.frame_type() == yamux::FrameType::Data;
                    if p.starts {
                        // A data frame's header belongs to the first unit its body carries.
                        let header = (p.len - p.body.len()) as u64;
                        if data && h.length() > 0 {
                            out.push(header, Pending::Next { fallback: framing }, 0);
                        } else {
                            out.push(header, Pending::Now(framing), 1);
                        }
                    }
                    if data {
                        let opener = if id % 2 == 1 {
                            Side::Initiator
                        } else {
                            Side::Responder
                        };
                        streams.body(side, opener, id, p.body, ctx, out);
                    }
                    if p.starts {
                        if h.flags() & yamux::RST != 0 {
                            streams.reset(id);
                        } else if h.flags() & yamux::FIN != 0 {
                            streams.close(side, id);
                        }
                    }
                });
                out.drain(side, ctx);
            }
            Phase::Mplex { framer } => {
                let framing = self.framing;
                let out = &mut self.ordered[i];
                let Some(streams) = self.streams.as_mut() else {
                    return;
                };
                let fed = framer.feed(side, bytes, |p| {
                    let h = p.header;
                    let key = h.stream_key();
                    let data = h.flag == mplex::Flag::Message;
                    if p.starts {
                        // A message's header belongs to the first unit its body carries; other
                        // frames (their stream names too) are muxer framing.
                        let header = (p.len - p.body.len()) as u64;
                        if data && p.body_len > 0 {
                            out.push(header, Pending::Next { fallback: framing }, 0);
                        } else {
                            out.push(header, Pending::Now(framing), 1);
                        }
                    }
                    if data {
                        streams.body(side, h.opener, key, p.body, ctx, out);
                    } else {
                        out.push(p.body.len() as u64, Pending::Now(framing), 0);
                    }
                    if p.starts {
                        match h.flag {
                            mplex::Flag::Reset => streams.reset(key),
                            mplex::Flag::Close => streams.close(side, key),
                            mplex::Flag::NewStream | mplex::Flag::Message => {}
                        }
                    }
                });
                if let Err(m) = fed {
                    // Not mplex after all: the rest of this side is unparsed.
                    out.push(m.unreported, Pending::Now(self.connection), 0);
                    out.flush(side, ctx);
                    self.phases[i] = Phase::Settled(self.connection);
                } else {
                    out.drain(side, ctx);
                }
            }
            Phase::Settled(label) => ctx.emit(side, bytes.len() as u64, *label, 0),
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        self.ordered[side.index()].flush(side, ctx);
        let held = match &self.phases[side.index()] {
            Phase::Negotiating { held, .. } => held.len(),
            Phase::PlaintextExchange {
                prefix, body_left, ..
            } => body_left.map_or(prefix.len(), |_| 0),
            Phase::Noise { framer, .. } => framer.held(),
            Phase::Tls { framer, .. } => framer.held(),
            Phase::Yamux { framer } => framer.held(),
            Phase::Mplex { framer } => framer.held(),
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
                Phase::PlaintextExchange { prefix, .. } => prefix.capacity(),
                _ => 0,
            })
            .sum();
        let ids = [&self.proposal, &self.security];
        held + ids
            .iter()
            .map(|v| v.as_ref().map_or(0, Vec::capacity))
            .sum::<usize>()
            + self.streams.as_ref().map_or(0, Streams::heap_bytes)
            + self.ordered.iter().map(Ordered::heap_bytes).sum::<usize>()
            + self
                .inference
                .as_ref()
                .map_or(0, |_| size_of::<encrypted::Inference>())
    }
}
