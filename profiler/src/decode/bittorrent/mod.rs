//! BitTorrent (protocols.md §8): the peer wire over TCP, Mainline DHT (KRPC), uTP and UDP
//! trackers. Connections that hide behind MSE/PE are recognised by correlation with what the UDP
//! decoders learned: an endpoint that spoke DHT or uTP, or a peer a tracker or the DHT handed out.

pub mod krpc;
pub mod udp_tracker;
pub mod utp;
pub mod wire;

use std::net::IpAddr;

use super::lru::Lru;
use super::{
    Conn, DecodeCtx, LabelId, LabelTable, PROBE_WINDOW, Probe, Side, StreamDecoder, StreamProbe,
};
use crate::account::record::{Category, Label, Method};

/// An (address, port) pair.
pub type Endpoint = (IpAddr, u16);

/// Protocol name of the peer wire (over TCP, or inside uTP).
pub const PEER_WIRE: &str = "bittorrent";

/// Most BitTorrent endpoints remembered.
const PEERS_KEPT: usize = 4096;
/// Most uTP flows remembered.
const UTP_FLOWS_KEPT: usize = 4096;

/// Confidence of the MSE correlation, a fixed prior (not measured): a connection of a
/// BitTorrent endpoint that no decoder recognised is taken to be an obfuscated peer connection.
const MSE_CONFIDENCE_PERMILLE: u16 = 900;

/// What the BitTorrent decoders learn across datagrams and flows.
pub struct Book {
    /// Endpoints seen speaking DHT or uTP, and peers handed out by trackers and the DHT.
    peers: Lru<Endpoint, ()>,
    /// uTP flows (lower endpoint first) seen opening with a SYN.
    utp_flows: Lru<(Endpoint, Endpoint), ()>,
    /// The peer wire of each uTP direction (sender, receiver).
    pub(crate) utp_streams: Lru<(Endpoint, Endpoint), utp::UtpStream>,
    /// Labels of the peer wire inside uTP, once interned.
    pub(crate) utp_wire: Option<wire::WireLabels>,
    /// DHT queries waiting for their response.
    pub(crate) dht: krpc::Transactions,
    /// UDP tracker transactions and connection ids.
    pub(crate) trackers: udp_tracker::Sessions,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            peers: Lru::new(PEERS_KEPT),
            utp_flows: Lru::new(UTP_FLOWS_KEPT),
            utp_streams: Lru::new(UTP_FLOWS_KEPT),
            utp_wire: None,
            dht: krpc::Transactions::default(),
            trackers: udp_tracker::Sessions::default(),
        }
    }
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("peers", &self.peers.len())
            .field("utp_flows", &self.utp_flows.len())
            .finish_non_exhaustive()
    }
}

impl Book {
    /// Remembers `peer` as a BitTorrent endpoint.
    pub fn learn_peer(&mut self, peer: Endpoint) {
        self.peers.insert(peer, ());
    }

    /// Whether `peer` is known as a BitTorrent endpoint.
    pub fn is_peer(&self, peer: &Endpoint) -> bool {
        self.peers.contains(peer)
    }

    /// Remembers a uTP flow between `a` and `b`.
    pub fn learn_utp_flow(&mut self, a: Endpoint, b: Endpoint) {
        self.utp_flows.insert(flow_key(a, b), ());
    }

    /// Whether a uTP flow between `a` and `b` was seen opening.
    pub fn is_utp_flow(&self, a: Endpoint, b: Endpoint) -> bool {
        self.utp_flows.contains(&flow_key(a, b))
    }
}

fn flow_key(a: Endpoint, b: Endpoint) -> (Endpoint, Endpoint) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Interns `bittorrent` / `protocol` / `kind`, decoded.
pub fn label(labels: &mut LabelTable, protocol: &str, kind: &str) -> LabelId {
    labels.decoded(Category::Bittorrent, protocol, kind)
}

/// Recognises the peer wire by its handshake, and MSE/PE-obfuscated connections of known
/// BitTorrent endpoints once the probe window is full.
pub struct BittorrentProbe;

impl StreamProbe for BittorrentProbe {
    fn probe(&self, _side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        match wire::starts_with_handshake(first) {
            Some(true) => return Probe::Yes(Box::new(wire::WireDecoder::new(ctx.labels))),
            Some(false) => return Probe::NeedMore,
            None => {}
        }
        let book = &ctx.udp.bittorrent;
        if ![conn.initiator, conn.responder]
            .iter()
            .any(|e| book.is_peer(e))
        {
            Probe::No
        } else if first.len() < PROBE_WINDOW {
            Probe::NeedMore
        } else {
            Probe::Yes(Box::new(Mse::new(ctx.labels)))
        }
    }
}

/// Bytes of a side within which an MSE handshake that selected plaintext must reach the
/// peer-wire handshake: Ya/Yb (96) + pad (≤ 512) + two hashes (40) + VC (8) + crypto field (4)
/// + pad length (2) + pad (≤ 512) + initial payload length (2) = 1176, rounded up.
pub const MSE_SCAN_LIMIT: u64 = 1200;

/// Where one side of an obfuscated connection is.
enum MseSide {
    /// Looking for the peer-wire handshake: `seen` bytes so far, `tail` the last ones (too few
    /// to hold the protocol string) not yet labelled.
    Scanning { seen: u64, tail: Vec<u8> },
    /// The handshake selected plaintext: the peer wire follows.
    Wire(wire::WireStream),
    /// RC4 (or anything else): every further byte is `encrypted`.
    Opaque,
}

