//! Decoding on several threads ([`Config::threads`]): the reading thread hands each packet, in
//! batches, to the worker owning its host pair, each worker a whole [`Analyzer`]. Flows of
//! different host pairs do not meet until a decoder writes state shared across flows or a
//! limit is near (see [`Analyzer::diverged`]); until then each worker's rows are exactly the
//! one-thread run's rows of its flows. The idle sweeps happen where the one-thread run makes
//! them (the reader keeps the capture's clock), so the rows of each sweep come out in the same
//! windows, merged in window order. BitTorrent peers, learned on one host pair and looked up
//! on others, are shared so that each lookup sees what the one-thread run's would (see
//! [`ShardPeers`]). When a worker diverges, the run goes on on one thread from the start,
//! leaving out the rows the workers already handed out.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use rustc_hash::FxHasher;

use crate::Error;
use crate::account::record::Row;
use crate::analyze::{Analyzer, BATCH_ROWS, Config, Outputs, SWEEP_NS, Stats};
use crate::decode::bittorrent::shared::{Moment, ShardPeers, SharedPeers};
use crate::source::link::{self, Frame};
use crate::source::pcap_file::CaptureSet;
use crate::source::{LinkType, RawPacket};

/// Packets read between two hand-outs of every worker's batch.
const BATCH_PACKETS: usize = 1024;
/// Batches waiting per worker before the reader waits for it.
const QUEUED_BATCHES: usize = 4;
/// Packets between two progress reports.
const PROGRESS_PACKETS: u64 = 65_536;

/// How a run on several threads ended.
pub(crate) enum Outcome {
    /// Every worker kept to its flows: the rows handed out are the one-thread run's.
    Done {
        stats: Box<Stats>,
        input_errors: Vec<Error>,
    },
    /// A worker's result could differ from here on: the rows of the idle sweeps up to packet
    /// `through` (counted from 1) were handed out, the rest must come from one thread.
    Diverged { through: u64, why: &'static str },
}

/// A worker's packets in capture order, with the sweeps between them.
struct Batch {
    data: Vec<u8>,
    items: Vec<Item>,
    /// Packets read when the batch was handed out: the worker has all of its own up to here.
    read: u64,
}

enum Item {
    /// Packet `n` of the run (counted from 1).
    Packet {
        n: u64,
        ts_ns: i64,
        link: LinkType,
        wire_len: u32,
        start: usize,
        end: usize,
    },
    /// The one-thread run sweeps here, its clock at `max_ns`, `through` packets read.
    Sweep { max_ns: i64, through: u64 },
}

impl Batch {
    /// A batch of no packets, which allocates nothing.
    fn empty() -> Batch {
        Batch {
            data: Vec::new(),
            items: Vec::new(),
            read: 0,
        }
    }

