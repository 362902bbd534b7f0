//! App against wire: what the node's counters say it sent and received, what the wire carried,
//! and the difference by cause (design.md, protocols.md §10). A [`Sink`] that sums the rows of a
//! run; relay bytes of peers on several shards are apportioned by the node's per-topic counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::metrics::NodeCounters;
use super::peers::PeerBook;
use crate::account::record::{Category, Direction, Row};
use crate::decode::labels::static_shard;
use crate::sink::Sink;

/// Wire bytes of one direction, split by what explains them beyond the node's relay count.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Causes {
    /// Payload bytes of the relay messages (publish entries).
    pub relay_messages: u64,
    /// Payload of gossip control: IHAVE/IWANT/GRAFT/PRUNE/IDONTWANT, subscriptions, RPC framing.
    pub gossip_control: u64,
    /// Security and muxer bytes: Noise/TLS handshakes and frame overhead, yamux/mplex headers.
    pub security_and_muxer: u64,
    /// multistream negotiation, identify, ping and other libp2p protocols.
    pub other_libp2p: u64,
    pub waku_services: u64,
    /// discv5 and DNS, headers included.
    pub discovery: u64,
    /// IP and TCP/UDP headers (and segments without payload) of everything else.
    pub headers: u64,
    /// Wire bytes of retransmitted TCP segments.
    pub retransmissions: u64,
    /// Everything else (RPC, BitTorrent, unknown).
    pub other: u64,
}

impl Causes {
    /// The causes with their names, in report order.
    pub fn parts(&self) -> [(&'static str, u64); 9] {
        [
            ("relay messages", self.relay_messages),
            ("gossip control", self.gossip_control),
            ("Noise/TLS and yamux/mplex", self.security_and_muxer),
            ("other libp2p", self.other_libp2p),
            ("waku services", self.waku_services),
            ("discovery", self.discovery),
            ("TCP/IP headers", self.headers),
            ("retransmissions", self.retransmissions),
            ("other", self.other),
        ]
    }
}

/// One direction of the reconciliation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Side {
    /// `waku_relay_network_bytes`: `gross`/`in` received, `net`/`out` sent.
    pub node_relay: f64,
    /// `libp2p_network_bytes`.
    pub node_libp2p: f64,
    /// Σ `waku_service_network_bytes`.
    pub node_services: f64,
    /// TCP payload of libp2p connections: what `libp2p_network_bytes` counts.
    pub wire_libp2p_streams: u64,
    /// Every wire byte (IP lengths).
    pub wire_total: u64,
    pub causes: Causes,
    /// Wire bytes outside discovery, whose headers are what their payload leaves.
    #[serde(skip)]
    counted: u64,
}

/// One pubsub topic: the node's counters and the wire's relay message bytes of its shard.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Topic {
    pub topic: String,
    pub node_gross_in: f64,
    pub node_net_in: f64,
    pub node_net_out: f64,
    pub wire_messages_in: u64,
    pub wire_messages_out: u64,
}

/// The report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    #[serde(rename = "in")]
    pub inbound: Side,
    #[serde(rename = "out")]
    pub outbound: Side,
    pub topics: Vec<Topic>,
    /// Relay wire bytes of connections to peers on several shards, and their share per shard
    /// by the node's per-topic counters (gross in, net out).
    pub apportioned_bytes: u64,
    pub apportioned: BTreeMap<u16, u64>,
}

/// Sums rows for the report.
pub struct Reconciliation {
    node: Option<NodeCounters>,
    peers: PeerBook,
    sides: [Side; 2],
    /// Relay message payload per (direction, shard).
    shard_messages: BTreeMap<(usize, u16), u64>,
    /// Relay wire bytes of multi-shard peers per (direction, shards).
    multi: BTreeMap<(usize, Vec<u16>), u64>,
}

fn index(d: Direction) -> usize {
    match d {
        Direction::In => 0,
        Direction::Out => 1,
    }
}

impl Reconciliation {
    /// A reconciliation against `node`'s counters (over the run) and the peers in `peers`.
    pub fn new(node: Option<NodeCounters>, peers: PeerBook) -> Reconciliation {
        Reconciliation {
            node,
            peers,
            sides: Default::default(),
            shard_messages: BTreeMap::new(),
            multi: BTreeMap::new(),
        }
    }

    /// Sets the node's counters over the run (live runs scrape at the end).
    pub fn set_node(&mut self, node: NodeCounters) {
        self.node = Some(node);
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        let mut r = Report::default();
        let node = self.node.clone().unwrap_or_default();
        for (d, side) in [
            (Direction::In, &mut r.inbound),
            (Direction::Out, &mut r.outbound),
        ] {
            *side = self.sides[index(d)].clone();
            let k = &mut side.causes;
            let payload = k.relay_messages
                + k.gossip_control
                + k.security_and_muxer
                + k.other_libp2p
                + k.waku_services
                + k.other;
            k.headers = side.counted.saturating_sub(payload + k.retransmissions);
            let dir = d.as_str();
            side.node_relay =
                node.relay(None, if d == Direction::In { "gross" } else { "net" }, dir);
            side.node_libp2p = node.libp2p.get(dir).copied().unwrap_or(0.0);
            side.node_services = node
                .services
                .iter()
                .filter(|((_, x), _)| x == dir)
                .map(|(_, v)| v)
                .sum();
        }
        let mut topics: Vec<String> = node.relay.keys().map(|k| k.0.clone()).collect();
        topics.dedup();
        for t in topics {
            let shard = static_shard(&t).map(|(_, s)| s);
            let wire = |d| {
                shard
                    .and_then(|s| self.shard_messages.get(&(d, s)))
                    .copied()
                    .unwrap_or(0)
            };
            r.topics.push(Topic {
                node_gross_in: node.relay(Some(&t), "gross", "in"),
                node_net_in: node.relay(Some(&t), "net", "in"),
                node_net_out: node.relay(Some(&t), "net", "out"),
                wire_messages_in: wire(0),
                wire_messages_out: wire(1),
                topic: t,
            });
        }
        for ((d, shards), &bytes) in &self.multi {
            r.apportioned_bytes += bytes;
            let weight = |s: u16| {
                r.topics
                    .iter()
                    .filter(|t| static_shard(&t.topic).map(|x| x.1) == Some(s))
                    .map(|t| {
                        if *d == 0 {
                            t.node_gross_in
                        } else {
                            t.node_net_out
                        }
                    })
                    .sum::<f64>()
            };
            let total: f64 = shards.iter().map(|&s| weight(s)).sum();
            for &s in shards {
                let share = if total > 0.0 {
                    weight(s) / total
                } else {
                    1.0 / shards.len() as f64
                };
                *r.apportioned.entry(s).or_default() += (bytes as f64 * share).round() as u64;
            }
        }
        r
    }
}