/// An obfuscated (MSE/PE) peer connection, heuristic: the key exchange and padding are
/// `mse` / `handshake`; if the peer wire's handshake then shows in clear (crypto_select
/// plaintext) the peer wire is decoded from there, else the rest is `mse` / `encrypted`.
pub struct Mse {
    sides: [MseSide; 2],
    handshake: LabelId,
    encrypted: LabelId,
    wire: wire::WireLabels,
}

impl Mse {
    fn new(labels: &mut LabelTable) -> Mse {
        let mut heuristic = |kind: &str| {
            let protocol = labels.string("mse");
            let kind = labels.string(kind);
            let mut l = Label::decoded(Category::Bittorrent, &protocol, &kind);
            l.method = Method::Heuristic;
            l.confidence_permille = MSE_CONFIDENCE_PERMILLE;
            labels.intern(l)
        };
        let (handshake, encrypted) = (heuristic("handshake"), heuristic("encrypted"));
        Mse {
            sides: [0, 1].map(|_| MseSide::Scanning {
                seen: 0,
                tail: Vec::new(),
            }),
            handshake,
            encrypted,
            wire: wire::WireLabels::new(labels, PEER_WIRE),
        }
    }
}

/// Where `needle` starts in `hay`, if it does.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl StreamDecoder for Mse {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let state = &mut self.sides[side.index()];
        let mut emit = |len: u64, label: LabelId, units: u32| ctx.emit(side, len, label, units);
        match state {
            MseSide::Scanning { seen, tail } => {
                let first = u32::from(*seen == 0);
                tail.extend_from_slice(bytes);
                let buf = std::mem::take(tail);
                if let Some(at) = find(&buf, wire::PROTOCOL) {
                    emit(at as u64, self.handshake, first);
                    let mut stream = wire::WireStream::default();
                    stream.feed(&buf[at..], &self.wire, &mut emit);
                    *state = MseSide::Wire(stream);
                } else if *seen + buf.len() as u64 >= MSE_SCAN_LIMIT {
                    let n = (MSE_SCAN_LIMIT.saturating_sub(*seen) as usize).min(buf.len());
                    emit(n as u64, self.handshake, first);
                    emit((buf.len() - n) as u64, self.encrypted, 0);
                    *state = MseSide::Opaque;
                } else {
                    let keep = buf.len().min(wire::PROTOCOL.len() - 1);
                    let done = buf.len() - keep;
                    emit(done as u64, self.handshake, first);
                    *seen += done as u64;
                    *tail = buf[done..].to_vec();
                }
            }
            MseSide::Wire(stream) => stream.feed(bytes, &self.wire, &mut emit),
            MseSide::Opaque => emit(bytes.len() as u64, self.encrypted, 0),
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let state = &mut self.sides[side.index()];
        let held = match state {
            MseSide::Scanning { tail, .. } => tail.len() as u64,
            MseSide::Wire(stream) => stream.held(),
            MseSide::Opaque => 0,
        };
        ctx.emit(side, held + len, self.encrypted, 0);
        *state = MseSide::Opaque;
    }

    fn connection_label(&self) -> LabelId {
        self.encrypted
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        matches!(self.sides[side.index()], MseSide::Opaque).then_some(self.encrypted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    fn kinds(t: &TestCtx) -> Vec<(String, String, u64)> {
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for s in &t.spans {
            let l = t.labels.get(s.label);
            let key = (l.protocol.to_string(), l.kind.to_string());
            match out.last_mut() {
                Some(last) if (last.0.as_str(), last.1.as_str()) == (&key.0, &key.1) => {
                    last.2 += s.len
                }
                _ => out.push((key.0, key.1, s.len)),
            }
        }
        out
    }

    #[test]
    fn plaintext_after_the_key_exchange_is_decoded() {
        let mut s = vec![0x5a; 150];
        s.extend_from_slice(wire::PROTOCOL);
        s.extend_from_slice(&[0; 48]);
        s.extend_from_slice(&[0, 0, 0, 1, 1]);
        for cut in 0..s.len() {
            let mut t = TestCtx::default();
            let mut d = Mse::new(&mut t.labels);
            for chunk in [&s[..cut], &s[cut..]] {
                d.data(Side::Initiator, chunk, &mut t.ctx());
            }
            let want = vec![
                ("mse".to_owned(), "handshake".to_owned(), 150),
                ("bittorrent".to_owned(), "handshake".to_owned(), 68),
                ("bittorrent".to_owned(), "unchoke".to_owned(), 5),
            ];
            assert_eq!(kinds(&t), want, "cut {cut}");
        }
    }

    #[test]
    fn without_the_signature_the_rest_is_encrypted() {
        let mut t = TestCtx::default();
        let mut d = Mse::new(&mut t.labels);
        for _ in 0..10 {
            d.data(Side::Responder, &[0x33; 200], &mut t.ctx());
        }
        let want = vec![
            ("mse".to_owned(), "handshake".to_owned(), MSE_SCAN_LIMIT),
            (
                "mse".to_owned(),
                "encrypted".to_owned(),
                2000 - MSE_SCAN_LIMIT,
            ),
        ];
        assert_eq!(kinds(&t), want);
        assert!(d.settled(Side::Responder).is_some());
    }
}
