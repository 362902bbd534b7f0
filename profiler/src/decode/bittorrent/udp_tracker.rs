//! UDP trackers (BEP 15, protocols.md §8.5): a connect request carries the protocol magic; the
//! tracker's answer gives a connection id that announce and scrape requests then carry. Replies
//! echo the action and the transaction id. Peers in announce replies are remembered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Endpoint, label};
use crate::decode::DecodeCtx;
use crate::decode::datagram::{Datagram, DatagramDecoder, Labelled};
use crate::decode::lru::Lru;

/// Protocol name of UDP trackers.
pub const PROTOCOL: &str = "bt-tracker-udp";
/// The connection id of a connect request.
pub const MAGIC: u64 = 0x0417_2710_1980;
/// Actions by number: connect, announce, scrape, error.
const KINDS: [&str; 4] = ["connect", "announce", "scrape", "error"];
/// Request header: connection id (8) + action (4) + transaction id (4).
const REQUEST_HEADER_LEN: usize = 16;
/// Reply header: action (4) + transaction id (4).
const REPLY_HEADER_LEN: usize = 8;
/// A connect reply: header + connection id (8).
const CONNECT_REPLY_LEN: usize = 16;
/// An announce request up to its port field: the port is its bytes 96..98.
const ANNOUNCE_PORT: std::ops::Range<usize> = 96..98;
/// An announce reply's peers follow action, transaction, interval, leechers, seeders.
const ANNOUNCE_REPLY_PEERS: usize = 20;
/// Most transactions and connection ids remembered.
pub(crate) const KEPT: usize = 4096;

/// (client, tracker) of a datagram sent by the client.
type Pair = (Endpoint, Endpoint);

/// What was seen of the UDP tracker sessions.
pub struct Sessions {
    /// (client, tracker, transaction id) → action asked.
    txns: Lru<(Pair, u32), usize>,
    /// (client, tracker, connection id) handed out by connect replies.
    conns: Lru<(Pair, u64), ()>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            txns: Lru::new(KEPT),
            conns: Lru::new(KEPT),
        }
    }
}

impl Sessions {
    /// The larger of the transactions and the connection ids remembered.
    pub fn len(&self) -> usize {
        self.txns.len().max(self.conns.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty() && self.conns.is_empty()
    }
}

fn be32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

fn be64(p: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(at..at + 8)?.try_into().ok()?))
}

/// The peers of an announce reply: 6 bytes each over IPv4, 18 over IPv6.
fn peers(list: &[u8], v6: bool) -> impl Iterator<Item = Endpoint> + '_ {
    let size = if v6 { 18 } else { 6 };
    list.chunks_exact(size).filter_map(move |c| {
        let (addr, port) = c.split_at(size - 2);
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?))
        };
        Some((ip, u16::from_be_bytes([port[0], port[1]])))
    })
}

/// Labels UDP tracker requests and replies.
pub struct UdpTracker;

impl UdpTracker {
    /// The action of a request from a client, if `p` is one.
    fn request(p: &[u8], pair: Pair, s: &Sessions) -> Option<usize> {
        if p.len() < REQUEST_HEADER_LEN {
            return None;
        }
        let conn = be64(p, 0)?;
        let action = be32(p, 8)? as usize;
        let known = s.conns.contains(&(pair, conn));
        match action {
            0 if conn == MAGIC => Some(0),
            1 | 2 if known => Some(action),
            _ => None,
        }
    }
}

impl DatagramDecoder for UdpTracker {
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
        let p = d.payload;
        let book = &mut ctx.udp.bittorrent;
        let s = &mut book.trackers;
        let action = if let Some(action) = Self::request(p, (d.src, d.dst), s) {
            s.txns.insert(((d.src, d.dst), be32(p, 12)?), action);
            if let Some(port) = p.get(ANNOUNCE_PORT).filter(|_| action == 1) {
                book.learn_peer((d.src.0, u16::from_be_bytes([port[0], port[1]])));
            }
            action
        } else {
            if p.len() < REPLY_HEADER_LEN {
                return None;
            }
            let pair = (d.dst, d.src);
            let action = be32(p, 0)? as usize;
            let asked = *s.txns.get(&(pair, be32(p, 4)?))?;
            if action != asked && action != 3 {
                return None;
            }
            if action == 0 && p.len() >= CONNECT_REPLY_LEN {
                s.conns.insert((pair, be64(p, 8)?), ());
            }
            if action == 1 {
                let list = p.get(ANNOUNCE_REPLY_PEERS..).unwrap_or_default();
                for peer in peers(list, d.src.0.is_ipv6()) {
                    book.learn_peer(peer);
                }
            }
            action
        };
        Some(Labelled {
            label: label(ctx.labels, PROTOCOL, KINDS.get(action)?),
            units: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    fn send(t: &mut TestCtx, payload: &[u8], src: Endpoint, dst: Endpoint) -> Option<String> {
        t.datagram_kind(&UdpTracker, payload, src, dst)
    }

    #[test]
    fn connect_then_announce() {
        let mut t = TestCtx::default();
        let client = (IpAddr::V4(Ipv4Addr::LOCALHOST), 6881);
        let tracker = (IpAddr::V4(Ipv4Addr::LOCALHOST), 6969);
        let mut connect = MAGIC.to_be_bytes().to_vec();
        connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        let reply = [0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut announce = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 9];
        announce.resize(98, 0);
        let mut announced = vec![0, 0, 0, 1, 0, 0, 0, 9];
        announced.extend_from_slice(&[0; 12]);
        announced.extend_from_slice(&[127, 0, 0, 2, 0x1a, 0xe1]);
        assert_eq!(send(&mut t, &announce, client, tracker), None);
        assert_eq!(
            send(&mut t, &connect, client, tracker).as_deref(),
            Some("connect")
        );
        assert_eq!(
            send(&mut t, &reply, tracker, client).as_deref(),
            Some("connect")
        );
        assert_eq!(
            send(&mut t, &announce, client, tracker).as_deref(),
            Some("announce")
        );
        assert_eq!(
            send(&mut t, &announced, tracker, client).as_deref(),
            Some("announce")
        );
        let peer = (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 6881);
        assert!(t.udp.bittorrent.is_peer(&peer));
        assert_eq!(send(&mut t, &reply[..7], tracker, client), None);
    }
}
