//! `wakuprof report`: one page for a support ticket. Usage rows (from Parquet or a capture
//! analyzed on the fly) and mesh rows are summed by a [`Collector`] into a [`Report`]: the
//! headline, totals per day and hour, top processes, categories, peers, duplicates per shard,
//! what was inferred, mesh health, and the findings that put the numbers in words.

pub mod findings;
pub mod html;
pub mod input;
pub mod mesh;
pub mod text;
pub mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::account::mesh::MeshRow;
use crate::account::record::{Category, Direction, Method, Row};
use crate::node::reconcile;
use crate::sink::Sink;
use crate::sink::summary::{ShardReport, Summary};
use findings::Finding;
use mesh::{MeshCollector, MeshShard};

/// Rows the report keeps (all when every field is `None`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Window starts at or after this, µs since the epoch.
    pub since_us: Option<i64>,
    /// Window starts before this, µs since the epoch.
    pub until_us: Option<i64>,
    pub host: Option<String>,
    pub comm: Option<String>,
    pub shard: Option<u16>,
}

impl Filter {
    /// Whether a row of window `start_us`, owner host/comm and shard passes.
    pub fn keeps(
        &self,
        start_us: i64,
        host: Option<&str>,
        comm: Option<&str>,
        shard: Option<u16>,
    ) -> bool {
        self.since_us.is_none_or(|s| start_us >= s)
            && self.until_us.is_none_or(|u| start_us < u)
            && self.host.as_deref().is_none_or(|h| host == Some(h))
            && self.comm.as_deref().is_none_or(|c| comm == Some(c))
            && self.shard.is_none_or(|s| shard == Some(s))
    }
}

/// A process as the report names it: host, command name and pid, when known.
type ProcessKey = (Option<Arc<str>>, Option<Arc<str>>, Option<u32>);

/// Bytes of one (category-kept-apart) process: all, and relay.
#[derive(Clone, Copy, Default)]
struct ProcessBytes {
    bytes: u64,
    relay: u64,
}

/// Sums usage rows (after the filter) for the report.
#[derive(Default)]
pub struct Collector {
    filter: Filter,
    summary: Summary,
    rows: u64,
    first_us: Option<i64>,
    end_us: Option<i64>,
    window_secs: BTreeSet<u32>,
    hosts: BTreeSet<Arc<str>>,
    by_day: BTreeMap<i64, u64>,
    by_hour: BTreeMap<i64, u64>,
    /// Bytes per window start and category (index of [`Category::ALL`]).
    series: BTreeMap<i64, [u64; 8]>,
    processes: FxHashMap<ProcessKey, ProcessBytes>,
    peers: FxHashMap<std::net::IpAddr, u64>,
    /// Bytes, relay bytes and Σ bytes × confidence (‰) per method.
    methods: BTreeMap<Method, (u64, u64, u128)>,
    /// The mesh rows seen (mesh Parquet or the capture's wire).
    pub mesh: MeshCollector,
}

impl Collector {
    /// A collector keeping the rows `filter` passes.
    pub fn new(filter: Filter) -> Collector {
        Collector {
            mesh: MeshCollector::new(filter.clone()),
            filter,
            ..Collector::default()
        }
    }

    /// Usage rows summed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn add(&mut self, r: &Row) {
        let start = r.window_start_us;
        self.rows += 1;
        self.first_us = Some(self.first_us.map_or(start, |f| f.min(start)));
        let end = start + i64::from(r.window_secs) * 1_000_000;
        self.end_us = Some(self.end_us.map_or(end, |e| e.max(end)));
        self.window_secs.insert(r.window_secs);
        if let Some(h) = &r.owner.host {
            self.hosts.insert(Arc::clone(h));
        }
        let bytes = r.counters.bytes;
        let secs = start.div_euclid(1_000_000);
        *self
            .by_day
            .entry(secs - secs.rem_euclid(86_400))
            .or_default() += bytes;
        *self
            .by_hour
            .entry(secs - secs.rem_euclid(3600))
            .or_default() += bytes;
        let cat = Category::ALL
            .iter()
            .position(|c| *c == r.label.category)
            .unwrap_or(7);
        self.series.entry(start).or_default()[cat] += bytes;
        let relay = is_relay(r.label.category);
        let key = (r.owner.host.clone(), r.owner.comm.clone(), r.owner.pid);
        let p = self.processes.entry(key).or_default();
        p.bytes += bytes;
        if relay {
            p.relay += bytes;
        }
        if let Some(a) = r.endpoints.remote_addr {
            *self.peers.entry(a).or_default() += bytes;
        }
        let m = self.methods.entry(r.label.method).or_default();
        m.0 += bytes;
        if relay {
            m.1 += bytes;
        }
        m.2 += u128::from(bytes) * u128::from(r.label.confidence_permille);
    }
}

