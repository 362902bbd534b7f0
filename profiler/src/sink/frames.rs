//! The `--frames` table: one Parquet row per Noise transport frame or TLS record of a libp2p
//! connection, in order, with what the inference took it for.

use std::sync::Arc;

use arrow_array::{ArrayRef, UInt32Array};

use super::Sink;
use super::parquet::{
    Column, ColumnType, ParquetWriter, Table, col, endpoint_columns, strings, timestamps,
};
use crate::account::frames::FrameRow;
use crate::account::record::Row;

/// The frames table's columns, in file order.
pub const FRAME_COLUMNS: &[Column] = &[
    col(
        "time",
        ColumnType::Timestamp,
        false,
        "when the frame's first bytes arrived (UTC)",
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
    col("security", ColumnType::Utf8, false, "/noise or /tls/1.0.0"),
    col(
        "frame_bytes",
        ColumnType::U32,
        false,
        "stream bytes of the frame: 2-byte Noise length or 5-byte TLS header, and the body",
    ),
    col(
        "inferred",
        ColumnType::Utf8,
        false,
        "what the frame was taken for: handshake, muxer-framing, negotiation, ping, identify, relay-message, relay-message-continued, relay-control, ihave, iwant|idontwant (Noise); the record type (TLS)",
    ),
];

/// The frames table.
pub struct Frames;

impl Table for Frames {
    type Row = FrameRow;
    const COLUMNS: &'static [Column] = FRAME_COLUMNS;

    fn time_us(row: &FrameRow) -> i64 {
        row.time_us
    }

    fn columns(rows: &[FrameRow]) -> Vec<ArrayRef> {
        let mut cols = vec![timestamps(rows.iter().map(|r| r.time_us))];
        cols.extend(endpoint_columns(rows.iter().map(|r| &r.endpoints)));
        cols.extend([
            strings(rows.iter().map(|r| Some(r.direction.as_str()))),
            strings(rows.iter().map(|r| Some(r.security))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.bytes))) as ArrayRef,
            strings(rows.iter().map(|r| Some(r.kind))),
        ]);
        cols
    }
}

/// The frames table's writer.
pub type FrameSink = ParquetWriter<Frames>;

impl Sink for FrameSink {
    fn write(&mut self, _rows: &[Row]) -> Result<(), crate::Error> {
        Ok(())
    }

    fn frames(&mut self, rows: &[FrameRow]) -> Result<(), crate::Error> {
        self.add(rows)
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        self.flush()
    }
}
