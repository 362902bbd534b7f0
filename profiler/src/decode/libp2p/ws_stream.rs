//! A byte stream carried in WebSocket frames (RFC 6455 §5): the layer between an HTTP upgrade
//! and the protocol the frames carry (libp2p's `/ws` transport). Frame headers are
//! `libp2p` / `/websocket` / `framing`, control frames (ping, pong, close) `control`; data
//! payloads, unmasked and joined across frames and fragments, go to the decoder of the layer
//! above, whose spans are mapped back onto the wire bytes by a [`Splice`].

use std::collections::VecDeque;

use crate::account::record::Category;
use crate::decode::services::websocket;
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side, Span, StreamDecoder};

/// Longest frame header: 2 bytes, a 64-bit length and a mask key.
const MAX_HEADER: usize = 14;

/// A run of one side's wire bytes: this layer's own overhead, or payload for the layer above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Overhead {
        len: u64,
        label: LabelId,
        units: u32,
    },
    Payload(u64),
}

/// Maps the spans of the layer above (over payload bytes) onto the wire bytes of one side,
/// with this layer's overhead between them, in stream order: overhead waits until every payload
/// byte before it is labelled.
#[derive(Debug, Default)]
pub struct Splice {
    runs: VecDeque<Run>,
}

impl Splice {
    /// Notes `len` overhead bytes of `label` next on the wire.
    pub fn overhead(&mut self, len: u64, label: LabelId, units: u32) {
        if len > 0 {
            self.runs.push_back(Run::Overhead { len, label, units });
        }
    }

    /// Notes `len` payload bytes next on the wire.
    pub fn payload(&mut self, len: u64) {
        match self.runs.back_mut() {
            Some(Run::Payload(n)) => *n += len,
            _ if len > 0 => self.runs.push_back(Run::Payload(len)),
            _ => {}
        }
    }

    /// Emits `span` (of the layer above) at its place on the wire, cut where overhead falls
    /// inside it, and the overhead that follows once it is reached.
    pub fn emit(&mut self, span: Span, ctx: &mut DecodeCtx<'_>) {
        let (mut left, mut units) = (span.len, span.units);
        while left > 0 {
            self.overheads(span.side, ctx);
            let Some(Run::Payload(n)) = self.runs.front_mut() else {
                // More bytes than were handed up: cannot happen; keep them counted.
                ctx.emit_carried(span.side, left, span.label, units, span.framing);
                return;
            };
            let m = left.min(*n);
            *n -= m;
            if *n == 0 {
                self.runs.pop_front();
            }
            ctx.emit_carried(span.side, m, span.label, units, span.framing);
            units = 0;
            left -= m;
        }
        self.overheads(span.side, ctx);
    }

    /// Emits the overhead at the front, up to the next payload not yet labelled.
    pub fn overheads(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        while let Some(&Run::Overhead { len, label, units }) = self.runs.front() {
            ctx.emit(side, len, label, units);
            self.runs.pop_front();
        }
    }

    /// Emits everything still noted: payload not labelled by the layer above gets `label`.
    pub fn flush(&mut self, side: Side, label: LabelId, ctx: &mut DecodeCtx<'_>) {
        for run in self.runs.drain(..) {
            match run {
                Run::Overhead { len, label, units } => ctx.emit(side, len, label, units),
                Run::Payload(n) => ctx.emit(side, n, label, 0),
            }
        }
    }
}

/// Where one direction is in its frames.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of a header not complete yet.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    left: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame already unmasked.
    at: u64,
    /// The current frame is a control frame (its payload is not the stream's).
    control: bool,
    /// The side stopped being decoded (a gap): every further byte gets this label.
    settled: Option<LabelId>,
}

/// A connection whose bytes after the HTTP upgrade are WebSocket frames carrying the stream
/// `inner` decodes.
pub struct WsStream {
    sides: [Frames; 2],
    splices: [Splice; 2],
    inner: Box<dyn StreamDecoder>,
    framing: LabelId,
    control: LabelId,
    /// The spans the layer above emits, before they are put in place.
    above: Vec<Span>,
}

