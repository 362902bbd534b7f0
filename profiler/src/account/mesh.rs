//! Mesh health per local node and shard (the `--mesh` table): from decoded relay streams, the
//! peers subscribed to each topic, the mesh (GRAFT and PRUNE, in either direction), the time
//! the mesh stayed below D_low and the peers publishing on topics the node did not subscribe
//! to; from `--node-api`, the peers the node lists per shard. One row per window and topic.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashSet;

use super::record::Direction;
use crate::decode::LabelTable;
use crate::decode::relay::relay_book::{MeshEvent, MeshKind};
use crate::flow::Flow;
use crate::node::peers::PeerBook;

/// nwaku's D_low: below this many mesh peers gossipsub grafts more.
pub const D_LOW: u32 = 4;

/// Where a mesh row's numbers come from.
pub const WIRE: &str = "wire";
/// Mesh rows from the node's own peer list (relay encrypted).
pub const NODE_API: &str = "node-api";

/// One window of one topic, seen from one local node.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshRow {
    pub window_start_us: i64,
    pub window_secs: u32,
    /// The local node's address (`None` for node-api rows).
    pub local_addr: Option<IpAddr>,
    pub cluster_id: Option<u16>,
    pub shard: Option<u16>,
    pub pubsub_topic: Option<Arc<str>>,
    /// [`WIRE`] or [`NODE_API`].
    pub source: &'static str,
    /// Whether the local node subscribed to the topic (`None`: not seen either way).
    pub subscribed: Option<bool>,
    pub peers_subscribed: u32,
    /// Mesh peers at the end of the window, and the fewest during it (wire only).
    pub mesh_peers: Option<u32>,
    pub mesh_peers_min: Option<u32>,
    /// The D_low the next column is counted against.
    pub d_low: u32,
    /// Seconds of the window the node was subscribed with fewer than `d_low` mesh peers.
    pub secs_below_d_low: Option<f32>,
    pub grafts: u32,
    pub prunes: u32,
    /// Peers that published on the topic while the node was not subscribed to it (its
    /// UNSUBSCRIBE seen, or its subscriptions to other topics seen but none to this one).
    pub unsubscribed_senders: u32,
}

/// A peer: the remote end of its connection.
type Peer = (Option<IpAddr>, Option<u16>);

/// The state of one (local node, topic).
#[derive(Default)]
struct TopicState {
    cluster_id: Option<u16>,
    shard: Option<u16>,
    subscribed: Option<bool>,
    subscribers: FxHashSet<Peer>,
    mesh: FxHashSet<Peer>,
    min: Option<u32>,
    below_ns: i64,
    since_ns: i64,
    grafts: u32,
    prunes: u32,
    unsubscribed_senders: FxHashSet<Peer>,
}

impl TopicState {
    /// Counts the time since the last event towards `secs_below_d_low`.
    fn accrue(&mut self, now_ns: i64, d_low: u32) {
        if self.subscribed == Some(true) && (self.mesh.len() as u32) < d_low {
            self.below_ns += (now_ns - self.since_ns).max(0);
        }
        self.since_ns = now_ns;
    }

    fn note_size(&mut self) {
        let n = self.mesh.len() as u32;
        self.min = Some(self.min.map_or(n, |m| m.min(n)));
    }
}

/// Follows mesh events through time and writes a row per window and topic.
pub struct MeshTracker {
    window_ns: i64,
    d_low: u32,
    /// Start of the open window, ns.
    current: Option<i64>,
    topics: BTreeMap<(Option<IpAddr>, Arc<str>), TopicState>,
    /// Whether the peer book came from the node (`--node-api`): then node-api rows are written.
    api: bool,
    /// Rows of closed windows not yet handed out.
    pub rows: Vec<MeshRow>,
    /// The run ended ([`MeshTracker::finish`]): later events are not counted.
    finished: bool,
}

impl MeshTracker {
    /// A tracker of `window_secs` windows against `d_low`; `api` adds rows from the peer book.
    pub fn new(window_secs: u32, d_low: u32, api: bool) -> MeshTracker {
        MeshTracker {
            window_ns: i64::from(window_secs) * 1_000_000_000,
            d_low,
            current: None,
            topics: BTreeMap::new(),
            api,
            rows: Vec::new(),
            finished: false,
        }
    }

    /// Closes the windows that ended before `now_ns`.
    pub fn advance(&mut self, now_ns: i64, peers: &PeerBook) {
        if self.finished {
            return;
        }
        let w = now_ns - now_ns.rem_euclid(self.window_ns);
        let Some(mut cur) = self.current else {
            self.current = Some(w);
            return;
        };
        while cur < w {
            self.close(cur, cur + self.window_ns, peers);
            cur += self.window_ns;
        }
        self.current = Some(cur);
    }

    /// Writes the rows of the open window, counted up to `end_ns` (the end of the run); events
    /// after it are not counted.
    pub fn finish(&mut self, end_ns: i64, peers: &PeerBook) {
        // Quiet windows since the last event get their rows too.
        self.advance(end_ns, peers);
        self.finished = true;
        if let Some(cur) = self.current.take() {
            self.close(cur, end_ns.clamp(cur, cur + self.window_ns), peers);
        }
    }

