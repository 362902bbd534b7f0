//! The terminal answer: bytes and share by category → protocol → kind → shard, by direction, relay control
//! against chat per shard in words, and the top flows, as a table or as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use super::Sink;
use crate::account::record::{Category, Counters, Direction, Row};
use crate::analyze::Stats;

/// A summary line's key: category, protocol, kind, shard.
pub type LineKey = (&'static str, Arc<str>, Arc<str>, Option<u16>);

/// Totals kept for the summary.
#[derive(Default)]
pub struct Summary {
    /// Hashed, not ordered: it takes one update per row; readers sort its few lines.
    by_label: FxHashMap<LineKey, Counters>,
    by_direction: BTreeMap<Direction, Counters>,
    total: Counters,
}

impl Sink for Summary {
    fn write(&mut self, rows: &[Row]) -> Result<(), crate::Error> {
        for r in rows {
            let key = (
                r.label.category.as_str(),
                Arc::clone(&r.label.protocol),
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

/// Relay traffic of one shard (or of entries without a shard): the support question answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShardReport {
    pub shard: Option<u16>,
    /// Wire bytes of relay control and relay chat.
    pub control_bytes: u64,
    pub chat_bytes: u64,
    /// The control kind with the most wire bytes, and those bytes.
    pub top_control_kind: Option<String>,
    pub top_control_bytes: u64,
    /// Published-message entries received, and how many of them their host had seen before.
    pub messages: u64,
    pub duplicates: u64,
}

impl ShardReport {
    /// Share of relay bytes that is control, in percent.
    pub fn control_percent(&self) -> f64 {
        let relay = self.control_bytes + self.chat_bytes;
        100.0 * self.control_bytes as f64 / relay.max(1) as f64
    }

    /// Deliveries per distinct message and host: 1.0 without duplicates.
    pub fn amplification(&self) -> Option<f64> {
        let unique = self
            .messages
            .checked_sub(self.duplicates)
            .filter(|&u| u > 0)?;
        Some(self.messages as f64 / unique as f64)
    }

    /// The report in one sentence.
    pub fn sentence(&self) -> String {
        let shard = self
            .shard
            .map_or_else(|| "no shard".to_string(), |s| format!("shard {s}"));
        let mut s = format!(
            "{shard}: relay control is {:.0} % of relay bytes ({} of {})",
            self.control_percent(),
            self.control_bytes,
            self.control_bytes + self.chat_bytes
        );
        if let Some(kind) = &self.top_control_kind {
            let share = 100.0 * self.top_control_bytes as f64 / self.control_bytes.max(1) as f64;
            let _ = write!(s, "; {} dominates control ({share:.0} %)", kind_name(kind));
        }
        if self.messages > 0 {
            let _ = write!(
                s,
                "; {} messages, {} duplicates",
                self.messages, self.duplicates
            );
            if let Some(a) = self.amplification() {
                let _ = write!(s, " (amplification {a:.2}×)");
            }
        }
        s
    }
}

/// How a control kind reads in a sentence.
pub fn kind_name(kind: &str) -> String {
    match kind {
        "ihave" => "IHAVE gossip".into(),
        "iwant" => "IWANT".into(),
        "idontwant" => "IDONTWANT".into(),
        "graft" => "GRAFT".into(),
        "prune" => "PRUNE".into(),
        "subscribe" => "subscriptions".into(),
        "framing" => "RPC framing".into(),
        other => other.into(),
    }
}

impl Summary {
    /// Relay control and chat per shard, shards in order, no shard last.
    pub fn relay_shards(&self) -> Vec<ShardReport> {
        let mut by_shard: BTreeMap<(bool, Option<u16>), ShardReport> = BTreeMap::new();
        let control = Category::RelayControl.as_str();
        let chat = Category::RelayChat.as_str();
        for ((cat, _, kind, shard), c) in self.sorted_lines() {
            if *cat != control && *cat != chat {
                continue;
            }
            let r = by_shard
                .entry((shard.is_none(), *shard))
                .or_insert_with(|| ShardReport {
                    shard: *shard,
                    control_bytes: 0,
                    chat_bytes: 0,
                    top_control_kind: None,
                    top_control_bytes: 0,
                    messages: 0,
                    duplicates: 0,
                });
            if *cat == chat {
                r.chat_bytes += c.bytes;
                r.messages += c.messages;
                r.duplicates += c.duplicates;
            } else {
                r.control_bytes += c.bytes;
                if c.bytes > r.top_control_bytes {
                    r.top_control_bytes = c.bytes;
                    r.top_control_kind = Some(kind.to_string());
                }
            }
        }
        by_shard.into_values().collect()
    }

    /// Counters per (category, protocol, kind, shard), in that order.
    pub fn lines(&self) -> impl Iterator<Item = (&LineKey, &Counters)> {
        self.sorted_lines().into_iter()
    }

    fn sorted_lines(&self) -> Vec<(&LineKey, &Counters)> {
        let mut lines: Vec<_> = self.by_label.iter().collect();
        lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
        lines
    }

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
            "\n{:<14} {:<22} {:<16} {:>6} {:>14} {:>7} {:>10} {:>9}",
            "category", "protocol", "kind", "shard", "bytes", "share", "packets", "messages"
        );
        for ((cat, protocol, kind, shard), c) in self.sorted_lines() {
            let shard = shard.map_or_else(|| "-".to_string(), |s| s.to_string());
            let _ = writeln!(
                s,
                "{:<14} {:<22} {:<16} {:>6} {:>14} {:>6.2}% {:>10} {:>9}",
                cat,
                protocol,
                kind,
                shard,
                c.bytes,
                100.0 * c.bytes as f64 / total,
                c.packets,
                c.messages
            );
        }
        let shards = self.relay_shards();
        if !shards.is_empty() {
            let _ = writeln!(s, "\nrelay per shard:");
            for r in &shards {
                let _ = writeln!(s, "  {}", r.sentence());
            }
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
            "\nretransmitted packets {}, gaps {} ({} bytes), reassembly limit hits {}, flows evicted (idle {}, limit {}, memory {}), non-IP frames {}, orphan fragments {}",
            f.retransmitted_packets,
            f.gaps,
            f.gap_bytes,
            f.reassembly_limit_hits,
            f.evicted_idle,
            f.evicted_limit,
            f.evicted_memory,
            stats.non_ip_frames,
            stats.orphan_fragments
        );
        if !stats.decode_errors.is_empty() {
            let errors: Vec<String> = stats
                .decode_errors
                .iter()
                .map(|(protocol, n)| format!("{protocol} {n}"))
                .collect();
            let _ = writeln!(s, "malformed input: {}", errors.join(", "));
        }
        s
    }

    /// The summary as JSON: `stats`, `totals`, `categories` (category → protocol → kind → shard)
    /// and `top_flows`.
    pub fn json(&self, stats: &Stats) -> Value {
        let categories: Vec<Value> = self
            .sorted_lines()
            .into_iter()
            .map(|((cat, protocol, kind, shard), c)| {
                json!({"category": cat, "protocol": protocol.as_ref(), "kind": kind.as_ref(),
                       "shard": shard, "bytes": c.bytes,
                       "payload_bytes": c.payload_bytes, "packets": c.packets,
                       "messages": c.messages, "duplicates": c.duplicates,
                       "retrans_bytes": c.retrans_bytes})
            })
            .collect();
        json!({
            "stats": stats,
            "totals": {"bytes": self.total.bytes, "packets": self.total.packets,
                       "bytes_in": self.direction(Direction::In).bytes,
                       "bytes_out": self.direction(Direction::Out).bytes},
            "categories": categories,
            "relay_shards": self.relay_shards().iter().map(|r| json!({
                "shard": r.shard, "control_bytes": r.control_bytes, "chat_bytes": r.chat_bytes,
                "control_percent": r.control_percent(), "top_control_kind": r.top_control_kind,
                "messages": r.messages, "duplicates": r.duplicates,
                "amplification": r.amplification(), "sentence": r.sentence()})).collect::<Vec<_>>(),
            "top_flows": stats.top_flows,
        })
    }
}
