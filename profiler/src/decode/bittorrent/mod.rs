//! BitTorrent (protocols.md §8): the peer wire over TCP, Mainline DHT (KRPC), uTP and UDP
//! trackers. Connections that hide behind MSE/PE are recognised by correlation with what the UDP
//! decoders learned: an endpoint that spoke DHT or uTP, or a peer a tracker or the DHT handed out;
//! those that select plaintext, by the clear peer wire after the MSE handshake ([`mse`]).

pub mod krpc;
pub mod mse;
pub mod shared;
pub mod udp_tracker;
pub mod utp;
pub mod wire;

use std::net::IpAddr;

use super::lru::Lru;
use super::{Conn, DecodeCtx, LabelId, LabelTable, PROBE_WINDOW, Probe, Side, StreamProbe};
use crate::account::record::{Category, Method};

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
    /// In a shard of a run on several threads: the peers the other shards learned.
    pub shard: Option<shared::ShardPeers>,
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
            shard: None,
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
    /// Whether one of `shards` books holds more than its part of a limit: the book of a run on
    /// one thread could then have forgotten what a shard's still knows.
    pub fn past_share(&self, shards: usize) -> bool {
        let kept = [
            (self.peers.len(), PEERS_KEPT),
            (self.utp_flows.len(), UTP_FLOWS_KEPT),
            (self.utp_streams.len(), UTP_FLOWS_KEPT),
            (self.dht.len(), krpc::TXNS_KEPT),
            (self.trackers.len(), udp_tracker::KEPT),
        ];
        kept.iter().any(|&(len, most)| len > most / shards)
    }

    /// Remembers `peer` as a BitTorrent endpoint.
    pub fn learn_peer(&mut self, peer: Endpoint) {
        self.peers.insert(peer, ());
        if let Some(s) = &mut self.shard {
            s.learn(peer);
        }
    }

    /// Whether `peer` is known as a BitTorrent endpoint (in a shard, also one another shard
    /// learned before).
    pub fn is_peer(&self, peer: &Endpoint) -> bool {
        self.peers.contains(peer) || self.shard.as_ref().is_some_and(|s| s.knows(peer))
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

/// The label of a TCP connection with a known BitTorrent endpoint that never carries a payload
/// byte (a dial dropped before its handshake): `bittorrent` / `unparsed`, by correlation.
pub fn silent_label(book: &Book, ends: [Endpoint; 2], labels: &mut LabelTable) -> Option<LabelId> {
    if !ends.iter().any(|e| book.is_peer(e)) {
        return None;
    }
    let l = label(labels, PEER_WIRE, "unparsed");
    Some(labels.with_method(l, Method::Heuristic, MSE_CONFIDENCE_PERMILLE))
}

/// Recognises the peer wire by its handshake, and connections that may hide it behind MSE/PE:
/// those of known BitTorrent endpoints, and those whose initiator opens with uniform bytes (a
/// Diffie-Hellman public value), which [`mse::Mse`] holds until it knows.
pub struct BittorrentProbe;

impl StreamProbe for BittorrentProbe {
    fn probe(&self, side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        match wire::starts_with_handshake(first) {
            Some(true) => {
                ctx.udp.bittorrent.learn_peer(conn.responder);
                return Probe::Yes(Box::new(wire::WireDecoder::new(ctx.labels)));
            }
            Some(false) => return Probe::NeedMore,
            None => {}
        }
        let book = &ctx.udp.bittorrent;
        let anchored = [conn.initiator, conn.responder]
            .iter()
            .any(|e| book.is_peer(e));
        let initiator = side == Side::Initiator;
        if first.len() < PROBE_WINDOW {
            if anchored || initiator {
                Probe::NeedMore
            } else {
                Probe::No
            }
        } else if anchored || (initiator && mse::looks_random(first)) {
            Probe::Yes(Box::new(mse::Mse::new(ctx.labels, *conn, anchored)))
        } else {
            Probe::No
        }
    }
}
