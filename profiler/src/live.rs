//! Live runs (`wakuprof live`): the eBPF probe or a libpcap capture feeds the same [`Analyzer`]
//! as offline analysis, with each socket's owner from the probe or from /proc. Rows of closed
//! windows go to the sinks as time passes; sinks roll their files every `roll` seconds; a stop
//! request (signal) or the duration ends the run with everything flushed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Serialize;
use wakuprof_probe_common::{EGRESS, INGRESS, Key};

use crate::Error;
use crate::account::owners::OwnerId;
use crate::account::record::{Direction, Owner};
use crate::analyze::{Config, SocketTuple, Stats, Unsampled, Vantage};
use crate::live_decoder::{Handout, LiveDecoder};
use crate::sink::Sink;
use crate::source::live_pcap::{self, LiveCapture};
use crate::source::probe::{Event, Owners, Probe, ProbeStats};
use crate::source::procfs::{self, SocketOwners};
use crate::source::{LinkType, RawPacket, link};

/// Where packets come from.
pub enum LiveSource {
    /// The eBPF probe: exact per-socket counts and owners.
    Ebpf(Box<Probe>),
    /// libpcap on some interfaces, owners from /proc (approximate).
    Pcap(LiveCapture),
}

/// Whose rows are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Filter {
    #[default]
    All,
    Pid(u32),
    Comm(String),
    /// A cgroup v2 path (relative to the hierarchy's root): the cgroup and everything below.
    Cgroup(String),
}

impl Filter {
    fn keeps(&self, o: &Owner) -> bool {
        match self {
            Filter::All => true,
            Filter::Pid(p) => o.pid == Some(*p),
            Filter::Comm(c) => o.comm.as_deref() == Some(c.as_str()),
            Filter::Cgroup(path) => o.cgroup.as_deref().is_some_and(|g| {
                g == path
                    || g.strip_prefix(path.as_str())
                        .is_some_and(|rest| rest.starts_with('/') || path.ends_with('/'))
            }),
        }
    }
}

/// Settings of a live run.
pub struct LiveConfig {
    pub analysis: Config,
    /// Stop after this long; `None` runs until stopped.
    pub duration: Option<Duration>,
    pub filter: Filter,
    /// Seconds between file rolls of the sinks.
    pub roll_secs: u64,
    /// Fresh peer books (`--node-api`), taken at every tick.
    pub peer_updates: Option<std::sync::mpsc::Receiver<crate::node::peers::PeerBook>>,
}

/// What a live run saw, for the summary.
#[derive(Debug, Default, Serialize)]
pub struct LiveReport {
    pub stats: Stats,
    /// `ebpf` or `pcap`.
    pub source: &'static str,
    /// The probe's drop and overflow counters (eBPF source).
    pub probe: Option<ProbeStats>,
    /// Packets the kernel dropped before libpcap read them (pcap source).
    pub pcap_dropped: u64,
    /// Rows left out by the filter.
    pub rows_filtered: u64,
    pub seconds: f64,
}

/// Progress of a live run, handed to the status callback about once a second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Status {
    pub elapsed: Duration,
    pub packets: u64,
    pub bytes: u64,
    /// Owners interned, the unknown one included.
    pub owners: usize,
    /// The probe's drop counters (zero for the pcap source).
    pub probe: ProbeStats,
    /// Packets the kernel dropped before libpcap read them (pcap source).
    pub pcap_dropped: u64,
    /// Flows retired while idle, to stay under the flow limit, and within the memory budget.
    pub evicted_idle: u64,
    pub evicted_limit: u64,
    pub evicted_memory: u64,
}

