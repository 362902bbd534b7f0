//! The offline pipeline: packets in, usage rows out. [`Analyzer`] is pure (no I/O) so every
//! source feeds it the same way; [`run`] drives it from capture files into sinks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::Error;
use crate::account::frames::FrameRow;
use crate::account::mesh::{MeshRow, MeshTracker};
use crate::account::messages::{MessageLog, MessageRow};
use crate::account::owners::{OwnerId, OwnerTable};
use crate::account::pending::{Contribution, Segment, split_datagram};
use crate::account::record::{Category, Direction, Endpoints, Method, Row};
use crate::account::table::{RowKey, UsageTable};
use crate::decode::bittorrent::shared::{Moment, ShardPeers};
use crate::decode::error::DecodeErrors;
use crate::decode::frames::FrameLog;
use crate::decode::relay::relay_book::{RelayBook, RelayStats};
use crate::decode::udp::{self, Datagram, UdpState};
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side, Span, bittorrent};
use crate::flow::fragments::Fragments;
use crate::flow::tcp::{Budget, Seg};
use crate::flow::{
    self, Flow, FlowKey, FlowStats, FlowTable, LocalEnd, LocalSpec, Ours, Shared, TcpPacket,
};
use crate::memory::{self, Shares};
use crate::node::peers::PeerBook;
use crate::rules::Rules;
use crate::sink::Sink;
use crate::source::RawPacket;
use crate::source::link::{self, Frame, IpPacket, Transport};
use crate::source::pcap_file::CaptureSet;

/// Who saw a packet, when the source knows: the socket's owner, whether the packet's source is
/// the local end, and whether a socket of that end saw it (the eBPF probe: each end of a
/// loopback connection is then its own flow).
#[derive(Clone, Copy, Debug, Default)]
pub struct Vantage {
    pub owner: OwnerId,
    pub src_local: Option<bool>,
    pub at_socket: bool,
}

impl Vantage {
    /// Which end of a key is local, for a packet whose source is the key's `lo` (`src_is_lo`).
    fn local_end(&self, src_is_lo: bool) -> LocalEnd {
        match self.src_local {
            Some(src_local) if self.at_socket => {
                if src_local == src_is_lo {
                    LocalEnd::Lo
                } else {
                    LocalEnd::Hi
                }
            }
            _ => LocalEnd::Unknown,
        }
    }
}

/// A socket's IP protocol, its end and its peer's, as (address, port).
pub type SocketTuple = (u8, (std::net::IpAddr, u16), (std::net::IpAddr, u16));

/// Bytes and packets a socket sent or received that the source counted without sampling them.
#[derive(Clone, Copy, Debug)]
pub struct Unsampled {
    pub vantage: Vantage,
    /// IP protocol number, the socket's end and the peer's, when a packet of it was seen.
    pub tuple: Option<SocketTuple>,
    pub direction: Direction,
    pub bytes: u64,
    pub packets: u64,
}

/// Settings of one analysis.
#[derive(Clone, Debug)]
pub struct Config {
    /// Aggregation window, seconds.
    pub window_secs: u32,
    /// Addresses that are ours; empty means "the initiator of each flow".
    pub locals: Vec<LocalSpec>,
    /// Most flows tracked at once.
    pub max_flows: usize,
    /// Approximate bytes the run may hold (see [`memory::Shares`]); past the analysis share the
    /// least recently used flows are retired.
    pub memory_budget: usize,
    /// Most out-of-order TCP bytes held across all flows (the budget's reassembly share caps it).
    pub reassembly_budget: usize,
    /// Keep a row per published relay message (the `--messages` table).
    pub messages: bool,
    /// Keep a row per Noise frame and TLS record of libp2p connections (the `--frames` table).
    pub frames: bool,
    /// Track mesh health against this D_low (the `--mesh` table); `None`: not tracked.
    pub mesh: Option<u32>,
    /// The lists behind the discovery, RPC and other rules (node ids already validated).
    pub rules: Rules,
    /// The node's peers and their shards (`--node-api`), for encrypted relay bytes.
    pub peers: PeerBook,
    /// Decoding threads of [`run`] (see [`crate::shards`]); 1 decodes on the calling thread.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window_secs: 10,
            locals: Vec::new(),
            max_flows: 1_000_000,
            memory_budget: memory::DEFAULT_BUDGET,
            reassembly_budget: 256 * 1024 * 1024,
            messages: false,
            frames: false,
            mesh: None,
            rules: Rules::default(),
            peers: PeerBook::default(),
            threads: 1,
        }
    }
}