impl WsStream {
    /// The frames of a connection whose payload `inner` decodes from its first byte.
    pub fn new(inner: Box<dyn StreamDecoder>, labels: &mut LabelTable) -> WsStream {
        WsStream {
            sides: Default::default(),
            splices: Default::default(),
            inner,
            framing: labels.decoded(Category::Libp2p, "/websocket", "framing"),
            control: labels.decoded(Category::Libp2p, "/websocket", "control"),
            above: Vec::new(),
        }
    }

    /// Hands `payload` of `side` to the layer above and puts its spans in place.
    fn up(&mut self, side: Side, payload: &[u8], ctx: &mut DecodeCtx<'_>) {
        self.splices[side.index()].payload(payload.len() as u64);
        self.inner
            .data(side, payload, &mut ctx.with_spans(&mut self.above));
        self.place(ctx);
    }

    /// Puts the spans the layer above emitted at their places on the wire.
    fn place(&mut self, ctx: &mut DecodeCtx<'_>) {
        for span in self.above.drain(..) {
            self.splices[span.side.index()].emit(span, ctx);
        }
    }
}

impl StreamDecoder for WsStream {
    fn data(&mut self, side: Side, mut bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        if let Some(label) = self.sides[i].settled {
            ctx.emit(side, bytes.len() as u64, label, 0);
            return;
        }
        while !bytes.is_empty() {
            let f = &mut self.sides[i];
            if f.left == 0 {
                let held = f.head.len();
                let take = (MAX_HEADER - held).min(bytes.len());
                f.head.extend_from_slice(&bytes[..take]);
                let Some(h) = websocket::header(&f.head) else {
                    bytes = &bytes[take..];
                    continue;
                };
                bytes = &bytes[h.len - held..];
                f.head.clear();
                (f.left, f.mask, f.at, f.control) = (h.payload_len, h.mask, 0, h.is_control());
                let label = if h.is_control() {
                    self.control
                } else {
                    self.framing
                };
                self.splices[i].overhead(h.len as u64, label, u32::from(h.is_control()));
                self.splices[i].overheads(side, ctx);
                continue;
            }
            let n = bytes.len().min(f.left as usize);
            let (chunk, rest) = bytes.split_at(n);
            bytes = rest;
            f.left -= n as u64;
            if f.control {
                self.splices[i].overhead(n as u64, self.control, 0);
                self.splices[i].overheads(side, ctx);
                continue;
            }
            let mut payload = chunk.to_vec();
            if let Some(key) = f.mask {
                let shift = (f.at % 4) as usize;
                websocket::unmask(&mut payload, [0, 1, 2, 3].map(|k| key[(k + shift) % 4]));
            }
            f.at += n as u64;
            self.up(side, &payload, ctx);
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        if let Some(label) = self.sides[i].settled {
            ctx.emit(side, len, label, 0);
            return;
        }
        self.inner
            .gap(side, 0, &mut ctx.with_spans(&mut self.above));
        self.place(ctx);
        let label = self.inner.connection_label();
        self.splices[i].flush(side, label, ctx);
        let held = std::mem::take(&mut self.sides[i].head).len() as u64;
        ctx.emit(side, held + len, label, 0);
        self.sides[i].settled = Some(label);
    }

    fn connection_label(&self) -> LabelId {
        self.inner.connection_label()
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        self.sides[side.index()].settled
    }

    fn connection_known(&self) -> bool {
        self.inner.connection_known()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::libp2p::Libp2pDecoder;
    use crate::decode::{Conn, TestCtx};

    fn conn() -> Conn {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        Conn {
            initiator: (ip, 40000),
            responder: (ip, 8000),
        }
    }

    /// A yamux data frame of stream 1 carrying `body`.
    fn yamux(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 1, 0, 0, 0, 1];
        f.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// One side of a plaintext + yamux session opening an identify stream.
    fn session() -> Vec<u8> {
        let mut s = b"\x13/multistream/1.0.0\n\x11/plaintext/2.0.0\n\x03abc".to_vec();
        s.extend_from_slice(b"\x13/multistream/1.0.0\n\x0d/yamux/1.0.0\n");
        s.extend(yamux(
            b"\x13/multistream/1.0.0\n\x0f/ipfs/id/1.0.0\n\x05hello",
        ));
        s
    }

    /// `payload` as WebSocket frames of at most `max` bytes, masked by the client; the second
    /// data frame starts a fragmented message, and a ping comes after it.
    fn frames(payload: &[u8], max: usize, masked: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, chunk) in payload.chunks(max).enumerate() {
            let opcode = match n {
                0 | 3.. => 0x82,
                1 => 0x02,
                _ => 0x80,
            };
            out.push(opcode);
            let len = u8::try_from(chunk.len()).expect("short frames");
            out.push(len | if masked { 0x80 } else { 0 });
            let key = [0x11, 0x22, 0x33, u8::try_from(n).expect("few frames")];
            let mut body = chunk.to_vec();
            if masked {
                out.extend_from_slice(&key);
                websocket::unmask(&mut body, key);
            }
            out.extend_from_slice(&body);
            if n == 1 {
                out.extend_from_slice(&[0x89, 0x02, b'h', b'i']);
            }
        }
        out
    }

    /// The payload chunks handed up, as the layer above got them.
    type Chunks = std::rc::Rc<std::cell::RefCell<Vec<(Side, Vec<u8>)>>>;

    /// A libp2p decoder that notes what it is given.
    struct Tee(Libp2pDecoder, Chunks);

    impl StreamDecoder for Tee {
        fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
            self.1.borrow_mut().push((side, bytes.to_vec()));
            self.0.data(side, bytes, ctx);
        }
        fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
            self.0.gap(side, len, ctx);
        }
        fn connection_label(&self) -> LabelId {
            self.0.connection_label()
        }
        fn settled(&self, side: Side) -> Option<LabelId> {
            self.0.settled(side)
        }
    }

    /// The label of every byte each side sent, and the units per side.
    fn per_byte(t: &TestCtx) -> [(Vec<String>, u32); 2] {
        let mut out: [(Vec<String>, u32); 2] = Default::default();
        for s in &t.spans {
            let l = t.labels.get(s.label);
            let framing = s.framing.map(|f| t.labels.get(f).protocol.to_string());
            let name = format!("{}/{}/{framing:?}", l.protocol, l.kind);
            let o = &mut out[s.side.index()];
            o.0.extend(std::iter::repeat_n(name, s.len as usize));
            o.1 += s.units;
        }
        out
    }

    #[test]
    fn frames_carry_the_same_stack_as_tcp() {
        let plain = session();
        let mut t = TestCtx::default();
        let chunks = Chunks::default();
        let inner = Tee(Libp2pDecoder::new(conn(), &mut t.labels), chunks.clone());
        let mut ws = WsStream::new(Box::new(inner), &mut t.labels);
        let wire = [frames(&plain, 23, true), frames(&plain, 40, false)];
        for side in Side::BOTH {
            for chunk in wire[side.index()].chunks(5) {
                ws.data(side, chunk, &mut t.ctx());
            }
        }
        // The same payload, in the same pieces, straight from TCP.
        let mut direct = TestCtx::default();
        let mut d = Libp2pDecoder::new(conn(), &mut direct.labels);
        let mut unmasked: [Vec<u8>; 2] = Default::default();
        for (side, bytes) in chunks.borrow().iter() {
            unmasked[side.index()].extend_from_slice(bytes);
            d.data(*side, bytes, &mut direct.ctx());
        }
        assert_eq!(unmasked, [plain.clone(), plain.clone()], "payload unmasked");
        let expected = per_byte(&direct);
        let got = per_byte(&t);
        for side in Side::BOTH {
            let (labels, units) = &got[side.index()];
            assert_eq!(labels.len(), wire[side.index()].len(), "conservation");
            let above: Vec<String> = labels
                .iter()
                .filter(|l| !l.starts_with("/websocket/"))
                .cloned()
                .collect();
            assert_eq!(above, expected[side.index()].0, "{side:?}");
            let control = labels.iter().filter(|l| l.contains("/control/")).count();
            assert_eq!(control, 4, "the ping frame");
            assert_eq!(*units, expected[side.index()].1 + 1, "units and the ping");
        }
    }
}
