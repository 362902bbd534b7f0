//! Structure-aware input for protocols that nest: gossipsub RPCs (protobuf) in streams of a
//! muxer (yamux or mplex) negotiated by multistream-select, inside Noise framing or the
//! plaintext exchange, optionally carried in WebSocket frames after an HTTP upgrade. The fuzzer
//! picks the structure; the bytes are built here and delivered in fuzzer-chosen cuts to the
//! classifier, as the flow table would.

use arbitrary::Arbitrary;
use prost::Message as _;
use wakuprof::decode::classify::Classifier;
use wakuprof::decode::relay::gossipsub_pb::{
    ControlIHave, ControlIds, ControlTopic, Message, SubOpts,
};
use wakuprof::decode::{Side, protocols};

use super::Piece;
use wakuprof::decode::TestCtx;

/// A whole connection.
#[derive(Arbitrary, Debug)]
pub struct Session {
    noise: bool,
    mplex: bool,
    websocket: bool,
    streams: Vec<Stream>,
    /// Sizes the delivered pieces are cut to (cycled; 0 = whole).
    cuts: Vec<u16>,
}

#[derive(Arbitrary, Debug)]
struct Stream {
    /// Index into the known protocol ids, or an arbitrary id.
    protocol: Result<u8, String>,
    responder_opens: bool,
    rpcs: Vec<Rpc>,
    /// Bytes the frames of this stream are split at (0 = one frame per RPC).
    frame_size: u16,
}

#[derive(Arbitrary, Debug)]
struct Rpc {
    subscriptions: Vec<(bool, String)>,
    publish: Vec<(Vec<u8>, Option<String>)>,
    control: Vec<(u8, String, Vec<Vec<u8>>)>,
    /// Raw bytes appended to the RPC (possibly breaking it).
    tail: Vec<u8>,
}

/// A protobuf key + length prefix + body.
fn field(out: &mut Vec<u8>, number: u64, body: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Rpc {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (subscribe, topic) in &self.subscriptions {
            let s = SubOpts {
                subscribe: Some(*subscribe),
                topic_id: Some(topic.clone()),
            };
            field(&mut out, 1, &s.encode_to_vec());
        }
        for (data, topic) in &self.publish {
            let m = Message {
                data: Some(data.clone()),
                topic: topic.clone(),
            };
            field(&mut out, 2, &m.encode_to_vec());
        }
        let mut control = Vec::new();
        for (kind, topic, ids) in &self.control {
            let body = match kind % 5 {
                0 => ControlIHave {
                    topic_id: Some(topic.clone()),
                    message_ids: ids.clone(),
                }
                .encode_to_vec(),
                1 | 4 => ControlIds {
                    message_ids: ids.clone(),
                }
                .encode_to_vec(),
                _ => ControlTopic {
                    topic_id: Some(topic.clone()),
                }
                .encode_to_vec(),
            };
            field(&mut control, u64::from(kind % 5) + 1, &body);
        }
        if !control.is_empty() {
            field(&mut out, 3, &control);
        }
        out.extend_from_slice(&self.tail);
        let mut framed = Vec::new();
        varint(&mut framed, out.len() as u64);
        framed.extend_from_slice(&out);
        framed
    }
}

/// A multistream-select message.
fn ms(id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, id.len() as u64 + 1);
    out.extend_from_slice(id.as_bytes());
    out.push(b'\n');
    out
}

/// The bytes of each side, in the order they are sent.
struct Wire {
    pieces: Vec<(Side, Vec<u8>)>,
}

impl Wire {
    fn both(&mut self, bytes: &[u8]) {
        self.pieces.push((Side::Initiator, bytes.to_vec()));
        self.pieces.push((Side::Responder, bytes.to_vec()));
    }
}

const HEADER_WIRE: &[u8] = b"\x13/multistream/1.0.0\n";

