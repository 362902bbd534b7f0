//! libp2p over wss (`/tls/ws`: WebSocket inside TLS), inferred from record sizes alone. A TLS
//! connection is taken for wss when its client's records after the handshake show an HTTP
//! upgrade and then a masked WebSocket frame of multistream-select's header (with or without the
//! `/noise` proposal); anything else stays ordinary TLS. The outer records' header, inner type
//! and tag are `/tls` framing, the upgrade request and response `/websocket` `upgrade`; each
//! WebSocket frame (one or more records) carries multistream-select and the Noise handshake, then
//! one Noise frame each, classified by [`Inference`]. Every label has method `inferred`.

use std::collections::VecDeque;

use crate::account::record::{Category, Method};
use crate::decode::framing::Framer;
use crate::decode::libp2p::encrypted::{Inference, LIKELY, SURE};
use crate::decode::libp2p::tls::{
    self, APPLICATION_DATA, Handshake, RECORD_HEADER_LEN, TAG_AND_TYPE,
};
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side, Span, StreamDecoder};

/// Most plaintext a TLS record carries; a WebSocket frame continues past a full record.
const RECORD_MAX: u64 = 1 << 14;
/// Client bytes held while it is not known whether a TLS connection is wss.
const HELD_MAX: usize = 64 * 1024;
/// The client's application data record that tells: its Finished, the upgrade request, then
/// its first WebSocket frame.
const TELLING_RECORD: u32 = 3;
/// Plaintext of that record in wss: a masked frame header (6) and multistream-select's header
/// (20), alone or with the `/noise` proposal (8).
const FIRST_FRAMES: [u64; 2] = [6 + 20, 6 + 28];
/// Payloads of multistream-select's header, a `/noise` proposal, and both in one frame.
const NEGOTIATION: [u64; 3] = [20, 8, 28];
/// Noise frame overhead (length prefix and tag): shorter frames carry no Noise frame.
const NOISE_OVERHEAD: u64 = 2 + 16;
/// What each Noise frame after the first in a record adds around it, per side (client,
/// server): a short WebSocket frame's header (masked from the client) and Noise's overhead.
const EXTRA: [u64; 2] = [6 + NOISE_OVERHEAD, 2 + NOISE_OVERHEAD];
/// Noise frames of more plaintext than this fill a WebSocket frame past 125 bytes: the header
/// taken for a record of several has the 16-bit length, two bytes more than their first's own.
const LONGER: (u64, u64) = (125 - NOISE_OVERHEAD, 2);
/// Noise XX handshake messages each side sends (initiator: e and s; responder: e, ee, s, es).
const NOISE_MESSAGES: [u32; 2] = [2, 1];

/// A TLS connection whose bytes are held until its record sizes show whether it is wss; then
/// they go, in their order, to the wss decoder or to `tls` (the ordinary TLS decoder).
pub struct Detect {
    conn: Conn,
    held: Vec<(Side, Vec<u8>)>,
    held_len: usize,
    scan: Framer<RECORD_HEADER_LEN>,
    client_data: u32,
    verdict: Option<bool>,
    decided: bool,
    inner: Box<dyn StreamDecoder>,
}

impl Detect {
    /// Decides between wss and `tls` for connection `conn`.
    pub fn new(conn: Conn, tls: Box<dyn StreamDecoder>) -> Detect {
        Detect {
            conn,
            held: Vec::new(),
            held_len: 0,
            scan: Framer::default(),
            client_data: 0,
            verdict: None,
            decided: false,
            inner: tls,
        }
    }

    fn decide(&mut self, wss: bool, ctx: &mut DecodeCtx<'_>) {
        self.decided = true;
        if wss {
            self.inner = Box::new(WssConn::new(self.conn, ctx.labels));
        }
        self.held_len = 0;
        for (side, bytes) in std::mem::take(&mut self.held) {
            self.inner.data(side, &bytes, ctx);
        }
    }
}

