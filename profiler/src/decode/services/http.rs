//! HTTP/1.1 connections (RFC 9112): each message's head and body. A body that is JSON-RPC makes
//! the connection `rpc` / `jsonrpc`: every call and response of it (batches split) is a unit with
//! its method as kind, the head and the bytes between elements are kind `http`. After a WebSocket
//! upgrade, frames are read the same way (`jsonrpc-ws`), unless the first one opens a libp2p
//! connection (multistream-select's header): then the frames are libp2p's `/ws` transport and the
//! connection goes to a [`WsStream`] carrying a [`Libp2pDecoder`]. GETs of `/announce` and `/scrape` are
//! BitTorrent trackers. Everything else is `other` / `http`. The node's own REST and metrics
//! ports on loopback get labels of their own whatever they carry.

use std::collections::VecDeque;

use crate::account::record::{Category, Method};
use crate::decode::error::DecodeError;
use crate::decode::libp2p::Libp2pDecoder;
use crate::decode::libp2p::multistream;
use crate::decode::libp2p::ws_stream::WsStream;
use crate::decode::services::jsonrpc::{Calls, Element};
use crate::decode::services::websocket;
use crate::decode::{Conn, DecodeCtx, LabelId, Probe, Settled, Side, StreamDecoder, StreamProbe};
use crate::rules::is_loopback;

/// Longest head held; a longer one ends decoding of that side.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body held to read JSON-RPC from; larger bodies are counted unread.
const MAX_BODY: usize = 1 << 20;
/// Confidence of a label decided by the port alone, per mille.
pub const PORT_CONFIDENCE: u16 = 800;
/// Request methods that start a client's first bytes.
const METHODS: [&[u8]; 7] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"OPTIONS ",
    b"DELETE ",
    b"PATCH ",
];

/// Recognises HTTP/1.1 by the request line, and the node's own ports on loopback.
pub struct HttpProbe;

impl StreamProbe for HttpProbe {
    fn probe(&self, side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        let (addr, port) = conn.responder;
        let other = &ctx.rules.other;
        let own = if !is_loopback(addr) {
            None
        } else if other.node_rest_ports.contains(&port) {
            Some("node-rest")
        } else if other.node_metrics_ports.contains(&port) {
            Some("node-metrics")
        } else {
            None
        };
        if let Some(name) = own {
            let decoded = ctx.labels.decoded(Category::Other, name, "http");
            let label = ctx
                .labels
                .with_method(decoded, Method::Port, PORT_CONFIDENCE);
            return Probe::Yes(Box::new(Settled(label)));
        }
        if side != Side::Initiator {
            return Probe::No;
        }
        let matched = METHODS.iter().any(|m| {
            let n = m.len().min(first.len());
            first[..n] == m[..n]
        });
        match (matched, METHODS.iter().any(|m| first.starts_with(m))) {
            (_, true) => Probe::Yes(Box::new(Http::new(*conn, ctx))),
            (true, false) => Probe::NeedMore,
            (false, _) => Probe::No,
        }
    }
}

/// What a connection turned out to carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    JsonRpc,
    Tracker,
}

/// What one side is reading.
enum Phase {
    Head,
    /// A body of known length (`chunked` = the length is not known: read until the last chunk).
    Body {
        left: u64,
        chunked: bool,
    },
    /// A body or frame too large to hold: counted with `label` as it passes; then frames again
    /// if `ws`, else the next head.
    Streaming {
        left: u64,
        label: LabelId,
        ws: bool,
    },
    WebSocket,
    Settled(LabelId),
}

/// The request a response answers: what it was for, and whether a body may follow.
#[derive(Clone, Copy)]
struct Asked {
    head_only: bool,
    tracker: Option<&'static str>,
}

struct SideState {
    phase: Phase,
    held: Vec<u8>,
    /// The head of the message being read: its length and, for a tracker message, its kind.
    head_len: usize,
    tracker: Option<&'static str>,
}

