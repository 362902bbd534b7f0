//! discv5 v5.1 packets (protocols.md §6.1), with the standard protocol id `discv5` and Waku's
//! `d5waku`. The static header is masked with AES-128-CTR under the first 16 bytes of the
//! *destination* node id: a packet to a node whose id is known (configured, learned from the
//! src-id of earlier packets from that endpoint, or from a node record seen, e.g. in a DNS
//! tree) is unmasked and its flag read. Other datagrams on
//! discv5 ports or endpoints are labelled by a rule of thumb (method `heuristic`): 63 bytes is a
//! WHOAREYOU, the next packet back after one is the handshake, the rest are ordinary messages.

use std::net::IpAddr;

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};

use crate::account::record::{Category, Method};
use crate::decode::datagram::{Datagram, DatagramDecoder, Labelled};
use crate::decode::discovery::enr::Record;
use crate::decode::lru::Lru;
use crate::decode::{DecodeCtx, LabelId, LabelTable};

/// Smallest packet: a WHOAREYOU, 16 + 23 + 24 bytes.
pub const WHOAREYOU_LEN: usize = 63;
/// Largest packet the spec allows.
pub const MAX_PACKET_LEN: usize = 1280;
const IV_LEN: usize = 16;
const STATIC_HEADER_LEN: usize = 23;
const NODE_ID_LEN: usize = 32;
/// Protocol ids accepted after unmasking: Ethereum's and Waku's.
const PROTOCOL_IDS: [&[u8; 6]; 2] = [b"discv5", b"d5waku"];
const VERSION: [u8; 2] = [0, 1];
/// Endpoints remembered (node ids, discv5 speakers, pending handshakes).
const REMEMBERED: usize = 65_536;
/// Confidence of heuristic labels, per mille: a 63-byte WHOAREYOU is nearly certain.
const WHOAREYOU_CONFIDENCE: u16 = 900;
const OTHER_CONFIDENCE: u16 = 700;

type Endpoint = (IpAddr, u16);

/// The packet kinds the flag byte names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ordinary,
    WhoAreYou,
    Handshake,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Ordinary, Kind::WhoAreYou, Kind::Handshake];

    /// The `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ordinary => "ordinary",
            Kind::WhoAreYou => "whoareyou",
            Kind::Handshake => "handshake",
        }
    }
}

/// What unmasking a packet's header tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Whether the protocol id was Waku's `d5waku`.
    pub waku: bool,
    /// The sender's node id (ordinary and handshake packets, when captured in full).
    pub src_id: Option<[u8; NODE_ID_LEN]>,
}

/// Unmasks `packet` as if sent to `dst_id`; `None` unless it yields a valid v5.1 header.
pub fn unmask(dst_id: &[u8; NODE_ID_LEN], packet: &[u8]) -> Option<Header> {
    let masked = packet.get(IV_LEN..IV_LEN + STATIC_HEADER_LEN)?;
    let (key, iv) = (&dst_id[..16], &packet[..IV_LEN]);
    let mut cipher = ctr::Ctr128BE::<Aes128>::new(key.into(), iv.into());
    let mut header = [0u8; STATIC_HEADER_LEN];
    header.copy_from_slice(masked);
    cipher.apply_keystream(&mut header);
    let id = PROTOCOL_IDS.iter().position(|p| header[..6] == p[..])?;
    if header[6..8] != VERSION {
        return None;
    }
    let auth_len = usize::from(u16::from_be_bytes([header[21], header[22]]));
    let kind = match (header[8], auth_len) {
        (0, NODE_ID_LEN) => Kind::Ordinary,
        (1, 24) if packet.len() == WHOAREYOU_LEN => Kind::WhoAreYou,
        (2, n) if n >= NODE_ID_LEN + 2 => Kind::Handshake,
        _ => return None,
    };
    let src_id = match kind {
        Kind::WhoAreYou => None,
        Kind::Ordinary | Kind::Handshake => {
            let start = IV_LEN + STATIC_HEADER_LEN;
            packet.get(start..start + NODE_ID_LEN).map(|masked| {
                let mut src = [0u8; NODE_ID_LEN];
                src.copy_from_slice(masked);
                cipher.apply_keystream(&mut src);
                src
            })
        }
    };
    Some(Header {
        kind,
        waku: id == 1,
        src_id,
    })
}

