//! Parquet output: zstd-compressed files in Hive partitions `date=YYYY-MM-DD/hour=HH/`, each
//! written under a hidden temporary name (`.part-….parquet.tmp`, which `*.parquet` globs and
//! dataset readers skip), synced, then renamed, so readers never see a half file. A run that was
//! killed may leave its temporary file; the next writer in the directory removes it. The writer
//! is shared by the tables ([`Table`]): usage rows here, message rows in `messages.rs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rustc_hash::FxHashMap;

use super::Sink;
use crate::Error;
use crate::account::record::{Endpoints, Row};

/// Type of a column, as written to Parquet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Microseconds since the epoch, UTC.
    Timestamp,
    U16,
    U32,
    U64,
    I64,
    F32,
    Utf8,
    Bool,
}

impl ColumnType {
    fn arrow(self) -> DataType {
        match self {
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::U16 => DataType::UInt16,
            ColumnType::U32 => DataType::UInt32,
            ColumnType::U64 => DataType::UInt64,
            ColumnType::I64 => DataType::Int64,
            ColumnType::F32 => DataType::Float32,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
        }
    }

    /// The type's name as `wakuprof schema` shows it.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Timestamp => "timestamp[us, UTC]",
            ColumnType::U16 => "uint16",
            ColumnType::U32 => "uint32",
            ColumnType::U64 => "uint64",
            ColumnType::I64 => "int64",
            ColumnType::F32 => "float32",
            ColumnType::Utf8 => "string",
            ColumnType::Bool => "bool",
        }
    }
}

/// One column of a table: name, type, whether it can be null, and what it means.
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    pub doc: &'static str,
}