    fn close(&mut self, start_ns: i64, end_ns: i64, peers: &PeerBook) {
        let window_secs = (self.window_ns / 1_000_000_000) as u32;
        let start_us = start_ns.div_euclid(1000);
        for ((local, topic), st) in &mut self.topics {
            st.accrue(end_ns, self.d_low);
            st.note_size();
            self.rows.push(MeshRow {
                window_start_us: start_us,
                window_secs,
                local_addr: *local,
                cluster_id: st.cluster_id,
                shard: st.shard,
                pubsub_topic: Some(Arc::clone(topic)),
                source: WIRE,
                subscribed: st.subscribed,
                peers_subscribed: st.subscribers.len() as u32,
                mesh_peers: Some(st.mesh.len() as u32),
                mesh_peers_min: st.min,
                d_low: self.d_low,
                secs_below_d_low: Some(st.below_ns as f32 / 1e9),
                grafts: st.grafts,
                prunes: st.prunes,
                unsubscribed_senders: st.unsubscribed_senders.len() as u32,
            });
            st.min = None;
            st.below_ns = 0;
            st.grafts = 0;
            st.prunes = 0;
            st.unsubscribed_senders.clear();
        }
        if self.api {
            for ((cluster_id, shard), n) in peers.peers_per_shard() {
                self.rows.push(MeshRow {
                    window_start_us: start_us,
                    window_secs,
                    local_addr: None,
                    cluster_id,
                    shard: Some(shard),
                    pubsub_topic: None,
                    source: NODE_API,
                    subscribed: None,
                    peers_subscribed: n,
                    mesh_peers: None,
                    mesh_peers_min: None,
                    d_low: self.d_low,
                    secs_below_d_low: None,
                    grafts: 0,
                    prunes: 0,
                    unsubscribed_senders: 0,
                });
            }
        }
    }

    /// Takes the mesh events `flow` carried in the packet at `now_ns`.
    pub fn record(
        &mut self,
        events: &mut Vec<MeshEvent>,
        flow: &Flow,
        now_ns: i64,
        labels: &LabelTable,
        peers: &PeerBook,
    ) {
        if self.finished {
            events.clear();
            return;
        }
        self.advance(now_ns, peers);
        let ep = flow.endpoints;
        let peer = (ep.remote_addr, ep.remote_port);
        // A node whose subscriptions were seen did not subscribe to the topics it never named.
        let knows_own = self
            .topics
            .iter()
            .any(|((l, _), st)| *l == ep.local_addr && st.subscribed.is_some());
        for e in events.drain(..) {
            let label = labels.get(e.label);
            let Some(topic) = &label.pubsub_topic else {
                continue;
            };
            let key = (ep.local_addr, Arc::clone(topic));
            let st = self.topics.entry(key).or_insert_with(|| TopicState {
                cluster_id: label.cluster_id,
                shard: label.shard,
                since_ns: now_ns,
                ..TopicState::default()
            });
            st.accrue(now_ns, self.d_low);
            let out = flow.direction(e.side) == Direction::Out;
            match e.kind {
                MeshKind::Subscribe if out => st.subscribed = Some(true),
                MeshKind::Unsubscribe if out => st.subscribed = Some(false),
                MeshKind::Subscribe => {
                    st.subscribers.insert(peer);
                }
                MeshKind::Unsubscribe => {
                    st.subscribers.remove(&peer);
                }
                MeshKind::Graft => {
                    st.grafts += 1;
                    st.mesh.insert(peer);
                    if out {
                        st.subscribed.get_or_insert(true);
                    }
                }
                MeshKind::Prune => {
                    st.prunes += 1;
                    st.mesh.remove(&peer);
                }
                MeshKind::Publish
                    if !out
                        && (st.subscribed == Some(false)
                            || knows_own && st.subscribed.is_none()) =>
                {
                    st.unsubscribed_senders.insert(peer);
                }
                MeshKind::Publish => {}
            }
            st.note_size();
        }
    }

    /// A connection ended: its peer leaves the mesh and the subscribers of its local node.
    pub fn flow_ended(&mut self, flow: &Flow, now_ns: i64, peers: &PeerBook) {
        let ep = flow.endpoints;
        let peer = (ep.remote_addr, ep.remote_port);
        if self.finished
            || !self.topics.iter().any(|((l, _), st)| {
                *l == ep.local_addr && (st.mesh.contains(&peer) || st.subscribers.contains(&peer))
            })
        {
            return;
        }
        self.advance(now_ns, peers);
        for ((local, _), st) in &mut self.topics {
            if *local == ep.local_addr {
                st.accrue(now_ns, self.d_low);
                st.mesh.remove(&peer);
                st.subscribers.remove(&peer);
                st.note_size();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_below_d_low_is_counted_while_subscribed() {
        let mut st = TopicState {
            subscribed: Some(true),
            ..TopicState::default()
        };
        st.mesh.insert((None, Some(1)));
        st.accrue(3_000_000_000, 4);
        assert_eq!(st.below_ns, 3_000_000_000);
        st.subscribed = Some(false);
        st.accrue(5_000_000_000, 4);
        assert_eq!(st.below_ns, 3_000_000_000);
    }

    #[test]
    fn quiet_windows_before_the_end_get_rows() {
        const S: i64 = 1_000_000_000;
        let peers = PeerBook::default();
        let mut tracker = MeshTracker::new(1, 4, false);
        tracker.advance(S / 2, &peers);
        let mut st = TopicState {
            subscribed: Some(true),
            ..TopicState::default()
        };
        st.mesh.insert((None, Some(1)));
        tracker
            .topics
            .insert((None, Arc::from("/waku/2/rs/16/32")), st);
        tracker.finish(3 * S + S / 2, &peers);
        let starts: Vec<i64> = tracker.rows.iter().map(|r| r.window_start_us).collect();
        assert_eq!(starts, [0, 1_000_000, 2_000_000, 3_000_000]);
        let below: f32 = tracker.rows.iter().filter_map(|r| r.secs_below_d_low).sum();
        assert!((below - 3.5).abs() < 1e-6, "{below}");
        assert!(tracker.rows.iter().all(|r| r.mesh_peers == Some(1)));
    }
}
