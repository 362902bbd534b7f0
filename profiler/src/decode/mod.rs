//! Decoders: each flow is offered to the protocol decoders, which label its bytes.
//!
//! A stream decoder sees each direction's reassembled TCP bytes once, in order, and answers with
//! [`Span`]s: runs of bytes and their label, in stream order, covering every byte exactly once.
//! It may lag (hold bytes until it knows what they are); accounting keeps the packets of unlabelled
//! bytes pending until then. A new protocol is one file in its family's folder (`libp2p/`, `relay/`,
//! `discovery/`, `services/`, `bittorrent/`) plus one line in [`TCP_PROBES`].

pub mod bittorrent;
pub mod classify;
pub mod datagram;
pub mod discovery;
pub mod error;
pub mod frames;
pub mod framing;
pub mod labels;
pub mod libp2p;
pub mod lru;
pub mod ordered;
pub mod protocols;
pub mod relay;
pub mod services;
pub mod udp;

use std::net::{IpAddr, SocketAddr};

pub use labels::{LabelId, LabelTable};

use crate::rules::Rules;

/// Which end of a connection sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end that opened the connection (sent the SYN).
    Initiator,
    /// The end that accepted it.
    Responder,
}

impl Side {
    /// Both sides, initiator first.
    pub const BOTH: [Side; 2] = [Side::Initiator, Side::Responder];

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Initiator => Side::Responder,
            Side::Responder => Side::Initiator,
        }
    }

    /// Index 0 for the initiator, 1 for the responder, for per-side arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Initiator => 0,
            Side::Responder => 1,
        }
    }
}

/// A run of `len` stream bytes of one side with one label; `units` counts the messages that
/// start in it. `framing` is set for muxer framing carried by the unit of `label` (rule 3): its
/// wire bytes go to `label`, its stream bytes to the `framing` label's payload_bytes, so that
/// payload_bytes of a unit is the unit alone (rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub side: Side,
    pub len: u64,
    pub label: LabelId,
    pub units: u32,
    pub framing: Option<LabelId>,
}

/// Where a decoder puts its spans, the label table it interns labels in, what decoders share
/// across connections, and the configured rules.
pub struct DecodeCtx<'a> {
    pub labels: &'a mut LabelTable,
    pub spans: &'a mut Vec<Span>,
    pub relay: &'a mut relay::relay_book::RelayBook,
    pub udp: &'a mut udp::UdpState,
    pub rules: &'a Rules,
    /// Capture time (ns) of the packet whose bytes are being decoded.
    pub now_ns: i64,
    /// Frames of encrypted libp2p connections, for the `--frames` table.
    pub frames: &'a mut frames::FrameLog,
    /// Malformed inputs met, per protocol.
    pub errors: &'a mut error::DecodeErrors,
}

/// Owns what a [`DecodeCtx`] borrows, for unit tests of single decoders and the fuzz harness.
#[derive(Default)]
pub struct TestCtx {
    pub labels: LabelTable,
    pub spans: Vec<Span>,
    pub relay: relay::relay_book::RelayBook,
    pub udp: udp::UdpState,
    pub rules: Rules,
    pub frames: frames::FrameLog,
    pub errors: error::DecodeErrors,
}

impl TestCtx {
    /// The kind `decoder` gives a datagram from `src` to `dst` carrying `payload` whole, or
    /// `None` if it does not know it.
    pub fn datagram_kind(
        &mut self,
        decoder: &dyn udp::DatagramDecoder,
        payload: &[u8],
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<String> {
        let d = udp::Datagram {
            src,
            dst,
            payload,
            wire_payload: payload.len() as u32,
        };
        let l = decoder.datagram(&d, &mut self.ctx())?;
        Some(self.labels.get(l.label).kind.to_string())
    }

    /// A context borrowing this one's parts.
    pub fn ctx(&mut self) -> DecodeCtx<'_> {
        DecodeCtx {
            labels: &mut self.labels,
            spans: &mut self.spans,
            relay: &mut self.relay,
            udp: &mut self.udp,
            rules: &self.rules,
            now_ns: 0,
            frames: &mut self.frames,
            errors: &mut self.errors,
        }
    }
}

