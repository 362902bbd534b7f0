//! The usage table: counters per (window, endpoints, label, direction), handed to sinks as rows
//! when their window has closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::owners::{OwnerId, OwnerTable};
use super::record::{Counters, Direction, Endpoints, Row};
use crate::decode::{LabelId, LabelTable};

/// Heap bytes of one window's table of `capacity` rows.
fn table_bytes(capacity: usize) -> usize {
    crate::memory::table_bytes::<(RowKey, Counters)>(capacity)
}

/// A row's key within its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub owner: OwnerId,
    pub endpoints: Endpoints,
    pub label: LabelId,
    pub direction: Direction,
}

/// Counters per window and row key.
pub struct UsageTable {
    window_ns: i64,
    window_secs: u32,
    windows: BTreeMap<i64, FxHashMap<RowKey, Counters>>,
    /// Rows held across all windows.
    rows: usize,
    /// Heap bytes of the windows' tables, kept as they grow and leave (read for every packet).
    heap: usize,
    /// The owners rows refer to.
    pub owners: OwnerTable,
}

impl UsageTable {
    /// An empty table aggregating over windows of `window_secs` seconds.
    pub fn new(window_secs: u32) -> UsageTable {
        UsageTable {
            window_ns: i64::from(window_secs) * 1_000_000_000,
            window_secs,
            windows: BTreeMap::new(),
            rows: 0,
            heap: 0,
            owners: OwnerTable::default(),
        }
    }

    /// Start (ns) of the window holding time `ts_ns`.
    pub fn window_of(&self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.window_ns) * self.window_ns
    }

    /// Adds counters to a row.
    pub fn add(&mut self, window: i64, key: RowKey, c: &Counters) {
        let rows = self.windows.entry(window).or_default();
        let (before, capacity) = (rows.len(), rows.capacity());
        rows.entry(key).or_default().add(c);
        if rows.len() != before {
            self.rows += rows.len() - before;
            self.heap += table_bytes(rows.capacity()) - table_bytes(capacity);
        }
    }

    /// Rows held, over all open windows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate heap bytes of the open windows' rows.
    pub fn heap_bytes(&self) -> usize {
        self.heap
    }

    /// Moves the rows of the oldest window into `out`, whether it has closed or not (to bound
    /// memory, and at the end of a run). Returns false when the table is empty.
    pub fn drain_oldest(&mut self, labels: &LabelTable, out: &mut Vec<Row>) -> bool {
        match self.windows.pop_first() {
            Some((start, rows)) => {
                self.emit(start, rows, labels, out);
                true
            }
            None => false,
        }
    }

    /// Moves the rows of every window that started before `cutoff_ns` into `out`.
    pub fn drain_before(&mut self, cutoff_ns: i64, labels: &LabelTable, out: &mut Vec<Row>) {
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() >= cutoff_ns {
                break;
            }
            let (start, rows) = entry.remove_entry();
            self.emit(start, rows, labels, out);
        }
    }

    fn emit(
        &mut self,
        start: i64,
        rows: FxHashMap<RowKey, Counters>,
        labels: &LabelTable,
        out: &mut Vec<Row>,
    ) {
        self.rows -= rows.len();
        self.heap -= table_bytes(rows.capacity());
        out.extend(rows.into_iter().map(|(k, counters)| Row {
            window_start_us: start / 1000,
            window_secs: self.window_secs,
            owner: Arc::clone(self.owners.get(k.owner)),
            endpoints: k.endpoints,
            label: labels.get(k.label).clone(),
            direction: k.direction,
            counters,
        }));
    }
}
