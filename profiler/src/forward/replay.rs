//! `wakuprof forward DIR`: the usage Parquet under a directory read back into rows, summed per
//! window and spooled oldest first, with a cursor in the state directory so that a replay cut
//! short goes on where it stopped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt16Array,
    UInt32Array, UInt64Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Forwarder;
use crate::Error;
use crate::account::record::{Category, Counters, Direction, Endpoints, Label, Method, Owner, Row};

/// What a replay read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    pub files: u64,
    pub rows: u64,
    /// Rows of windows an earlier replay of the same directory already spooled.
    pub rows_skipped: u64,
    /// Whether every window was spooled (false: stopped first).
    pub complete: bool,
}

/// The usage Parquet files under `dir` (any depth), in name order; files still being written
/// (`*.parquet.tmp`) are left out.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = e.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Spools every window of the Parquet under `dir` that an earlier replay of it did not.
pub fn forward_dir(
    dir: &Path,
    state_dir: &Path,
    fwd: &mut Forwarder,
) -> Result<ReplayReport, Error> {
    let paths = files(dir)?;
    if paths.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no .parquet files here or below (give the --out directory of analyze or live)",
            dir.display()
        )));
    }
    let cursor_path = cursor_path(dir, state_dir)?;
    let cursor = read_cursor(&cursor_path)?;
    if let Some(c) = cursor {
        tracing::info!(
            "telemetry: {} was forwarded up to the window of {}; going on from there",
            dir.display(),
            super::spool::utc(c)
        );
    }
    let mut report = ReplayReport::default();
    for path in &paths {
        let rows = read_file(path)?;
        report.files += 1;
        let before = rows.len() as u64;
        let rows: Vec<Row> = rows
            .into_iter()
            .filter(|r| cursor.is_none_or(|c| r.window_start_us > c))
            .collect();
        report.rows += rows.len() as u64;
        report.rows_skipped += before - rows.len() as u64;
        fwd.add(&rows);
    }
    report.complete = fwd.spool_open(|(start, _)| write_cursor(&cursor_path, start))?;
    Ok(report)
}

/// The cursor file of a directory: named after a hash of its canonical path.
fn cursor_path(dir: &Path, state_dir: &Path) -> Result<PathBuf, Error> {
    let canon = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let digest = Sha256::digest(canon.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(state_dir.join(format!("replay-{hex}")))
}

fn read_cursor(path: &Path) -> Result<Option<i64>, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().map(Some).map_err(|_| {
            Error::Invalid(format!(
                "{}: not a replay cursor (delete it to forward the directory from the start)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn write_cursor(path: &Path, window_start_us: i64) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{window_start_us}\n")).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The rows of one usage Parquet file, with what the forwarder and the report need of them.
pub fn read_file(path: &Path) -> Result<Vec<Row>, Error> {
    read_rows(path, read_batch)
}

/// The rows of a Parquet file of wakuprof, each batch read by `read_batch`.
pub(crate) fn read_rows<R>(
    path: &Path,
    read_batch: fn(&RecordBatch, &mut Vec<R>) -> Result<(), String>,
) -> Result<Vec<R>, Error> {
    let invalid = |m: String| Error::Parquet {
        path: path.to_path_buf(),
        message: m,
    };
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| invalid(format!("cannot read: {e}")))?;
        read_batch(&batch, &mut rows).map_err(invalid)?;
    }
    Ok(rows)
}

/// A column of the batch as array type `A`, or why not (`table`: the `wakuprof schema --table`
/// the file should follow).
pub(crate) fn column_of<'a, A: Array + 'static>(
    b: &'a RecordBatch,
    name: &str,
    table: &str,
) -> Result<&'a A, String> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| {
            format!(
                "no column '{name}' of the expected type: not a {table} table of wakuprof (see `wakuprof schema --table {table}`)"
            )
        })
}

fn column<'a, A: Array + 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a A, String> {
    column_of(b, name, "usage")
}

fn text(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn number<T: arrow_array::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn read_batch(b: &RecordBatch, out: &mut Vec<Row>) -> Result<(), String> {
    let start = column::<TimestampMicrosecondArray>(b, "window_start")?;
    let secs = column::<UInt32Array>(b, "window_secs")?;
    let host = column::<StringArray>(b, "host")?;
    let pid = column::<UInt32Array>(b, "pid")?;
    let comm = column::<StringArray>(b, "comm")?;
    let local_addr = column::<StringArray>(b, "local_addr")?;
    let local_port = column::<UInt16Array>(b, "local_port")?;
    let remote_addr = column::<StringArray>(b, "remote_addr")?;
    let remote_port = column::<UInt16Array>(b, "remote_port")?;
    let category = column::<StringArray>(b, "category")?;
    let protocol = column::<StringArray>(b, "protocol")?;
    let kind = column::<StringArray>(b, "kind")?;
    let cluster_id = column::<UInt16Array>(b, "cluster_id")?;
    let shard = column::<UInt16Array>(b, "shard")?;
    let pubsub_topic = column::<StringArray>(b, "pubsub_topic")?;
    let content_topic = column::<StringArray>(b, "content_topic")?;
    let direction = column::<StringArray>(b, "direction")?;
    let method = column::<StringArray>(b, "method")?;
    let bytes = column::<UInt64Array>(b, "bytes")?;
    let packets = column::<UInt64Array>(b, "packets")?;
    let messages = column::<UInt64Array>(b, "messages")?;
    let duplicates = column::<UInt64Array>(b, "duplicates")?;
    let confidence = column::<Float32Array>(b, "confidence")?;
    let arc = |v: Option<&str>| v.map(Arc::<str>::from);
    for i in 0..b.num_rows() {
        let bad = |what: &str, v: Option<&str>| format!("row {i}: unknown {what} {v:?}");
        let cat = text(category, i);
        let category = cat
            .and_then(Category::from_name)
            .ok_or_else(|| bad("category", cat))?;
        let dir = text(direction, i);
        let direction = dir
            .and_then(Direction::from_name)
            .ok_or_else(|| bad("direction", dir))?;
        let m = text(method, i);
        let method = m
            .and_then(Method::from_name)
            .ok_or_else(|| bad("method", m))?;
        let addr = |a: &StringArray| text(a, i).and_then(|s| s.parse().ok());
        out.push(Row {
            window_start_us: number(start, i).ok_or_else(|| bad("window_start", None))?,
            window_secs: number(secs, i).ok_or_else(|| bad("window_secs", None))?,
            owner: Arc::new(Owner {
                host: arc(text(host, i)),
                pid: number(pid, i),
                comm: arc(text(comm, i)),
                ..Owner::default()
            }),
            endpoints: Endpoints {
                transport: "",
                local_addr: addr(local_addr),
                local_port: number(local_port, i),
                remote_addr: addr(remote_addr),
                remote_port: number(remote_port, i),
            },
            label: Label {
                category,
                protocol: Arc::from(text(protocol, i).unwrap_or_default()),
                kind: Arc::from(text(kind, i).unwrap_or_default()),
                cluster_id: number(cluster_id, i),
                shard: number(shard, i),
                pubsub_topic: arc(text(pubsub_topic, i)),
                content_topic: arc(text(content_topic, i)),
                method,
                confidence_permille: (confidence.value(i).clamp(0.0, 1.0) * 1000.0).round() as u16,
            },
            direction,
            counters: Counters {
                bytes: bytes.value(i),
                packets: packets.value(i),
                messages: messages.value(i),
                duplicates: duplicates.value(i),
                ..Counters::default()
            },
        });
    }
    Ok(())
}
