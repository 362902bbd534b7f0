//! The flow table: one entry per connection (TCP, UDP) or address pair (other IP protocols),
//! holding its direction, reassembly and decoder state, bounded in number and in idle time.

pub mod fragments;
pub mod tcp;

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::account::owners::OwnerId;
use crate::account::pending::Contribution;
use crate::account::record::{Counters, Direction, Endpoints};
use crate::account::table::RowKey;
use crate::decode::classify::Classifier;
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side, StreamDecoder};
use crate::memory;

/// A connection's identity, the same for both directions: endpoints in canonical order, and
/// which end it is seen from when the source saw it at a socket ([`LocalEnd`]): live, the two
/// ends of a loopback connection are two flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub lo: (IpAddr, u16),
    pub hi: (IpAddr, u16),
    pub seen_from: LocalEnd,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and whether `src` is the key's `lo` endpoint.
    pub fn of(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> (FlowKey, bool) {
        if src <= dst {
            (
                FlowKey {
                    proto,
                    lo: src,
                    hi: dst,
                    seen_from: LocalEnd::Unknown,
                },
                true,
            )
        } else {
            (
                FlowKey {
                    proto,
                    lo: dst,
                    hi: src,
                    seen_from: LocalEnd::Unknown,
                },
                false,
            )
        }
    }
}

/// The end of a [`FlowKey`] whose socket saw the packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LocalEnd {
    /// A capture: packets seen on the wire, by no socket in particular.
    #[default]
    Unknown,
    Lo,
    Hi,
}

/// How a new flow's local end is decided.
#[derive(Clone, Copy, Debug)]
pub enum Ours<'a> {
    /// The source knows: whether the first packet's source is ours.
    Source(bool),
    /// The end matching `--local` (the responder only when it alone matches), else the initiator.
    Matching(&'a [LocalSpec]),
}

/// An address (and optionally port) that `--local` says is ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSpec {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl LocalSpec {
    fn matches(&self, (addr, port): (IpAddr, u16)) -> bool {
        self.addr == addr && self.port.is_none_or(|p| p == port)
    }
}

/// Whether the source of a flow's first packet opened the flow: the sender of a SYN, not the
/// sender of a SYN-ACK; otherwise yes, unless it sends from a well-known port (< 1024) to a higher one.
pub fn src_initiates(syn: bool, ack: bool, src_port: u16, dst_port: u16) -> bool {
    match (syn, ack) {
        (true, false) => true,
        (true, true) => false,
        _ => !(src_port < 1024 && dst_port >= 1024),
    }
}

/// A flow's endpoints and the direction of each side: the parts of its rows' keys.
#[derive(Clone, Copy)]
pub struct RowKeys {
    owner: OwnerId,
    endpoints: Endpoints,
    directions: [Direction; 2],
}

impl RowKeys {
    /// The key of the row for bytes that `side` sent with `label`.
    pub fn key(&self, side: Side, label: LabelId) -> RowKey {
        RowKey {
            owner: self.owner,
            endpoints: self.endpoints,
            label,
            direction: self.directions[side.index()],
        }
    }
}

/// Per-flow state.
pub struct Flow {
    /// The key's `lo` endpoint is the initiator.
    lo_initiates: bool,
    /// The initiator is the local side (from `--local`, else by definition).
    initiator_local: bool,
    /// Endpoints oriented local → remote, as rows carry them.
    pub endpoints: Endpoints,
    /// The process (host, cgroup) owning the local socket, when the source knows it.
    pub owner: OwnerId,
    pub last_ns: i64,
    /// Wire bytes and packets of the whole flow, for the summary's top flows.
    pub bytes: u64,
    pub packets: u64,
    /// A FIN or RST was seen (TCP).
    pub closing: bool,
    state: State,
    /// Heap bytes the flow holds beyond its table slot, as last measured.
    heap: usize,
}

enum State {
    /// A TCP connection whose decoder still needs its bytes.
    Decoding(Box<TcpFlow>),
    /// Every byte has a known label per side; only sequence numbers are followed (TCP) to flag
    /// retransmissions.
    Settled {
        labels: [LabelId; 2],
        transport: LabelId,
        next_seq: [Option<u32>; 2],
    },
}