    fn new() -> Batch {
        Batch {
            data: Vec::with_capacity(BATCH_PACKETS * 256),
            items: Vec::with_capacity(BATCH_PACKETS),
            read: 0,
        }
    }
}

/// What a worker tells the merging thread.
enum Report {
    /// The rows of the windows a sweep closed.
    Swept { through: u64, rows: Vec<Row> },
    /// The worker's result could differ from here on, for this reason.
    Diverged(&'static str),
    /// The end: statistics, and the rows of the windows still open, oldest first.
    Done { stats: Box<Stats>, rows: Vec<Row> },
}

/// Reads `paths` through `workers` analyzers into `out`. Fails only when no capture opens.
pub(crate) fn run(
    paths: &[PathBuf],
    cfg: &Config,
    workers: usize,
    out: &mut Outputs<'_, '_>,
    stop: &Arc<AtomicBool>,
    progress: &mut impl FnMut(u64),
) -> Result<Outcome, Error> {
    let mut captures = CaptureSet::open(paths)?;
    captures.stop_when(Arc::clone(stop));
    let halt = Arc::new(AtomicBool::new(false));
    captures.stop_when(Arc::clone(&halt));
    let mut merge = Merge::default();
    let peers = SharedPeers::new(workers);
    std::thread::scope(|s| {
        let mut senders = Vec::with_capacity(workers);
        for i in 0..workers {
            let (batches, batches_rx) = mpsc::sync_channel(QUEUED_BATCHES);
            let (reports, reports_rx) = mpsc::channel();
            let (cfg, peers) = (cfg.clone(), ShardPeers::new(&peers, i));
            let spawned = std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(s, move || work(cfg, workers, peers, &batches_rx, &reports));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a decoding thread; decoding on one");
                return Ok(Outcome::Diverged {
                    through: 0,
                    why: "a decoding thread did not start",
                });
            }
            senders.push(batches);
            merge.reports.push(reports_rx);
            merge.queued.push(VecDeque::new());
        }
        let mut reader = Reader {
            batches: (0..workers).map(|_| Batch::new()).collect(),
            senders,
            n: 0,
            max_ns: i64::MIN,
            last_sweep_ns: i64::MIN,
        };
        captures.for_each(|pkt, read| {
            reader.packet(pkt);
            if reader.n.is_multiple_of(PROGRESS_PACKETS) {
                progress(read);
            }
            if reader.n.is_multiple_of(BATCH_PACKETS as u64) {
                if !reader.hand_out() {
                    halt.store(true, Ordering::Relaxed);
                }
                merge.poll(out, false);
                if merge.diverged.is_some() {
                    halt.store(true, Ordering::Relaxed);
                }
            }
        });
        reader.hand_out();
        drop(reader);
        let input_errors = captures.take_errors();
        merge.poll(out, true);
        Ok(match merge.finish(out) {
            Some(stats) => Outcome::Done {
                stats,
                input_errors,
            },
            None => Outcome::Diverged {
                through: merge.through,
                why: merge.diverged.unwrap_or("a decoding thread stopped"),
            },
        })
    })
}

/// The reading side: batches per worker and the capture's clock.
struct Reader {
    batches: Vec<Batch>,
    senders: Vec<SyncSender<Batch>>,
    /// Packets read.
    n: u64,
    max_ns: i64,
    last_sweep_ns: i64,
}

impl Reader {
    /// Adds a packet to its worker's batch, and a sweep to every batch where the one-thread
    /// run sweeps.
    fn packet(&mut self, pkt: &RawPacket<'_>) {
        self.n += 1;
        let b = &mut self.batches[route(pkt, self.senders.len())];
        let start = b.data.len();
        b.data.extend_from_slice(pkt.data);
        b.items.push(Item::Packet {
            n: self.n,
            ts_ns: pkt.ts_ns,
            link: pkt.link,
            wire_len: pkt.wire_len,
            start,
            end: b.data.len(),
        });
        let ts = pkt.ts_ns;
        if ts > self.max_ns {
            self.max_ns = ts;
            if ts.saturating_sub(self.last_sweep_ns) >= SWEEP_NS {
                self.last_sweep_ns = ts;
                for b in &mut self.batches {
                    b.items.push(Item::Sweep {
                        max_ns: ts,
                        through: self.n,
                    });
                }
            }
        }
    }

