//! The sweep table as columns, written as CSV and as Parquet (one row per value).

use std::{fs::File, path::Path, sync::Arc};

use anyhow::Context as _;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::{arrow::ArrowWriter, basic::Compression, file::properties::WriterProperties};

use crate::sweep::{KINDS, NON_RELAY, RELAY_OTHER, SweepReport};

/// One column's values.
pub enum Values {
    Text(Vec<String>),
    Float(Vec<f64>),
    Count(Vec<u64>),
}

/// A named column.
pub struct Column {
    pub name: String,
    pub values: Values,
}

fn column(name: impl Into<String>, values: Values) -> Column {
    Column {
        name: name.into(),
        values,
    }
}

/// The table's columns: the parameter and its value, the run's size, per-node bytes/s in + out
/// per kind (`<kind>_bps`), totals, the control share and the check against truth.
pub fn columns(r: &SweepReport) -> Vec<Column> {
    let rows = &r.rows;
    let float = |f: &dyn Fn(&crate::sweep::Row) -> f64| Values::Float(rows.iter().map(f).collect());
    let count = |f: &dyn Fn(&crate::sweep::Row) -> u64| Values::Count(rows.iter().map(f).collect());
    let mut out = vec![
        column(
            "param",
            Values::Text(rows.iter().map(|_| r.param.name().to_owned()).collect()),
        ),
        column("value", float(&|x| x.value)),
        column("nodes", count(&|x| x.nodes as u64)),
        column("published", count(&|x| x.published as u64)),
        column("elapsed_secs", float(&|x| x.elapsed_secs)),
    ];
    for kind in KINDS.iter().chain(&[RELAY_OTHER, NON_RELAY]) {
        out.push(column(
            format!("{kind}_bps"),
            float(&|x| x.per_node_bps.get(*kind).copied().unwrap_or(0.0)),
        ));
    }
    out.extend([
        column("total_bps", float(&|x| x.per_node_total_bps)),
        column("max_node_total_bps", float(&|x| x.max_node_total_bps)),
        column("control_share", float(&|x| x.control_share)),
        column(
            "duplicates_per_node_per_sec",
            float(&|x| x.duplicates_per_node_per_sec),
        ),
        column("amplification", float(&|x| x.amplification)),
        column("mesh_peers", float(&|x| x.mesh_peers)),
        column("secs_below_d_low", float(&|x| x.secs_below_d_low)),
        column("relay_bytes", count(&|x| x.relay_bytes)),
        column("truth_relay_bytes", count(&|x| x.truth_relay_bytes)),
        column("relay_error_pct", float(&|x| x.relay_error_pct)),
        column("message_error_pct", float(&|x| x.message_error_pct)),
        column("packets_dropped", count(&|x| x.packets_dropped)),
        column(
            "measured_by",
            Values::Text(rows.iter().map(|x| x.measured_by.to_owned()).collect()),
        ),
    ]);
    out
}

fn len(v: &Values) -> usize {
    match v {
        Values::Text(v) => v.len(),
        Values::Float(v) => v.len(),
        Values::Count(v) => v.len(),
    }
}

/// The columns as CSV with a header line (no value needs quoting: names and numbers).
pub fn csv(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let mut out = names.join(",") + "\n";
    let rows = columns.first().map_or(0, |c| len(&c.values));
    for i in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &c.values {
                Values::Text(v) => v[i].clone(),
                Values::Float(v) => v[i].to_string(),
                Values::Count(v) => v[i].to_string(),
            })
            .collect();
        out += &cells.join(",");
        out.push('\n');
    }
    out
}

/// Writes the columns to `path` as one Parquet row group (zstd).
pub fn parquet(columns: &[Column], path: &Path) -> anyhow::Result<()> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let ty = match c.values {
                Values::Text(_) => DataType::Utf8,
                Values::Float(_) => DataType::Float64,
                Values::Count(_) => DataType::UInt64,
            };
            Field::new(&c.name, ty, false)
        })
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|c| -> ArrayRef {
            match &c.values {
                Values::Text(v) => Arc::new(StringArray::from(v.clone())),
                Values::Float(v) => Arc::new(Float64Array::from(v.clone())),
                Values::Count(v) => Arc::new(UInt64Array::from(v.clone())),
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).context("the sweep table")?;
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(Default::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))
        .with_context(|| format!("write {}", path.display()))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(drop))
        .with_context(|| format!("write {}", path.display()))
}
