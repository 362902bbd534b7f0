//! UDP: each datagram is offered to the [`DATAGRAM_DECODERS`] in turn; the first that knows it
//! labels it whole, or splits its payload into spans (in `ctx.spans`, from its first payload
//! byte; bytes they leave take the datagram's label). Datagrams no decoder knows are `other` /
//! `udp`. A new UDP protocol is one file
//! in `decode/` plus one line in [`DATAGRAM_DECODERS`]; what decoders learn across datagrams and
//! flows (node ids, peers) lives in [`UdpState`].

pub use super::datagram::{Datagram, DatagramDecoder, Labelled};
use super::{DecodeCtx, bittorrent};
use crate::decode::discovery::discv5;
use crate::decode::discovery::dns;

/// The UDP decoders, in the order they are tried.
/// discv5 comes before uTP: a random masking IV can look like a uTP header, a uTP packet
/// cannot unmask to a discv5 header.
pub static DATAGRAM_DECODERS: &[&dyn DatagramDecoder] = &[
    &dns::DnsDatagrams,
    &bittorrent::udp_tracker::UdpTracker,
    &bittorrent::krpc::Dht,
    &discv5::Discv5Decoder,
    &bittorrent::utp::Utp,
];

/// What UDP decoders remember across datagrams and flows.
#[derive(Default)]
pub struct UdpState {
    pub discv5: discv5::Discv5State,
    pub dns: dns::DnsState,
    /// BitTorrent peers, DHT transactions, tracker sessions and uTP flows.
    pub bittorrent: bittorrent::Book,
}

impl UdpState {
    /// State whose discv5 decoder knows the node ids `node_ids` from the start.
    pub fn new(node_ids: Vec<[u8; 32]>) -> UdpState {
        UdpState {
            discv5: discv5::Discv5State::new(node_ids),
            ..UdpState::default()
        }
    }
}

impl UdpState {
    /// Whether discv5 or DNS decoding has learned anything (node ids, tree domains): from
    /// then on flows may depend on one another. BitTorrent peers are audited instead (see
    /// [`bittorrent::Book::audit`]).
    pub fn written(&self) -> bool {
        self.discv5.written() || self.dns.written()
    }
}

/// The label of a datagram: the first decoder's that knows it, else `None`.
pub fn classify(d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
    DATAGRAM_DECODERS
        .iter()
        .find_map(|dec| dec.datagram(d, ctx))
}
