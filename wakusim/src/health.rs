//! Per node and shard: duplicates and amplification of relayed messages, and mesh health (the
//! mesh wakuprof follows from the GRAFTs and PRUNEs it saw, the time below D_low), each beside
//! the node's own truth where the node has one.

use std::collections::BTreeMap;

use serde::Serialize;
use wakuprof::account::{
    mesh::WIRE,
    record::{Category, Direction},
};

use crate::{measure::NodeMeasure, run::Outcome};

/// One node on one pubsub topic.
#[derive(Debug, Default, Serialize)]
pub struct ShardHealth {
    pub pubsub_topic: String,
    /// Messages (`RPC.publish` entries) sent to the node, as wakuprof counted them and as the
    /// senders wrote them.
    pub messages_in: u64,
    pub truth_messages_in: u64,
    /// Of those, copies of a message the node had been sent before.
    pub duplicates_in: u64,
    pub truth_duplicates_in: u64,
    /// Distinct messages gossipsub delivered to the node, and their WakuMessage bytes.
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Wire bytes of messages sent to the node, per message delivered.
    pub in_bytes_per_delivered: f64,
    /// Wire bytes of messages sent to the node over the bytes of the messages delivered: what
    /// framing, duplicates and rejected messages cost on top of the messages themselves.
    pub amplification: f64,
    /// Mesh peers at the end of publishing (a whole second), as wakuprof followed them, and as
    /// the node's gossipsub counted them just after.
    pub mesh_peers: Option<u32>,
    pub truth_mesh_peers: u64,
    /// The fewest mesh peers during the publishing (whole seconds within it).
    pub mesh_peers_min: Option<u32>,
    /// Seconds of the publishing the node's mesh was below D_low.
    pub secs_below_d_low: f64,
    /// GRAFTs and PRUNEs on the topic over the whole capture, either way.
    pub grafts: u64,
    pub prunes: u64,
}

/// The health of node `i` per pubsub topic, from what wakuprof measured of it (`m`).
pub fn shards(o: &Outcome, i: usize, name: &str, m: &NodeMeasure) -> Vec<ShardHealth> {
    let mut out: BTreeMap<String, ShardHealth> = BTreeMap::new();
    let mut wire_in: BTreeMap<String, u64> = BTreeMap::new();
    for r in &m.rows {
        let (Some(topic), true) = (&r.label.pubsub_topic, r.direction == Direction::In) else {
            continue;
        };
        if r.label.category == Category::RelayChat && &*r.label.kind == "message" {
            let h = entry(&mut out, topic);
            h.messages_in += r.counters.messages;
            *wire_in.entry(topic.to_string()).or_default() += r.counters.bytes;
        }
    }
    for (topic, duplicates) in &m.duplicates_in {
        entry(&mut out, topic).duplicates_in = *duplicates;
    }
    for d in o.truth.deliveries.iter().filter(|d| d.node == name) {
        let h = entry(&mut out, &d.pubsub_topic);
        h.truth_messages_in += d.publish_entries;
        h.truth_duplicates_in += d.publish_entries.saturating_sub(1);
    }
    for (topic, counts) in &o.counts[i] {
        let h = entry(&mut out, topic);
        h.delivered = counts.received;
        h.delivered_bytes = counts.received_bytes;
        h.truth_mesh_peers = counts.mesh_peers;
    }
    let (from, to) = o.publishing_us;
    for m in m.mesh.iter().filter(|m| m.source == WIRE) {
        let Some(topic) = &m.pubsub_topic else {
            continue;
        };
        let h = entry(&mut out, topic);
        h.grafts += u64::from(m.grafts);
        h.prunes += u64::from(m.prunes);
        let end = m.window_start_us + i64::from(m.window_secs) * 1_000_000;
        if end <= to {
            h.mesh_peers = m.mesh_peers;
        }
        if m.window_start_us >= from && end <= to {
            h.mesh_peers_min = match (h.mesh_peers_min, m.mesh_peers_min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            h.secs_below_d_low += f64::from(m.secs_below_d_low.unwrap_or(0.0));
        }
    }
    for (topic, h) in &mut out {
        let bytes = wire_in.get(topic).copied().unwrap_or(0) as f64;
        h.in_bytes_per_delivered = ratio(bytes, h.delivered as f64);
        h.amplification = ratio(bytes, h.delivered_bytes as f64);
    }
    out.into_values().collect()
}

fn entry<'a>(out: &'a mut BTreeMap<String, ShardHealth>, topic: &str) -> &'a mut ShardHealth {
    out.entry(topic.to_owned()).or_insert_with(|| ShardHealth {
        pubsub_topic: topic.to_owned(),
        ..ShardHealth::default()
    })
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
