//! Sweeps: one scenario run once per value of one parameter (nodes, communities per shard,
//! message rate, D, message size), each run measured as `wakusim run` measures it, and a row
//! per value of per-node bandwidth by kind written as CSV, Parquet and an SVG chart.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::{
    chart,
    health::{ShardHealth, ratio},
    report::{NodeReport, Report},
    runs,
    scenario::Scenario,
    table,
};

/// Most values one sweep runs.
pub const MAX_VALUES: usize = 32;

/// The relay kinds the table has a column for, in the order the chart stacks them.
pub const KINDS: [&str; 7] = [
    "message",
    "ihave",
    "iwant",
    "idontwant",
    "graft",
    "prune",
    "subscribe",
];
/// Relay bytes of other kinds (RPC framing).
pub const RELAY_OTHER: &str = "relay_other";
/// Everything but relay: security handshakes, muxer, identify, ping.
pub const NON_RELAY: &str = "non_relay";

/// The parameter a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Param {
    /// `network.nodes`; node i of the swept network plays node ⌊i·n₀/n⌋ of the scenario
    /// (its communities), so each community keeps its share of the nodes; the attacker and
    /// churning nodes go to node ⌊m·n/n₀⌋.
    Nodes,
    /// Every unprotected community gets VALUE − 1 copies on its shard, with its message
    /// classes and its members shifted by j·n/VALUE (copy j).
    CommunitiesPerShard,
    /// `rate_per_min` of every message class (messages per minute per member).
    Rate,
    /// `gossipsub.d`; D_low and D_high scale with it (rounded, D_low ≥ 1), D_lazy stays.
    D,
    /// `size` of every message class (payload bytes; `size_max` dropped).
    Size,
}

impl Param {
    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Param::Nodes => "nodes",
            Param::CommunitiesPerShard => "communities_per_shard",
            Param::Rate => "rate",
            Param::D => "d",
            Param::Size => "size",
        }
    }

    /// Whether values are counts (whole and at least 1).
    fn whole(self) -> bool {
        self != Param::Rate
    }

    /// `base` with this parameter set to `value`, checked; an error names the field it breaks
    /// first, then the value (`network.degree: … (with nodes = 3)`).
    pub fn apply(self, base: &Scenario, value: f64) -> anyhow::Result<Scenario> {
        self.set(base, value)
            .and_then(|s| s.check().map(|()| s))
            .map_err(|e| anyhow::anyhow!("{e:#} (with {} = {value})", self.name()))
    }

    fn set(self, base: &Scenario, value: f64) -> anyhow::Result<Scenario> {
        let mut s = base.clone();
        let count = value as usize;
        match self {
            Param::Nodes => stretch(&mut s, count),
            Param::CommunitiesPerShard => copy_communities(&mut s, count)?,
            Param::Rate => {
                for m in s.communities.iter_mut().flat_map(|c| &mut c.messages) {
                    m.rate_per_min = value;
                }
            }
            Param::D => {
                let g = &mut s.gossipsub;
                let scale = |x: usize| (x as f64 * value / g.d as f64).round() as usize;
                g.d_low = scale(g.d_low).clamp(1, count);
                g.d_high = scale(g.d_high).max(count);
                g.d = count;
            }
            Param::Size => {
                for m in s.communities.iter_mut().flat_map(|c| &mut c.messages) {
                    m.size = count;
                    m.size_max = None;
                }
            }
        }
        Ok(s)
    }
}

/// Node i of `n` plays node ⌊i·n₀/n⌋ of the scenario's n₀; a community left with no member
/// (when shrinking) keeps its first member's image.
fn stretch(s: &mut Scenario, n: usize) {
    let n0 = s.network.nodes;
    let role = |i: usize| i * n0 / n;
    let image = |m: usize| (m * n / n0).min(n.saturating_sub(1));
    for c in &mut s.communities {
        let first = c.members.first().copied().unwrap_or_default();
        let members: Vec<usize> = (0..n).filter(|i| c.members.contains(&role(*i))).collect();
        c.members = if members.is_empty() {
            vec![image(first)]
        } else {
            members
        };
    }
    if let Some(a) = &mut s.attacker {
        a.node = image(a.node);
    }
    for c in &mut s.churn {
        c.node = image(c.node);
    }
    s.network.nodes = n;
}

