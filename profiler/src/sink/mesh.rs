//! The `--mesh` table: mesh health per window, local node and topic (see `account::mesh`).

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, UInt16Array, UInt32Array};

use super::Sink;
use super::parquet::{Column, ColumnType, ParquetWriter, Table, bools, col, strings, timestamps};
use crate::account::mesh::MeshRow;
use crate::account::record::Row;

/// The mesh table's columns, in file order.
pub const MESH_COLUMNS: &[Column] = &[
    col(
        "window_start",
        ColumnType::Timestamp,
        false,
        "start of the window (UTC)",
    ),
    col(
        "window_secs",
        ColumnType::U32,
        false,
        "window length in seconds",
    ),
    col(
        "local_addr",
        ColumnType::Utf8,
        true,
        "the local node's address; null for node-api rows",
    ),
    col("cluster_id", ColumnType::U16, true, "Waku cluster id"),
    col(
        "shard",
        ColumnType::U16,
        true,
        "Waku shard; null for other topics",
    ),
    col(
        "pubsub_topic",
        ColumnType::Utf8,
        true,
        "pubsub topic; null for node-api rows",
    ),
    col(
        "source",
        ColumnType::Utf8,
        false,
        "wire (decoded relay streams) or node-api (the node's peer list, --node-api)",
    ),
    col(
        "subscribed",
        ColumnType::Bool,
        true,
        "the local node subscribed to the topic (its SUBSCRIBE or GRAFT seen); null: not seen",
    ),
    col(
        "peers_subscribed",
        ColumnType::U32,
        false,
        "peers whose SUBSCRIBE to the topic was seen (wire), or peers the node lists on the shard (node-api), at the window's end",
    ),
    col(
        "mesh_peers",
        ColumnType::U32,
        true,
        "mesh peers at the window's end: GRAFT in either direction adds, PRUNE or the connection's end removes (wire)",
    ),
    col(
        "mesh_peers_min",
        ColumnType::U32,
        true,
        "fewest mesh peers during the window (wire)",
    ),
    col(
        "d_low",
        ColumnType::U32,
        false,
        "the D_low the next column counts against (--d-low, nwaku's 4 by default)",
    ),
    col(
        "secs_below_d_low",
        ColumnType::F32,
        true,
        "seconds of the window the node was subscribed with fewer than d_low mesh peers (wire)",
    ),
    col(
        "grafts",
        ColumnType::U32,
        false,
        "GRAFTs seen in the window, both directions",
    ),
    col(
        "prunes",
        ColumnType::U32,
        false,
        "PRUNEs seen in the window, both directions",
    ),
    col(
        "unsubscribed_senders",
        ColumnType::U32,
        false,
        "peers that published on the topic while the node was not subscribed to it (its UNSUBSCRIBE seen, or only other topics subscribed)",
    ),
];

/// The mesh table.
pub struct Mesh;

impl Table for Mesh {
    type Row = MeshRow;
    const COLUMNS: &'static [Column] = MESH_COLUMNS;

    fn time_us(row: &MeshRow) -> i64 {
        row.window_start_us
    }

    fn columns(rows: &[MeshRow]) -> Vec<ArrayRef> {
        let u32s = |f: fn(&MeshRow) -> u32| -> ArrayRef {
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
        };
        let local: Vec<Option<String>> = rows
            .iter()
            .map(|r| r.local_addr.map(|a| a.to_string()))
            .collect();
        vec![
            timestamps(rows.iter().map(|r| r.window_start_us)),
            u32s(|r| r.window_secs),
            strings(local.iter().map(|a| a.as_deref())),
            Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.cluster_id))),
            Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.shard))),
            strings(rows.iter().map(|r| r.pubsub_topic.as_deref())),
            strings(rows.iter().map(|r| Some(r.source))),
            bools(rows.iter().map(|r| r.subscribed)),
            u32s(|r| r.peers_subscribed),
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.mesh_peers))),
            Arc::new(UInt32Array::from_iter(
                rows.iter().map(|r| r.mesh_peers_min),
            )),
            u32s(|r| r.d_low),
            Arc::new(Float32Array::from_iter(
                rows.iter().map(|r| r.secs_below_d_low),
            )),
            u32s(|r| r.grafts),
            u32s(|r| r.prunes),
            u32s(|r| r.unsubscribed_senders),
        ]
    }
}

/// The mesh table's writer.
pub type MeshSink = ParquetWriter<Mesh>;

impl Sink for MeshSink {
    fn write(&mut self, _rows: &[Row]) -> Result<(), crate::Error> {
        Ok(())
    }

    fn mesh(&mut self, rows: &[MeshRow]) -> Result<(), crate::Error> {
        self.add(rows)
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        self.flush()
    }

    fn roll(&mut self) -> Result<(), crate::Error> {
        self.flush()
    }
}