/// What discv5 decoding remembers across datagrams: node ids by endpoint, endpoints seen
/// speaking discv5, and WHOAREYOU challenges awaiting their handshake.
pub struct Discv5State {
    configured: Vec<[u8; NODE_ID_LEN]>,
    ids: Lru<Endpoint, [u8; NODE_ID_LEN]>,
    speakers: Lru<Endpoint, ()>,
    /// (challenged, challenger) → whether the challenged side's next packet is its handshake.
    challenged: Lru<(Endpoint, Endpoint), bool>,
    labels: Option<Labels>,
    /// Packets unmasked, and packets labelled by the heuristic.
    pub unmasked: u64,
    pub heuristic: u64,
    /// Endpoints whose node id came from a node record.
    pub from_records: u64,
    /// Relay shards that node records announced for their TCP endpoints, not yet taken into
    /// the peer book.
    pub shard_records: Vec<(std::net::SocketAddr, u16, Vec<u16>)>,
}

/// The interned labels: decoded and heuristic, per [`Kind`].
#[derive(Clone, Copy)]
struct Labels {
    decoded: [LabelId; 3],
    heuristic: [LabelId; 3],
}

impl Labels {
    fn new(labels: &mut LabelTable) -> Labels {
        let decoded = Kind::ALL.map(|k| labels.decoded(Category::Discovery, "discv5", k.as_str()));
        let heuristic = Kind::ALL.map(|k| {
            let permille = match k {
                Kind::WhoAreYou => WHOAREYOU_CONFIDENCE,
                Kind::Ordinary | Kind::Handshake => OTHER_CONFIDENCE,
            };
            labels.with_method(decoded[k as usize], Method::Heuristic, permille)
        });
        Labels { decoded, heuristic }
    }
}

impl Discv5State {
    /// State that unmasks packets to the `configured` node ids from the start.
    pub fn new(configured: Vec<[u8; NODE_ID_LEN]>) -> Discv5State {
        Discv5State {
            configured,
            ids: Lru::new(REMEMBERED),
            speakers: Lru::new(REMEMBERED),
            challenged: Lru::new(REMEMBERED),
            labels: None,
            unmasked: 0,
            heuristic: 0,
            from_records: 0,
            shard_records: Vec::new(),
        }
    }

    /// Whether any node id, speaker or challenge was learned.
    pub fn written(&self) -> bool {
        self.ids.used()
            || self.speakers.used()
            || self.challenged.used()
            || self.from_records > 0
            || !self.shard_records.is_empty()
    }

    fn labels(&mut self, table: &mut LabelTable) -> Labels {
        *self.labels.get_or_insert_with(|| Labels::new(table))
    }

    /// The header of a packet to `dst`, trying the id learned for `dst` first.
    fn unmask(&mut self, dst: Endpoint, packet: &[u8]) -> Option<Header> {
        let learned = self.ids.get(&dst).copied();
        learned
            .iter()
            .chain(self.configured.iter())
            .find_map(|id| unmask(id, packet).map(|h| (*id, h)))
            .map(|(id, h)| {
                self.ids.insert(dst, id);
                h
            })
    }

    /// Learns the node id of every endpoint a node record announces.
    pub fn learn_record(&mut self, record: &Record) {
        for &e in &record.endpoints {
            self.ids.insert(e, record.node_id);
            self.from_records += 1;
        }
        if let Some((cluster, shards)) = &record.shards {
            for &(ip, port) in &record.tcp {
                let addr = std::net::SocketAddr::new(ip, port);
                self.shard_records.push((addr, *cluster, shards.clone()));
            }
        }
    }

    fn speaks(&mut self, e: Endpoint) -> bool {
        self.speakers.get(&e).is_some()
    }

    /// The heuristic kind of a packet from `src` to `dst` of `len` bytes.
    fn guess(&mut self, src: Endpoint, dst: Endpoint, len: usize) -> Kind {
        if len == WHOAREYOU_LEN {
            self.challenged.insert((dst, src), true);
            return Kind::WhoAreYou;
        }
        if self.challenged.get(&(src, dst)).copied().unwrap_or(false) {
            self.challenged.insert((src, dst), false);
            return Kind::Handshake;
        }
        Kind::Ordinary
    }
}