/// `k − 1` copies of every unprotected community on its own shard.
fn copy_communities(s: &mut Scenario, k: usize) -> anyhow::Result<()> {
    let n = s.network.nodes;
    let open: Vec<_> = s
        .communities
        .iter()
        .filter(|c| !c.protected && !c.stored)
        .cloned()
        .collect();
    ensure!(
        !open.is_empty(),
        "community: none is unprotected, so none can share its shard (a protected shard holds one community's key)"
    );
    for j in 1..k {
        for c in &open {
            let mut copy = c.clone();
            copy.name = format!("{}-{}", c.name, j + 1);
            copy.members = c.members.iter().map(|m| (m + j * n / k) % n).collect();
            copy.members.sort_unstable();
            copy.members.dedup();
            for m in &mut copy.messages {
                m.content_topic = m.content_topic.replacen(
                    &format!("/{}/", c.name),
                    &format!("/{}/", copy.name),
                    1,
                );
            }
            s.communities.push(copy);
        }
    }
    Ok(())
}

/// Parses `--values` (comma-separated) for `param`: 1 to [`MAX_VALUES`] distinct values, whole
/// numbers of at least 1 for counts, in 0..=600 for rates.
pub fn parse_values(param: Param, text: &str) -> anyhow::Result<Vec<f64>> {
    let mut values = Vec::new();
    for item in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let v: f64 = item
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .with_context(|| format!("values: {item:?} is not a number"))?;
        if param.whole() && (v.fract() != 0.0 || v < 1.0) {
            bail!(
                "values: {item} is not a whole number of at least 1 ({} counts)",
                param.name()
            );
        }
        ensure!(!values.contains(&v), "values: {item} is there twice");
        values.push(v);
    }
    ensure!(!values.is_empty(), "values: none given (e.g. 4,8,16)");
    ensure!(
        values.len() <= MAX_VALUES,
        "values: {} is more than {MAX_VALUES}",
        values.len()
    );
    Ok(values)
}

/// One value's run, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub value: f64,
    pub nodes: usize,
    pub published: usize,
    /// Seconds captured (setup, publishing and teardown), the bytes/s denominator.
    pub elapsed_secs: f64,
    /// Mean over the nodes of wire bytes/s in + out, per relay kind of [`KINDS`], then
    /// [`RELAY_OTHER`] and [`NON_RELAY`].
    pub per_node_bps: BTreeMap<String, f64>,
    /// Mean over the nodes of all wire bytes/s in + out.
    pub per_node_total_bps: f64,
    /// The busiest node's wire bytes/s in + out.
    pub max_node_total_bps: f64,
    /// Relay control wire bytes over relay wire bytes, all nodes.
    pub control_share: f64,
    /// Mean over the nodes of the duplicate messages sent to them, per second.
    pub duplicates_per_node_per_sec: f64,
    /// Wire bytes of messages sent to the nodes over the bytes of the messages delivered.
    pub amplification: f64,
    /// Mean over nodes and shards of the mesh peers at the end of publishing (wakuprof's).
    pub mesh_peers: f64,
    /// Mean over nodes and shards of the seconds of publishing spent below D_low.
    pub secs_below_d_low: f64,
    /// Relay payload bytes wakuprof counted over all nodes, in and out.
    pub relay_bytes: u64,
    /// The same from the nodes' own truth.
    pub truth_relay_bytes: u64,
    /// Largest per-node error of all relay bytes against truth, percent.
    pub relay_error_pct: f64,
    /// Largest per-node error of `message` bytes (in or out, over all topics), percent: where
    /// Noise's inferred kinds err.
    pub message_error_pct: f64,
    pub packets_dropped: u64,
    /// What measured the run: `ebpf` (wakuprof's probe, live) or `pcap` (the captures).
    pub measured_by: &'static str,
    /// Where the run's captures and report.json are.
    pub out: PathBuf,
}