struct TcpFlow {
    dirs: [tcp::Direction; 2],
    decoder: Classifier,
    /// Segments without payload seen before the protocol was known: (side, window, wire).
    early: Vec<(Side, i64, u32)>,
}

/// What the allocator adds to a decoding flow's few allocations (headers, rounding, free space
/// left between them as flows come and go), measured on floods of new flows.
const ALLOCATOR_OVERHEAD: usize = 512;
/// Segments without payload held while a connection is unclassified; the rest count directly.
const EARLY_LIMIT: usize = 64;
/// Unlabelled bytes a direction may queue before they are labelled with the connection's label.
pub const LAG_LIMIT: u64 = 1 << 20;

/// Counters of what the flow layer did, reported in the summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FlowStats {
    pub flows: u64,
    pub evicted_idle: u64,
    pub evicted_limit: u64,
    /// Flows retired to stay within the memory budget (least recently used first).
    pub evicted_memory: u64,
    pub retransmitted_packets: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    pub reassembly_limit_hits: u64,
    pub decoder_lag_flushes: u64,
}

impl FlowStats {
    /// Adds the counts of another shard of the same run.
    pub fn merge(&mut self, o: &FlowStats) {
        self.flows += o.flows;
        self.evicted_idle += o.evicted_idle;
        self.evicted_limit += o.evicted_limit;
        self.evicted_memory += o.evicted_memory;
        self.retransmitted_packets += o.retransmitted_packets;
        self.gaps += o.gaps;
        self.gap_bytes += o.gap_bytes;
        self.reassembly_limit_hits += o.reassembly_limit_hits;
        self.decoder_lag_flushes += o.decoder_lag_flushes;
    }
}

/// Everything per-packet processing shares across flows.
pub struct Shared<'a> {
    pub ctx: DecodeCtx<'a>,
    pub budget: &'a mut tcp::Budget,
    pub stats: &'a mut FlowStats,
}

/// A TCP segment as the flow sees it.
pub struct TcpPacket<'a> {
    pub seg: tcp::Seg<'a>,
    pub fin_or_rst: bool,
}

