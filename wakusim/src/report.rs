//! The per-node report: what wakuprof measured of each node, live by its probe or from the
//! node's capture (bytes/s by category, kind and shard, the control share), set against the
//! node's own truth, and how far the attacker's messages travelled.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use serde::Serialize;
use traffic::scenario::node_name;
use wakuprof::{
    account::record::{Category, Direction},
    source::probe::ProbeStats,
};

use crate::{
    health::{self, ShardHealth},
    measure,
    run::{MeasuredBy, Outcome, Published},
    scenario::{Churn, Scenario, Transport},
};

/// The whole report (`report.json`).
#[derive(Serialize)]
pub struct Report {
    pub transport: Transport,
    pub nodes: usize,
    pub seed: u64,
    /// Seconds the captures ran (setup, publishing and teardown).
    pub elapsed_secs: f64,
    pub stopped_by_signal: bool,
    /// Which source measured the nodes (`ebpf`: wakuprof's probe, live; `pcap`: each node's
    /// capture, after the run), and why.
    pub measured_by: MeasuredBy,
    /// The probe's drop counters, when it measured (samples the ring had no room for and
    /// sockets past its map: their bytes count, their labels are the connection's).
    pub probe: Option<ProbeStats>,
    pub communities: Vec<CommunityInfo>,
    /// Connections as (dialer, listener).
    pub connections: Vec<(String, String)>,
    pub published: Vec<Published>,
    pub per_node: Vec<NodeReport>,
    pub attack: Option<AttackReport>,
    /// The scenario's joins, leaves and restarts.
    pub churn: Vec<Churn>,
}

/// A community as run.
#[derive(Serialize)]
pub struct CommunityInfo {
    pub name: String,
    pub pubsub_topic: String,
    pub protected: bool,
    /// The shard's public key (SEC1 compressed, hex), when protected.
    pub public_key: Option<String>,
    pub members: Vec<String>,
}

/// One node's measurements.
#[derive(Serialize)]
pub struct NodeReport {
    pub node: String,
    /// The ids of the processes the node ran as (one per start: a restart adds one).
    pub pids: Vec<u32>,
    pub addr: IpAddr,
    pub peers: Vec<String>,
    pub packets_captured: u64,
    pub packets_dropped: u32,
    /// Wire bytes per (direction, category, kind, shard), as wakuprof counted them.
    pub measured: Vec<Line>,
    /// Relay control wire bytes over all relay wire bytes.
    pub control_share: f64,
    /// Relay payload bytes per (direction, kind, pubsub topic): the node's truth and wakuprof's.
    pub relay_vs_truth: Vec<Check>,
    /// Largest relative error of `relay_vs_truth`, percent.
    pub max_error_pct: f64,
    /// The same per (direction, kind), over all topics: on Noise wakuprof infers kinds but
    /// not shards, so this is where its error shows.
    pub kinds_vs_truth: Vec<Check>,
    /// Relative error of all relay payload bytes in both directions, percent.
    pub relay_total_error_pct: f64,
    /// Messages its validator rejected.
    pub rejected: usize,
    /// Per pubsub topic: messages published and delivered, from gossipsub's own events.
    pub topics: BTreeMap<String, traffic::node::TopicCounts>,
    /// Per pubsub topic: duplicates, amplification and mesh health.
    pub shards: Vec<ShardHealth>,
}

/// Wire bytes of one label in one direction.
#[derive(Serialize)]
pub struct Line {
    pub direction: &'static str,
    pub category: &'static str,
    pub kind: String,
    pub shard: Option<u16>,
    pub bytes: u64,
    pub bytes_per_sec: f64,
}

/// One relay kind on one topic in one direction: truth against wakuprof.
#[derive(Serialize)]
pub struct Check {
    pub direction: &'static str,
    pub kind: String,
    pub pubsub_topic: Option<String>,
    pub truth_bytes: u64,
    pub profiler_bytes: u64,
    pub truth_entries: u64,
    pub profiler_messages: u64,
    pub error_pct: f64,
}