impl Row {
    /// Sums up one run's report.
    pub fn new(value: f64, report: &Report, out: PathBuf) -> Row {
        let n = report.per_node.len().max(1) as f64;
        let mut per_node_bps: BTreeMap<String, f64> = KINDS
            .iter()
            .chain(&[RELAY_OTHER, NON_RELAY])
            .map(|k| ((*k).to_owned(), 0.0))
            .collect();
        let (mut control, mut relay) = (0.0, 0.0);
        let mut totals = Vec::new();
        for node in &report.per_node {
            let mut total = 0.0;
            for l in &node.measured {
                total += l.bytes_per_sec;
                let is_relay = l.category == "relay_chat" || l.category == "relay_control";
                let column = match (is_relay, KINDS.contains(&l.kind.as_str())) {
                    (true, true) => l.kind.as_str(),
                    (true, false) => RELAY_OTHER,
                    (false, _) => NON_RELAY,
                };
                *per_node_bps.entry(column.to_owned()).or_default() += l.bytes_per_sec / n;
                if is_relay {
                    relay += l.bytes_per_sec;
                }
                if l.category == "relay_control" {
                    control += l.bytes_per_sec;
                }
            }
            totals.push(total);
        }
        let shards: Vec<_> = report.per_node.iter().flat_map(|p| &p.shards).collect();
        let sum = |f: &dyn Fn(&ShardHealth) -> f64| shards.iter().map(|h| f(h)).sum::<f64>();
        let shard_count = shards.len().max(1) as f64;
        let secs = report.elapsed_secs.max(f64::EPSILON);
        let worst =
            |f: &dyn Fn(&NodeReport) -> f64| report.per_node.iter().map(f).fold(0.0, f64::max);
        let checks = report.per_node.iter().flat_map(|p| &p.relay_vs_truth);
        let (relay_bytes, truth_relay_bytes) = checks.fold((0, 0), |(p, t), c| {
            (p + c.profiler_bytes, t + c.truth_bytes)
        });
        Row {
            value,
            nodes: report.nodes,
            published: report.published.len(),
            elapsed_secs: report.elapsed_secs,
            per_node_bps,
            per_node_total_bps: totals.iter().sum::<f64>() / n,
            max_node_total_bps: totals.iter().copied().fold(0.0, f64::max),
            control_share: ratio(control, relay),
            duplicates_per_node_per_sec: sum(&|h| h.duplicates_in as f64) / n / secs,
            amplification: ratio(
                sum(&|h| h.amplification * h.delivered_bytes as f64),
                sum(&|h| h.delivered_bytes as f64),
            ),
            mesh_peers: sum(&|h| f64::from(h.mesh_peers.unwrap_or(0))) / shard_count,
            secs_below_d_low: sum(&|h| h.secs_below_d_low) / shard_count,
            relay_bytes,
            truth_relay_bytes,
            relay_error_pct: worst(&|p| p.relay_total_error_pct),
            message_error_pct: worst(&|p| p.message_error_pct()),
            packets_dropped: report
                .per_node
                .iter()
                .map(|p| u64::from(p.packets_dropped))
                .sum(),
            measured_by: report.measured_by.source,
            out,
        }
    }
}

/// A sweep's outcome (`sweep.json`).
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub param: Param,
    pub transport: crate::scenario::Transport,
    pub rows: Vec<Row>,
    /// Whether a signal (or a stop request) cut the sweep short; the rows hold what ran.
    pub stopped: bool,
    /// The table as CSV and Parquet, and the chart.
    pub csv: PathBuf,
    pub parquet: PathBuf,
    pub svg: PathBuf,
}