fn is_relay(c: Category) -> bool {
    matches!(c, Category::RelayControl | Category::RelayChat)
}

impl Sink for Collector {
    fn write(&mut self, rows: &[Row]) -> Result<(), crate::Error> {
        let kept: Vec<Row> = rows
            .iter()
            .filter(|r| {
                self.filter.keeps(
                    r.window_start_us,
                    r.owner.host.as_deref(),
                    r.owner.comm.as_deref(),
                    r.label.shard,
                )
            })
            .cloned()
            .collect();
        for r in &kept {
            self.add(r);
        }
        self.summary.write(&kept)
    }

    fn mesh(&mut self, rows: &[MeshRow]) -> Result<(), crate::Error> {
        self.mesh.add(rows);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), crate::Error> {
        Ok(())
    }
}

/// Bytes of something named (a process, a peer, a kind, a shard, a day).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Named {
    pub name: String,
    pub bytes: u64,
    /// Percent of the report's total bytes.
    pub percent: f64,
}

/// A category with its kinds and shards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CategoryLine {
    pub category: &'static str,
    pub bytes: u64,
    pub percent: f64,
    pub kinds: Vec<Named>,
    pub shards: Vec<Named>,
}

/// A process with its relay bytes (processes without relay bytes are "outside the node").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessLine {
    pub name: String,
    pub bytes: u64,
    pub percent: f64,
    pub relay_bytes: u64,
}

/// Bytes labelled by one method, with their mean confidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodLine {
    pub method: &'static str,
    pub bytes: u64,
    pub relay_bytes: u64,
    /// Byte-weighted mean confidence, 0..1.
    pub confidence: f64,
}

/// The headline: the biggest (category, shard) share of the total, and its biggest kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Headline {
    pub text: String,
    pub category: &'static str,
    pub shard: Option<u16>,
    pub bytes: u64,
    pub total_bytes: u64,
    pub bytes_per_day: f64,
    pub kind: Option<String>,
    pub kind_bytes: u64,
}

/// Bytes per time bucket and category, for the bandwidth chart.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub bucket_secs: i64,
    /// Bucket starts, seconds since the epoch.
    pub starts: Vec<i64>,
    /// Bytes per bucket, in [`Category::ALL`] order.
    pub bytes: Vec<[u64; 8]>,
}

/// Everything the report says, ready for text, JSON or HTML.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub headline: Headline,
    pub first: String,
    pub last: String,
    pub span_secs: f64,
    pub window_secs: Vec<u32>,
    pub hosts: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets: u64,
    pub days: Vec<Named>,
    pub hours: Vec<Named>,
    pub processes: Vec<ProcessLine>,
    pub categories: Vec<CategoryLine>,
    pub peers: Vec<Named>,
    pub relay_shards: Vec<ShardReport>,
    pub methods: Vec<MethodLine>,
    /// Percent of relay bytes whose label was not decoded.
    pub relay_undecoded_percent: f64,
    pub node: Option<reconcile::Report>,
    pub mesh: Vec<MeshShard>,
    pub findings: Vec<Finding>,
    pub series: Series,
}

