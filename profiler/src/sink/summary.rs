//! The terminal answer: bytes and share by category → kind → shard, by direction, and the top
//! flows, as a table or as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Sink;
use crate::account::record::{Counters, Direction, Row};
use crate::analyze::Stats;

/// Totals kept for the summary.
#[derive(Default)]
pub struct Summary {
    by_label: BTreeMap<(&'static str, Arc<str>, Option<u16>), Counters>,
    by_direction: BTreeMap<Direction, Counters>,
    total: Counters,
}

impl Sink for Summary {
    fn write(&mut self, rows: &[Row]) -> Result<(), crate::Error> {
        for r in rows {
            let key = (
                r.label.category.as_str(),
                Arc::clone(&r.label.kind),
                r.label.shard,
            );
            self.by_label.entry(key).or_default().add(&r.counters);
            self.by_direction
                .entry(r.direction)
                .or_default()
                .add(&r.counters);
            self.total.add(&r.counters);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        Ok(())
    }
}

impl Summary {
    /// Total counters over every row seen.
    pub fn total(&self) -> &Counters {
        &self.total
    }

    /// Counters per direction.
    pub fn direction(&self, d: Direction) -> Counters {
        self.by_direction.get(&d).copied().unwrap_or_default()
    }

    /// The summary as a human-readable table.
    pub fn table(&self, stats: &Stats) -> String {
        let mut s = String::new();
        let total = self.total.bytes.max(1) as f64;
        let _ = writeln!(
            s,
            "{} packets, {} bytes (in {} / out {}); {} flows",
            stats.packets,
            self.total.bytes,
            self.direction(Direction::In).bytes,
            self.direction(Direction::Out).bytes,
            stats.flow.flows
        );
        let _ = writeln!(
            s,
            "\n{:<14} {:<14} {:>6} {:>14} {:>7} {:>10} {:>9}",
            "category", "kind", "shard", "bytes", "share", "packets", "messages"
        );
        for ((cat, kind, shard), c) in &self.by_label {
            let shard = shard.map_or_else(|| "-".to_string(), |s| s.to_string());
            let _ = writeln!(
                s,
                "{:<14} {:<14} {:>6} {:>14} {:>6.2}% {:>10} {:>9}",
                cat,
                kind,
                shard,
                c.bytes,
                100.0 * c.bytes as f64 / total,
                c.packets,
                c.messages
            );
        }
        let _ = writeln!(s, "\ntop flows (local → remote):");
        for f in &stats.top_flows.0 {
            let _ = writeln!(
                s,
                "  {:<5} {:>40} → {:<40} {:>14} bytes {:>6.2}%",
                f.transport,
                f.local,
                f.remote,
                f.bytes,
                100.0 * f.bytes as f64 / total
            );
        }
        let f = &stats.flow;
        let _ = writeln!(
            s,
            "\nretransmitted packets {}, gaps {} ({} bytes), reassembly limit hits {}, flows evicted (idle {}, limit {}), non-IP frames {}, orphan fragments {}",
            f.retransmitted_packets,
            f.gaps,
            f.gap_bytes,
            f.reassembly_limit_hits,
            f.evicted_idle,
            f.evicted_limit,
            stats.non_ip_frames,
            stats.orphan_fragments
        );
        s
    }

    /// The summary as JSON: `stats`, `totals`, `categories` (category → kind → shard) and `top_flows`.
    pub fn json(&self, stats: &Stats) -> Value {
        let categories: Vec<Value> = self
            .by_label
            .iter()
            .map(|((cat, kind, shard), c)| {
                json!({"category": cat, "kind": kind.as_ref(), "shard": shard, "bytes": c.bytes,
                       "payload_bytes": c.payload_bytes, "packets": c.packets,
                       "messages": c.messages, "retrans_bytes": c.retrans_bytes})
            })
            .collect();
        json!({
            "stats": stats,
            "totals": {"bytes": self.total.bytes, "packets": self.total.packets,
                       "bytes_in": self.direction(Direction::In).bytes,
                       "bytes_out": self.direction(Direction::Out).bytes},
            "categories": categories,
            "top_flows": stats.top_flows,
        })
    }
}