impl Flow {
    /// A new flow; `src_is_lo` and `src_initiates` orient it, `ours` decides which end is ours;
    /// `silent` labels a TCP connection that never carries a payload byte (default `other`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: &FlowKey,
        src_is_lo: bool,
        src_initiates: bool,
        ours: Ours<'_>,
        transport: &'static str,
        state_label: Option<LabelId>,
        labels: &mut LabelTable,
        silent: Option<LabelId>,
    ) -> Flow {
        let lo_initiates = src_is_lo == src_initiates;
        let (init, resp) = if lo_initiates {
            (key.lo, key.hi)
        } else {
            (key.hi, key.lo)
        };
        // The responder is local only when it alone matches `--local`.
        let initiator_local = match ours {
            Ours::Source(local) => local == src_initiates,
            Ours::Matching(locals) => {
                locals.iter().any(|l| l.matches(init)) || !locals.iter().any(|l| l.matches(resp))
            }
        };
        let (local, remote) = if initiator_local {
            (init, resp)
        } else {
            (resp, init)
        };
        let ports = key.proto == 6 || key.proto == 17;
        let endpoints = Endpoints {
            transport,
            local_addr: Some(local.0),
            local_port: ports.then_some(local.1),
            remote_addr: Some(remote.0),
            remote_port: ports.then_some(remote.1),
        };
        let state = match state_label {
            Some(l) => State::Settled {
                labels: [l, l],
                transport: labels.transport_of(l),
                next_seq: [None, None],
            },
            None => State::Decoding(Box::new(TcpFlow {
                dirs: [tcp::Direction::default(), tcp::Direction::default()],
                decoder: Classifier::new(
                    Conn {
                        initiator: init,
                        responder: resp,
                    },
                    labels,
                    silent,
                ),
                early: Vec::new(),
            })),
        };
        Flow {
            lo_initiates,
            initiator_local,
            endpoints,
            owner: OwnerId::UNKNOWN,
            last_ns: 0,
            bytes: 0,
            packets: 0,
            closing: false,
            state,
            heap: 0,
        }
    }

    /// Measures the flow's heap bytes again (after a packet); returns (before, now).
    pub fn remeasure(&mut self) -> (usize, usize) {
        let now = match &self.state {
            State::Decoding(t) => t.heap_bytes() + ALLOCATOR_OVERHEAD,
            State::Settled { .. } => 0,
        };
        (std::mem::replace(&mut self.heap, now), now)
    }

    /// Which side sent a packet whose source is the key's `lo` endpoint (`src_is_lo`).
    pub fn side(&self, src_is_lo: bool) -> Side {
        if src_is_lo == self.lo_initiates {
            Side::Initiator
        } else {
            Side::Responder
        }
    }

    /// Direction of bytes sent by `side`, seen from the local end.
    pub fn direction(&self, side: Side) -> Direction {
        if (side == Side::Initiator) == self.initiator_local {
            Direction::Out
        } else {
            Direction::In
        }
    }

    /// What the flow's rows are keyed by, detached from the flow so that it can be used while
    /// the flow is being updated.
    pub fn row_keys(&self) -> RowKeys {
        RowKeys {
            owner: self.owner,
            endpoints: self.endpoints,
            directions: Side::BOTH.map(|s| self.direction(s)),
        }
    }

    /// Counts a datagram or a non-TCP packet: its label is fixed for the flow.
    pub fn packet(&mut self, side: Side, window: i64, wire: u32, payload: u32) -> Contribution {
        let label = match &self.state {
            State::Settled { labels, .. } => labels[side.index()],
            State::Decoding(t) => t.decoder.connection_label(),
        };
        (window, label, counters(wire, payload, 0))
    }

    /// Processes a TCP segment; contributions for the usage table go to `out`.
    pub fn tcp(
        &mut self,
        side: Side,
        p: &TcpPacket<'_>,
        sh: &mut Shared<'_>,
        out: &mut impl FnMut(Side, Contribution),
    ) {
        self.closing |= p.fin_or_rst;
        let i = side.index();
        let seg = &p.seg;
        match &mut self.state {
            State::Settled {
                labels,
                transport,
                next_seq,
            } => {
                if seg.wire_payload == 0 {
                    out(side, (seg.window, *transport, counters(seg.wire, 0, 0)));
                    return;
                }
                let seq = if seg.syn {
                    seg.seq.wrapping_add(1)
                } else {
                    seg.seq
                };
                let next = next_seq[i].get_or_insert(seq);
                let end = seq.wrapping_add(seg.wire_payload);
                let old = end.wrapping_sub(*next) as i32 <= 0;
                if !old {
                    *next = end;
                }
                let retrans = if old { seg.wire } else { 0 };
                sh.stats.retransmitted_packets += u64::from(old);
                let c = counters(seg.wire, seg.wire_payload, retrans);
                out(side, (seg.window, labels[i], c));
            }
            State::Decoding(t) => {
                if seg.wire_payload == 0 {
                    t.no_payload(side, seg.window, seg.wire, sh.ctx.labels, out);
                    return;
                }
                t.segment(side, seg, sh, out);
                if let Some(settled) = t.try_settle(sh.ctx.labels) {
                    self.state = settled;
                }
            }
        }
    }

    /// Labels everything still held or queued (the flow is ending).
    pub fn finish(&mut self, sh: &mut Shared<'_>, out: &mut impl FnMut(Side, Contribution)) {
        if let State::Decoding(t) = &mut self.state {
            t.finish(sh, out);
        }
    }
}

fn counters(wire: u32, payload: u32, retrans: u32) -> Counters {
    Counters {
        bytes: u64::from(wire),
        payload_bytes: u64::from(payload),
        packets: 1,
        retrans_bytes: u64::from(retrans),
        ..Counters::default()
    }
}