impl StreamDecoder for Detect {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        if self.decided {
            self.inner.data(side, bytes, ctx);
            return;
        }
        self.held.push((side, bytes.to_vec()));
        self.held_len += bytes.len();
        if side == Side::Initiator {
            let (count, verdict) = (&mut self.client_data, &mut self.verdict);
            self.scan.feed(bytes, tls::body_len, |p| {
                if p.starts && p.header[0] == APPLICATION_DATA {
                    *count += 1;
                    if *count == TELLING_RECORD && verdict.is_none() {
                        let plain = tls::body_len(&p.header).saturating_sub(TAG_AND_TYPE);
                        *verdict = Some(FIRST_FRAMES.contains(&plain));
                    }
                }
            });
        }
        let verdict = self.verdict.or((self.held_len > HELD_MAX).then_some(false));
        if let Some(wss) = verdict {
            self.decide(wss, ctx);
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        if !self.decided {
            self.decide(false, ctx);
        }
        self.inner.gap(side, len, ctx);
    }

    fn connection_label(&self) -> LabelId {
        self.inner.connection_label()
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        self.decided.then(|| self.inner.settled(side)).flatten()
    }

    fn connection_known(&self) -> bool {
        self.decided && self.inner.connection_known()
    }

    fn heap_bytes(&self) -> usize {
        self.held_len + self.inner.heap_bytes()
    }
}

/// The labels of the layers wss adds around libp2p.
#[derive(Clone, Copy)]
struct Labels {
    tls_framing: LabelId,
    tls_handshake: LabelId,
    upgrade: LabelId,
    ws_framing: LabelId,
    ws_control: LabelId,
    negotiation: LabelId,
    noise_handshake: LabelId,
}

impl Labels {
    fn new(labels: &mut LabelTable) -> Labels {
        let mut l = |protocol: &str, kind: &str, permille| {
            let id = labels.decoded(Category::Libp2p, protocol, kind);
            labels.with_method(id, Method::Inferred, permille)
        };
        Labels {
            tls_framing: l("/tls", "framing", SURE),
            tls_handshake: l("/tls", "handshake", SURE),
            upgrade: l("/websocket", "upgrade", SURE),
            ws_framing: l("/websocket", "framing", SURE),
            ws_control: l("/websocket", "control", LIKELY),
            negotiation: l("/multistream/1.0.0", "negotiation", LIKELY),
            noise_handshake: l("/noise", "handshake", SURE),
        }
    }
}

/// One direction of a wss connection.
#[derive(Default)]
struct WsSide {
    framer: Framer<RECORD_HEADER_LEN>,
    /// The side sent its upgrade request or response.
    upgraded: bool,
    /// Noise handshake messages sent.
    noise_messages: u32,
    /// Plaintext lengths of the records of the WebSocket frame in progress.
    frame: Vec<u64>,
    /// Labels of the bytes to come, and bytes that came before their labels were known.
    plan: VecDeque<Span>,
    owed: u64,
    /// A gap ended decoding: every further byte gets the connection's label.
    settled: bool,
}

/// A wss connection: its TLS records, the upgrade, WebSocket frames and the libp2p inside, all
/// inferred from sizes.
struct WssConn {
    sides: [WsSide; 2],
    handshake: Handshake,
    inference: Inference,
    labels: Labels,
    above: Vec<Span>,
}

impl WssConn {
    fn new(conn: Conn, labels: &mut LabelTable) -> WssConn {
        WssConn {
            sides: Default::default(),
            handshake: Handshake::new(1),
            inference: Inference::noise_coalesced(conn, EXTRA, LONGER, labels),
            labels: Labels::new(labels),
            above: Vec::new(),
        }
    }

    /// A record of `body` bytes of `record_type` starts on `side`: plans its labels, or those
    /// of the WebSocket frame it ends.
    fn record(&mut self, side: Side, record_type: u8, body: u64, ctx: &mut DecodeCtx<'_>) {
        let l = self.labels;
        let s = &mut self.sides[side.index()];
        let header = RECORD_HEADER_LEN as u64;
        if record_type != APPLICATION_DATA || self.handshake.takes(side, body) {
            s.plan
                .push_back(span(side, header + body, l.tls_handshake, 1));
            return;
        }
        let plain = body.saturating_sub(TAG_AND_TYPE);
        if !std::mem::replace(&mut s.upgraded, true) {
            s.plan.push_back(span(side, header, l.tls_framing, 0));
            s.plan.push_back(span(side, plain, l.upgrade, 1));
            s.plan.push_back(span(side, body - plain, l.tls_framing, 0));
            return;
        }
        s.frame.push(plain);
        if plain < RECORD_MAX {
            self.frame_end(side, ctx);
        }
    }