/// What was read, counted in totals independent of labelling (for checks and the summary).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub packets: u64,
    /// Σ IP total lengths of IP packets, by direction.
    pub ip_bytes_in: u64,
    pub ip_bytes_out: u64,
    pub non_ip_frames: u64,
    /// Σ frame lengths of non-IP frames.
    pub non_ip_bytes: u64,
    pub fragments: u64,
    /// Later fragments whose first fragment was not seen.
    pub orphan_fragments: u64,
    pub flow: FlowStats,
    pub labels_overflowed: u64,
    /// Malformed inputs met by the decoders, per protocol.
    pub decode_errors: DecodeErrors,
    /// Message-id attribution of relay control.
    pub relay: RelayStats,
    /// Published relay messages read, and how many of them their receiving host had seen.
    pub relay_messages: u64,
    pub relay_duplicates: u64,
    /// The flows with the most wire bytes.
    pub top_flows: TopFlows,
    /// The highest memory the analysis accounted for (see [`Analyzer::memory_used`]), bytes.
    pub memory_peak: u64,
    /// First and last packet time, ns since the epoch.
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
}

impl Stats {
    /// Adds the statistics of another shard of the same run (see [`crate::shards`]); the
    /// memory peak becomes the sum of the shards' peaks.
    pub(crate) fn merge(&mut self, o: &Stats) {
        self.packets += o.packets;
        self.ip_bytes_in += o.ip_bytes_in;
        self.ip_bytes_out += o.ip_bytes_out;
        self.non_ip_frames += o.non_ip_frames;
        self.non_ip_bytes += o.non_ip_bytes;
        self.fragments += o.fragments;
        self.orphan_fragments += o.orphan_fragments;
        self.flow.merge(&o.flow);
        self.labels_overflowed += o.labels_overflowed;
        self.decode_errors.merge(&o.decode_errors);
        self.relay.merge(&o.relay);
        self.relay_messages += o.relay_messages;
        self.relay_duplicates += o.relay_duplicates;
        for t in &o.top_flows.0 {
            self.top_flows.insert(t.clone());
        }
        self.memory_peak += o.memory_peak;
        self.first_ns = o.first_ns.into_iter().chain(self.first_ns).min();
        self.last_ns = o.last_ns.into_iter().chain(self.last_ns).max();
    }
}

/// Flows listed as the largest.
const TOP_FLOWS: usize = 10;

/// The largest flows by wire bytes, largest first (then by packets and endpoints, so that the
/// list does not depend on the order flows ended in). A flow retired and seen again counts as
/// two.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TopFlows(pub Vec<TopFlow>);

/// One of the largest flows.
#[derive(Clone, Debug, Serialize)]
pub struct TopFlow {
    pub transport: &'static str,
    pub local: String,
    pub remote: String,
    pub bytes: u64,
    pub packets: u64,
}

impl TopFlows {
    fn offer(&mut self, f: &Flow) {
        if self.0.len() == TOP_FLOWS && self.0.last().is_some_and(|l| l.bytes > f.bytes) {
            return;
        }
        let ep = &f.endpoints;
        self.insert(TopFlow {
            transport: ep.transport,
            local: endpoint_text(ep.local_addr, ep.local_port),
            remote: endpoint_text(ep.remote_addr, ep.remote_port),
            bytes: f.bytes,
            packets: f.packets,
        });
    }

    fn insert(&mut self, t: TopFlow) {
        let v = &mut self.0;
        let at = v.partition_point(|o| o.rank() <= t.rank());
        v.insert(at, t);
        v.truncate(TOP_FLOWS);
    }
}

impl TopFlow {
    /// The list's order: most bytes, then most packets, then by endpoints.
    fn rank(&self) -> (std::cmp::Reverse<(u64, u64)>, &str, &str, &str) {
        let TopFlow {
            transport,
            local,
            remote,
            bytes,
            packets,
        } = self;
        (
            std::cmp::Reverse((*bytes, *packets)),
            transport,
            local,
            remote,
        )
    }
}

/// `addr:port` (`[v6]:port`), the address alone, or `-`.
pub fn endpoint_text(addr: Option<std::net::IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(std::net::IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "-".to_string(),
    }
}

/// Time between idle-flow sweeps, in capture time.
pub(crate) const SWEEP_NS: i64 = 10 * 1_000_000_000;
/// Rows handed to the sinks at a time.
pub(crate) const BATCH_ROWS: usize = 1 << 16;

/// The pipeline state: flows, decoders, the usage table.
pub struct Analyzer {
    cfg: Config,
    flows: FlowTable,
    fragments: Fragments,
    table: UsageTable,
    labels: LabelTable,
    spans: Vec<Span>,
    relay: RelayBook,
    udp: UdpState,
    messages: MessageLog,
    /// Frame events of the packet being decoded, and the `--frames` rows not yet handed out.
    frames: FrameLog,
    frame_rows: Vec<FrameRow>,
    /// Mesh health per window and topic (with [`Config::mesh`]).
    mesh: Option<MeshTracker>,
    budget: Budget,
    /// The memory budget's shares; the usage table hands out its oldest windows early past
    /// `table_rows` (unordered captures keep many windows open).
    shares: Shares,
    stats: Stats,
    /// Labels of flows without a decoder, by IP protocol / non-IP protocol name.
    fixed: FxHashMap<&'static str, LabelId>,
    max_ns: i64,
    last_sweep_ns: i64,
    rows: Vec<Row>,
    /// Set when this analyzer is one shard of a run on several threads.
    shard: Option<Shard>,
}