impl Sink for Reconciliation {
    fn write(&mut self, rows: &[Row]) -> Result<(), crate::Error> {
        for row in rows {
            let (l, c) = (&row.label, &row.counters);
            let d = index(row.direction);
            let side = &mut self.sides[d];
            side.wire_total += c.bytes;
            let libp2p = matches!(
                l.category,
                Category::Libp2p
                    | Category::RelayControl
                    | Category::RelayChat
                    | Category::WakuService
            );
            if libp2p && row.endpoints.transport == "tcp" {
                side.wire_libp2p_streams += c.payload_bytes;
            }
            let k = &mut side.causes;
            k.retransmissions += c.retrans_bytes;
            if l.category == Category::Discovery {
                k.discovery += c.bytes;
                continue;
            }
            side.counted += c.bytes;
            let p = c.payload_bytes;
            match l.category {
                Category::RelayChat => k.relay_messages += p,
                Category::RelayControl => k.gossip_control += p,
                Category::WakuService => k.waku_services += p,
                Category::Libp2p => match l.kind.as_ref() {
                    "framing" | "handshake" | "encrypted" => k.security_and_muxer += p,
                    _ => k.other_libp2p += p,
                },
                _ => k.other += p,
            }
            let relay = matches!(l.category, Category::RelayChat | Category::RelayControl);
            if l.category == Category::RelayChat
                && let Some(s) = l.shard
            {
                *self.shard_messages.entry((d, s)).or_default() += p;
            }
            let e = &row.endpoints;
            let end = |a: Option<_>, p: Option<u16>| Some(SocketAddr::new(a?, p?));
            let peer = [
                end(e.remote_addr, e.remote_port),
                end(e.local_addr, e.local_port),
            ]
            .into_iter()
            .flatten()
            .find_map(|a| self.peers.shards_of(a));
            if relay
                && l.shard.is_none()
                && let Some(s) = peer
                && s.shards.len() > 1
            {
                *self.multi.entry((d, s.shards.clone())).or_default() += c.bytes;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        Ok(())
    }
}

impl Report {
    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let (i, o) = (&self.inbound, &self.outbound);
        let row = |s: &mut String, name: &str, a: f64, b: f64| {
            let _ = writeln!(s, "  {name:<34} {a:>14.0} {b:>14.0}");
        };
        let _ = writeln!(s, "\nApp vs wire (the node's counters against the capture)");
        let _ = writeln!(s, "  {:<34} {:>14} {:>14}", "", "in (B)", "out (B)");
        row(&mut s, "node: relay messages", i.node_relay, o.node_relay);
        let (wi, wo) = (
            i.causes.relay_messages as f64,
            o.causes.relay_messages as f64,
        );
        row(&mut s, "wire: relay messages", wi, wo);
        row(
            &mut s,
            "  difference (envelopes, loss)",
            wi - i.node_relay,
            wo - o.node_relay,
        );
        row(&mut s, "node: libp2p streams", i.node_libp2p, o.node_libp2p);
        let (li, lo) = (i.wire_libp2p_streams as f64, o.wire_libp2p_streams as f64);
        row(&mut s, "wire: libp2p streams (TCP payload)", li, lo);
        row(
            &mut s,
            "node: waku services",
            i.node_services,
            o.node_services,
        );
        row(
            &mut s,
            "wire: total",
            i.wire_total as f64,
            o.wire_total as f64,
        );
        for ((name, a), (_, b)) in i.causes.parts().into_iter().zip(o.causes.parts()) {
            row(&mut s, &format!("  {name}"), a as f64, b as f64);
        }
        if !self.topics.is_empty() {
            let _ = writeln!(
                s,
                "  {:<22} {:>12} {:>12} {:>12} {:>12} {:>12}",
                "topic", "node gross in", "node net in", "node net out", "wire in", "wire out"
            );
            for t in &self.topics {
                let _ = writeln!(
                    s,
                    "  {:<22} {:>12.0} {:>12.0} {:>12.0} {:>12} {:>12}",
                    t.topic,
                    t.node_gross_in,
                    t.node_net_in,
                    t.node_net_out,
                    t.wire_messages_in,
                    t.wire_messages_out
                );
            }
        }
        if self.apportioned_bytes > 0 {
            let shares: Vec<String> = self
                .apportioned
                .iter()
                .map(|(s, b)| format!("shard {s}: {b} B"))
                .collect();
            let _ = writeln!(
                s,
                "  {} relay bytes to peers on several shards, apportioned by the node's per-topic counters: {}",
                self.apportioned_bytes,
                shares.join(", ")
            );
        }
        s
    }
}
