//! The node's peers and the shards they serve: nwaku's `GET /admin/v1/peers` (protocols.md §10;
//! `shards` since v0.36), and ENRs (`rs`/`rsv`) read from discovery. Encrypted relay bytes of a
//! connection to a peer on one shard are that shard's.

use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::NodeError;

/// A peer as the admin API lists it: where it listens, and its shards (cluster unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    pub shards: Vec<u16>,
}

#[derive(Deserialize)]
struct WakuPeer {
    multiaddr: String,
    #[serde(default)]
    shards: Vec<u16>,
}

/// Reads the body of `GET /admin/v1/peers`. Peers of older nwaku versions carry no shards; they
/// are listed with none.
pub fn parse_admin_peers(source: &str, body: &str) -> Result<Vec<Peer>, NodeError> {
    let peers: Vec<WakuPeer> = serde_json::from_str(body).map_err(|e| NodeError::Format {
        what: source.to_string(),
        message: format!("expected the JSON list of GET /admin/v1/peers: {e}"),
    })?;
    Ok(peers
        .into_iter()
        .map(|p| Peer {
            addr: tcp_of_multiaddr(&p.multiaddr),
            shards: p.shards,
        })
        .collect())
}

/// The TCP endpoint of a multiaddr `/ip4/<a>/tcp/<p>/…` or `/ip6/<a>/tcp/<p>/…`.
pub fn tcp_of_multiaddr(ma: &str) -> Option<SocketAddr> {
    let mut parts = ma.split('/').skip(1);
    let ip: IpAddr = match (parts.next()?, parts.next()?) {
        ("ip4" | "ip6", a) => a.parse().ok()?,
        _ => return None,
    };
    match (parts.next()?, parts.next()?) {
        ("tcp", p) => Some(SocketAddr::new(ip, p.parse().ok()?)),
        _ => None,
    }
}

/// Shards of one peer, with the cluster when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shards {
    pub cluster: Option<u16>,
    pub shards: Vec<u16>,
}

/// Peers by listening endpoint, from the admin API and from ENRs.
#[derive(Clone, Debug, Default)]
pub struct PeerBook {
    by_addr: FxHashMap<SocketAddr, Shards>,
    /// Cluster of peers whose source does not say (the admin API): `--cluster-id`.
    pub cluster: Option<u16>,
    /// Bumped on every change, so that connections re-read their peer's shards.
    pub generation: u64,
}

impl PeerBook {
    /// An empty book; peers without a cluster of their own are on `cluster`.
    pub fn new(cluster: Option<u16>) -> PeerBook {
        PeerBook {
            cluster,
            ..PeerBook::default()
        }
    }

    /// Remembers that the peer listening on `addr` serves `shards` (empty: forgotten).
    pub fn learn(&mut self, addr: SocketAddr, cluster: Option<u16>, mut shards: Vec<u16>) {
        shards.sort_unstable();
        shards.dedup();
        let cluster = cluster.or(self.cluster);
        let new = Shards { cluster, shards };
        if new.shards.is_empty() {
            if self.by_addr.remove(&addr).is_some() {
                self.generation += 1;
            }
        } else if self.by_addr.get(&addr) != Some(&new) {
            self.by_addr.insert(addr, new);
            self.generation += 1;
        }
    }

    /// Takes in the peers of an admin API answer.
    pub fn learn_api(&mut self, peers: &[Peer]) {
        for p in peers {
            if let Some(a) = p.addr {
                self.learn(a, None, p.shards.clone());
            }
        }
    }

    /// The shards of the peer at the other end of a connection between `ends` (responder
    /// first): the one whose listening endpoint is either end, or else the only known peer on
    /// either end's address.
    pub fn shards(&self, ends: [SocketAddr; 2]) -> Option<&Shards> {
        ends.iter()
            .find_map(|e| self.by_addr.get(e))
            .or_else(|| ends.iter().find_map(|e| self.only_peer_on(e.ip())))
    }

    /// The shards of the peer on `remote` (its listening endpoint, or its address if one peer
    /// has it).
    pub fn shards_of(&self, remote: SocketAddr) -> Option<&Shards> {
        self.by_addr
            .get(&remote)
            .or_else(|| self.only_peer_on(remote.ip()))
    }

    fn only_peer_on(&self, ip: IpAddr) -> Option<&Shards> {
        let mut on = self.by_addr.iter().filter(|(a, _)| a.ip() == ip);
        match (on.next(), on.next()) {
            (Some((_, s)), None) => Some(s),
            _ => None,
        }
    }

    /// How many peers serve each (cluster, shard).
    pub fn peers_per_shard(&self) -> std::collections::BTreeMap<(Option<u16>, u16), u32> {
        let mut out = std::collections::BTreeMap::new();
        for s in self.by_addr.values() {
            for &shard in &s.shards {
                *out.entry((s.cluster, shard)).or_default() += 1;
            }
        }
        out
    }

    /// Peers known.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// No peer known.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs() {
        assert_eq!(
            tcp_of_multiaddr("/ip4/10.0.0.2/tcp/60000/p2p/16Uiu2HAm"),
            Some("10.0.0.2:60000".parse().unwrap())
        );
        assert_eq!(
            tcp_of_multiaddr("/ip6/::1/tcp/1"),
            Some("[::1]:1".parse().unwrap())
        );
        assert_eq!(tcp_of_multiaddr("/dns4/node.example/tcp/1"), None);
        assert_eq!(tcp_of_multiaddr("/ip4/10.0.0.2/udp/9000/quic-v1"), None);
        assert_eq!(tcp_of_multiaddr(""), None);
    }

    #[test]
    fn one_peer_per_address_is_found_by_address() {
        let mut b = PeerBook::new(Some(16));
        b.learn("10.0.0.2:60000".parse().unwrap(), None, vec![32]);
        b.learn("10.0.0.3:60001".parse().unwrap(), Some(1), vec![64, 32, 64]);
        let conn =
            |i: &str, r: &str| -> [SocketAddr; 2] { [r.parse().unwrap(), i.parse().unwrap()] };
        let out = b.shards(conn("10.0.0.1:5000", "10.0.0.3:60001")).unwrap();
        assert_eq!(
            (out.cluster, out.shards.as_slice()),
            (Some(1), &[32, 64][..])
        );
        let inbound = b.shards(conn("10.0.0.2:41000", "10.0.0.1:60000")).unwrap();
        assert_eq!(
            (inbound.cluster, inbound.shards.as_slice()),
            (Some(16), &[32][..])
        );
        assert!(b.shards(conn("10.0.0.9:1", "10.0.0.1:2")).is_none());
        let g = b.generation;
        b.learn("10.0.0.2:60000".parse().unwrap(), None, vec![32]);
        assert_eq!(b.generation, g, "no change, no new generation");
    }
}