/// A shard of a run on several threads ([`crate::shards`]): it sweeps when told, never retires
/// flows for limits, and watches for the first moment its result could differ from the
/// one-thread run's (see [`Analyzer::diverged`]).
struct Shard {
    workers: usize,
    /// The peer book's generation at the start: a change is state shared across flows.
    peers_generation: u64,
    /// Bytes the one-thread run's rows waiting for the sinks may take at most.
    rows_bound: usize,
}

impl Analyzer {
    /// A fresh pipeline.
    pub fn new(mut cfg: Config) -> Analyzer {
        let mesh = cfg
            .mesh
            .map(|d_low| MeshTracker::new(cfg.window_secs, d_low, !cfg.peers.is_empty()));
        let mut relay = RelayBook::with_peers(std::mem::take(&mut cfg.peers));
        relay.mesh_on = mesh.is_some();
        let shares = Shares::of(cfg.memory_budget);
        Analyzer {
            flows: FlowTable::new(cfg.max_flows),
            fragments: Fragments::default(),
            table: UsageTable::new(cfg.window_secs),
            labels: LabelTable::default(),
            spans: Vec::new(),
            relay,
            mesh,
            udp: UdpState::new(cfg.rules.node_ids().unwrap_or_default()),
            messages: MessageLog::new(cfg.messages),
            frames: FrameLog {
                on: cfg.frames,
                events: Vec::new(),
            },
            frame_rows: Vec::new(),
            budget: Budget {
                used: 0,
                limit: cfg.reassembly_budget.min(shares.reassembly),
                hits: 0,
                exceeded: false,
            },
            shares,
            stats: Stats::default(),
            fixed: FxHashMap::default(),
            max_ns: i64::MIN,
            last_sweep_ns: i64::MIN,
            rows: Vec::new(),
            shard: None,
            cfg,
        }
    }

    /// One of `workers` shards of a run on several threads ([`crate::shards`]): the reassembly
    /// budget is split between them, and limits that the one-thread run would reach make the
    /// shard report [`Analyzer::diverged`] instead of retiring flows.
    pub(crate) fn shard(cfg: Config, workers: usize, peers: ShardPeers) -> Analyzer {
        let mut a = Analyzer::new(cfg);
        let workers = workers.max(1);
        a.budget.limit /= workers;
        a.udp.bittorrent.shard = Some(peers);
        let rows = a.shares.pending_rows + a.shares.table_rows;
        a.shard = Some(Shard {
            workers,
            peers_generation: a.relay.peers.generation,
            rows_bound: 2 * rows * std::mem::size_of::<Row>(),
        });
        a
    }