impl DecodeCtx<'_> {
    /// Counts malformed input `e`; the decoder labels the bytes itself.
    pub fn malformed(&mut self, e: error::DecodeError) {
        self.errors.count(e);
    }

    /// The same context with the spans going to `spans`: for a layer that puts the spans of
    /// the layer above in place among its own.
    pub fn with_spans<'b>(&'b mut self, spans: &'b mut Vec<Span>) -> DecodeCtx<'b> {
        DecodeCtx {
            labels: self.labels,
            spans,
            relay: self.relay,
            udp: self.udp,
            rules: self.rules,
            now_ns: self.now_ns,
            frames: self.frames,
            errors: self.errors,
        }
    }

    /// Emits a span of `side`; zero-length spans are dropped.
    pub fn emit(&mut self, side: Side, len: u64, label: LabelId, units: u32) {
        self.emit_carried(side, len, label, units, None);
    }

    /// Emits a span of `side` whose bytes are `framing` carried by the unit of `label`.
    pub fn emit_carried(
        &mut self,
        side: Side,
        len: u64,
        label: LabelId,
        units: u32,
        framing: Option<LabelId>,
    ) {
        if len > 0 {
            let framing = framing.filter(|&f| f != label);
            self.spans.push(Span {
                side,
                len,
                label,
                units,
                framing,
            });
        }
    }
}

/// A decoder of one TCP connection (both directions).
pub trait StreamDecoder {
    /// In-order bytes of one direction, each byte given once.
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>);
    /// `len` bytes of this direction were never seen (capture loss or a reassembly limit). The
    /// decoder emits spans for the gap and any bytes it held, then resynchronises or settles.
    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>);
    /// The label of the connection as a whole (its category and protocol), for bytes the decoder
    /// never labelled and, with kind `transport`, for segments without payload.
    fn connection_label(&self) -> LabelId;
    /// `Some(label)` once every further byte of `side` has that label: reassembly of that
    /// direction stops and its packets are counted directly.
    fn settled(&self, side: Side) -> Option<LabelId>;
    /// Whether [`StreamDecoder::connection_label`] is final: until it is, packets without
    /// payload wait (bounded) rather than take a label that may change.
    fn connection_known(&self) -> bool {
        true
    }
    /// Approximate heap bytes the decoder holds beyond its own value (buffers, stream tables),
    /// for the memory budget; decoders that hold nothing growable keep the default.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// A connection whose every byte has one label (e.g. decided by its port): nothing to reassemble.
pub struct Settled(pub LabelId);

impl StreamDecoder for Settled {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        ctx.emit(side, bytes.len() as u64, self.0, 0);
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        ctx.emit(side, len, self.0, 0);
    }

    fn connection_label(&self) -> LabelId {
        self.0
    }

    fn settled(&self, _side: Side) -> Option<LabelId> {
        Some(self.0)
    }
}

/// The answer of a probe to the first bytes of a connection.
pub enum Probe {
    /// Not this protocol.
    No,
    /// Cannot tell yet: offer more bytes.
    NeedMore,
    /// This protocol: the decoder takes the connection from its first byte.
    Yes(Box<dyn StreamDecoder>),
}

/// The endpoints of a TCP connection, as (address, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The end that sent the SYN (or, without one, the end on the higher port).
    pub initiator: (IpAddr, u16),
    pub responder: (IpAddr, u16),
}

impl Conn {
    /// Both ends as socket addresses, responder first.
    pub fn ends(&self) -> [SocketAddr; 2] {
        [self.responder, self.initiator].map(|(a, p)| SocketAddr::new(a, p))
    }
}

/// Recognises a TCP protocol from the first bytes a side sent.
pub trait StreamProbe: Sync {
    /// `first` holds the first bytes `side` sent on connection `conn`.
    fn probe(&self, side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe;
}

/// The TCP decoders, in the order they are tried.
pub static TCP_PROBES: &[&dyn StreamProbe] = &[
    &libp2p::Libp2pProbe,
    &discovery::dns::DnsProbe,
    &services::http::HttpProbe,
    &services::tls_sni::TlsProbe,
    &bittorrent::BittorrentProbe,
];

/// Bytes held per side while no probe has decided; past this, the connection is `other`.
pub const PROBE_WINDOW: usize = 64;

/// Read-only varint reader shared by the length-prefixed protocols (multiformats uvarint =
/// protobuf base-128). Returns (value, bytes used); `None` if incomplete or longer than 9 bytes.
pub fn uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(9) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
