//! The memory budget (`--memory-budget`): approximate heap bytes of the structures that grow
//! with the traffic, kept per structure as it changes, and how the budget is shared between
//! the analysis (flows, reassembly, decoder state, usage table, message ids) and the output
//! (rows waiting for the sinks, rows buffered for a Parquet file and its encoding).

use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;

/// The default budget: 256 MiB, for a sidecar beside a Waku node.
pub const DEFAULT_BUDGET: usize = 256 << 20;
/// The smallest budget accepted: below it, the bounds that hold per flow (reassembly and decoder
/// limits) would not leave room for more than a few flows.
pub const MIN_BUDGET: usize = 16 << 20;

/// How a budget is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shares {
    /// Flows, reassembly buffers, decoder state, the usage table, labels and message ids: past
    /// it the least recently used flows are retired.
    pub analysis: usize,
    /// Out-of-order TCP bytes held across all flows (part of `analysis`).
    pub reassembly: usize,
    /// Rows of the usage table before its oldest window is handed out (part of `analysis`).
    pub table_rows: usize,
    /// Rows waiting to be handed to the sinks, and rows a Parquet writer buffers (each).
    pub pending_rows: usize,
}

impl Shares {
    /// The shares of `budget` bytes: three quarters for the analysis, the last quarter for the
    /// output (rows in flight, a Parquet file's rows and their encoding, about three copies).
    pub fn of(budget: usize) -> Shares {
        let output = budget / 4;
        Shares {
            analysis: budget - output,
            reassembly: budget / 4,
            table_rows: (budget / 16 / TABLE_ROW_BYTES).clamp(1024, 1 << 16),
            pending_rows: (output / 4 / ROW_BYTES).clamp(1024, 1 << 18),
        }
    }
}

/// Approximate bytes of one usage-table row (key, counters, hash slot).
pub const TABLE_ROW_BYTES: usize = 160;
/// Approximate bytes of one output row (the largest of the tables' rows).
pub const ROW_BYTES: usize = 256;

/// Heap bytes of a vector's buffer.
pub fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// Heap bytes of a deque's buffer.
pub fn deque_bytes<T>(v: &VecDeque<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// Heap bytes of a hash table holding `capacity` entries of type `E`: its slots (sized with
/// the 7/8 load factor) and one control byte each.
pub fn table_bytes<E>(capacity: usize) -> usize {
    capacity.div_ceil(7) * 8 * (size_of::<E>() + 1)
}

/// Heap bytes of a B-tree map: its entries plus the node overhead (nodes are half full at worst).
pub fn btree_bytes<K, V>(m: &BTreeMap<K, V>) -> usize {
    m.len() * 2 * (size_of::<K>() + size_of::<V>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_stay_in_range() {
        for budget in [MIN_BUDGET, DEFAULT_BUDGET, 8 << 30] {
            let s = Shares::of(budget);
            assert!(s.analysis < budget && s.reassembly < s.analysis);
            assert!(s.table_rows * TABLE_ROW_BYTES <= budget / 16 || s.table_rows == 1024);
            assert!(s.pending_rows * ROW_BYTES <= budget / 16 || s.pending_rows == 1024);
        }
    }
}