/// A column (for the tables' column lists).
pub const fn col(name: &'static str, ty: ColumnType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

/// The usage table's columns, in file order. Partition columns `date` and `hour` come from the
/// directory names.
pub const COLUMNS: &[Column] = &[
    col(
        "window_start",
        ColumnType::Timestamp,
        false,
        "start of the aggregation window (UTC)",
    ),
    col(
        "window_secs",
        ColumnType::U32,
        false,
        "window length in seconds (--window)",
    ),
    col(
        "host",
        ColumnType::Utf8,
        true,
        "host name of the owner; null offline",
    ),
    col(
        "pid",
        ColumnType::U32,
        true,
        "owning process id; null offline",
    ),
    col(
        "comm",
        ColumnType::Utf8,
        true,
        "owning process name; null offline",
    ),
    col(
        "exe",
        ColumnType::Utf8,
        true,
        "owning executable path; null offline",
    ),
    col(
        "cgroup",
        ColumnType::Utf8,
        true,
        "owning cgroup v2 path; null offline",
    ),
    col(
        "container",
        ColumnType::Utf8,
        true,
        "container of the cgroup: docker://ID, containerd://ID, cri-o://ID or k8s-pod://UID; null otherwise",
    ),
    col(
        "transport",
        ColumnType::Utf8,
        false,
        "tcp, udp, icmp, ip (other IP protocols) or non-ip",
    ),
    col(
        "local_addr",
        ColumnType::Utf8,
        true,
        "local address (--local; else the flow's initiator); null for non-IP frames",
    ),
    col(
        "local_port",
        ColumnType::U16,
        true,
        "local port; null without ports",
    ),
    col("remote_addr", ColumnType::Utf8, true, "remote address"),
    col("remote_port", ColumnType::U16, true, "remote port"),
    col(
        "category",
        ColumnType::Utf8,
        false,
        "relay_control, relay_chat, waku_service, libp2p, discovery, rpc, bittorrent or other",
    ),
    col(
        "protocol",
        ColumnType::Utf8,
        false,
        "protocol id, e.g. /noise, /multistream/1.0.0, tcp, udp, arp",
    ),
    col(
        "kind",
        ColumnType::Utf8,
        false,
        "message kind, e.g. negotiation, handshake, encrypted, data, transport",
    ),
    col(
        "cluster_id",
        ColumnType::U16,
        true,
        "Waku cluster id; null where not knowable",
    ),
    col(
        "shard",
        ColumnType::U16,
        true,
        "Waku shard; null where not knowable",
    ),
    col(
        "pubsub_topic",
        ColumnType::Utf8,
        true,
        "pubsub topic; null where not knowable",
    ),
    col(
        "content_topic",
        ColumnType::Utf8,
        true,
        "content topic; null where not knowable",
    ),
    col(
        "direction",
        ColumnType::Utf8,
        false,
        "in or out, seen from the local side",
    ),
    col(
        "bytes",
        ColumnType::U64,
        false,
        "wire bytes: IP total length (frame length for non-IP frames)",
    ),
    col(
        "payload_bytes",
        ColumnType::U64,
        false,
        "TCP/UDP payload bytes of the units counted",
    ),
    col(
        "packets",
        ColumnType::U64,
        false,
        "packets, each counted once in the row of its first labelled byte",
    ),
    col(
        "messages",
        ColumnType::U64,
        false,
        "protocol units (messages, frames) that start in this row",
    ),
    col(
        "duplicates",
        ColumnType::U64,
        false,
        "messages seen before by the same host",
    ),
    col(
        "retrans_bytes",
        ColumnType::U64,
        false,
        "wire bytes of TCP segments that repeated stream bytes (included in bytes)",
    ),
    col(
        "method",
        ColumnType::Utf8,
        false,
        "decoded, inferred, heuristic or port: how the label was obtained",
    ),
    col(
        "confidence",
        ColumnType::F32,
        false,
        "0..1; 1 for decoded labels",
    ),
];

/// Most rows in one row group: DuckDB's own row group size, so that a reader's threads split a
/// file the way DuckDB splits its tables. Row groups carry min/max statistics (what DuckDB
/// prunes by); pages do not, as their index would stay in memory until the file closes.
const ROW_GROUP_ROWS: usize = 122_880;
/// Largest data page before compression: enough for zstd to find repeats, small enough that a
/// reader skipping by page statistics reads little.
const DATA_PAGE_BYTES: usize = 256 << 10;
/// Row groups in a file before the next file of its hour starts: a file's metadata stays in
/// memory until it is closed, and a run that is killed loses its open files.
const ROW_GROUPS_PER_FILE: usize = 4;
/// Partitions (hours) with a file open at once: the current hour and the one before, where rows
/// of windows still open at the turn of the hour go.
const OPEN_PARTITIONS: usize = 2;
/// Start and end of a temporary file's name; between them `<run id>-<seq>.parquet`, the run id
/// ending with the writing process's id.
const TMP_PREFIX: &str = ".part-";
const TMP_SUFFIX: &str = ".tmp";

/// A kind of row written as Parquet: its columns and how rows become them.
pub trait Table {
    type Row: Clone + Send + 'static;
    /// Columns in file order.
    const COLUMNS: &'static [Column];
    /// The time that places a row in its `date=`/`hour=` partition, µs since the epoch.
    fn time_us(row: &Self::Row) -> i64;
    /// The column arrays of a batch, in [`Table::COLUMNS`] order.
    fn columns(rows: &[Self::Row]) -> Vec<ArrayRef>;
}

/// The usage table: one row per window and key (design.md "The record").
pub struct Usage;

impl Table for Usage {
    type Row = Row;
    const COLUMNS: &'static [Column] = COLUMNS;
    fn time_us(row: &Row) -> i64 {
        row.window_start_us
    }
    fn columns(rows: &[Row]) -> Vec<ArrayRef> {
        columns(rows)
    }
}

/// Hours since the epoch: the partition a time falls in.
type Hour = i64;

/// The partition of a time, µs since the epoch.
fn hour_of(time_us: i64) -> Hour {
    time_us.div_euclid(3_600_000_000)
}

/// A Parquet file being written, under its temporary name.
struct OpenFile {
    hour: Hour,
    rows: usize,
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
}

/// Writes rows of table `T` as Parquet under a directory: one file per partition (hour) that
/// stays open while rows of that hour arrive, written a row group at a time. Rows of an hour
/// whose file was already closed (late packets, unordered captures) are set aside and written
/// together, so an hour gets one more file per [`ParquetWriter::limit_rows`] rows of them, not
/// one per late window.
pub struct ParquetWriter<T: Table> {
    dir: PathBuf,
    run_id: String,
    seq: u32,
    schema: Arc<Schema>,
    props: WriterProperties,
    /// Files being written, at most [`OPEN_PARTITIONS`].
    open: Vec<OpenFile>,
    /// The latest hour whose file was closed since the last [`ParquetWriter::flush`]: rows of
    /// it or earlier hours not open are late.
    closed_up_to: Option<Hour>,
    /// Late rows by hour, and how many there are in all.
    late: BTreeMap<Hour, Vec<T::Row>>,
    late_rows: usize,
    /// Most rows buffered or in a row group before they are written (the memory budget's output
    /// share).
    row_limit: usize,
    /// Files written so far.
    pub files: Vec<PathBuf>,
}

/// The usage table's writer.
pub type ParquetSink = ParquetWriter<Usage>;

impl<T: Table> ParquetWriter<T> {
    /// A writer under `dir`. The directory is created if its parent exists; it must be
    /// writable (checked now, before anything is read). Temporary files that runs no longer
    /// alive left under it are removed.
    pub fn new(dir: &Path) -> Result<ParquetWriter<T>, Error> {
        prepare_dir(dir)?;
        let fields: Vec<Field> = T::COLUMNS
            .iter()
            .map(|c| Field::new(c.name, c.ty.arrow(), c.nullable))
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut writer = ParquetWriter {
            dir: dir.to_path_buf(),
            run_id: format!("{nanos:x}-{}", std::process::id()),
            seq: 0,
            schema: Arc::new(Schema::new(fields)),
            props: WriterProperties::default(),
            open: Vec::new(),
            closed_up_to: None,
            late: BTreeMap::new(),
            late_rows: 0,
            row_limit: usize::MAX,
            files: Vec::new(),
        };
        writer.limit_rows(ROW_GROUP_ROWS);
        Ok(writer)
    }

    /// Bounds the rows held before they are written (the memory budget's output share): late
    /// rows past `rows` are written, and a row group holds no more.
    pub fn limit_rows(&mut self, rows: usize) {
        self.row_limit = rows.max(1);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(self.row_limit.min(ROW_GROUP_ROWS)))
            .set_data_page_size_limit(DATA_PAGE_BYTES)
            .set_statistics_enabled(EnabledStatistics::Chunk);
        // Counters take nearly as many values as rows: a dictionary would only be built to be
        // dropped, so they are written plain (and compressed).
        let counters = T::COLUMNS
            .iter()
            .filter(|c| matches!(c.ty, ColumnType::U64 | ColumnType::I64));
        self.props = counters
            .fold(props, |p, c| {
                p.set_column_dictionary_enabled(ColumnPath::from(c.name), false)
            })
            .build();
    }

    /// Writes rows in order: each run of rows of one hour goes to that hour's open file, or is
    /// set aside when the hour's file was closed already.
    pub fn add(&mut self, rows: &[T::Row]) -> Result<(), Error> {
        let result = self.route(rows);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn route(&mut self, rows: &[T::Row]) -> Result<(), Error> {
        let per_file = self.row_limit.min(ROW_GROUP_ROWS) * ROW_GROUPS_PER_FILE;
        let mut start = 0;
        while start < rows.len() {
            let hour = hour_of(T::time_us(&rows[start]));
            let len = rows[start..]
                .iter()
                .position(|r| hour_of(T::time_us(r)) != hour)
                .unwrap_or(rows.len() - start);
            let run = &rows[start..start + len];
            let open = self.open.iter().position(|f| f.hour == hour);
            if open.is_none() && self.closed_up_to.is_some_and(|c| hour <= c) {
                self.late.entry(hour).or_default().extend_from_slice(run);
                self.late_rows += run.len();
                start += len;
                if self.late_rows >= self.row_limit {
                    self.write_late()?;
                }
                continue;
            }
            let at = match open {
                Some(at) => at,
                None => {
                    if self.open.len() == OPEN_PARTITIONS {
                        let oldest = (0..self.open.len())
                            .min_by_key(|&i| self.open[i].hour)
                            .unwrap_or(0);
                        let f = self.open.swap_remove(oldest);
                        self.closed_up_to = self.closed_up_to.max(Some(f.hour));
                        self.close(f)?;
                    }
                    let f = self.create(hour)?;
                    self.open.push(f);
                    self.open.len() - 1
                }
            };
            let f = &mut self.open[at];
            let n = run.len().min(per_file - f.rows);
            write_batch(f, &self.schema, T::columns(&run[..n]))?;
            start += n;
            if f.rows >= per_file {
                let f = self.open.swap_remove(at);
                self.close(f)?;
            }
        }
        Ok(())
    }

    /// Closes every open file and writes the late rows: everything added so far is in
    /// complete files. On an error the rows not written are dropped (the files already written
    /// stay complete).
    pub fn flush(&mut self) -> Result<(), Error> {
        let result = self.close_all();
        if result.is_err() {
            self.abandon();
        }
        self.closed_up_to = None;
        result
    }

    fn close_all(&mut self) -> Result<(), Error> {
        while let Some(f) = self.open.pop() {
            self.close(f)?;
        }
        self.write_late()
    }

    /// Writes the late rows, one file per hour.
    fn write_late(&mut self) -> Result<(), Error> {
        self.late_rows = 0;
        for (hour, rows) in std::mem::take(&mut self.late) {
            let mut f = self.create(hour)?;
            let written = write_batch(&mut f, &self.schema, T::columns(&rows));
            match written {
                Ok(()) => self.close(f)?,
                Err(e) => {
                    self.open.push(f);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Drops the open files (removing them) and the late rows, after an error.
    fn abandon(&mut self) {
        for f in self.open.drain(..) {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
        }
        self.late.clear();
        self.late_rows = 0;
    }

    /// Opens a new file of `hour` under its temporary name.
    fn create(&mut self, hour: Hour) -> Result<OpenFile, Error> {
        let (date, hh) = partition(hour * 3_600_000_000);
        let dir = self
            .dir
            .join(format!("date={date}"))
            .join(format!("hour={hh:02}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.seq += 1;
        let name = format!("{}-{:05}.parquet", self.run_id, self.seq);
        let path = dir.join(format!("part-{name}"));
        let tmp = dir.join(format!("{TMP_PREFIX}{name}{TMP_SUFFIX}"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let writer = ArrowWriter::try_new(file, Arc::clone(&self.schema), Some(self.props.clone()));
        match writer {
            Ok(writer) => Ok(OpenFile {
                hour,
                rows: 0,
                tmp,
                path,
                writer,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(parquet_error(&tmp, e))
            }
        }
    }

    /// Finishes a file, syncs it and gives it its final name.
    fn close(&mut self, f: OpenFile) -> Result<(), Error> {
        let OpenFile {
            tmp, path, writer, ..
        } = f;
        let result = writer
            .into_inner()
            .map_err(|e| parquet_error(&tmp, e))
            .and_then(|file| file.sync_all().map_err(|e| Error::io(&tmp, e)))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e)));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
            let _ = d.sync_all();
        }
        self.files.push(path);
        Ok(())
    }
}

/// Appends a batch of columns to an open file.
fn write_batch(
    f: &mut OpenFile,
    schema: &Arc<Schema>,
    columns: Vec<ArrayRef>,
) -> Result<(), Error> {
    let batch = RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::Parquet {
        path: f.tmp.clone(),
        message: e.to_string(),
    })?;
    f.rows += batch.num_rows();
    f.writer.write(&batch).map_err(|e| parquet_error(&f.tmp, e))
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Creates `dir` if its parent exists, checks that files can be created in it, and removes the
/// temporary files of runs that are gone.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let invalid =
        |why: String| Error::Invalid(format!("output directory {}: {why}", dir.display()));
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(invalid("not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(invalid(format!(
                    "does not exist, nor does its parent (create it with: mkdir -p {})",
                    dir.display()
                )));
            }
            std::fs::create_dir(dir).map_err(|e| invalid(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(invalid(e.to_string())),
    }
    let probe = dir.join(format!(".wakuprof-write-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| invalid(format!("cannot write in it: {e}")))?;
    remove_stale_tmp(dir, 0);
    Ok(())
}

/// Removes `.part-*.parquet.tmp` files under `dir` (down to the partition directories) whose
/// writing process is not running.
fn remove_stale_tmp(dir: &Path, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let path = e.path();
        if depth < 2 && e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale_tmp(&path, depth + 1);
        } else if let Some(pid) = tmp_writer(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed {}, left by a run that stopped", path.display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// The process id in a temporary file's name `.part-<nanos>-<pid>-<seq>.parquet.tmp`.
fn tmp_writer(name: &str) -> Option<u32> {
    let inner = name
        .strip_prefix(TMP_PREFIX)?
        .strip_suffix(TMP_SUFFIX)?
        .strip_suffix(".parquet")?;
    let mut parts = inner.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// A string column.
pub fn strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(it))
}

/// A non-null u64 column.
pub fn u64s(it: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(it))
}

/// A bool column.
pub fn bools(it: impl Iterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(it))
}

/// A UTC timestamp column, µs since the epoch.
pub fn timestamps(it: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(it).with_timezone("UTC"))
}

/// The five endpoint columns (transport, local addr/port, remote addr/port), in that order.
pub fn endpoint_columns<'a>(eps: impl Iterator<Item = &'a Endpoints> + Clone) -> Vec<ArrayRef> {
    let mut text = FxHashMap::default();
    vec![
        strings(eps.clone().map(|e| Some(e.transport))),
        addresses(eps.clone().map(|e| e.local_addr), &mut text),
        Arc::new(UInt16Array::from_iter(eps.clone().map(|e| e.local_port))),
        addresses(eps.clone().map(|e| e.remote_addr), &mut text),
        Arc::new(UInt16Array::from_iter(eps.map(|e| e.remote_port))),
    ]
}

/// A column of addresses as text, each distinct address formatted once (`text` keeps them).
fn addresses(
    addrs: impl Iterator<Item = Option<IpAddr>>,
    text: &mut FxHashMap<IpAddr, String>,
) -> ArrayRef {
    let mut column = StringBuilder::new();
    for a in addrs {
        match a {
            Some(a) => column.append_value(text.entry(a).or_insert_with(|| a.to_string())),
            None => column.append_null(),
        }
    }
    Arc::new(column.finish())
}

/// Builds the column arrays of a batch, in [`COLUMNS`] order.
fn columns(rows: &[Row]) -> Vec<ArrayRef> {
    let mut cols = vec![
        timestamps(rows.iter().map(|r| r.window_start_us)),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.window_secs),
        )),
        strings(rows.iter().map(|r| r.owner.host.as_deref())),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.owner.pid))),
        strings(rows.iter().map(|r| r.owner.comm.as_deref())),
        strings(rows.iter().map(|r| r.owner.exe.as_deref())),
        strings(rows.iter().map(|r| r.owner.cgroup.as_deref())),
        strings(rows.iter().map(|r| r.owner.container.as_deref())),
    ];
    cols.extend(endpoint_columns(rows.iter().map(|r| &r.endpoints)));
    cols.extend([
        strings(rows.iter().map(|r| Some(r.label.category.as_str()))),
        strings(rows.iter().map(|r| Some(r.label.protocol.as_ref()))),
        strings(rows.iter().map(|r| Some(r.label.kind.as_ref()))),
        Arc::new(UInt16Array::from_iter(
            rows.iter().map(|r| r.label.cluster_id),
        )),
        Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.label.shard))),
        strings(rows.iter().map(|r| r.label.pubsub_topic.as_deref())),
        strings(rows.iter().map(|r| r.label.content_topic.as_deref())),
        strings(rows.iter().map(|r| Some(r.direction.as_str()))),
        u64s(rows.iter().map(|r| r.counters.bytes)),
        u64s(rows.iter().map(|r| r.counters.payload_bytes)),
        u64s(rows.iter().map(|r| r.counters.packets)),
        u64s(rows.iter().map(|r| r.counters.messages)),
        u64s(rows.iter().map(|r| r.counters.duplicates)),
        u64s(rows.iter().map(|r| r.counters.retrans_bytes)),
        strings(rows.iter().map(|r| Some(r.label.method.as_str()))),
        Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| r.label.confidence()),
        )),
    ]);
    cols
}