/// Runs `base` once per value of `param`, each run in `out/<param>-<value>`, then writes
/// `sweep.csv`, `sweep.parquet`, `sweep.svg` and `sweep.json` into `out`. `stop` ends the
/// current run's publishing and the sweep after it; the files hold the values that ran.
pub fn execute(
    base: &Scenario,
    param: Param,
    values: &[f64],
    out: &Path,
    stop: &AtomicBool,
) -> anyhow::Result<SweepReport> {
    let scenarios = values
        .iter()
        .map(|v| param.apply(base, *v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut rows = Vec::new();
    for (value, s) in values.iter().zip(&scenarios) {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let dir = out.join(format!("{}-{value}", param.name()));
        tracing::info!("{} = {value}: {}", param.name(), dir.display());
        let report = runs::execute(s, &dir, stop)
            .with_context(|| format!("the run with {} = {value}", param.name()))?;
        rows.push(Row::new(*value, &report, dir));
    }
    let report = SweepReport {
        param,
        transport: base.transport,
        stopped: stop.load(Ordering::SeqCst),
        csv: out.join("sweep.csv"),
        parquet: out.join("sweep.parquet"),
        svg: out.join("sweep.svg"),
        rows,
    };
    let columns = table::columns(&report);
    write(&report.csv, table::csv(&columns))?;
    table::parquet(&columns, &report.parquet)?;
    write(&report.svg, chart::svg(&report))?;
    write(
        &out.join("sweep.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

fn write(path: &Path, text: String) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

impl SweepReport {
    /// The table as text: per value, per-node bytes/s by kind, the control share and the
    /// profiler's largest error against truth.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "per-node bytes/s in + out by kind, {:?} transport\n\n{:>9}",
            self.transport,
            self.param.name()
        );
        let columns: Vec<&str> = KINDS
            .iter()
            .chain(&[RELAY_OTHER, NON_RELAY])
            .copied()
            .collect();
        for c in &columns {
            let _ = write!(out, " {c:>10}");
        }
        let _ = writeln!(
            out,
            " {:>10} {:>10} {:>7} {:>7} {:>7} {:>5} {:>7} {:>8}",
            "total", "max node", "ctrl %", "dup/s", "amplif", "mesh", "err %", "msg err%"
        );
        for r in &self.rows {
            let _ = write!(out, "{:>9}", r.value);
            for c in &columns {
                let _ = write!(
                    out,
                    " {:>10.0}",
                    r.per_node_bps.get(*c).copied().unwrap_or(0.0)
                );
            }
            let _ = writeln!(
                out,
                " {:>10.0} {:>10.0} {:>7.1} {:>7.2} {:>7.2} {:>5.1} {:>7.2} {:>8.2}",
                r.per_node_total_bps,
                r.max_node_total_bps,
                100.0 * r.control_share,
                r.duplicates_per_node_per_sec,
                r.amplification,
                r.mesh_peers,
                r.relay_error_pct,
                r.message_error_pct
            );
        }
        if self.stopped {
            let _ = writeln!(out, "stopped early: the rows hold the values that ran");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::SHARED_SHARD;

    const BASE: &str = r#"
        duration_secs = 5
        [network]
        nodes = 8
        [[community]]
        name = "a"
        shard = 128
        protected = true
        members = [0, 1, 2, 3]
        [[community.message]]
        content_topic = "/a/1/chat/proto"
        size = 100
        size_max = 300
        rate_per_min = 60
        [[community]]
        name = "b"
        members = [6, 7]
        [[community.message]]
        content_topic = "/b/1/chat/proto"
        size = 100
        rate_per_min = 6
        [attacker]
        node = 7
        community = "a"
        mode = "unsigned"
        messages = 1
    "#;

    fn base() -> Scenario {
        Scenario::parse(BASE).expect("parses")
    }

    #[test]
    fn nodes_stretch_the_communities() {
        let s = Param::Nodes.apply(&base(), 16.0).expect("16 nodes");
        assert_eq!(s.network.nodes, 16);
        assert_eq!(s.communities[0].members, (0..8).collect::<Vec<_>>());
        assert_eq!(s.communities[1].members, [12, 13, 14, 15]);
        assert_eq!(s.attacker.as_ref().map(|a| a.node), Some(14));
        let small = Param::Nodes.apply(&base(), 4.0).expect("4 nodes");
        assert_eq!(small.communities[0].members, [0, 1]);
        assert_eq!(small.communities[1].members, [3]);
        let error = format!(
            "{:#}",
            Param::Nodes.apply(&base(), 3.0).expect_err("degree 3")
        );
        assert!(error.starts_with("network.degree: 3 is not"), "{error}");
        assert!(error.ends_with("(with nodes = 3)"), "{error}");
    }

    #[test]
    fn d_scales_its_bounds() {
        let s = Param::D.apply(&base(), 4.0).expect("d 4");
        let g = &s.gossipsub;
        assert_eq!((g.d_low, g.d, g.d_high, g.d_lazy), (3, 4, 5, 6));
        let s = Param::D.apply(&base(), 12.0).expect("d 12");
        let g = &s.gossipsub;
        assert_eq!((g.d_low, g.d, g.d_high), (8, 12, 16));
        let s = Param::D.apply(&base(), 1.0).expect("d 1");
        assert_eq!((s.gossipsub.d_low, s.gossipsub.d_high), (1, 1));
    }

    #[test]
    fn copies_share_the_shard_and_shift_the_members() {
        let s = Param::CommunitiesPerShard
            .apply(&base(), 3.0)
            .expect("3 per shard");
        let names: Vec<&str> = s.communities.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "b-2", "b-3"]);
        assert_eq!(s.communities[2].shard(), SHARED_SHARD);
        assert_eq!(s.communities[2].members, [0, 1]);
        assert_eq!(
            s.communities[3].messages[0].content_topic,
            "/b-3/1/chat/proto"
        );
    }

    #[test]
    fn rate_and_size_set_every_class() {
        let s = Param::Size.apply(&base(), 5000.0).expect("size");
        assert!(
            s.communities
                .iter()
                .flat_map(|c| &c.messages)
                .all(|m| m.size == 5000 && m.size_max.is_none())
        );
        let s = Param::Rate.apply(&base(), 0.5).expect("rate");
        assert!(
            s.communities
                .iter()
                .flat_map(|c| &c.messages)
                .all(|m| m.rate_per_min == 0.5)
        );
        let error = format!(
            "{:#}",
            Param::Size.apply(&base(), 1e9).expect_err("too big")
        );
        assert!(
            error.starts_with("community[0] (a).message[0].size: 1000000000"),
            "{error}"
        );
    }

    #[test]
    fn command_line_rest_and_table_names_agree() {
        use clap::ValueEnum as _;
        for p in Param::value_variants() {
            assert_eq!(Param::from_str(p.name(), false), Ok(*p));
            assert_eq!(serde_json::to_value(p).ok(), Some(p.name().into()));
        }
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(
            parse_values(Param::Nodes, "4, 8,16").expect("ok"),
            [4.0, 8.0, 16.0]
        );
        assert_eq!(parse_values(Param::Rate, "0.5,2").expect("ok"), [0.5, 2.0]);
        let e = |p, t| format!("{:#}", parse_values(p, t).expect_err("rejected"));
        assert!(e(Param::D, "4,6.5").contains("values: 6.5 is not a whole number"));
        assert!(e(Param::Nodes, "4,x").contains("values: \"x\" is not a number"));
        assert!(e(Param::Nodes, "4,4").contains("twice"));
        assert!(e(Param::Nodes, "").contains("none given"));
    }
}