    /// The WebSocket frame in progress on `side` ended: plans the labels of its records.
    fn frame_end(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        let l = self.labels;
        let i = side.index();
        let records = std::mem::take(&mut self.sides[i].frame);
        let total: u64 = records.iter().sum();
        let ws_header = ws_header_len(side, total).min(total);
        let payload = total - ws_header;
        let s = &mut self.sides[i];
        let mut content: VecDeque<Span> = VecDeque::new();
        if s.noise_messages < NOISE_MESSAGES[i] {
            let label = if NEGOTIATION.contains(&payload) {
                l.negotiation
            } else {
                s.noise_messages += 1;
                l.noise_handshake
            };
            content.push_back(span(side, payload, label, 1));
        } else if payload < NOISE_OVERHEAD {
            content.push_back(span(side, payload, l.ws_control, 1));
        } else {
            let mut above = std::mem::take(&mut self.above);
            let mut up = ctx.with_spans(&mut above);
            self.inference.start(side, payload - 2, &mut up);
            self.inference.consume(side, payload, &mut up);
            content.extend(above.drain(..));
            self.above = above;
        }
        let s = &mut self.sides[i];
        let mut ws_left = ws_header;
        for plain in records {
            s.plan
                .push_back(span(side, RECORD_HEADER_LEN as u64, l.tls_framing, 0));
            let head = ws_left.min(plain);
            ws_left -= head;
            s.plan.push_back(span(side, head, l.ws_framing, 0));
            let mut left = plain - head;
            while left > 0 {
                let Some(next) = content.front_mut() else {
                    s.plan.push_back(span(side, left, l.tls_framing, 0));
                    break;
                };
                let n = left.min(next.len);
                s.plan.push_back(Span { len: n, ..*next });
                next.units = 0;
                next.len -= n;
                left -= n;
                if next.len == 0 {
                    content.pop_front();
                }
            }
            s.plan.push_back(span(side, TAG_AND_TYPE, l.tls_framing, 0));
        }
    }

    /// Labels the bytes of `side` that came, as far as their labels are known.
    fn drain(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        let s = &mut self.sides[side.index()];
        while s.owed > 0 {
            let Some(seg) = s.plan.front_mut() else {
                return;
            };
            let n = s.owed.min(seg.len);
            ctx.emit_carried(side, n, seg.label, seg.units, seg.framing);
            seg.units = 0;
            seg.len -= n;
            s.owed -= n;
            if seg.len == 0 {
                s.plan.pop_front();
            }
        }
    }
}

/// A span of `len` bytes of `label`, counting `units`.
fn span(side: Side, len: u64, label: LabelId, units: u32) -> Span {
    Span {
        side,
        len,
        label,
        units,
        framing: None,
    }
}

/// Header bytes of a WebSocket frame of `total` bytes from `side` (RFC 6455 §5.2): 2, 4 or 10,
/// and a 4-byte mask key on the client's frames.
fn ws_header_len(side: Side, total: u64) -> u64 {
    let mask = if side == Side::Initiator { 4 } else { 0 };
    let base = if total <= 125 + 2 + mask {
        2
    } else if total <= 65535 + 4 + mask {
        4
    } else {
        10
    };
    base + mask
}

