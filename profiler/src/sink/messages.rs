//! The `--messages` table: one Parquet row per published relay message seen on the wire, with
//! the fields of its WakuMessage (never the payload) and whether its receiver had seen it before.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, UInt16Array, UInt32Array};

use super::Sink;
use super::parquet::{
    Column, ColumnType, ParquetWriter, Table, bools, col, endpoint_columns, strings, timestamps,
    u64s,
};
use crate::account::messages::MessageRow;
use crate::account::record::Row;
use crate::decode::relay::waku_message::hex;

/// The message table's columns, in file order.
pub const MESSAGE_COLUMNS: &[Column] = &[
    col(
        "time",
        ColumnType::Timestamp,
        false,
        "when the message was read completely (UTC)",
    ),
    col("transport", ColumnType::Utf8, false, "tcp"),
    col(
        "local_addr",
        ColumnType::Utf8,
        true,
        "local address (as in the usage table)",
    ),
    col("local_port", ColumnType::U16, true, "local port"),
    col("remote_addr", ColumnType::Utf8, true, "remote address"),
    col("remote_port", ColumnType::U16, true, "remote port"),
    col(
        "direction",
        ColumnType::Utf8,
        false,
        "in or out, seen from the local side",
    ),
    col(
        "protocol",
        ColumnType::Utf8,
        false,
        "relay stream protocol, e.g. /vac/waku/relay/2.0.0",
    ),
    col(
        "pubsub_topic",
        ColumnType::Utf8,
        true,
        "pubsub topic of the message",
    ),
    col(
        "cluster_id",
        ColumnType::U16,
        true,
        "Waku cluster id (static sharding topics)",
    ),
    col(
        "shard",
        ColumnType::U16,
        true,
        "Waku shard (static sharding topics)",
    ),
    col(
        "message_id",
        ColumnType::Utf8,
        false,
        "hex SHA-256 of the WakuMessage bytes (gossipsub id of nwaku and go-waku)",
    ),
    col(
        "message_hash",
        ColumnType::Utf8,
        true,
        "hex 14/WAKU2-MESSAGE deterministic hash; null if data is not a WakuMessage",
    ),
    col(
        "content_topic",
        ColumnType::Utf8,
        true,
        "content topic of the WakuMessage",
    ),
    col(
        "entry_bytes",
        ColumnType::U64,
        false,
        "bytes of the RPC.publish entry (its payload_bytes in the usage table)",
    ),
    col(
        "waku_message_bytes",
        ColumnType::U64,
        false,
        "bytes of the serialized WakuMessage",
    ),
    col(
        "payload_bytes",
        ColumnType::U64,
        true,
        "bytes of the WakuMessage payload",
    ),
    col(
        "version",
        ColumnType::U32,
        true,
        "WakuMessage version; null when absent",
    ),
    col(
        "timestamp_ns",
        ColumnType::I64,
        true,
        "WakuMessage timestamp, Unix ns, as the sender set it",
    ),
    col("meta_bytes", ColumnType::U64, true, "bytes of meta"),
    col(
        "meta_signature",
        ColumnType::Bool,
        true,
        "meta is 64 bytes: a protected-shard signature",
    ),
    col(
        "rln_proof_bytes",
        ColumnType::U64,
        true,
        "bytes of the RLN rate-limit proof; 0 without one",
    ),
    col(
        "ephemeral",
        ColumnType::Bool,
        true,
        "the message is flagged ephemeral",
    ),
    col(
        "duplicate",
        ColumnType::Bool,
        false,
        "the receiving host had seen this message id before",
    ),
];

/// The message table.
pub struct Messages;

impl Table for Messages {
    type Row = MessageRow;
    const COLUMNS: &'static [Column] = MESSAGE_COLUMNS;

    fn time_us(row: &MessageRow) -> i64 {
        row.time_us
    }

    fn columns(rows: &[MessageRow]) -> Vec<ArrayRef> {
        let waku = |f: fn(&crate::decode::relay::waku_message::WakuInfo) -> u64| {
            u64s_opt(rows.iter().map(move |r| r.waku.as_ref().map(f)))
        };
        let ids: Vec<String> = rows.iter().map(|r| hex(&r.message_id)).collect();
        let hashes: Vec<Option<String>> = rows
            .iter()
            .map(|r| r.waku.as_ref().map(|w| hex(&w.message_hash)))
            .collect();
        let mut cols = vec![timestamps(rows.iter().map(|r| r.time_us))];
        cols.extend(endpoint_columns(rows.iter().map(|r| &r.endpoints)));
        cols.extend([
            strings(rows.iter().map(|r| Some(r.direction.as_str()))),
            strings(rows.iter().map(|r| Some(r.protocol.as_ref()))),
            strings(rows.iter().map(|r| r.pubsub_topic.as_deref())),
            Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.cluster_id))) as ArrayRef,
            Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.shard))),
            strings(ids.iter().map(|s| Some(s.as_str()))),
            strings(hashes.iter().map(|s| s.as_deref())),
            strings(
                rows.iter()
                    .map(|r| r.waku.as_ref().and_then(|w| w.content_topic.as_deref())),
            ),
            u64s(rows.iter().map(|r| r.entry_bytes)),
            u64s(rows.iter().map(|r| r.data_bytes)),
            waku(|w| w.payload_bytes),
            Arc::new(UInt32Array::from_iter(
                rows.iter().map(|r| r.waku.as_ref().and_then(|w| w.version)),
            )),
            Arc::new(Int64Array::from_iter(
                rows.iter()
                    .map(|r| r.waku.as_ref().and_then(|w| w.timestamp_ns)),
            )),
            waku(|w| w.meta_bytes),
            bools(
                rows.iter()
                    .map(|r| r.waku.as_ref().map(|w| w.meta_signature)),
            ),
            waku(|w| w.rln_proof_bytes),
            bools(rows.iter().map(|r| r.waku.as_ref().map(|w| w.ephemeral))),
            bools(rows.iter().map(|r| Some(r.duplicate))),
        ]);
        cols
    }
}

fn u64s_opt(it: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(arrow_array::UInt64Array::from_iter(it))
}

/// The message table's writer.
pub type MessageSink = ParquetWriter<Messages>;

impl Sink for MessageSink {
    fn write(&mut self, _rows: &[Row]) -> Result<(), crate::Error> {
        Ok(())
    }

    fn messages(&mut self, rows: &[MessageRow]) -> Result<(), crate::Error> {
        self.add(rows)
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        self.flush()
    }
}
