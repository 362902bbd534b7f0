//! Mesh health in the report: the `--mesh` rows (from Parquet or the capture's wire) summed per
//! source, local node and shard, and read back from Parquet.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt16Array, UInt32Array,
};
use serde::Serialize;

use super::Filter;
use crate::Error;
use crate::account::mesh::{MeshRow, NODE_API};

/// Key of a mesh line: source, local node, shard, topic.
type Key = (&'static str, Option<String>, Option<u16>, Option<Arc<str>>);

/// Sums of one key's rows.
#[derive(Default)]
struct Sums {
    windows: u64,
    secs: f64,
    subscribed_secs: f64,
    below_secs: f64,
    /// Windows the node-api listed fewer than D_low peers, in seconds (filled at report time).
    api_below: BTreeMap<i64, (u32, u32)>,
    peers_subscribed_last: u32,
    mesh_last: Option<u32>,
    mesh_min: Option<u32>,
    mesh_sum: u64,
    grafts: u64,
    prunes: u64,
    unsubscribed_senders: u32,
    last_us: i64,
    /// (window start s, mesh peers, or peers for node-api rows), for the chart.
    series: BTreeMap<i64, u32>,
}

/// Mesh rows summed for the report.
#[derive(Default)]
pub struct MeshCollector {
    filter: Filter,
    lines: BTreeMap<Key, Sums>,
}

/// Mesh health of one local node and shard over the report's time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshShard {
    /// `wire` or `node-api`.
    pub source: &'static str,
    pub local: Option<String>,
    pub shard: Option<u16>,
    pub pubsub_topic: Option<String>,
    pub windows: u64,
    /// Seconds covered, and seconds the node was subscribed.
    pub secs: f64,
    pub subscribed_secs: f64,
    /// Peers subscribed (or listed on the shard) at the last window.
    pub peers_subscribed: u32,
    /// Mesh peers at the last window, the fewest, and the mean over windows (wire).
    pub mesh_peers: Option<u32>,
    pub mesh_peers_min: Option<u32>,
    pub mesh_peers_mean: Option<f64>,
    /// Seconds with fewer than D_low mesh peers while subscribed (node-api: fewer than D_low
    /// peers listed on the shard).
    pub secs_below_d_low: f64,
    pub grafts: u64,
    pub prunes: u64,
    /// Most peers in one window that published on the topic while the node was unsubscribed.
    pub unsubscribed_senders: u32,
    /// (window start s, mesh peers — or peers listed, node-api), for the chart.
    #[serde(skip)]
    pub series: Vec<(i64, u32)>,
}

impl MeshShard {
    /// How the line is named in the report: `shard 1 @ 127.0.0.1 (wire)`.
    pub fn name(&self) -> String {
        let shard = self.shard.map_or_else(
            || format!("{:?}", self.pubsub_topic.as_deref().unwrap_or("-")),
            |s| format!("shard {s}"),
        );
        match &self.local {
            Some(l) => format!("{shard} @ {l} ({})", self.source),
            None => format!("{shard} ({})", self.source),
        }
    }
}

/// Most points of a mesh line in the chart.
const MAX_POINTS: i64 = 480;

/// The series in at most [`MAX_POINTS`] buckets, each the fewest peers of its windows (the
/// dips are what matters against D_low).
fn downsample(series: &BTreeMap<i64, u32>) -> Vec<(i64, u32)> {
    let (Some(first), Some(last)) = (series.keys().next(), series.keys().next_back()) else {
        return Vec::new();
    };
    let bucket = (last - first) / MAX_POINTS + 1;
    let mut out: BTreeMap<i64, u32> = BTreeMap::new();
    for (t, n) in series {
        let b = t - (t - first).rem_euclid(bucket);
        let e = out.entry(b).or_insert(*n);
        *e = (*e).min(*n);
    }
    out.into_iter().collect()
}

impl MeshCollector {
    /// A collector of the rows `filter` keeps (time and shard; mesh rows have no process).
    pub fn new(filter: Filter) -> MeshCollector {
        MeshCollector {
            filter: Filter {
                host: None,
                comm: None,
                ..filter
            },
            lines: BTreeMap::new(),
        }
    }