    /// For a shard: why its result could differ from the one-thread run's from here on, if it
    /// could.
    /// Flows of different host pairs are independent until a decoder writes state shared across
    /// flows (relay message ids, recent messages, peers, discv5 ids, DNS tree domains, relay
    /// messages seen; BitTorrent peers are shared, see [`ShardPeers`], unless learned while
    /// flows finish), or until the one-thread run could reach a limit: flows, labels,
    /// fragments, reassembly bytes, table rows, remembered BitTorrent state or memory (each
    /// shard keeps to its part of the limit; memory with a margin for the one table's larger
    /// hash slots).
    pub(crate) fn diverged(&self) -> Option<&'static str> {
        let s = self.shard.as_ref()?;
        let n = s.workers;
        let late = self.udp.bittorrent.shard.as_ref();
        let memory = self.memory_used().saturating_mul(5 * n) + s.rows_bound;
        [
            (self.relay.written(), "relay state"),
            (self.udp.written(), "discv5 or DNS state"),
            (
                self.relay.peers.generation != s.peers_generation,
                "peer book",
            ),
            (self.messages.messages > 0, "relay messages"),
            (self.budget.exceeded, "out-of-order bytes"),
            (self.udp.bittorrent.past_share(n), "BitTorrent state kept"),
            (
                late.is_some_and(|s| s.learned_late),
                "BitTorrent peer learned late",
            ),
            (
                self.labels.len() > crate::decode::labels::MAX_LABELS / n,
                "labels",
            ),
            (self.flows.flows.len() >= self.cfg.max_flows / n, "flows"),
            (
                self.fragments.len() >= crate::flow::fragments::FRAGMENT_LIMIT / n,
                "fragments",
            ),
            (self.table.rows() > self.shares.table_rows / n, "table rows"),
            (memory > self.shares.analysis, "memory"),
        ]
        .into_iter()
        .find_map(|(hit, why)| hit.then_some(why))
    }

    /// For a shard: the moment of the run it is at, and the packets up to which it has read
    /// all of its own (see [`ShardPeers::at`]).
    pub(crate) fn at(&mut self, now: Moment, read: u64) {
        if let Some(s) = &mut self.udp.bittorrent.shard {
            s.at(now, read);
        }
    }

    /// For a shard: the idle sweep the one-thread run makes when its clock reaches `max_ns`.
    pub(crate) fn sweep_at(&mut self, max_ns: i64) {
        self.max_ns = max_ns;
        self.sweep();
    }

    /// The peer book encrypted relay bytes take their shards from (live runs refresh it).
    pub fn peers_mut(&mut self) -> &mut PeerBook {
        &mut self.relay.peers
    }

    /// Counts one captured frame whose owner is not known (offline captures).
    pub fn packet(&mut self, pkt: &RawPacket<'_>) {
        self.packet_of(pkt, Vantage::default());
    }

    /// The owners rows refer to: live sources intern the owners of their sockets here.
    pub fn owners(&mut self) -> &mut OwnerTable {
        &mut self.table.owners
    }

    /// Counts one captured frame as seen from `vantage`. A flow takes the first known owner of
    /// its packets.
    pub fn packet_of(&mut self, pkt: &RawPacket<'_>, vantage: Vantage) {
        self.stats.packets += 1;
        let ts = pkt.ts_ns;
        self.stats.first_ns = Some(self.stats.first_ns.map_or(ts, |f| f.min(ts)));
        self.stats.last_ns = Some(self.stats.last_ns.map_or(ts, |l| l.max(ts)));
        match link::parse(pkt) {
            Frame::NonIp { protocol, len } => self.non_ip(ts, protocol, len),
            Frame::Ip(ip) => self.ip(ts, &ip, vantage),
        }
        let alone = self.shard.is_none();
        if alone && ts > self.max_ns {
            self.max_ns = ts;
            if ts.saturating_sub(self.last_sweep_ns) >= SWEEP_NS {
                self.sweep();
            }
        }
        if alone && self.table.rows() > self.shares.table_rows {
            while self.table.rows() > self.shares.table_rows / 2
                && self.table.drain_oldest(&self.labels, &mut self.rows)
            {}
        }
        let used = self.memory_used();
        self.stats.memory_peak = self.stats.memory_peak.max(used as u64);
        if alone && used > self.shares.analysis {
            self.retire_for_memory();
        }
    }

    /// Approximate heap bytes of the analysis: flows with their reassembly and decoder state,
    /// the usage table, labels, message ids, and rows not handed out yet.
    pub fn memory_used(&self) -> usize {
        self.flows.heap_bytes()
            + self.table.heap_bytes()
            + self.labels.heap_bytes()
            + self.relay.heap_bytes()
            + memory::vec_bytes(&self.rows)
            + memory::vec_bytes(&self.frame_rows)
            + self.messages.rows.as_ref().map_or(0, memory::vec_bytes)
    }

    /// The memory budget's shares this analysis keeps to.
    pub fn shares(&self) -> Shares {
        self.shares
    }

    /// Rows waiting to be taken with [`Analyzer::take_rows`].
    pub fn rows_waiting(&self) -> usize {
        self.rows.len()
    }

    /// What was read so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Rows of windows that have closed since the last call.
    pub fn take_rows(&mut self) -> Vec<Row> {
        std::mem::take(&mut self.rows)
    }

    /// The frame rows read since the last call (only with [`Config::frames`]).
    pub fn take_frames(&mut self) -> Vec<FrameRow> {
        std::mem::take(&mut self.frame_rows)
    }

    /// Mesh rows of windows closed since the last call (with [`Config::mesh`]).
    pub fn take_mesh(&mut self) -> Vec<MeshRow> {
        self.mesh
            .as_mut()
            .map(|m| std::mem::take(&mut m.rows))
            .unwrap_or_default()
    }

    /// Published relay messages read since the last call (with [`Config::messages`]).
    pub fn take_messages(&mut self) -> Vec<MessageRow> {
        self.messages
            .rows
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Ends the run: finishes every flow; [`Analyzer::drain`] then hands out the remaining rows.
    pub fn finish(&mut self) -> Stats {
        // The capture's end is not the connections' end: the mesh as it stands is the last row.
        if let Some(m) = &mut self.mesh {
            m.finish(self.max_ns, &self.relay.peers);
        }
        let flows = std::mem::take(&mut self.flows.flows);
        for (_, f) in flows {
            self.finish_flow(f);
        }
        self.stats.flow.reassembly_limit_hits = self.budget.hits;
        self.stats.labels_overflowed = self.labels.overflowed;
        self.stats.relay = self.relay.stats.clone();
        self.stats.relay_messages = self.messages.messages;
        self.stats.relay_duplicates = self.messages.duplicates;
        self.stats.clone()
    }

    /// After [`Analyzer::finish`]: the rows of the next window(s), at least `min` rows unless the
    /// table runs out; empty when everything has been handed out.
    pub fn drain(&mut self, min: usize) -> Vec<Row> {
        let mut rows = std::mem::take(&mut self.rows);
        while rows.len() < min && self.table.drain_oldest(&self.labels, &mut rows) {}
        rows
    }

    fn fixed_label(&mut self, protocol: &'static str) -> LabelId {
        let labels = &mut self.labels;
        *self
            .fixed
            .entry(protocol)
            .or_insert_with(|| labels.decoded(Category::Other, protocol, "data"))
    }

    fn non_ip(&mut self, ts: i64, protocol: &'static str, len: u32) {
        self.stats.non_ip_frames += 1;
        self.stats.non_ip_bytes += u64::from(len);
        let label = self.fixed_label(protocol);
        let key = RowKey {
            owner: OwnerId::UNKNOWN,
            endpoints: Endpoints {
                transport: "non-ip",
                local_addr: None,
                local_port: None,
                remote_addr: None,
                remote_port: None,
            },
            label,
            direction: Direction::Out,
        };
        let window = self.table.window_of(ts);
        let c = crate::account::record::Counters {
            bytes: u64::from(len),
            packets: 1,
            ..Default::default()
        };
        self.table.add(window, key, &c);
    }

    fn ip(&mut self, ts: i64, ip: &IpPacket<'_>, vantage: Vantage) {
        let window = self.table.window_of(ts);
        let (mut key, src_is_lo, transport_name, fixed, orient, payload_len) = match &ip.transport {
            Transport::Tcp(t) => {
                let (k, lo) = FlowKey::of(6, (ip.src, t.src_port), (ip.dst, t.dst_port));
                let o = flow::src_initiates(t.syn, t.ack, t.src_port, t.dst_port);
                (k, lo, "tcp", None, o, t.wire_payload_len)
            }
            Transport::Udp {
                src_port,
                dst_port,
                wire_payload_len,
                ..
            } => {
                let (k, lo) = FlowKey::of(17, (ip.src, *src_port), (ip.dst, *dst_port));
                let o = flow::src_initiates(false, false, *src_port, *dst_port);
                let l = self.fixed_label("udp");
                (k, lo, "udp", Some(l), o, *wire_payload_len)
            }
            Transport::Other => {
                let later_fragment = ip.fragment.filter(|f| !f.1);
                let known = later_fragment
                    .and_then(|(id, _)| self.fragments.lookup(&(ip.src, ip.dst, ip.proto, id)));
                if later_fragment.is_some() {
                    self.stats.fragments += 1;
                    self.stats.orphan_fragments += u64::from(known.is_none());
                }
                let (k, lo) = match known {
                    Some(kl) => kl,
                    None => FlowKey::of(ip.proto, (ip.src, 0), (ip.dst, 0)),
                };
                let name = if known.is_none() && later_fragment.is_some() {
                    "ip-fragment"
                } else {
                    link::ip_protocol_name(ip.proto)
                };
                let transport = match k.proto {
                    6 => "tcp",
                    17 => "udp",
                    1 | 58 => "icmp",
                    _ => "ip",
                };
                let l = self.fixed_label(name);
                let o = true;
                (k, lo, transport, Some(l), o, 0)
            }
        };
        key.seen_from = vantage.local_end(src_is_lo);
        if let Some((id, true)) = ip.fragment {
            self.stats.fragments += 1;
            self.fragments
                .first((ip.src, ip.dst, ip.proto, id), key, src_is_lo, ts);
        }
        let (len, capacity) = (self.flows.flows.len(), self.flows.flows.capacity());
        // Only a new flow at the table's limit or capacity needs room (the lookup comes last:
        // below both, which is nearly always, the key is hashed once, by the entry below).
        if self.shard.is_none()
            && (len >= self.flows.max_flows || len >= capacity)
            && !self.flows.flows.contains_key(&key)
        {
            if len >= self.flows.max_flows {
                self.make_room();
            } else if len >= capacity
                && self.memory_used() + memory::table_bytes::<(FlowKey, Flow)>(capacity)
                    > self.shares.analysis
            {
                // The table would double past the budget: make room in it instead.
                self.retire_for_memory();
            }
        }
        let Analyzer {
            flows,
            table,
            labels,
            spans,
            relay,
            udp,
            messages,
            budget,
            stats,
            cfg,
            frames,
            frame_rows,
            mesh,
            ..
        } = self;
        let flow = flows.flows.entry(key).or_insert_with(|| {
            stats.flow.flows += 1;
            let silent = bittorrent::silent_label(&udp.bittorrent, [key.lo, key.hi], labels);
            Flow::new(
                &key,
                src_is_lo,
                orient,
                match vantage.src_local {
                    Some(src_local) => Ours::Source(src_local),
                    None => Ours::Matching(&cfg.locals),
                },
                transport_name,
                fixed,
                labels,
                silent,
            )
        });
        flow.last_ns = flow.last_ns.max(ts);
        if flow.owner == OwnerId::UNKNOWN {
            flow.owner = vantage.owner;
        }
        flow.bytes += u64::from(ip.ip_len);
        flow.packets += 1;
        let side = flow.side(src_is_lo);
        let direction = flow.direction(side);
        match direction {
            Direction::In => stats.ip_bytes_in += u64::from(ip.ip_len),
            Direction::Out => stats.ip_bytes_out += u64::from(ip.ip_len),
        }
        let keys = flow.row_keys();
        let mut add = |s: Side, (w, label, c): Contribution| table.add(w, keys.key(s, label), &c);
        match &ip.transport {
            Transport::Tcp(t) if fixed.is_none() => {
                let p = TcpPacket {
                    seg: Seg {
                        seq: t.seq,
                        syn: t.syn,
                        payload: t.payload,
                        wire_payload: t.wire_payload_len,
                        wire: ip.ip_len,
                        window,
                    },
                    fin_or_rst: t.fin || t.rst,
                };
                let mut sh = Shared {
                    ctx: DecodeCtx {
                        labels,
                        spans,
                        relay,
                        udp,
                        rules: &cfg.rules,
                        now_ns: ts,
                        frames,
                        errors: &mut stats.decode_errors,
                    },
                    budget,
                    stats: &mut stats.flow,
                };
                flow.tcp(side, &p, &mut sh, &mut add);
                let (before, now) = flow.remeasure();
                flows.heap = (flows.heap + now).saturating_sub(before);
                if !frames.events.is_empty() {
                    crate::account::frames::record(&mut frames.events, flow, frame_rows);
                }
                if let Some(m) = mesh.as_mut() {
                    if !relay.mesh.is_empty() {
                        m.record(&mut relay.mesh, flow, ts, labels, &relay.peers);
                    }
                    // A closing connection leaves the mesh now, not when the flow is retired.
                    if p.fin_or_rst {
                        m.flow_ended(flow, ts, &relay.peers);
                    }
                }
                if !relay.published.is_empty() {
                    let when = (ts, window);
                    messages.record(&mut relay.published, flow, when, labels, table);
                }
            }
            Transport::Udp {
                src_port,
                dst_port,
                payload,
                ..
            } => {
                let d = Datagram {
                    src: (ip.src, *src_port),
                    dst: (ip.dst, *dst_port),
                    payload,
                    wire_payload: payload_len,
                };
                let mut ctx = DecodeCtx {
                    labels,
                    spans,
                    relay,
                    udp,
                    rules: &cfg.rules,
                    now_ns: ts,
                    frames,
                    errors: &mut stats.decode_errors,
                };
                let (w, fixed_label, mut c) = flow.packet(side, window, ip.ip_len, payload_len);
                match udp::classify(&d, &mut ctx) {
                    Some(l) if !ctx.spans.is_empty() => {
                        let seg = Segment {
                            start: 0,
                            end: u64::from(payload_len),
                            wire: ip.ip_len,
                            window: w,
                            retrans: false,
                        };
                        let out = &mut |c| add(side, c);
                        split_datagram(seg, ctx.spans.drain(..), l.label, out);
                    }
                    Some(l) => {
                        c.messages = u64::from(l.units);
                        add(side, (w, l.label, c));
                    }
                    None => add(side, (w, fixed_label, c)),
                }
            }
            _ => add(side, flow.packet(side, window, ip.ip_len, payload_len)),
        }
    }

    /// Counts bytes a live source counted but did not sample, with the label their connection
    /// has (method `unsampled`), or as `other`/`unsampled` when no packet of it was seen.
    pub fn unsampled(&mut self, ts: i64, u: &Unsampled) {
        let window = self.table.window_of(ts);
        let c = crate::account::record::Counters {
            bytes: u.bytes,
            packets: u.packets,
            ..Default::default()
        };
        let mut endpoints = Endpoints {
            transport: "ip",
            local_addr: None,
            local_port: None,
            remote_addr: None,
            remote_port: None,
        };
        if let Some((proto, local, remote)) = u.tuple {
            let (src, dst) = match u.direction {
                Direction::Out => (local, remote),
                Direction::In => (remote, local),
            };
            let (mut key, src_is_lo) = FlowKey::of(proto, src, dst);
            key.seen_from = u.vantage.local_end(src_is_lo);
            if let Some(flow) = self.flows.flows.get_mut(&key) {
                let side = flow.side(src_is_lo);
                let (w, label, _) = flow.packet(side, window, 0, 0);
                let permille = self.labels.get(label).confidence_permille;
                let label = self.labels.with_method(label, Method::Unsampled, permille);
                self.table.add(w, flow.row_keys().key(side, label), &c);
                return;
            }
            endpoints = Endpoints {
                transport: match proto {
                    6 => "tcp",
                    17 => "udp",
                    _ => "ip",
                },
                local_addr: Some(local.0),
                local_port: Some(local.1),
                remote_addr: Some(remote.0),
                remote_port: Some(remote.1),
            };
        }
        let label = self.fixed_label("unsampled");
        let label = self.labels.with_method(label, Method::Unsampled, 0);
        let key = RowKey {
            owner: u.vantage.owner,
            endpoints,
            label,
            direction: u.direction,
        };
        self.table.add(window, key, &c);
    }

    /// Advances a live run's clock to `now_ns`: idle flows are retired and the rows of windows
    /// that ended before the previous one are handed out (see [`Analyzer::take_rows`]).
    pub fn tick(&mut self, now_ns: i64) {
        self.max_ns = self.max_ns.max(now_ns);
        self.sweep();
    }

    fn finish_flow(&mut self, mut f: Flow) {
        self.flows.release(&f);
        self.stats.top_flows.offer(&f);
        let keys = f.row_keys();
        let table = &mut self.table;
        let mut sh = Shared {
            ctx: DecodeCtx {
                labels: &mut self.labels,
                spans: &mut self.spans,
                relay: &mut self.relay,
                udp: &mut self.udp,
                rules: &self.cfg.rules,
                now_ns: f.last_ns,
                frames: &mut self.frames,
                errors: &mut self.stats.decode_errors,
            },
            budget: &mut self.budget,
            stats: &mut self.stats.flow,
        };
        f.finish(&mut sh, &mut |s, (w, label, c)| {
            table.add(w, keys.key(s, label), &c)
        });
        if !self.frames.events.is_empty() {
            crate::account::frames::record(&mut self.frames.events, &f, &mut self.frame_rows);
        }
        if let Some(m) = &mut self.mesh {
            if !self.relay.mesh.is_empty() {
                m.record(
                    &mut self.relay.mesh,
                    &f,
                    f.last_ns,
                    &self.labels,
                    &self.relay.peers,
                );
            }
            m.flow_ended(&f, f.last_ns, &self.relay.peers);
        }
        if !self.relay.published.is_empty() {
            let when = (f.last_ns, table.window_of(f.last_ns));
            let published = &mut self.relay.published;
            self.messages
                .record(published, &f, when, &self.labels, table);
        }
    }

    fn sweep(&mut self) {
        self.last_sweep_ns = self.max_ns;
        let mut gone = Vec::new();
        self.stats.flow.evicted_idle += self.flows.evict_idle(self.max_ns, |f| gone.push(f));
        for f in gone {
            self.finish_flow(f);
        }
        if let Some(m) = &mut self.mesh {
            m.advance(self.max_ns, &self.relay.peers);
        }
        let window_ns = i64::from(self.cfg.window_secs) * 1_000_000_000;
        let cutoff = self.table.window_of(self.max_ns).saturating_sub(window_ns);
        self.table
            .drain_before(cutoff, &self.labels, &mut self.rows);
    }

    fn make_room(&mut self) {
        let mut gone = Vec::new();
        self.stats.flow.evicted_limit += self.flows.evict_oldest(0.1, |f| gone.push(f));
        for f in gone {
            self.finish_flow(f);
        }
    }

    /// Retires the least recently used flows until the analysis is an eighth under its share
    /// (their bytes are counted as they leave).
    fn retire_for_memory(&mut self) {
        let target = self.shares.analysis - self.shares.analysis / 8;
        let excess = self.memory_used().saturating_sub(target);
        let share = (excess as f64 / self.flows.heap_bytes().max(1) as f64).clamp(1.0 / 16.0, 1.0);
        let mut gone = Vec::new();
        self.stats.flow.evicted_memory += self.flows.evict_oldest(share, |f| gone.push(f));
        for f in gone {
            self.finish_flow(f);
        }
        let flows = &mut self.flows.flows;
        if flows.capacity() > 4 * flows.len() + 1024 {
            flows.shrink_to_fit();
        }
    }
}