/// Bytes of a category, per kind and per shard.
type CategorySums = (u64, BTreeMap<String, u64>, BTreeMap<Option<u16>, u64>);
/// Bytes per (category, shard), with their kinds: the headline's candidates.
type GroupSums = BTreeMap<(&'static str, Option<u16>), (u64, BTreeMap<Arc<str>, u64>)>;

/// Lines kept in each top list.
pub const TOP: usize = 10;
/// Most buckets of the bandwidth chart: finer windows are summed into wider buckets.
const MAX_BUCKETS: i64 = 480;

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn named(name: String, bytes: u64, total: u64) -> Named {
    Named {
        name,
        bytes,
        percent: percent(bytes, total),
    }
}

/// The largest entries of `map`, largest first, as [`Named`].
fn top<K>(
    map: impl IntoIterator<Item = (K, u64)>,
    total: u64,
    name: impl Fn(K) -> String,
) -> Vec<Named> {
    let mut v: Vec<(K, u64)> = map.into_iter().filter(|e| e.1 > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.into_iter()
        .take(TOP)
        .map(|(k, b)| named(name(k), b, total))
        .collect()
}

fn shard_name(s: Option<u16>) -> String {
    s.map_or_else(|| "-".to_string(), |s| s.to_string())
}

/// The process name of rows without an owner (offline captures).
pub const NO_OWNER: &str = "(no owner: offline capture)";

/// How a process reads: `comm[pid]@host`, or "(no owner)" for offline captures.
fn process_name(k: &ProcessKey) -> String {
    match k {
        (_, None, None) => NO_OWNER.to_string(),
        (host, comm, pid) => {
            let mut s = comm.as_deref().unwrap_or("?").to_string();
            if let Some(p) = pid {
                s.push_str(&format!("[{p}]"));
            }
            if let Some(h) = host {
                s.push_str(&format!("@{h}"));
            }
            s
        }
    }
}

impl Collector {
    /// The report of everything collected; `node` is the reconciliation with the node's
    /// counters when they were given, `d_low` the mesh degree below which a shard is unhealthy.
    pub fn report(&self, node: Option<reconcile::Report>, d_low: u32) -> Report {
        let total = self.summary.total().bytes;
        let first = self.first_us.unwrap_or(0);
        let end = self.end_us.unwrap_or(0);
        let span_secs = (end - first) as f64 / 1e6;
        let mut by_cat: BTreeMap<&'static str, CategorySums> = BTreeMap::new();
        let mut by_cat_shard: GroupSums = BTreeMap::new();
        for ((cat, _, kind, shard), c) in self.summary.lines() {
            let e = by_cat.entry(cat).or_default();
            e.0 += c.bytes;
            *e.1.entry(kind.to_string()).or_default() += c.bytes;
            *e.2.entry(*shard).or_default() += c.bytes;
            let s = by_cat_shard.entry((cat, *shard)).or_default();
            s.0 += c.bytes;
            *s.1.entry(Arc::clone(kind)).or_default() += c.bytes;
        }
        let mut categories: Vec<CategoryLine> = by_cat
            .into_iter()
            .map(|(cat, (bytes, kinds, shards))| CategoryLine {
                category: cat,
                bytes,
                percent: percent(bytes, total),
                kinds: top(kinds, total, |k| k),
                shards: top(shards, total, shard_name),
            })
            .collect();
        categories.sort_by_key(|c| std::cmp::Reverse(c.bytes));
        let bytes_per_day = total as f64 * 86_400.0 / span_secs.max(1.0);
        let headline = headline(&by_cat_shard, total, bytes_per_day, self.hosts.len());
        let mut processes: Vec<ProcessLine> = self
            .processes
            .iter()
            .map(|(k, p)| ProcessLine {
                name: process_name(k),
                bytes: p.bytes,
                percent: percent(p.bytes, total),
                relay_bytes: p.relay,
            })
            .collect();
        processes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        processes.truncate(TOP);
        let relay_bytes: u64 = self.methods.values().map(|m| m.1).sum();
        let undecoded: u64 = self
            .methods
            .iter()
            .filter(|(m, _)| **m != Method::Decoded)
            .map(|(_, v)| v.1)
            .sum();
        let methods = self
            .methods
            .iter()
            .map(|(m, v)| MethodLine {
                method: m.as_str(),
                bytes: v.0,
                relay_bytes: v.1,
                confidence: v.2 as f64 / 1000.0 / v.0.max(1) as f64,
            })
            .collect();
        let mesh = self.mesh.shards(d_low);
        let mut report = Report {
            headline,
            first: crate::forward::spool::utc(first),
            last: crate::forward::spool::utc(end),
            span_secs,
            window_secs: self.window_secs.iter().copied().collect(),
            hosts: self.hosts.iter().map(|h| h.to_string()).collect(),
            rows: self.rows,
            bytes: total,
            bytes_in: self.summary.direction(Direction::In).bytes,
            bytes_out: self.summary.direction(Direction::Out).bytes,
            packets: self.summary.total().packets,
            days: self
                .by_day
                .iter()
                .map(|(d, b)| named(day_name(*d), *b, total))
                .collect(),
            hours: self
                .by_hour
                .iter()
                .map(|(h, b)| named(hour_name(*h), *b, total))
                .collect(),
            processes,
            categories,
            peers: top(self.peers.iter().map(|(a, b)| (*a, *b)), total, |a| {
                a.to_string()
            }),
            relay_shards: self.summary.relay_shards(),
            methods,
            relay_undecoded_percent: percent(undecoded, relay_bytes),
            node,
            mesh,
            findings: Vec::new(),
            series: self.series(),
        };
        report.findings = findings::evaluate(&report, d_low);
        report
    }

    /// The bandwidth series in at most [`MAX_BUCKETS`] buckets, each a whole number of windows.
    fn series(&self) -> Series {
        let (Some(first), Some(end)) = (self.first_us, self.end_us) else {
            return Series::default();
        };
        let window = i64::from(self.window_secs.first().copied().unwrap_or(10).max(1));
        let span = (end - first).div_euclid(1_000_000).max(1);
        let bucket = (span.div_euclid(window * MAX_BUCKETS) + 1) * window;
        let mut out: BTreeMap<i64, [u64; 8]> = BTreeMap::new();
        for (start, b) in &self.series {
            let s = start.div_euclid(1_000_000);
            let e = out.entry(s - s.rem_euclid(bucket)).or_default();
            for (x, y) in e.iter_mut().zip(b) {
                *x += y;
            }
        }
        Series {
            bucket_secs: bucket,
            starts: out.keys().copied().collect(),
            bytes: out.into_values().collect(),
        }
    }
}

fn day_name(secs: i64) -> String {
    crate::sink::parquet::partition(secs * 1_000_000).0
}

fn hour_name(secs: i64) -> String {
    let (d, h) = crate::sink::parquet::partition(secs * 1_000_000);
    format!("{d} {h:02}:00")
}

/// Who the report is about, in the headline.
fn scope(hosts: usize) -> &'static str {
    if hosts > 1 {
        "these hosts'"
    } else {
        "this node's"
    }
}

fn headline(by_cat_shard: &GroupSums, total: u64, bytes_per_day: f64, hosts: usize) -> Headline {
    let best = by_cat_shard
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(a.0)));
    let Some(((cat, shard), (bytes, kinds))) = best else {
        return Headline {
            text: "no traffic in the selected rows".to_string(),
            category: "other",
            shard: None,
            bytes: 0,
            total_bytes: 0,
            bytes_per_day: 0.0,
            kind: None,
            kind_bytes: 0,
        };
    };
    let kind = kinds
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(k, b)| (k.to_string(), *b));
    let what = cat.replace('_', " ");
    let on = shard.map_or_else(String::new, |s| format!(" on shard {s}"));
    let mut text = format!(
        "{what}{on} is {:.0} % of {} {}/day",
        percent(*bytes, total),
        scope(hosts),
        text::size(bytes_per_day as u64)
    );
    if let Some((k, kb)) = kind.as_ref().filter(|_| kinds.len() > 1) {
        text.push_str(&format!(
            "; {} is {:.0} % of that",
            crate::sink::summary::kind_name(k),
            percent(*kb, *bytes)
        ));
    }
    Headline {
        text,
        category: cat,
        shard: *shard,
        bytes: *bytes,
        total_bytes: total,
        bytes_per_day,
        kind: kind.as_ref().map(|k| k.0.clone()),
        kind_bytes: kind.map_or(0, |k| k.1),
    }
}
