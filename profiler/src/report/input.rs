//! What `wakuprof report` reads: Parquet written by `analyze`/`live` (usage and mesh tables,
//! told apart by their columns; other tables are skipped), or captures, which the command
//! analyzes on the fly into the same collector.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::Collector;
use crate::Error;
use crate::forward::replay;
use crate::sink::Sink as _;

/// The inputs sorted out: Parquet files (from directories or named), and captures.
#[derive(Debug, Default)]
pub struct Inputs {
    pub parquet: Vec<PathBuf>,
    pub captures: Vec<PathBuf>,
}

impl Inputs {
    /// Directories give their Parquet files (any depth), `.parquet` files are taken as they
    /// are, anything else is a capture.
    pub fn sort(paths: &[PathBuf]) -> Result<Inputs, Error> {
        let mut out = Inputs::default();
        for p in paths {
            if p.is_dir() {
                let files = replay::files(p)?;
                if files.is_empty() {
                    return Err(Error::Invalid(format!(
                        "{}: no .parquet files here or below (give the --out or --mesh directory of analyze or live, or a capture)",
                        p.display()
                    )));
                }
                out.parquet.extend(files);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.parquet.push(p.clone());
            } else {
                out.captures.push(p.clone());
            }
        }
        Ok(out)
    }
}

/// Which table a Parquet file holds.
#[derive(Debug, PartialEq, Eq)]
enum TableKind {
    Usage,
    Mesh,
    Other,
}

fn table_of(path: &Path) -> Result<TableKind, Error> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| Error::Parquet {
        path: path.to_path_buf(),
        message: format!("not a readable Parquet file: {e}"),
    })?;
    let schema = builder.schema();
    let has = |n: &str| schema.field_with_name(n).is_ok();
    Ok(if has("category") && has("bytes") {
        TableKind::Usage
    } else if has("mesh_peers") {
        TableKind::Mesh
    } else {
        TableKind::Other
    })
}

/// Reads the Parquet files into `collector`; files of other tables (messages, frames) are
/// skipped with a note in the log.
pub fn read_parquet(files: &[PathBuf], collector: &mut Collector) -> Result<(), Error> {
    for f in files {
        match table_of(f)? {
            TableKind::Usage => collector.write(&replay::read_file(f)?)?,
            TableKind::Mesh => collector.mesh.add(&super::mesh::read_file(f)?),
            TableKind::Other => {
                tracing::info!("{}: not a usage or mesh table, skipped", f.display())
            }
        }
    }
    Ok(())
}