impl StreamDecoder for WssConn {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        if self.sides[i].settled {
            ctx.emit(side, bytes.len() as u64, self.labels.tls_framing, 0);
            return;
        }
        let mut framer = std::mem::take(&mut self.sides[i].framer);
        framer.feed(bytes, tls::body_len, |p| {
            if p.starts {
                self.record(side, p.header[0], tls::body_len(&p.header), ctx);
            }
            self.sides[i].owed += p.len as u64;
            self.drain(side, ctx);
        });
        self.sides[i].framer = framer;
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let label = self.labels.tls_framing;
        let s = &mut self.sides[side.index()];
        ctx.emit(side, s.owed + len, label, 0);
        *s = WsSide {
            settled: true,
            ..WsSide::default()
        };
    }

    fn connection_label(&self) -> LabelId {
        self.labels.tls_framing
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        self.sides[side.index()]
            .settled
            .then_some(self.labels.tls_framing)
    }

    fn heap_bytes(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.plan.capacity() * size_of::<Span>() + s.frame.capacity() * 8)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::decode::Settled;
    use crate::decode::TestCtx;
    use crate::decode::libp2p::tls::HANDSHAKE;

    /// A record of `record_type` with a body of `body` bytes.
    fn record(record_type: u8, body: u64) -> Vec<u8> {
        let mut r = vec![record_type, 3, 3];
        r.extend_from_slice(&u16::try_from(body).expect("body").to_be_bytes());
        r.resize(RECORD_HEADER_LEN + body as usize, 0xaa);
        r
    }

    /// Application data records of these plaintext sizes.
    fn data(plains: &[u64]) -> Vec<u8> {
        plains
            .iter()
            .flat_map(|p| record(APPLICATION_DATA, p + TAG_AND_TYPE))
            .collect()
    }

    /// Feeds a wss-shaped exchange whose client's first WebSocket frame is `first` plaintext
    /// bytes to a [`Detect`]; returns the spans' kinds with their bytes, and the wire length.
    fn exchange(first: u64) -> (BTreeMap<String, u64>, u64) {
        let mut t = TestCtx::default();
        let fallback = t.labels.decoded(Category::Other, "tls", "data");
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let conn = Conn {
            initiator: (ip, 40000),
            responder: (ip, 443),
        };
        let mut d = Detect::new(conn, Box::new(Settled(fallback)));
        let mut wire = 0;
        let mut feed = |side, bytes: Vec<u8>, t: &mut TestCtx| {
            wire += bytes.len() as u64;
            for chunk in bytes.chunks(7) {
                d.data(side, chunk, &mut t.ctx());
            }
        };
        feed(Side::Initiator, record(HANDSHAKE, 300), &mut t);
        let mut server = record(HANDSHAKE, 122);
        server.extend(data(&[400, 80, 52]));
        feed(Side::Responder, server, &mut t);
        // Finished, the upgrade request, multistream-select's header and `/noise`.
        feed(Side::Initiator, data(&[52, 224, first]), &mut t);
        // Two session tickets, the 101 response, the echo of the header and of `/noise`.
        feed(Side::Responder, data(&[265, 265, 129, 22, 10]), &mut t);
        // Noise handshake: e, then e, ee, s, es, then s, se (with their frames' headers).
        feed(Side::Initiator, data(&[6 + 34]), &mut t);
        feed(Side::Responder, data(&[4 + 218]), &mut t);
        feed(Side::Initiator, data(&[8 + 186]), &mut t);
        // A 20 KiB WebSocket frame in two records.
        feed(Side::Responder, data(&[16384, 20000 - 16384]), &mut t);
        let mut kinds = BTreeMap::new();
        for s in &t.spans {
            let l = t.labels.get(s.label);
            *kinds
                .entry(format!("{}/{}", l.protocol, l.kind))
                .or_default() += s.len;
        }
        (kinds, wire)
    }

    #[test]
    fn wss_is_told_by_the_first_frame_and_every_byte_is_labelled_once() {
        let (kinds, wire) = exchange(34);
        assert_eq!(kinds.values().sum::<u64>(), wire, "{kinds:?}");
        assert_eq!(kinds["/websocket/upgrade"], 224 + 129);
        assert_eq!(kinds["/multistream/1.0.0/negotiation"], 28 + 20 + 8);
        assert_eq!(kinds["/noise/handshake"], 34 + 218 + 186);
        // Headers: 6 + 2 + 2 (negotiation), 6 + 4 + 8 (Noise), 4 (the long frame).
        assert_eq!(kinds["/websocket/framing"], 10 + 18 + 4);
        assert!(!kinds.contains_key("tls/data"), "{kinds:?}");
    }

    #[test]
    fn other_tls_stays_with_the_fallback() {
        let (kinds, wire) = exchange(700);
        assert_eq!(kinds.get("tls/data"), Some(&wire), "{kinds:?}");
    }

    #[test]
    fn frame_headers_by_length_and_side() {
        assert_eq!(ws_header_len(Side::Responder, 127), 2);
        assert_eq!(ws_header_len(Side::Responder, 128), 4);
        assert_eq!(ws_header_len(Side::Initiator, 131), 6);
        assert_eq!(ws_header_len(Side::Initiator, 132), 8);
        assert_eq!(ws_header_len(Side::Responder, 65539), 4);
        assert_eq!(ws_header_len(Side::Responder, 65540), 10);
    }
}