/// Time between reads of the probe's counters, window checks and status calls.
const TICK: Duration = Duration::from_secs(1);
/// Events or packets handled between checks of the clock.
const BATCH: usize = 4096;
/// Ticks a socket's counters may stay unchanged before they are read a last time and dropped
/// (UDP sockets announce no close).
const IDLE_TICKS: u64 = 300;
/// Most tuples whose owner the pcap source remembers (and most processes remembered).
const MAX_TUPLES: usize = 1 << 18;
/// How long events wait before they are handled: a server's accepted socket gets its owner at
/// its first recvmsg/sendmsg, usually after its first packets arrived.
pub const OWNER_DELAY: Duration = Duration::from_millis(250);
/// Ticks a socket's unsampled bytes may wait for its first samples to be handled, so that they
/// take the connection's label rather than `other`.
const TUPLE_WAIT: u8 = 2;
/// How long a stop waits before the last read of the probe, for packets still in the stack
/// (a receiver's softirq behind the sender's exit).
const SETTLE: Duration = Duration::from_millis(200);
/// Most spare packet buffers kept.
const MAX_BUFFERS: usize = 1024;
/// Most events waiting; past it the oldest are handled at once.
const MAX_QUEUED: usize = 1 << 16;
/// Least time between two reads of /proc's socket tables (pcap source).
const PROC_REFRESH: Duration = Duration::from_millis(250);

/// Runs until `stop` is set or the duration passes, then flushes everything into `sinks`.
pub fn run(
    source: LiveSource,
    cfg: LiveConfig,
    sinks: &mut [&mut dyn Sink],
    stop: &AtomicBool,
    mut status: impl FnMut(&Status),
) -> Result<LiveReport, Error> {
    let started = Instant::now();
    let mut run = Run {
        decoder: LiveDecoder::new(cfg.analysis.clone(), cfg.analysis.threads > 1)?,
        host: Arc::from(hostname().as_str()),
        cgroup_root: crate::source::probe::cgroup2_root().ok(),
        pids: FxHashMap::default(),
        filter: cfg.filter.clone(),
        rows_filtered: 0,
        clock: Clock::now(),
    };
    let mut last_tick = Instant::now();
    let mut last_roll = Instant::now();
    let mut report = LiveReport::default();
    let mut ebpf_state = EbpfState::default();
    let mut pcap_state = PcapState::default();
    let mut source = source;
    loop {
        let done =
            stop.load(Ordering::Relaxed) || cfg.duration.is_some_and(|d| started.elapsed() >= d);
        match &mut source {
            LiveSource::Ebpf(probe) => {
                if done {
                    // Packets of the last moment may still be on their way through the stack.
                    std::thread::sleep(SETTLE);
                } else {
                    probe.wait(50);
                }
                while probe.drain(BATCH, |e| ebpf_state.event(e)) == BATCH {}
                let now = clock_ns(libc::CLOCK_MONOTONIC) as u64;
                let cutoff = (!done).then(|| now.saturating_sub(OWNER_DELAY.as_nanos() as u64));
                ebpf_state.process(&probe.owners(), &mut run, cutoff);
            }
            LiveSource::Pcap(cap) => {
                if done {
                    // The block being filled is handed over within the block timeout.
                    std::thread::sleep(live_pcap::BLOCK_TIMEOUT * 2);
                } else {
                    cap.wait(100);
                }
                while cap.drain(BATCH, |p| pcap_state.packet(p, &mut run))? == BATCH {}
            }
        }
        if done || last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if let LiveSource::Ebpf(probe) = &mut source {
                ebpf_state.tick(probe, &mut run, done);
                if done {
                    // Packets sampled while the counters were read for the last time.
                    while probe.drain(BATCH, |e| ebpf_state.event(e)) == BATCH {}
                    ebpf_state.process(&probe.owners(), &mut run, None);
                }
            }
            if let Some(updates) = &cfg.peer_updates {
                while let Ok(book) = updates.try_recv() {
                    run.decoder.set_peers(book);
                }
            }
            for h in run.decoder.tick(run.clock.now_ns()) {
                write(sinks, &run.filter, &mut run.rows_filtered, h)?;
            }
            if last_roll.elapsed().as_secs() >= cfg.roll_secs {
                last_roll = Instant::now();
                for s in sinks.iter_mut() {
                    s.roll()?;
                }
            }
            let (probe, pcap_dropped) = match &mut source {
                LiveSource::Ebpf(p) => (p.stats(), 0),
                LiveSource::Pcap(c) => (ProbeStats::default(), c.dropped()),
            };
            let owners = run.decoder.owners();
            let stats = run.decoder.stats();
            status(&Status {
                elapsed: started.elapsed(),
                packets: stats.packets,
                bytes: stats.ip_bytes_in + stats.ip_bytes_out,
                owners,
                probe,
                pcap_dropped,
                evicted_idle: stats.flow.evicted_idle,
                evicted_limit: stats.flow.evicted_limit,
                evicted_memory: stats.flow.evicted_memory,
            });
        }
        if done {
            break;
        }
    }
    let Run {
        decoder,
        filter,
        rows_filtered,
        ..
    } = &mut run;
    report.stats = decoder.finish(|h| write(sinks, filter, rows_filtered, h))?;
    for s in sinks.iter_mut() {
        s.finish()?;
    }
    match &mut source {
        LiveSource::Ebpf(probe) => {
            report.source = "ebpf";
            report.probe = Some(probe.stats());
        }
        LiveSource::Pcap(cap) => {
            report.source = "pcap";
            report.pcap_dropped = cap.dropped();
        }
    }
    report.rows_filtered = run.rows_filtered;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A process as the sources name it: pid, command name (probe) and cgroup id (probe).