impl Default for Discv5State {
    fn default() -> Self {
        Discv5State::new(Vec::new())
    }
}

/// The discv5 datagram decoder.
pub struct Discv5Decoder;

impl DatagramDecoder for Discv5Decoder {
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
        let len = usize::try_from(d.wire_payload).ok()?;
        if !(WHOAREYOU_LEN..=MAX_PACKET_LEN).contains(&len) {
            return None;
        }
        let ports = &ctx.rules.discovery.discv5_ports;
        let on_port = ports.contains(&d.src.1) || ports.contains(&d.dst.1);
        let st = &mut ctx.udp.discv5;
        let labels = st.labels(ctx.labels);
        if let Some(h) = st.unmask(d.dst, d.payload) {
            st.unmasked += 1;
            if let Some(src) = h.src_id {
                st.ids.insert(d.src, src);
            }
            st.speakers.insert(d.src, ());
            st.speakers.insert(d.dst, ());
            return Some(Labelled {
                label: labels.decoded[h.kind as usize],
                units: 1,
            });
        }
        if !(on_port || st.speaks(d.src) || st.speaks(d.dst)) {
            return None;
        }
        st.heuristic += 1;
        let kind = st.guess(d.src, d.dst, len);
        Some(Labelled {
            label: labels.heuristic[kind as usize],
            units: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet as the spec lays it out: iv, then the header masked under `dst`'s id.
    fn packet(
        dst: &[u8; 32],
        protocol: &[u8; 6],
        flag: u8,
        authdata: &[u8],
        msg: usize,
    ) -> Vec<u8> {
        let iv = [7u8; IV_LEN];
        let mut header = Vec::new();
        header.extend_from_slice(protocol);
        header.extend_from_slice(&VERSION);
        header.push(flag);
        header.extend_from_slice(&[1; 12]);
        header.extend_from_slice(&u16::try_from(authdata.len()).expect("len").to_be_bytes());
        header.extend_from_slice(authdata);
        let mut cipher = ctr::Ctr128BE::<Aes128>::new((&dst[..16]).into(), (&iv[..]).into());
        cipher.apply_keystream(&mut header);
        [&iv[..], &header, &vec![0xAA; msg]].concat()
    }

    #[test]
    fn headers_unmask_under_the_destination_id_only() {
        let (dst, src) = ([3u8; 32], [9u8; 32]);
        let ordinary = packet(&dst, b"d5waku", 0, &src, 40);
        let h = unmask(&dst, &ordinary).expect("unmasks");
        assert_eq!(
            (h.kind, h.waku, h.src_id),
            (Kind::Ordinary, true, Some(src))
        );
        assert_eq!(unmask(&src, &ordinary), None);
        let whoareyou = packet(&src, b"discv5", 1, &[5; 24], 0);
        assert_eq!(whoareyou.len(), WHOAREYOU_LEN);
        let h = unmask(&src, &whoareyou).expect("unmasks");
        assert_eq!((h.kind, h.waku, h.src_id), (Kind::WhoAreYou, false, None));
        let handshake = packet(
            &dst,
            b"discv5",
            2,
            &[[9u8; 32].as_slice(), &[64, 33], &[0; 97]].concat(),
            30,
        );
        assert_eq!(
            unmask(&dst, &handshake).map(|h| h.kind),
            Some(Kind::Handshake)
        );
        assert_eq!(unmask(&dst, &packet(&dst, b"discv4", 0, &src, 40)), None);
        assert_eq!(unmask(&dst, &ordinary[..30]), None);
    }

    #[test]
    fn the_heuristic_pairs_a_handshake_with_its_challenge() {
        let a: Endpoint = ("10.0.0.1".parse().expect("ip"), 9000);
        let b: Endpoint = ("10.0.0.2".parse().expect("ip"), 9000);
        let mut st = Discv5State::default();
        assert_eq!(st.guess(a, b, 100), Kind::Ordinary);
        assert_eq!(st.guess(b, a, WHOAREYOU_LEN), Kind::WhoAreYou);
        assert_eq!(st.guess(b, a, 300), Kind::Ordinary);
        assert_eq!(st.guess(a, b, 300), Kind::Handshake);
        assert_eq!(st.guess(a, b, 100), Kind::Ordinary);
    }
}