    /// Hands every worker its batch, an empty one included: it tells the worker how far the run
    /// has read, which another worker's lookup may be waiting for (see [`ShardPeers`]); false
    /// when a worker has stopped.
    fn hand_out(&mut self) -> bool {
        let mut all = true;
        for (b, tx) in self.batches.iter_mut().zip(&self.senders) {
            let batch = if b.items.is_empty() {
                Batch::empty()
            } else {
                std::mem::replace(b, Batch::new())
            };
            all &= tx
                .send(Batch {
                    read: self.n,
                    ..batch
                })
                .is_ok();
        }
        all
    }
}

/// The worker of a packet: by its host pair (either direction), non-IP frames to the first.
fn route(pkt: &RawPacket<'_>, workers: usize) -> usize {
    match link::parse(pkt) {
        Frame::NonIp { .. } => 0,
        Frame::Ip(ip) => {
            let mut h = FxHasher::default();
            (ip.src.min(ip.dst), ip.src.max(ip.dst)).hash(&mut h);
            ((u128::from(h.finish()) * workers as u128) >> 64) as usize
        }
    }
}

/// A worker: its packets and sweeps through a shard analyzer, until the batches end or the
/// analyzer diverges.
fn work(
    cfg: Config,
    workers: usize,
    peers: ShardPeers,
    batches: &Receiver<Batch>,
    reports: &Sender<Report>,
) {
    let mut a = Analyzer::shard(cfg, workers, peers);
    for batch in batches {
        for item in &batch.items {
            match *item {
                Item::Packet {
                    n,
                    ts_ns,
                    link,
                    wire_len,
                    start,
                    end,
                } => {
                    a.at(Moment(n, 0), n - 1);
                    a.packet(&RawPacket {
                        ts_ns,
                        link,
                        data: &batch.data[start..end],
                        wire_len,
                    });
                }
                Item::Sweep { max_ns, through } => {
                    a.at(Moment(through, 1), through);
                    a.sweep_at(max_ns);
                }
            }
            if let Some(why) = a.diverged() {
                let _ = reports.send(Report::Diverged(why));
                return;
            }
            if let Item::Sweep { through, .. } = *item {
                let rows = a.take_rows();
                let _ = reports.send(Report::Swept { through, rows });
            }
        }
        a.at(Moment(batch.read, 1), batch.read);
    }
    a.at(Moment::END, u64::MAX);
    let stats = a.finish();
    let report = if let Some(why) = a.diverged() {
        Report::Diverged(why)
    } else {
        Report::Done {
            stats: Box::new(stats),
            rows: a.drain(usize::MAX),
        }
    };
    let _ = reports.send(report);
}

/// The merging side: reports per worker, handed out sweep by sweep.
#[derive(Default)]
struct Merge {
    reports: Vec<Receiver<Report>>,
    queued: Vec<VecDeque<Report>>,
    /// Packets up to the last sweep whose rows were handed out.
    through: u64,
    /// Why a worker diverged, once one did.
    diverged: Option<&'static str>,
}

impl Merge {
    /// Takes the workers' reports (all of them, when `to_end`) and hands out the rows of every
    /// sweep all workers have reported.
    fn poll(&mut self, out: &mut Outputs<'_, '_>, to_end: bool) {
        for (rx, q) in self.reports.iter().zip(&mut self.queued) {
            if to_end {
                q.extend(rx.iter());
            } else {
                q.extend(rx.try_iter());
            }
        }
        while self.diverged.is_none() && self.queued.iter().all(|q| !q.is_empty()) {
            let why = self.queued.iter().find_map(|q| match q.front() {
                Some(Report::Diverged(why)) => Some(*why),
                _ => None,
            });
            if why.is_some() {
                self.diverged = why;
                return;
            }
            if !self
                .queued
                .iter()
                .all(|q| matches!(q.front(), Some(Report::Swept { .. })))
            {
                return;
            }
            let mut all = Vec::new();
            for q in &mut self.queued {
                if let Some(Report::Swept { through, rows }) = q.pop_front() {
                    self.through = through;
                    all.extend(rows);
                }
            }
            hand_out_rows(out, all);
        }
    }

    /// After the last [`Merge::poll`]: the merged statistics, and the last rows handed out;
    /// `None` when a worker diverged or stopped without its report.
    fn finish(&mut self, out: &mut Outputs<'_, '_>) -> Option<Box<Stats>> {
        if self.diverged.is_some() {
            return None;
        }
        let mut stats = Box::<Stats>::default();
        let mut rows = Vec::new();
        for q in &mut self.queued {
            match q.pop_front() {
                Some(Report::Done { stats: s, rows: r }) => {
                    stats.merge(&s);
                    rows.extend(r);
                }
                Some(Report::Diverged(why)) => {
                    self.diverged = Some(why);
                    return None;
                }
                _ => return None,
            }
        }
        hand_out_rows(out, rows);
        Some(stats)
    }
}

/// Hands rows of several workers to the sinks in window order (stable: each worker's own order
/// within a window is kept), in batches.
fn hand_out_rows(out: &mut Outputs<'_, '_>, mut rows: Vec<Row>) {
    if rows.is_empty() {
        return;
    }
    rows.sort_by_key(|r| r.window_start_us);
    for chunk in rows.chunks(BATCH_ROWS) {
        out.each(|s| s.write(chunk));
    }
}