type ProcessKey = (u32, Option<Box<str>>, Option<u64>);

/// The state every live source shares.
struct Run {
    decoder: LiveDecoder,
    host: Arc<str>,
    /// Where cgroup v2 is mounted, for owners whose process is gone.
    cgroup_root: Option<PathBuf>,
    /// Owners already read from /proc, by (pid, comm, cgroup id).
    pids: FxHashMap<ProcessKey, OwnerId>,
    filter: Filter,
    rows_filtered: u64,
    clock: Clock,
}

impl Run {
    /// The owner id of a socket owner the probe recorded.
    fn intern_probe_owner(&mut self, o: &wakuprof_probe_common::Owner) -> OwnerId {
        let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
        let comm = String::from_utf8_lossy(&o.comm[..end]).into_owned();
        self.intern_pid(o.pid, Some(&comm), Some(o.cgroup_id))
    }

    /// The owner id of process `pid`, read from /proc once per (pid, comm, cgroup id): every
    /// socket of a process shares it.
    fn intern_pid(&mut self, pid: u32, comm: Option<&str>, cgroup_id: Option<u64>) -> OwnerId {
        let key = (pid, comm.map(Box::from), cgroup_id);
        if let Some(&id) = self.pids.get(&key) {
            return id;
        }
        let mut owner = procfs::process(pid, comm, &self.host);
        if owner.cgroup.is_none()
            && let (Some(id), Some(root)) = (cgroup_id, &self.cgroup_root)
            && let Some(path) = procfs::cgroup_path_of_id(root, id)
        {
            owner.container = procfs::container_of(&path).map(Arc::from);
            owner.cgroup = Some(Arc::from(path));
        }
        let id = self.decoder.intern(owner);
        if self.pids.len() >= MAX_TUPLES {
            self.pids.clear();
        }
        self.pids.insert(key, id);
        id
    }
}