/// The Hive partition of a window start: (`YYYY-MM-DD`, hour), UTC.
pub fn partition(window_start_us: i64) -> (String, u32) {
    let secs = window_start_us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), hour)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Sink for ParquetSink {
    fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        self.add(rows)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.flush()
    }

    fn roll(&mut self) -> Result<(), Error> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::record::{Category, Counters, Direction, Label};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// A usage row of the window starting `secs` after 2024-01-01 00:00 UTC, counting one byte.
    fn row(secs: i64) -> Row {
        Row {
            window_start_us: (1_704_067_200 + secs) * 1_000_000,
            window_secs: 10,
            owner: Arc::default(),
            endpoints: Endpoints {
                transport: "tcp",
                local_addr: Some(IpAddr::from([10, 0, 0, 1])),
                local_port: Some(40000),
                remote_addr: Some(IpAddr::from([10, 0, 0, 2])),
                remote_port: Some(443),
            },
            label: Label::decoded(Category::Other, &Arc::from("tcp"), &Arc::from("data")),
            direction: Direction::Out,
            counters: Counters {
                bytes: 1,
                ..Counters::default()
            },
        }
    }

    /// The rows in each file written, by `hour=` directory.
    fn rows_by_hour(files: &[PathBuf]) -> BTreeMap<String, Vec<i64>> {
        let mut hours: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for f in files {
            let reader = SerializedFileReader::new(File::open(f).unwrap()).unwrap();
            let hour = f.parent().unwrap().file_name().unwrap().to_string_lossy();
            hours
                .entry(hour.into_owned())
                .or_default()
                .push(reader.metadata().file_metadata().num_rows());
        }
        hours
    }

    #[test]
    fn late_rows_of_a_closed_hour_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ParquetSink::new(dir.path()).unwrap();
        for hour in 0..3 {
            w.add(&[row(hour * 3600), row(hour * 3600 + 10)]).unwrap();
        }
        for late in 0..5 {
            w.add(&[row(late * 10)]).unwrap();
            w.add(&[row(2 * 3600 + 20)]).unwrap();
        }
        w.flush().unwrap();
        let hours = rows_by_hour(&w.files);
        assert_eq!(
            hours["hour=00"],
            [2, 5],
            "one file as written, one of its late rows"
        );
        assert_eq!(hours["hour=01"], [2]);
        assert_eq!(
            hours["hour=02"],
            [7],
            "the open hour takes its rows as they come"
        );
    }

    #[test]
    fn an_hour_starts_a_new_file_after_its_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ParquetSink::new(dir.path()).unwrap();
        w.limit_rows(3);
        let rows: Vec<Row> = (0..30).map(|i| row(i * 10)).collect();
        w.add(&rows).unwrap();
        w.flush().unwrap();
        let per_file = 3 * ROW_GROUPS_PER_FILE as i64;
        assert_eq!(
            rows_by_hour(&w.files)["hour=00"],
            [per_file, per_file, 30 - 2 * per_file]
        );
    }

    #[test]
    fn temporary_names_give_their_writer() {
        assert_eq!(tmp_writer(".part-18f3a-4242-00007.parquet.tmp"), Some(4242));
        assert_eq!(tmp_writer("part-18f3a-4242-00007.parquet"), None);
        assert_eq!(tmp_writer(".part-x.parquet.tmp"), None);
    }

    #[test]
    fn partitions_are_utc_dates_and_hours() {
        assert_eq!(partition(0), ("1970-01-01".to_string(), 0));
        assert_eq!(
            partition(1_729_281_222_000_000),
            ("2024-10-18".to_string(), 19)
        );
        assert_eq!(partition(-1), ("1969-12-31".to_string(), 23));
        assert_eq!(
            partition(951_782_400_000_000),
            ("2000-02-29".to_string(), 0)
        );
    }
}