/// Outcome of [`run`]: statistics, and the errors met (the run went on past them).
pub struct RunReport {
    pub stats: Stats,
    /// Inputs that could not be opened or were corrupt (what they held before counts).
    pub input_errors: Vec<Error>,
    /// Sinks that failed (a full disk): each was left out from its first error on, the files
    /// it had finished stay valid, and the other sinks (the summary) saw everything.
    pub output_errors: Vec<Error>,
    /// Reading ended early on a stop request; everything read before it is counted.
    pub stopped: bool,
}

/// Reads `paths` in time order through the pipeline into `sinks`, until they end or `stop` is
/// set. `progress` is called now and then with the capture bytes read so far. Fails only when
/// no capture opens; corrupt files and failing sinks are reported in the [`RunReport`].
///
/// With [`Config::threads`] above 1 the packets are decoded on that many threads, with the
/// same rows and statistics (see [`crate::shards`]); the `--messages`, `--frames` and `--mesh`
/// tables are written from one thread.
pub fn run(
    paths: &[PathBuf],
    cfg: Config,
    sinks: &mut [&mut dyn Sink],
    stop: &Arc<AtomicBool>,
    mut progress: impl FnMut(u64),
) -> Result<RunReport, Error> {
    let mut out = Outputs::new(sinks);
    let mut handed_out = 0;
    if cfg.threads > 1 && !cfg.messages && !cfg.frames && cfg.mesh.is_none() {
        match crate::shards::run(paths, &cfg, cfg.threads, &mut out, stop, &mut progress)? {
            crate::shards::Outcome::Done {
                stats,
                input_errors,
            } => {
                out.each(|s| s.finish());
                return Ok(RunReport {
                    stats: *stats,
                    input_errors,
                    output_errors: out.errors,
                    stopped: stop.load(Ordering::Relaxed),
                });
            }
            crate::shards::Outcome::Diverged { through, why } => {
                tracing::info!(
                    packets = through,
                    why,
                    "state shared across flows or a limit near: decoding on one thread from the start"
                );
                handed_out = through;
            }
        }
    }
    let mut captures = CaptureSet::open(paths)?;
    captures.stop_when(Arc::clone(stop));
    let mut analyzer = Analyzer::new(cfg);
    let pending = analyzer.shares().pending_rows;
    let mut n: u64 = 0;
    crate::source::read_ahead::for_each(&mut captures, |pkt, read| {
        analyzer.packet(pkt);
        n += 1;
        let tick = n.is_multiple_of(65_536);
        if tick {
            progress(read);
        }
        if n <= handed_out {
            // The workers handed out the rows of windows closed so far.
            if n == handed_out || analyzer.rows_waiting() >= pending {
                drop(analyzer.take_rows());
            }
        } else if tick || analyzer.rows_waiting() >= pending {
            out.hand_out(&mut analyzer);
        }
    });
    let input_errors = captures.take_errors();
    let stats = analyzer.finish();
    out.hand_out(&mut analyzer);
    loop {
        let rows = analyzer.drain(BATCH_ROWS.min(pending));
        if rows.is_empty() {
            break;
        }
        out.each(|s| s.write(&rows));
    }
    out.each(|s| s.finish());
    Ok(RunReport {
        stats,
        input_errors,
        output_errors: out.errors,
        stopped: stop.load(Ordering::Relaxed),
    })
}