/// Hands one hand-out of the analyzer to the sinks: the rows `filter` keeps (counting those it
/// leaves out in `filtered`), the relay messages (with [`Config::messages`]) and the mesh rows.
fn write(
    sinks: &mut [&mut dyn Sink],
    filter: &Filter,
    filtered: &mut u64,
    mut h: Handout,
) -> Result<(), Error> {
    let before = h.rows.len();
    h.rows.retain(|r| filter.keeps(&r.owner));
    *filtered += (before - h.rows.len()) as u64;
    for s in sinks.iter_mut() {
        if !h.rows.is_empty() {
            s.write(&h.rows)?;
        }
        if !h.mesh.is_empty() {
            s.mesh(&h.mesh)?;
        }
        if !h.messages.is_empty() {
            s.messages(&h.messages)?;
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC (the probe's clock) to Unix time.
#[derive(Clone, Copy)]
struct Clock {
    offset_ns: i64,
}

impl Clock {
    fn now() -> Clock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        Clock {
            offset_ns: real - mono,
        }
    }

    fn unix_ns(&self, monotonic_ns: u64) -> i64 {
        (monotonic_ns as i64).saturating_add(self.offset_ns)
    }

    fn now_ns(&self) -> i64 {
        clock_ns(libc::CLOCK_REALTIME)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The socket tuple of a packet seen from its socket (`src_local`: the packet's source is ours).
fn tuple_of(pkt: &RawPacket<'_>, src_local: bool) -> Option<SocketTuple> {
    let link::Frame::Ip(ip) = link::parse(pkt) else {
        return None;
    };
    let (sp, dp) = match &ip.transport {
        link::Transport::Tcp(t) => (t.src_port, t.dst_port),
        link::Transport::Udp {
            src_port, dst_port, ..
        } => (*src_port, *dst_port),
        link::Transport::Other => (0, 0),
    };
    let (src, dst) = ((ip.src, sp), (ip.dst, dp));
    Some(if src_local {
        (ip.proto, src, dst)
    } else {
        (ip.proto, dst, src)
    })
}

/// What the eBPF source remembers between events and ticks.
#[derive(Default)]
struct EbpfState {
    /// Owners of sockets, once the probe recorded them.
    owners: FxHashMap<u64, OwnerId>,
    /// Sockets without a recorded owner, with the tick they were last looked up at.
    unowned: FxHashMap<u64, u64>,
    /// The last tuple each socket was seen with.
    tuples: FxHashMap<u64, SocketTuple>,
    /// Per socket and direction: counters read at the last tick.
    last: FxHashMap<Key, Seen>,
    /// Sockets announced closed since the last tick.
    closed: Vec<u64>,
    /// The overflow counters (bytes, packets) by direction at the last tick: packets of
    /// sockets the probe's map had no room for and no owner is known of, counted as
    /// `other`/`unsampled` with no owner.
    overflow: [(u64, u64); 2],
    /// The per-process counters at the last tick: packets of sockets the probe's map had no
    /// room for, counted as `other`/`unsampled` of their process.
    per_process: FxHashMap<wakuprof_probe_common::ProcessKey, Seen>,
    /// Events waiting for [`OWNER_DELAY`] to pass.
    queue: std::collections::VecDeque<Queued>,
    /// Packet buffers of handled events, reused for new ones.
    buffers: Vec<Vec<u8>>,
    /// The sockets the first packets of each tuple (local end first) came from.
    cookies_of: FxHashMap<SocketTuple, Vec<u64>>,
    ticks: u64,
}

/// A ring buffer event waiting in the queue.
enum Queued {
    Packet {
        ts_ns: u64,
        cookie: u64,
        egress: bool,
        len: u32,
        tuple: Option<SocketTuple>,
        data: Vec<u8>,
    },
    Close(u64),
}

/// A socket direction's counters at the last tick.
#[derive(Clone, Copy, Default)]
struct Seen {
    unsampled_bytes: u64,
    unsampled_packets: u64,
    bytes: u64,
    /// The tick its byte count last changed at.
    changed: u64,
    /// Ticks its new unsampled bytes have waited for the socket's connection to be known.
    waited: u8,
}

impl Seen {
    /// The tick the count last changed at, once it reads `bytes` at tick `now`.
    fn changed_at(&self, bytes: u64, now: u64) -> u64 {
        if bytes != self.bytes || self.changed == 0 {
            now
        } else {
            self.changed
        }
    }
}

impl EbpfState {
    fn owner(&mut self, cookie: u64, owners: &Owners<'_>, run: &mut Run) -> Option<OwnerId> {
        if let Some(&id) = self.owners.get(&cookie) {
            return Some(id);
        }
        if self.unowned.get(&cookie) == Some(&self.ticks) {
            return None;
        }
        match owners.get(cookie) {
            Some((o, last)) => {
                let id = run.intern_probe_owner(&o);
                // A listener's owner may yet give way to the accepting process's.
                if last {
                    self.owners.insert(cookie, id);
                }
                self.unowned.remove(&cookie);
                Some(id)
            }
            None => {
                self.unowned.insert(cookie, self.ticks);
                None
            }
        }
    }

    /// Queues an event: events are handled [`OWNER_DELAY`] after the kernel saw them.
    fn event(&mut self, event: Event<'_>) {
        let queued = match event {
            Event::Close { cookie } => Queued::Close(cookie),
            Event::Packet { header, len, data } => {
                let egress = header.direction == EGRESS;
                let pkt = RawPacket {
                    ts_ns: 0,
                    link: LinkType::RawIp,
                    data,
                    wire_len: len,
                };
                // Sockets already owned need no index entry: parsing once per packet (in the
                // analyzer) is the hot path's cost.
                let known = self.owners.contains_key(&header.cookie);
                let tuple = if known { None } else { tuple_of(&pkt, egress) };
                if let Some(t) = tuple {
                    let cookies = self.cookies_of.entry(t).or_default();
                    if !cookies.contains(&header.cookie) && cookies.len() < 4 {
                        cookies.push(header.cookie);
                    }
                }
                let mut buf = self.buffers.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                Queued::Packet {
                    ts_ns: header.ts_ns,
                    cookie: header.cookie,
                    egress,
                    len,
                    tuple,
                    data: buf,
                }
            }
        };
        self.queue.push_back(queued);
    }

    /// Handles the queued events the kernel saw before `cutoff` (CLOCK_MONOTONIC ns), or all.
    fn process(&mut self, owners: &Owners<'_>, run: &mut Run, cutoff: Option<u64>) {
        while let Some(front) = self.queue.front() {
            let due = match (front, cutoff) {
                (_, None) | (Queued::Close(_), _) => true,
                (Queued::Packet { ts_ns, .. }, Some(c)) => {
                    *ts_ns <= c || self.queue.len() > MAX_QUEUED
                }
            };
            if !due {
                break;
            }
            match self.queue.pop_front() {
                Some(Queued::Close(cookie)) => self.closed.push(cookie),
                Some(Queued::Packet {
                    ts_ns,
                    cookie,
                    egress,
                    len,
                    tuple,
                    data,
                }) => {
                    let pkt = RawPacket {
                        ts_ns: run.clock.unix_ns(ts_ns),
                        link: LinkType::RawIp,
                        data: &data,
                        wire_len: len,
                    };
                    self.packet(&pkt, cookie, egress, tuple, owners, run);
                    if self.buffers.len() < MAX_BUFFERS {
                        self.buffers.push(data);
                    }
                }
                None => break,
            }
        }
        if self.cookies_of.len() > MAX_TUPLES {
            self.cookies_of.clear();
        }
    }

    fn packet(
        &mut self,
        pkt: &RawPacket<'_>,
        cookie: u64,
        egress: bool,
        tuple: Option<SocketTuple>,
        owners: &Owners<'_>,
        run: &mut Run,
    ) {
        let mut owner = self.owner(cookie, owners, run);
        if owner.is_some() {
            if !self.tuples.contains_key(&cookie)
                && let Some(t) = tuple.or_else(|| tuple_of(pkt, egress))
            {
                self.tuples.insert(cookie, t);
            }
        } else if let Some(t) = tuple.or_else(|| tuple_of(pkt, egress)) {
            // A listener, a connection request or the kernel's own socket answering for a
            // connection: the owner of another socket with the same ends.
            let others = self.cookies_of.get(&t).cloned().unwrap_or_default();
            owner = others
                .into_iter()
                .filter(|&c| c != cookie)
                .find_map(|c| self.owner(c, owners, run));
        }
        let vantage = Vantage {
            owner: owner.unwrap_or_default(),
            src_local: Some(egress),
            at_socket: true,
        };
        run.decoder.packet_of(pkt, vantage);
    }

    /// Reads every socket's counters: what was counted but not sampled since the last tick is
    /// added; sockets closed or idle are read a last time and dropped from the probe's maps.
    fn tick(&mut self, probe: &mut Probe, run: &mut Run, last: bool) {
        self.ticks += 1;
        let mut waiting = Vec::new();
        let now = run.clock.now_ns();
        let owners = probe.owners();
        for (key, c) in probe.counts() {
            let seen = self.last.get(&key).copied().unwrap_or_default();
            let (unsampled_bytes, unsampled_packets) = (c.unsampled_bytes, c.unsampled_packets);
            let bytes = unsampled_bytes.saturating_sub(seen.unsampled_bytes);
            let packets = unsampled_packets.saturating_sub(seen.unsampled_packets);
            let tuple = self.tuples.get(&key.cookie).copied();
            if (bytes > 0 || packets > 0) && tuple.is_none() && !last && seen.waited < TUPLE_WAIT {
                // The socket's samples are still queued (OWNER_DELAY): its connection, and so
                // the label these bytes take, is known at a later tick.
                self.last.insert(
                    key,
                    Seen {
                        waited: seen.waited + 1,
                        ..seen
                    },
                );
                waiting.push(key.cookie);
                continue;
            }
            if bytes > 0 || packets > 0 {
                let owner = self.owner(key.cookie, &owners, run).unwrap_or_default();
                let egress = key.direction == EGRESS;
                run.decoder.unsampled(
                    now,
                    &Unsampled {
                        vantage: Vantage {
                            owner,
                            src_local: Some(egress),
                            at_socket: true,
                        },
                        tuple,
                        direction: if egress {
                            Direction::Out
                        } else {
                            Direction::In
                        },
                        bytes,
                        packets,
                    },
                );
            }
            let changed = seen.changed_at(c.bytes, self.ticks);
            self.last.insert(
                key,
                Seen {
                    unsampled_bytes,
                    unsampled_packets,
                    bytes: c.bytes,
                    changed,
                    waited: 0,
                },
            );
        }
        for (key, t) in probe.per_process() {
            let seen = self.per_process.get(&key).copied().unwrap_or_default();
            // Every byte counted per process is unsampled.
            if t.bytes > seen.unsampled_bytes {
                let owner = run.intern_probe_owner(&key.owner);
                let delta = (
                    t.bytes - seen.unsampled_bytes,
                    t.packets.saturating_sub(seen.unsampled_packets),
                );
                unsampled_apart(run, now, owner, key.direction, delta);
            }
            let changed = seen.changed_at(t.bytes, self.ticks);
            self.per_process.insert(
                key,
                Seen {
                    unsampled_bytes: t.bytes,
                    unsampled_packets: t.packets,
                    bytes: t.bytes,
                    changed,
                    waited: 0,
                },
            );
        }
        // A process silent that long (most often gone) gives its room to others.
        let ticks = self.ticks;
        self.per_process.retain(|key, seen| {
            ticks - seen.changed <= IDLE_TICKS
                || !probe.forget_process(
                    key,
                    wakuprof_probe_common::Traffic {
                        bytes: seen.unsampled_bytes,
                        packets: seen.unsampled_packets,
                    },
                )
        });
        let stats = probe.stats();
        for (direction, &(bytes, packets)) in [INGRESS, EGRESS].into_iter().zip(&stats.overflow) {
            let (seen_bytes, seen_packets) = self.overflow[direction as usize];
            if bytes > seen_bytes {
                let delta = (bytes - seen_bytes, packets.saturating_sub(seen_packets));
                unsampled_apart(run, now, OwnerId::default(), direction, delta);
            }
            self.overflow[direction as usize] = (bytes, packets);
        }
        let idle = self
            .last
            .iter()
            .filter(|(_, s)| ticks - s.changed > IDLE_TICKS)
            .map(|(k, _)| k.cookie);
        let mut gone: Vec<u64> = idle.chain(self.closed.drain(..)).collect();
        gone.sort_unstable();
        gone.dedup();
        // A closed socket whose last bytes wait for their label is forgotten at a later tick.
        waiting.sort_unstable();
        let (later, gone): (Vec<u64>, Vec<u64>) = gone
            .into_iter()
            .partition(|c| waiting.binary_search(c).is_ok());
        self.closed = later;
        for cookie in gone {
            probe.forget(cookie);
            for direction in [INGRESS, EGRESS] {
                self.last.remove(&Key {
                    cookie,
                    direction,
                    _pad: 0,
                });
            }
            self.owners.remove(&cookie);
            self.unowned.remove(&cookie);
            self.tuples.remove(&cookie);
        }
    }
}

/// Adds (bytes, packets) the probe counted apart from any socket's counters, as `owner`'s in
/// `direction` (the probe's [`INGRESS`] or [`EGRESS`]).
fn unsampled_apart(run: &mut Run, now: i64, owner: OwnerId, direction: u32, delta: (u64, u64)) {
    let egress = direction == EGRESS;
    run.decoder.unsampled(
        now,
        &Unsampled {
            vantage: Vantage {
                owner,
                src_local: Some(egress),
                at_socket: true,
            },
            tuple: None,
            direction: if egress {
                Direction::Out
            } else {
                Direction::In
            },
            bytes: delta.0,
            packets: delta.1,
        },
    );
}

/// What the pcap source remembers: /proc's socket table and the owner found per tuple.
#[derive(Default)]
struct PcapState {
    sockets: SocketOwners,
    read_at: Option<Instant>,
    /// (protocol, source, destination) → the owner and whether the source is its socket.
    flows: FxHashMap<SocketTuple, (OwnerId, bool)>,
}

impl PcapState {
    fn packet(&mut self, pkt: &RawPacket<'_>, run: &mut Run) {
        let vantage = match tuple_of(pkt, true) {
            Some(t @ (6 | 17, _, _)) => self.vantage(t, run),
            _ => Vantage::default(),
        };
        run.decoder.packet_of(pkt, vantage);
    }

    fn vantage(&mut self, t: SocketTuple, run: &mut Run) -> Vantage {
        let found = self.flows.get(&t).copied().or_else(|| {
            let (proto, src, dst) = t;
            let lookup = |s: &SocketOwners| {
                s.lookup(proto, src, dst)
                    .map(|p| (p, true))
                    .or_else(|| s.lookup(proto, dst, src).map(|p| (p, false)))
            };
            let mut hit = lookup(&self.sockets);
            if hit.is_none() && self.read_at.is_none_or(|at| at.elapsed() >= PROC_REFRESH) {
                self.sockets = SocketOwners::read();
                self.read_at = Some(Instant::now());
                hit = lookup(&self.sockets);
            }
            let (pid, src_local) = hit?;
            let owner = run.intern_pid(pid, None, None);
            if self.flows.len() >= MAX_TUPLES {
                self.flows.clear();
            }
            self.flows.insert(t, (owner, src_local));
            self.flows.insert((proto, dst, src), (owner, !src_local));
            Some((owner, src_local))
        });
        match found {
            Some((owner, src_local)) => Vantage {
                owner,
                src_local: Some(src_local),
                at_socket: false,
            },
            None => Vantage::default(),
        }
    }
}
