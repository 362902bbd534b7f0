//! Where finished rows go: Parquet files, the terminal summary, and later telemetry and metrics.

pub mod background;
pub mod frames;
pub mod mesh;
pub mod messages;
pub mod metrics;
pub mod parquet;
pub mod summary;

use crate::account::frames::FrameRow;
use crate::account::mesh::MeshRow;
use crate::account::messages::MessageRow;
use crate::account::record::Row;

/// A consumer of finished usage rows. Rows of one window may arrive in several calls.
pub trait Sink {
    /// Takes a batch of rows; called whenever windows close.
    fn write(&mut self, rows: &[Row]) -> Result<(), crate::Error>;
    /// Takes published relay messages (only when the run keeps them, see `--messages`).
    fn messages(&mut self, _rows: &[MessageRow]) -> Result<(), crate::Error> {
        Ok(())
    }
    /// Takes frames of encrypted libp2p connections (only when the run keeps them, `--frames`).
    fn frames(&mut self, _rows: &[FrameRow]) -> Result<(), crate::Error> {
        Ok(())
    }
    /// Takes mesh health rows (only when the run keeps them, `--mesh`).
    fn mesh(&mut self, _rows: &[MeshRow]) -> Result<(), crate::Error> {
        Ok(())
    }
    /// Flushes everything buffered; called once at the end of a run, also after input errors.
    fn finish(&mut self) -> Result<(), crate::Error>;
    /// Closes the current output files so that what was written so far can be read (live runs
    /// call this every `--roll` seconds).
    fn roll(&mut self) -> Result<(), crate::Error> {
        Ok(())
    }
}