/// The sinks of a run: one that fails is left out from then on, its error kept.
pub(crate) struct Outputs<'s, 'a> {
    sinks: &'s mut [&'a mut dyn Sink],
    failed: Vec<bool>,
    errors: Vec<Error>,
}

impl<'s, 'a> Outputs<'s, 'a> {
    fn new(sinks: &'s mut [&'a mut dyn Sink]) -> Outputs<'s, 'a> {
        let failed = vec![false; sinks.len()];
        Outputs {
            sinks,
            failed,
            errors: Vec::new(),
        }
    }

    /// Runs `f` on every sink that has not failed.
    pub(crate) fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> Result<(), Error>) {
        for (s, failed) in self.sinks.iter_mut().zip(&mut self.failed) {
            if *failed {
                continue;
            }
            if let Err(e) = f(&mut **s) {
                *failed = true;
                self.errors.push(e);
            }
        }
    }

    /// Hands the rows of closed windows and the messages, frames and mesh rows read so far to
    /// the sinks.
    fn hand_out(&mut self, analyzer: &mut Analyzer) {
        let rows = analyzer.take_rows();
        if !rows.is_empty() {
            self.each(|s| s.write(&rows));
        }
        let messages = analyzer.take_messages();
        if !messages.is_empty() {
            self.each(|s| s.messages(&messages));
        }
        let frames = analyzer.take_frames();
        if !frames.is_empty() {
            self.each(|s| s.frames(&frames));
        }
        let mesh = analyzer.take_mesh();
        if !mesh.is_empty() {
            self.each(|s| s.mesh(&mesh));
        }
    }
}
