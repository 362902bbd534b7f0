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
    DecodeCtx, LabelId, LabelTable, PROBE_WINDOW, Probe, ProbeInfo, Side, StreamDecoder,
    StreamProbe,
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
    fn probe(
        &self,
        _side: Side,
        first: &[u8],
        info: &ProbeInfo<'_>,
        labels: &mut LabelTable,
    ) -> Probe {
        match wire::starts_with_handshake(first) {
            Some(true) => return Probe::Yes(Box::new(wire::WireDecoder::new(labels))),
            Some(false) => return Probe::NeedMore,
            None => {}
        }
        let book = &info.udp.bittorrent;
        if !info.endpoints.iter().any(|e| book.is_peer(e)) {
            Probe::No
        } else if first.len() < PROBE_WINDOW {
            Probe::NeedMore
        } else {
            Probe::Yes(Box::new(Mse::new(labels)))
        }
    }
}

/// An obfuscated (MSE/PE) peer connection: every byte is `bittorrent` / `mse`, heuristic.
pub struct Mse {
    label: LabelId,
}

impl Mse {
    fn new(labels: &mut LabelTable) -> Mse {
        let protocol = labels.string("mse");
        let kind = labels.string("encrypted");
        let mut l = Label::decoded(Category::Bittorrent, &protocol, &kind);
        l.method = Method::Heuristic;
        l.confidence_permille = MSE_CONFIDENCE_PERMILLE;
        Mse {
            label: labels.intern(l),
        }
    }
}

impl StreamDecoder for Mse {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        ctx.emit(side, bytes.len() as u64, self.label, 0);
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        ctx.emit(side, len, self.label, 0);
    }

    fn connection_label(&self) -> LabelId {
        self.label
    }

    fn settled(&self, _side: Side) -> Option<LabelId> {
        Some(self.label)
    }
}