/// Where the attacker's messages went.
#[derive(Serialize)]
pub struct AttackReport {
    pub attacker: String,
    pub pubsub_topic: String,
    pub published: usize,
    /// The attacker's direct peers.
    pub first_hop: Vec<String>,
    /// Nodes that were sent an attack message (from the nodes' own streams).
    pub sent_to: Vec<String>,
    /// Nodes whose validator rejected one, and from whom.
    pub rejected_by: Vec<(String, Option<String>)>,
    /// Nodes that accepted one (none when the shard is protected as it should be).
    pub accepted_by: Vec<String>,
    /// Whether no attack message got past the attacker's direct peers.
    pub stopped_at_first_hop: bool,
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

type PartKey = (&'static str, String, Option<String>);

/// |profiler − truth| / truth in percent (100 when only the profiler saw bytes).
fn error_pct(truth: u64, profiler: u64) -> f64 {
    if truth == 0 {
        if profiler == 0 { 0.0 } else { 100.0 }
    } else {
        100.0 * truth.abs_diff(profiler) as f64 / truth as f64
    }
}

/// Truth against wakuprof for every key either has.
fn checks(
    truth: &BTreeMap<PartKey, (u64, u64)>,
    measured: &BTreeMap<PartKey, (u64, u64)>,
) -> Vec<Check> {
    let keys: BTreeSet<&PartKey> = truth.keys().chain(measured.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (tb, te) = truth.get(k).copied().unwrap_or_default();
            let (pb, pm) = measured.get(k).copied().unwrap_or_default();
            Check {
                direction: k.0,
                kind: k.1.clone(),
                pubsub_topic: k.2.clone(),
                truth_bytes: tb,
                profiler_bytes: pb,
                truth_entries: te,
                profiler_messages: pm,
                error_pct: error_pct(tb, pb),
            }
        })
        .collect()
}

fn node_report(s: &Scenario, o: &Outcome, i: usize) -> anyhow::Result<NodeReport> {
    let name = node_name(i);
    let (addr, file) = &o.captures[i];
    let captured;
    let m = match &o.probed {
        Some(p) => &p.nodes[i],
        None => {
            captured = measure::capture(file, *addr, s.gossipsub.d_low)?;
            &captured
        }
    };
    let secs = o.elapsed_secs.max(f64::EPSILON);
    let mut lines: BTreeMap<(&'static str, &'static str, String, Option<u16>), u64> =
        BTreeMap::new();
    let mut measured: BTreeMap<PartKey, (u64, u64)> = BTreeMap::new();
    let (mut control, mut relay) = (0u64, 0u64);
    for r in &m.rows {
        let d = direction(r.direction);
        let key = (
            d,
            r.label.category.as_str(),
            r.label.kind.to_string(),
            r.label.shard,
        );
        *lines.entry(key).or_default() += r.counters.bytes;
        let is_relay = matches!(
            r.label.category,
            Category::RelayChat | Category::RelayControl
        );
        if is_relay {
            relay += r.counters.bytes;
            if r.label.category == Category::RelayControl {
                control += r.counters.bytes;
            }
            let topic = r.label.pubsub_topic.as_deref().map(str::to_owned);
            let m = measured
                .entry((d, r.label.kind.to_string(), topic))
                .or_default();
            m.0 += r.counters.payload_bytes;
            m.1 += r.counters.messages;
        }
    }
    let mut truth: BTreeMap<PartKey, (u64, u64)> = BTreeMap::new();
    for p in &o.truth.parts {
        let topic = p.pubsub_topic.clone();
        for (d, node) in [("out", &p.from_node), ("in", &p.to_node)] {
            if *node == name {
                let t = truth
                    .entry((d, p.kind.to_owned(), topic.clone()))
                    .or_default();
                t.0 += p.bytes;
                t.1 += p.entries;
            }
        }
    }
    let relay_vs_truth = checks(&truth, &measured);
    let max_error_pct = relay_vs_truth
        .iter()
        .map(|c| c.error_pct)
        .fold(0.0, f64::max);
    let no_topic = |m: &BTreeMap<PartKey, (u64, u64)>| {
        let mut out: BTreeMap<PartKey, (u64, u64)> = BTreeMap::new();
        for ((d, kind, _), (b, n)) in m {
            let e = out.entry((d, kind.clone(), None)).or_default();
            e.0 += b;
            e.1 += n;
        }
        out
    };
    let kinds_vs_truth = checks(&no_topic(&truth), &no_topic(&measured));
    let total = |m: &BTreeMap<PartKey, (u64, u64)>| m.values().map(|v| v.0).sum::<u64>();
    let relay_total_error_pct = error_pct(total(&truth), total(&measured));
    let peers = o
        .edges
        .iter()
        .filter_map(|(a, b)| match (*a == i, *b == i) {
            (true, _) => Some(node_name(*b)),
            (_, true) => Some(node_name(*a)),
            _ => None,
        })
        .collect();
    let shards = health::shards(o, i, &name, m);
    Ok(NodeReport {
        node: name,
        pids: o.pids[i].clone(),
        addr: *addr,
        peers,
        packets_captured: o.capture_stats[i].0,
        packets_dropped: o.capture_stats[i].1,
        measured: lines
            .into_iter()
            .map(|((direction, category, kind, shard), bytes)| Line {
                direction,
                category,
                kind,
                shard,
                bytes,
                bytes_per_sec: bytes as f64 / secs,
            })
            .collect(),
        control_share: health::ratio(control as f64, relay as f64),
        relay_vs_truth,
        max_error_pct,
        kinds_vs_truth,
        relay_total_error_pct,
        rejected: o.rejected.iter().filter(|r| r.0 == i).count(),
        topics: o.counts[i].clone(),
        shards,
    })
}

fn attack_report(s: &Scenario, o: &Outcome) -> Option<AttackReport> {
    let a = s.attacker.as_ref()?;
    let attack: BTreeSet<&str> = o
        .published
        .iter()
        .filter(|p| p.attack)
        .map(|p| p.id.as_str())
        .collect();
    let topic = s.pubsub_topic(
        s.communities
            .iter()
            .find(|c| c.name == a.community)?
            .shard(),
    );
    let first_hop: BTreeSet<String> = o
        .edges
        .iter()
        .filter_map(|(x, y)| match (*x == a.node, *y == a.node) {
            (true, _) => Some(node_name(*y)),
            (_, true) => Some(node_name(*x)),
            _ => None,
        })
        .collect();
    let sent_to: BTreeSet<String> = o
        .truth
        .deliveries
        .iter()
        .filter(|d| attack.contains(d.message_id.as_str()))
        .map(|d| d.node.clone())
        .collect();
    let rejected_by: BTreeSet<(String, Option<String>)> = o
        .rejected
        .iter()
        .filter(|r| attack.contains(r.1.as_str()))
        .map(|r| (node_name(r.0), r.2.map(node_name)))
        .collect();
    let accepted_by: BTreeSet<String> = o
        .received
        .iter()
        .filter(|r| attack.contains(r.1.as_str()))
        .map(|r| node_name(r.0))
        .collect();
    let attacker = node_name(a.node);
    let stopped_at_first_hop = accepted_by.is_empty()
        && sent_to.is_subset(&first_hop)
        && rejected_by
            .iter()
            .all(|(_, from)| from.as_deref() == Some(attacker.as_str()));
    Some(AttackReport {
        attacker,
        pubsub_topic: topic,
        published: attack.len(),
        first_hop: first_hop.into_iter().collect(),
        sent_to: sent_to.into_iter().collect(),
        rejected_by: rejected_by.into_iter().collect(),
        accepted_by: accepted_by.into_iter().collect(),
        stopped_at_first_hop,
    })
}

impl NodeReport {
    /// The larger error of `message` bytes in and out, over all topics, percent.
    pub fn message_error_pct(&self) -> f64 {
        self.kinds_vs_truth
            .iter()
            .filter(|c| c.kind == "message")
            .map(|c| c.error_pct)
            .fold(0.0, f64::max)
    }
}

impl Report {
    /// Measures every node's capture and puts the run's outcome together.
    pub fn build(s: &Scenario, o: &Outcome) -> anyhow::Result<Report> {
        let per_node = (0..s.network.nodes)
            .map(|i| node_report(s, o, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Report {
            transport: s.transport,
            nodes: s.network.nodes,
            seed: s.seed,
            elapsed_secs: o.elapsed_secs,
            stopped_by_signal: o.stopped,
            measured_by: o.measured_by.clone(),
            probe: o.probed.as_ref().map(|p| p.stats),
            communities: s
                .communities
                .iter()
                .map(|c| CommunityInfo {
                    name: c.name.clone(),
                    pubsub_topic: s.pubsub_topic(c.shard()),
                    protected: c.protected,
                    public_key: o.public_keys.get(&c.name).cloned(),
                    members: c.members.iter().map(|m| node_name(*m)).collect(),
                })
                .collect(),
            connections: o
                .edges
                .iter()
                .map(|(a, b)| (node_name(*a), node_name(*b)))
                .collect(),
            published: o.published.clone(),
            per_node,
            attack: attack_report(s, o),
            churn: s.churn.clone(),
        })
    }

    /// The report as text: per node, bytes/s in and out by category and shard, the control
    /// share, and the profiler's error against the node's truth.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} nodes, {:?} transport, {:.1} s captured, {} messages published",
            self.nodes,
            self.transport,
            self.elapsed_secs,
            self.published.len()
        );
        let by = match self.measured_by.source {
            "ebpf" => "wakuprof's eBPF probe, live",
            _ => "wakuprof on each node's capture",
        };
        let _ = writeln!(out, "measured by {by} ({})", self.measured_by.reason);
        if let Some(p) = &self.probe
            && (p.ring_drops > 0 || p.map_full > 0)
        {
            let _ = writeln!(
                out,
                "the probe counted {} samples it had no room for and {} packets past its socket map (bytes counted, labels the connection's)",
                p.ring_drops, p.map_full
            );
        }
        if self.stopped_by_signal {
            let _ = writeln!(out, "publishing was cut short by a signal");
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>10} {:>8}",
            "node",
            "in B/s",
            "out B/s",
            "relay B/s",
            "ctrl B/s",
            "ctrl %",
            "msg err%",
            "relay err%",
            "rejected"
        );
        for n in &self.per_node {
            let sum = |f: &dyn Fn(&Line) -> bool| {
                n.measured
                    .iter()
                    .filter(|l| f(l))
                    .map(|l| l.bytes_per_sec)
                    .sum::<f64>()
            };
            let relay = |l: &Line| l.category == "relay_chat" || l.category == "relay_control";
            let _ = writeln!(
                out,
                "{:<8} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>6.1} {:>8.2} {:>10.2} {:>8}",
                n.node,
                sum(&|l| l.direction == "in"),
                sum(&|l| l.direction == "out"),
                sum(&relay),
                sum(&|l| l.category == "relay_control"),
                100.0 * n.control_share,
                n.message_error_pct(),
                n.relay_total_error_pct,
                n.rejected
            );
        }
        let _ = writeln!(
            out,
            "\nper node and shard: messages in, duplicates (wakuprof / truth), amplification, mesh peers (wakuprof / gossipsub; fewest while publishing), seconds below D_low"
        );
        // Inside Noise wakuprof sees no topic, message id or GRAFT: its side is not measured.
        let decoded = self.transport == Transport::Plaintext;
        if !decoded {
            let _ = writeln!(
                out,
                "(over Noise wakuprof reads no topic, message id or GRAFT: its columns show -, the truth's are given)"
            );
        }
        let _ = writeln!(
            out,
            "{:<8} {:<20} {:>6} {:>11} {:>8} {:>7} {:>5} {:>8}",
            "node", "topic", "msgs", "dups", "amplif", "mesh", "min", "<D_low s"
        );
        let seen = |v: String| if decoded { v } else { "-".to_owned() };
        for n in &self.per_node {
            for h in &n.shards {
                let opt = |v: Option<u32>| seen(v.map_or("-".to_owned(), |v| v.to_string()));
                let _ = writeln!(
                    out,
                    "{:<8} {:<20} {:>6} {:>11} {:>8} {:>7} {:>5} {:>8}",
                    n.node,
                    h.pubsub_topic,
                    seen(h.messages_in.to_string()),
                    format!(
                        "{}/{}",
                        seen(h.duplicates_in.to_string()),
                        h.truth_duplicates_in
                    ),
                    seen(format!("{:.2}", h.amplification)),
                    format!("{}/{}", opt(h.mesh_peers), h.truth_mesh_peers),
                    opt(h.mesh_peers_min),
                    seen(format!("{:.1}", h.secs_below_d_low))
                );
            }
        }
        let _ = writeln!(out, "\nper shard (relay, all nodes, B/s in + out):");
        let mut shards: BTreeMap<(Option<u16>, &str), f64> = BTreeMap::new();
        for n in &self.per_node {
            for l in n
                .measured
                .iter()
                .filter(|l| l.category.starts_with("relay"))
            {
                *shards.entry((l.shard, l.kind.as_str())).or_default() += l.bytes_per_sec;
            }
        }
        for ((shard, kind), bps) in shards {
            let shard = shard.map_or("-".to_owned(), |s| s.to_string());
            let _ = writeln!(out, "  shard {shard:>4} {kind:<10} {bps:>10.0}");
        }
        for c in &self.churn {
            let _ = writeln!(
                out,
                "churn: {} {:?} at {} s of the publishing",
                node_name(c.node),
                c.action,
                c.at_secs
            );
        }
        if let Some(a) = &self.attack {
            let _ = writeln!(
                out,
                "\nattacker {} published {} invalid messages on {}: sent to {:?}, rejected by {} node(s), accepted by {:?}; stopped at the first hop: {}",
                a.attacker,
                a.published,
                a.pubsub_topic,
                a.sent_to,
                a.rejected_by.len(),
                a.accepted_by,
                a.stopped_at_first_hop
            );
        }
        out
    }
}