    /// Whether no row was kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds rows.
    pub fn add(&mut self, rows: &[MeshRow]) {
        for r in rows {
            if !self.filter.keeps(r.window_start_us, None, None, r.shard) {
                continue;
            }
            let key = (
                r.source,
                r.local_addr.map(|a| a.to_string()),
                r.shard,
                r.pubsub_topic.clone(),
            );
            let s = self.lines.entry(key).or_default();
            let secs = f64::from(r.window_secs);
            s.windows += 1;
            s.secs += secs;
            // Time below D_low is counted only while subscribed: such a window was, in part.
            if r.subscribed == Some(true) || r.secs_below_d_low.is_some_and(|b| b > 0.0) {
                s.subscribed_secs += secs;
            }
            s.below_secs += f64::from(r.secs_below_d_low.unwrap_or(0.0));
            if r.source == NODE_API {
                s.api_below
                    .insert(r.window_start_us, (r.peers_subscribed, r.window_secs));
            }
            if r.window_start_us >= s.last_us {
                s.last_us = r.window_start_us;
                s.peers_subscribed_last = r.peers_subscribed;
                s.mesh_last = r.mesh_peers;
            }
            if let Some(m) = r.mesh_peers_min {
                s.mesh_min = Some(s.mesh_min.map_or(m, |x| x.min(m)));
            }
            s.mesh_sum += u64::from(r.mesh_peers.unwrap_or(0));
            s.grafts += u64::from(r.grafts);
            s.prunes += u64::from(r.prunes);
            s.unsubscribed_senders = s.unsubscribed_senders.max(r.unsubscribed_senders);
            s.series.insert(
                r.window_start_us.div_euclid(1_000_000),
                r.mesh_peers.unwrap_or(r.peers_subscribed),
            );
        }
    }

    /// One line per source, local node and shard; node-api lines count time with fewer than
    /// `d_low` peers listed.
    pub fn shards(&self, d_low: u32) -> Vec<MeshShard> {
        self.lines
            .iter()
            .map(|((source, local, shard, topic), s)| {
                let api_below: f64 = s
                    .api_below
                    .values()
                    .filter(|(n, _)| *n < d_low)
                    .map(|(_, secs)| f64::from(*secs))
                    .sum();
                let wire = *source != NODE_API;
                MeshShard {
                    source,
                    local: local.clone(),
                    shard: *shard,
                    pubsub_topic: topic.as_deref().map(str::to_string),
                    windows: s.windows,
                    secs: s.secs,
                    subscribed_secs: s.subscribed_secs,
                    peers_subscribed: s.peers_subscribed_last,
                    mesh_peers: s.mesh_last,
                    mesh_peers_min: s.mesh_min,
                    mesh_peers_mean: wire.then(|| s.mesh_sum as f64 / s.windows.max(1) as f64),
                    secs_below_d_low: if wire { s.below_secs } else { api_below },
                    grafts: s.grafts,
                    prunes: s.prunes,
                    unsubscribed_senders: s.unsubscribed_senders,
                    series: downsample(&s.series),
                }
            })
            .collect()
    }
}

fn column<'a, A: Array + 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a A, String> {
    crate::forward::replay::column_of(b, name, "mesh")
}

/// The rows of one mesh Parquet file.
pub fn read_file(path: &Path) -> Result<Vec<MeshRow>, Error> {
    crate::forward::replay::read_rows(path, read_batch)
}

fn opt<A: Array>(a: &A, i: usize) -> bool {
    !a.is_null(i)
}

fn read_batch(b: &RecordBatch, out: &mut Vec<MeshRow>) -> Result<(), String> {
    let start = column::<TimestampMicrosecondArray>(b, "window_start")?;
    let secs = column::<UInt32Array>(b, "window_secs")?;
    let local = column::<StringArray>(b, "local_addr")?;
    let cluster = column::<UInt16Array>(b, "cluster_id")?;
    let shard = column::<UInt16Array>(b, "shard")?;
    let topic = column::<StringArray>(b, "pubsub_topic")?;
    let source = column::<StringArray>(b, "source")?;
    let subscribed = column::<BooleanArray>(b, "subscribed")?;
    let peers = column::<UInt32Array>(b, "peers_subscribed")?;
    let mesh = column::<UInt32Array>(b, "mesh_peers")?;
    let mesh_min = column::<UInt32Array>(b, "mesh_peers_min")?;
    let d_low = column::<UInt32Array>(b, "d_low")?;
    let below = column::<Float32Array>(b, "secs_below_d_low")?;
    let grafts = column::<UInt32Array>(b, "grafts")?;
    let prunes = column::<UInt32Array>(b, "prunes")?;
    let unsub = column::<UInt32Array>(b, "unsubscribed_senders")?;
    for i in 0..b.num_rows() {
        let source = match source.value(i) {
            NODE_API => NODE_API,
            _ => crate::account::mesh::WIRE,
        };
        out.push(MeshRow {
            window_start_us: start.value(i),
            window_secs: secs.value(i),
            local_addr: opt(local, i).then(|| local.value(i).parse().ok()).flatten(),
            cluster_id: opt(cluster, i).then(|| cluster.value(i)),
            shard: opt(shard, i).then(|| shard.value(i)),
            pubsub_topic: opt(topic, i).then(|| Arc::from(topic.value(i))),
            source,
            subscribed: opt(subscribed, i).then(|| subscribed.value(i)),
            peers_subscribed: peers.value(i),
            mesh_peers: opt(mesh, i).then(|| mesh.value(i)),
            mesh_peers_min: opt(mesh_min, i).then(|| mesh_min.value(i)),
            d_low: d_low.value(i),
            secs_below_d_low: opt(below, i).then(|| below.value(i)),
            grafts: grafts.value(i),
            prunes: prunes.value(i),
            unsubscribed_senders: unsub.value(i),
        });
    }
    Ok(())
}