impl Session {
    /// A muxer frame of stream `id` carrying `body` (`open` for the stream's first frame).
    fn mux_frame(&self, id: u32, opener: bool, open: bool, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.mplex {
            let flag = match (open, opener) {
                (true, _) => 0,
                (false, true) => 2,
                (false, false) => 1,
            };
            varint(&mut out, u64::from(id) << 3 | flag);
            if open {
                varint(&mut out, 0);
                out.extend_from_slice(&self.mux_frame(id, opener, false, body));
                return out;
            }
            varint(&mut out, body.len() as u64);
        } else {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&u16::from(open).to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    /// The connection's bytes before the security layer's framing and the WebSocket.
    fn muxed(&self) -> Vec<(Side, Vec<u8>)> {
        let mut w = Wire { pieces: Vec::new() };
        let muxer = if self.mplex {
            "/mplex/6.7.0"
        } else {
            "/yamux/1.0.0"
        };
        w.both(&[HEADER_WIRE, &ms(muxer)].concat());
        for (n, s) in self.streams.iter().enumerate() {
            let id = n as u32 * 2 + 1;
            let protocol = match &s.protocol {
                Ok(i) => {
                    let known: Vec<&str> = protocols::RELAY
                        .iter()
                        .chain(protocols::WAKU_SERVICES)
                        .copied()
                        .collect();
                    known[usize::from(*i) % known.len()].to_string()
                }
                Err(other) => other.clone(),
            };
            let (opener, other) = if s.responder_opens {
                (Side::Responder, Side::Initiator)
            } else {
                (Side::Initiator, Side::Responder)
            };
            let hello = [HEADER_WIRE, &ms(&protocol)].concat();
            w.pieces
                .push((opener, self.mux_frame(id, true, true, &hello)));
            w.pieces
                .push((other, self.mux_frame(id, false, false, &hello)));
            for rpc in &s.rpcs {
                let bytes = rpc.encode();
                let size = usize::from(s.frame_size).max(1);
                let size = if s.frame_size == 0 {
                    bytes.len().max(1)
                } else {
                    size
                };
                for chunk in bytes.chunks(size) {
                    w.pieces
                        .push((opener, self.mux_frame(id, true, false, chunk)));
                }
            }
        }
        w.pieces
    }

    /// Every byte of the connection, per piece sent.
    fn wire(&self) -> Vec<(Side, Vec<u8>)> {
        let security = if self.noise {
            "/noise"
        } else {
            "/plaintext/2.0.0"
        };
        let mut w = Wire { pieces: Vec::new() };
        w.both(&[HEADER_WIRE, &ms(security)].concat());
        let inner = self.muxed();
        if self.noise {
            // Handshake: 32, 80 and 48 bytes of Noise XX, then each piece as a transport frame
            // (16-byte tag).
            for (side, len) in [
                (Side::Initiator, 32),
                (Side::Responder, 80),
                (Side::Initiator, 48),
            ] {
                w.pieces.push((side, noise_frame(&vec![0; len])));
            }
            for (side, bytes) in inner {
                for chunk in bytes.chunks(65_535 - 16) {
                    w.pieces
                        .push((side, noise_frame(&[chunk, &[0; 16]].concat())));
                }
            }
        } else {
            let exchange = vec![0x0a; 40];
            let mut framed = Vec::new();
            varint(&mut framed, exchange.len() as u64);
            framed.extend_from_slice(&exchange);
            w.both(&framed);
            w.pieces.extend(inner);
        }
        if !self.websocket {
            return w.pieces;
        }
        let mut ws = Wire { pieces: Vec::new() };
        ws.pieces.push((
            Side::Initiator,
            b"GET /p2p HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
        ));
        ws.pieces.push((
            Side::Responder,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        ));
        for (side, bytes) in w.pieces {
            ws.pieces
                .push((side, ws_frame(side == Side::Initiator, &bytes)));
        }
        ws.pieces
    }

    /// Delivers the connection to the classifier in the fuzzer's cuts, checking coverage.
    pub fn run(&self) {
        let wire = self.wire();
        let mut pieces = Vec::new();
        let mut cuts = self.cuts.iter().cycle();
        for (side, bytes) in &wire {
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let cut = usize::from(cuts.next().copied().unwrap_or(0));
                let n = if cut == 0 {
                    rest.len()
                } else {
                    cut.min(rest.len())
                };
                let (now, later) = rest.split_at(n);
                pieces.push(Piece::Data(*side, now));
                rest = later;
            }
        }
        let mut o = TestCtx::default();
        let conn = super::stream_input(&[0, 0xea, 0x60]).map(|(c, _)| c);
        let Some(conn) = conn else { return };
        let mut d = Classifier::new(conn, &mut o.labels, None);
        super::feed(&mut d, &pieces, &mut o);
    }
}

fn noise_frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u16).to_be_bytes(), body].concat()
}

/// A binary WebSocket frame, masked (with a fixed key) when the client sends it.
fn ws_frame(masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..126 => out.push(m | n as u8),
        n @ 126..65_536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}