impl TcpFlow {
    /// Heap bytes: this state, its reassembly and its decoder.
    fn heap_bytes(&self) -> usize {
        size_of::<TcpFlow>()
            + self
                .dirs
                .iter()
                .map(tcp::Direction::heap_bytes)
                .sum::<usize>()
            + memory::vec_bytes(&self.early)
            + self.decoder.heap_bytes()
    }

    fn no_payload(
        &mut self,
        side: Side,
        window: i64,
        wire: u32,
        labels: &mut LabelTable,
        out: &mut impl FnMut(Side, Contribution),
    ) {
        if !self.decoder.label_known() && self.early.len() < EARLY_LIMIT {
            self.early.push((side, window, wire));
            return;
        }
        let t = labels.transport_of(self.decoder.connection_label());
        out(side, (window, t, counters(wire, 0, 0)));
    }

    fn segment(
        &mut self,
        side: Side,
        seg: &tcp::Seg<'_>,
        sh: &mut Shared<'_>,
        out: &mut impl FnMut(Side, Contribution),
    ) {
        self.reassemble(side, sh, out, |dir, budget, mut chunks| {
            dir.segment(seg, budget, &mut chunks)
        });
    }

    /// Runs one reassembly step on `side`, feeding what it delivers to the decoder, then applies
    /// the outcome.
    fn reassemble(
        &mut self,
        side: Side,
        sh: &mut Shared<'_>,
        out: &mut impl FnMut(Side, Contribution),
        step: impl FnOnce(&mut tcp::Direction, &mut tcp::Budget, &mut dyn FnMut(tcp::Chunk<'_>)),
    ) {
        let mut retrans: Vec<(i64, u32)> = Vec::new();
        {
            let decoder = &mut self.decoder;
            let Shared { ctx, budget, stats } = sh;
            step(&mut self.dirs[side.index()], budget, &mut |chunk| {
                feed(decoder, side, chunk, ctx, stats, &mut retrans)
            });
        }
        self.after_delivery(side, &retrans, sh, out);
    }

    /// Applies the decoder's spans to the queued packets, counts retransmissions, and flushes
    /// what waits too long or what became classifiable.
    fn after_delivery(
        &mut self,
        side: Side,
        retrans: &[(i64, u32)],
        sh: &mut Shared<'_>,
        out: &mut impl FnMut(Side, Contribution),
    ) {
        for span in sh.ctx.spans.drain(..) {
            let q = &mut self.dirs[span.side.index()].pending;
            q.apply(span.len, span.label, span.units, span.framing, &mut |c| {
                out(span.side, c)
            });
        }
        let conn = self.decoder.connection_label();
        for &(window, wire) in retrans {
            sh.stats.retransmitted_packets += 1;
            let label = self.dirs[side.index()].pending.last_label.unwrap_or(conn);
            out(side, (window, label, counters(wire, 0, wire)));
        }
        for s in Side::BOTH {
            let q = &mut self.dirs[s.index()].pending;
            if q.bytes() > LAG_LIMIT {
                sh.stats.decoder_lag_flushes += 1;
                q.flush(conn, &mut |c| out(s, c));
            }
        }
        if self.decoder.label_known() && !self.early.is_empty() {
            let t = sh.ctx.labels.transport_of(conn);
            for (s, window, wire) in self.early.drain(..) {
                out(s, (window, t, counters(wire, 0, 0)));
            }
        }
    }

    /// Once both sides are settled and nothing waits, the flow no longer needs its buffers.
    fn try_settle(&mut self, labels: &mut LabelTable) -> Option<State> {
        let a = self.decoder.settled(Side::Initiator)?;
        let b = self.decoder.settled(Side::Responder)?;
        if !self.early.is_empty() || self.dirs.iter().any(|d| !d.idle()) {
            return None;
        }
        Some(State::Settled {
            labels: [a, b],
            transport: labels.transport_of(self.decoder.connection_label()),
            next_seq: [self.dirs[0].next_seq(), self.dirs[1].next_seq()],
        })
    }

    fn finish(&mut self, sh: &mut Shared<'_>, out: &mut impl FnMut(Side, Contribution)) {
        for side in Side::BOTH {
            self.reassemble(side, sh, out, |dir, budget, mut chunks| {
                dir.finish(budget, &mut chunks)
            });
        }
        let conn = self.decoder.connection_label();
        for s in Side::BOTH {
            self.dirs[s.index()].pending.flush(conn, &mut |c| out(s, c));
        }
        let t = sh.ctx.labels.transport_of(conn);
        for (s, window, wire) in self.early.drain(..) {
            out(s, (window, t, counters(wire, 0, 0)));
        }
    }
}

/// Hands one reassembled chunk to the decoder.
fn feed(
    decoder: &mut Classifier,
    side: Side,
    chunk: tcp::Chunk<'_>,
    ctx: &mut DecodeCtx<'_>,
    stats: &mut FlowStats,
    retrans: &mut Vec<(i64, u32)>,
) {
    match chunk {
        tcp::Chunk::Data(d) => decoder.data(side, d, ctx),
        tcp::Chunk::Gap(n) => {
            stats.gaps += 1;
            stats.gap_bytes += n;
            decoder.gap(side, n, ctx);
        }
        tcp::Chunk::Retransmission { wire, window } => retrans.push((window, wire)),
    }
}

/// Idle time after which a TCP flow that saw a FIN or RST leaves the table (its rows stay).
pub const IDLE_CLOSED_NS: i64 = 30 * 1_000_000_000;
/// Idle time after which any other TCP flow leaves the table.
pub const IDLE_TCP_NS: i64 = 600 * 1_000_000_000;
/// Idle time after which UDP and other flows leave the table.
pub const IDLE_OTHER_NS: i64 = 120 * 1_000_000_000;

/// All flows, bounded in number and in memory.
pub struct FlowTable {
    pub flows: FxHashMap<FlowKey, Flow>,
    pub max_flows: usize,
    /// Σ heap bytes of the flows beyond their slots (see [`Flow::remeasure`]).
    pub heap: usize,
}

impl FlowTable {
    /// An empty table holding at most `max_flows` flows.
    pub fn new(max_flows: usize) -> FlowTable {
        FlowTable {
            flows: FxHashMap::default(),
            max_flows,
            heap: 0,
        }
    }

    /// Approximate heap bytes of the table and everything its flows hold.
    pub fn heap_bytes(&self) -> usize {
        memory::table_bytes::<(FlowKey, Flow)>(self.flows.capacity()) + self.heap
    }

    /// Forgets the heap bytes of a flow that left the table.
    pub fn release(&mut self, f: &Flow) {
        self.heap = self.heap.saturating_sub(f.heap);
    }

    /// Removes the flows idle at time `now` (by the timeouts above) and hands them to `gone`.
    pub fn evict_idle(&mut self, now: i64, mut gone: impl FnMut(Flow)) -> u64 {
        let mut n = 0;
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(k, f)| now - f.last_ns > idle_limit(k, f))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(f) = self.flows.remove(&k) {
                n += 1;
                gone(f);
            }
        }
        n
    }

    /// Makes room: removes the least recently seen `share` (0..1] of the flows, at least one.
    pub fn evict_oldest(&mut self, share: f64, mut gone: impl FnMut(Flow)) -> u64 {
        let mut ages: Vec<i64> = self.flows.values().map(|f| f.last_ns).collect();
        if ages.is_empty() {
            return 0;
        }
        let nth = ((ages.len() as f64 * share) as usize).min(ages.len() - 1);
        let (_, &mut cutoff, _) = ages.select_nth_unstable(nth);
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last_ns <= cutoff)
            .map(|(k, _)| *k)
            .collect();
        let n = keys.len() as u64;
        for k in keys {
            if let Some(f) = self.flows.remove(&k) {
                gone(f);
            }
        }
        n
    }
}

fn idle_limit(k: &FlowKey, f: &Flow) -> i64 {
    match (k.proto, f.closing) {
        (6, true) => IDLE_CLOSED_NS,
        (6, false) => IDLE_TCP_NS,
        _ => IDLE_OTHER_NS,
    }
}