/// An HTTP/1.1 connection.
pub struct Http {
    conn: Conn,
    /// After an upgrade to libp2p over WebSocket: the decoder of everything further.
    libp2p: Option<Box<WsStream>>,
    sides: [SideState; 2],
    kind: Kind,
    asked: VecDeque<Asked>,
    upgrade_asked: bool,
    /// Upgrade heads held back until the first WebSocket message says what the connection is.
    deferred: Vec<(Side, u64)>,
    /// Whether a message has shown what the connection carries.
    known: bool,
    calls: Calls,
    plain: LabelId,
    rpc: LabelId,
    tracker: LabelId,
}

impl Http {
    fn new(conn: Conn, ctx: &mut DecodeCtx<'_>) -> Http {
        let side = || SideState {
            phase: Phase::Head,
            held: Vec::new(),
            head_len: 0,
            tracker: None,
        };
        Http {
            conn,
            libp2p: None,
            sides: [side(), side()],
            kind: Kind::Plain,
            asked: VecDeque::new(),
            upgrade_asked: false,
            deferred: Vec::new(),
            known: false,
            calls: Calls::default(),
            plain: ctx.labels.decoded(Category::Other, "http", "message"),
            rpc: ctx.labels.decoded(Category::Rpc, "jsonrpc", "http"),
            tracker: ctx
                .labels
                .decoded(Category::Bittorrent, "bt-tracker-http", "http"),
        }
    }

    /// The label of bytes that are not a JSON-RPC element: heads, chunk framing, other bodies.
    fn framing(&self, ws: bool, ctx: &mut DecodeCtx<'_>) -> LabelId {
        match (self.kind, ws) {
            (Kind::JsonRpc, false) => self.rpc,
            (Kind::JsonRpc, true) => ctx.labels.decoded(Category::Rpc, "jsonrpc-ws", "frame"),
            (_, true) => ctx.labels.decoded(Category::Other, "websocket", "frame"),
            _ => self.plain,
        }
    }

    /// Emits a message of `total` bytes whose body `body` (decoded) may hold JSON-RPC elements.
    fn message(
        &mut self,
        side: Side,
        total: usize,
        body: &[u8],
        ws: bool,
        ctx: &mut DecodeCtx<'_>,
    ) {
        let tracker = self.sides[side.index()].tracker;
        if let Some(kind) = tracker {
            let l = ctx
                .labels
                .decoded(Category::Bittorrent, "bt-tracker-http", kind);
            ctx.emit(side, total as u64, l, 1);
            return;
        }
        let elements = self.calls.elements(body).unwrap_or_default();
        if !elements.is_empty() {
            self.kind = Kind::JsonRpc;
        }
        self.known = true;
        self.flush_deferred(ctx);
        let protocol = if ws { "jsonrpc-ws" } else { "jsonrpc" };
        let inside: usize = elements.iter().map(|e| e.len).sum();
        let framing = self.framing(ws, ctx);
        let units = u32::from(elements.is_empty());
        ctx.emit(side, total.saturating_sub(inside) as u64, framing, units);
        for Element { len, method, .. } in elements {
            let l = ctx.labels.decoded(Category::Rpc, protocol, &method);
            ctx.emit(side, len as u64, l, 1);
        }
    }

    /// Emits the held-back upgrade heads with the label the connection now has.
    fn flush_deferred(&mut self, ctx: &mut DecodeCtx<'_>) {
        let framing = self.framing(false, ctx);
        for (side, len) in std::mem::take(&mut self.deferred) {
            ctx.emit(side, len, framing, 1);
        }
    }

    /// Reads as many whole messages (or frames) of `side` as are held.
    fn drain(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        loop {
            let i = side.index();
            let progressed = match self.sides[i].phase {
                Phase::Head => self.head(side, ctx),
                Phase::Body { left, chunked } => self.body(side, left, chunked, ctx),
                Phase::WebSocket => self.frame(side, ctx),
                Phase::Streaming { .. } | Phase::Settled(_) => false,
            };
            if !progressed {
                return;
            }
        }
    }

    fn head(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) -> bool {
        let i = side.index();
        let held = &self.sides[i].held;
        // Searched again as each segment of a head arrives: memchr's search, not a byte loop.
        let Some(end) = memchr::memmem::find(held, b"\r\n\r\n") else {
            if held.len() > MAX_HEAD {
                ctx.malformed(DecodeError::new("http", "head longer than 16 KiB"));
                self.settle(side, ctx);
            }
            return false;
        };
        let head_len = end + 4;
        let head = String::from_utf8_lossy(&held[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let [length, encoding, upgrade] =
            headers(&head, ["content-length", "transfer-encoding", "upgrade"]);
        let length = length.and_then(|v| v.parse::<u64>().ok());
        let chunked = encoding.is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let upgrade = upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let st = &mut self.sides[i];
        st.head_len = head_len;
        let mut body_until_close = false;
        match side {
            Side::Initiator => {
                let mut parts = start.split(' ');
                let method = parts.next().unwrap_or_default();
                let path = parts.next().unwrap_or_default();
                let tracker = if method != "GET" {
                    None
                } else if path.starts_with("/announce") {
                    Some("announce")
                } else if path.starts_with("/scrape") {
                    Some("scrape")
                } else {
                    None
                };
                if tracker.is_some() {
                    self.kind = Kind::Tracker;
                }
                st.tracker = tracker;
                self.upgrade_asked |= upgrade;
                self.asked.push_back(Asked {
                    head_only: method == "HEAD",
                    tracker,
                });
            }
            Side::Responder => {
                let status: u16 = start
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let asked = if (100..200).contains(&status) && status != 101 {
                    None
                } else {
                    self.asked.pop_front()
                };
                st.tracker = asked.and_then(|a| a.tracker);
                if status == 101 && self.upgrade_asked {
                    self.sides[i].held.drain(..head_len);
                    self.deferred.push((side, head_len as u64));
                    self.sides[0].phase = Phase::WebSocket;
                    self.sides[1].phase = Phase::WebSocket;
                    return true;
                }
                let no_body = asked.is_some_and(|a| a.head_only)
                    || (100..200).contains(&status)
                    || status == 204
                    || status == 304;
                body_until_close = !no_body && length.is_none() && !chunked;
                if no_body {
                    let st = &mut self.sides[i];
                    st.phase = Phase::Body {
                        left: 0,
                        chunked: false,
                    };
                    return true;
                }
            }
        }
        let left = length.unwrap_or(0);
        if body_until_close || (!chunked && left > MAX_BODY as u64) {
            let label = match self.sides[i].tracker {
                Some(kind) => ctx
                    .labels
                    .decoded(Category::Bittorrent, "bt-tracker-http", kind),
                None => self.framing(false, ctx),
            };
            let st = &mut self.sides[i];
            st.held.drain(..head_len);
            ctx.emit(side, head_len as u64, label, 1);
            st.phase = if body_until_close {
                Phase::Settled(label)
            } else {
                Phase::Streaming {
                    left,
                    label,
                    ws: false,
                }
            };
            let rest = std::mem::take(&mut st.held);
            self.data(side, &rest, ctx);
            return false;
        }
        if upgrade && side == Side::Initiator && left == 0 && !chunked {
            self.sides[i].held.drain(..head_len);
            self.deferred.push((side, head_len as u64));
            return true;
        }
        self.sides[i].phase = Phase::Body { left, chunked };
        true
    }

    fn body(&mut self, side: Side, left: u64, chunked: bool, ctx: &mut DecodeCtx<'_>) -> bool {
        let i = side.index();
        let st = &self.sides[i];
        let head_len = st.head_len;
        let (total, body) = if chunked {
            match dechunk(&st.held[head_len..]) {
                Some(Ok((used, data))) => (head_len + used, data),
                Some(Err(())) => {
                    ctx.malformed(DecodeError::new("http", "bad chunked body"));
                    self.settle(side, ctx);
                    return false;
                }
                None => {
                    if st.held.len() > MAX_HEAD + MAX_BODY {
                        self.settle(side, ctx);
                    }
                    return false;
                }
            }
        } else {
            let Some(end) = usize::try_from(left)
                .ok()
                .and_then(|left| head_len.checked_add(left))
            else {
                self.settle(side, ctx);
                return false;
            };
            if st.held.len() < end {
                return false;
            }
            (end, st.held[head_len..end].to_vec())
        };
        self.message(side, total, &body, false, ctx);
        let st = &mut self.sides[i];
        st.held.drain(..total);
        st.tracker = None;
        if !matches!(st.phase, Phase::WebSocket) {
            st.phase = Phase::Head;
        }
        true
    }

    fn frame(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) -> bool {
        let i = side.index();
        let Some(h) = websocket::header(&self.sides[i].held) else {
            return false;
        };
        // A 64-bit length near 2^64 from the wire: saturate, the frame is streamed past either way.
        let total = (h.len as u64).saturating_add(h.payload_len);
        if total > websocket::MAX_HELD_FRAME as u64 {
            let label = self.framing(true, ctx);
            let st = &mut self.sides[i];
            st.phase = Phase::Streaming {
                left: total,
                label,
                ws: true,
            };
            let held = std::mem::take(&mut st.held);
            self.data(side, &held, ctx);
            return false;
        }
        let total = total as usize;
        if self.sides[i].held.len() < total {
            return false;
        }
        let mut payload = self.sides[i].held[h.len..total].to_vec();
        if let Some(key) = h.mask {
            websocket::unmask(&mut payload, key);
        }
        if !self.known && !h.is_control() && multistream::starts_with_header(&payload) == Some(true)
        {
            self.hand_to_libp2p(ctx);
            return false;
        }
        if h.is_whole_message() {
            self.message(side, total, &payload, true, ctx);
        } else {
            self.flush_deferred(ctx);
            let kind = if h.is_control() {
                "control"
            } else {
                "fragment"
            };
            let (category, protocol) = match self.kind {
                Kind::JsonRpc => (Category::Rpc, "jsonrpc-ws"),
                _ => (Category::Other, "websocket"),
            };
            let l = ctx.labels.decoded(category, protocol, kind);
            ctx.emit(side, total as u64, l, 1);
        }
        self.sides[i].held.drain(..total);
        true
    }

    /// Hands the connection to libp2p over WebSocket: the upgrade heads are its handshake, the
    /// frames held (from a frame's start on both sides) and all further bytes go to the stack.
    fn hand_to_libp2p(&mut self, ctx: &mut DecodeCtx<'_>) {
        self.known = true;
        let upgrade = ctx
            .labels
            .decoded(Category::Libp2p, "/websocket", "upgrade");
        for (side, len) in std::mem::take(&mut self.deferred) {
            ctx.emit(side, len, upgrade, 1);
        }
        let inner = Box::new(Libp2pDecoder::new(self.conn, ctx.labels));
        let mut stack = Box::new(WsStream::new(inner, ctx.labels));
        for side in Side::BOTH {
            let held = std::mem::take(&mut self.sides[side.index()].held);
            stack.data(side, &held, ctx);
        }
        self.libp2p = Some(stack);
    }

    /// Ends decoding of `side`: what is held and all that follows get the connection's label.
    fn settle(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        self.known = true;
        self.flush_deferred(ctx);
        let label = self.connection_label();
        let st = &mut self.sides[side.index()];
        let held = std::mem::take(&mut st.held);
        st.phase = Phase::Settled(label);
        ctx.emit(side, held.len() as u64, label, 0);
    }
}

/// A whole chunked body at the start of `raw`: (bytes it takes, the data), `None` if incomplete,
/// `Err` if malformed.
fn dechunk(raw: &[u8]) -> Option<Result<(usize, Vec<u8>), ()>> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line_end = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = String::from_utf8_lossy(&raw[at..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return Some(Err(()));
        };
        at = line_end + 2;
        if size == 0 {
            let rest = &raw[at..];
            if rest.starts_with(b"\r\n") {
                return Some(Ok((at + 2, data)));
            }
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
            return Some(Ok((at + end + 4, data)));
        }
        if size > MAX_BODY || raw.len() < at + size + 2 {
            return if size > MAX_BODY { Some(Err(())) } else { None };
        }
        data.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// The value of each header of `names` in `head` (its first line of that name), from one pass
/// over the lines.
fn headers<'h, const N: usize>(head: &'h str, names: [&str; N]) -> [Option<&'h str>; N] {
    let mut found = [None; N];
    for line in head.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        for (name, slot) in names.iter().zip(&mut found) {
            if slot.is_none() && k.eq_ignore_ascii_case(name) {
                *slot = Some(v.trim());
            }
        }
    }
    found
}

impl StreamDecoder for Http {
    fn heap_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.held.capacity()).sum::<usize>()
            + crate::memory::deque_bytes(&self.asked)
            + crate::memory::vec_bytes(&self.deferred)
    }

    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        if let Some(stack) = &mut self.libp2p {
            stack.data(side, bytes, ctx);
            return;
        }
        let i = side.index();
        let mut bytes = bytes;
        match self.sides[i].phase {
            Phase::Settled(label) => {
                ctx.emit(side, bytes.len() as u64, label, 0);
                return;
            }
            Phase::Streaming { left, label, ws } => {
                let n = (bytes.len() as u64).min(left);
                ctx.emit(side, n, label, 0);
                bytes = &bytes[n as usize..];
                let left = left - n;
                self.sides[i].phase = match (left, ws) {
                    (1.., _) => Phase::Streaming { left, label, ws },
                    (0, true) => Phase::WebSocket,
                    (0, false) => Phase::Head,
                };
                if bytes.is_empty() {
                    return;
                }
            }
            _ => {}
        }
        self.sides[i].held.extend_from_slice(bytes);
        self.drain(side, ctx);
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        if let Some(stack) = &mut self.libp2p {
            stack.gap(side, len, ctx);
            return;
        }
        self.settle(side, ctx);
        let label = self.connection_label();
        ctx.emit(side, len, label, 0);
    }

    fn connection_label(&self) -> LabelId {
        if let Some(stack) = &self.libp2p {
            return stack.connection_label();
        }
        match self.kind {
            Kind::Plain => self.plain,
            Kind::JsonRpc => self.rpc,
            Kind::Tracker => self.tracker,
        }
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        if let Some(stack) = &self.libp2p {
            return stack.settled(side);
        }
        match self.sides[side.index()].phase {
            Phase::Settled(l) => Some(l),
            _ => None,
        }
    }

    fn connection_known(&self) -> bool {
        self.libp2p
            .as_ref()
            .map_or(self.known, |stack| stack.connection_known())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::decode::TestCtx;

    /// Feeds an upgrade, then `frame` from the client; returns the bytes the spans cover per side.
    fn upgraded(frame: &[u8]) -> [u64; 2] {
        let mut t = TestCtx::default();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let conn = Conn {
            initiator: (ip, 40000),
            responder: (ip, 8080),
        };
        let req = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let mut ctx = t.ctx();
        let Probe::Yes(mut d) = HttpProbe.probe(Side::Initiator, req, &conn, &mut ctx) else {
            panic!("an HTTP request is HTTP");
        };
        d.data(Side::Initiator, req, &mut ctx);
        d.data(Side::Responder, resp, &mut ctx);
        d.data(Side::Initiator, frame, &mut ctx);
        let mut covered = [0; 2];
        for s in &t.spans {
            covered[s.side.index()] += s.len;
        }
        covered
    }

    #[test]
    fn a_websocket_length_near_2_64_streams_without_overflow() {
        for mask in [0, 0x80] {
            let mut frame = vec![0x82, 0x7f | mask];
            frame.extend_from_slice(&(u64::MAX - 3).to_be_bytes());
            frame.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let covered = upgraded(&frame);
            let req = 40;
            assert!(covered[0] <= (req + frame.len()) as u64, "{covered:?}");
        }
    }
}
