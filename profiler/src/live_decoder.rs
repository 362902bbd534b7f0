//! Where a live run's packets are decoded: on the thread that reads the probe or libpcap (the
//! default), or on a thread of its own (`live --threads 2`), handed over in batches in the order
//! they were read. The analyzer gets the same calls in the same order either way, so the rows are
//! the same; only the moment they reach the sinks moves (after the decoding thread's backlog).

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::Error;
use crate::account::mesh::MeshRow;
use crate::account::messages::MessageRow;
use crate::account::owners::{OwnerId, OwnerTable};
use crate::account::record::{Owner, Row};
use crate::analyze::{Analyzer, Config, Stats, Unsampled, Vantage};
use crate::node::peers::PeerBook;
use crate::source::{LinkType, RawPacket};

/// Calls per batch handed to the decoding thread, at most.
const BATCH_CALLS: usize = 4096;
/// Batches waiting for the decoding thread before the reading one waits for it.
const QUEUED_BATCHES: usize = 16;
/// Hand-outs waiting for the reading thread before the decoding one waits for it. Each tick
/// ends a batch, so while the run goes at most one per queued batch, the one being decoded and
/// the one being filled wait: the decoding thread never waits then (which could deadlock with a
/// reading thread waiting to queue a batch). At the end it waits, so that the last rows are
/// written a chunk at a time rather than all held at once.
const QUEUED_HANDOUTS: usize = QUEUED_BATCHES + 2;
/// Rows per hand-out once the run ends.
const FINAL_ROWS: usize = 1 << 16;

/// What the analyzer hands out for the sinks: rows of closed windows, relay messages and mesh
/// rows, with its statistics at that moment.
pub struct Handout {
    pub rows: Vec<Row>,
    pub messages: Vec<MessageRow>,
    pub mesh: Vec<MeshRow>,
    pub stats: Box<Stats>,
}

/// A live run's analyzer, on this thread or another.
pub enum LiveDecoder {
    Inline(Box<Analyzer>),
    Threaded(Box<Threaded>),
}

/// The reading side of an analyzer running on a thread of its own.
pub struct Threaded {
    batch: Batch,
    batches: Option<SyncSender<Batch>>,
    handouts: Receiver<Handout>,
    thread: Option<JoinHandle<()>>,
    /// The analyzer's owner table as it will be once it has taken every call sent: owners are
    /// interned here first, so that ids are known at once, and the same way there.
    owners: OwnerTable,
    /// The statistics of the latest hand-out.
    stats: Box<Stats>,
}

/// Calls of the analyzer, in the order they were made, and the packet bytes they refer to.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    calls: Vec<Call>,
}

enum Call {
    Packet {
        ts_ns: i64,
        link: LinkType,
        wire_len: u32,
        end: usize,
        vantage: Vantage,
    },
    Unsampled(i64, Unsampled),
    Owner(Owner),
    Peers(Box<PeerBook>),
    Tick(i64),
}

impl LiveDecoder {
    /// An analyzer of `cfg`, decoding on this thread or, with `thread`, on one of its own.
    pub fn new(cfg: Config, thread: bool) -> Result<LiveDecoder, Error> {
        if !thread {
            return Ok(LiveDecoder::Inline(Box::new(Analyzer::new(cfg))));
        }
        let (batches, batches_rx) = mpsc::sync_channel(QUEUED_BATCHES);
        let (handouts_tx, handouts) = mpsc::sync_channel(QUEUED_HANDOUTS);
        let thread = std::thread::Builder::new()
            .name("decode".into())
            .spawn(move || decode(Analyzer::new(cfg), &batches_rx, &handouts_tx))
            .map_err(|e| Error::Invalid(format!("cannot start the decoding thread: {e}")))?;
        Ok(LiveDecoder::Threaded(Box::new(Threaded {
            batch: Batch::default(),
            batches: Some(batches),
            handouts,
            thread: Some(thread),
            owners: OwnerTable::default(),
            stats: Box::default(),
        })))
    }

    /// [`Analyzer::packet_of`].
    pub fn packet_of(&mut self, pkt: &RawPacket<'_>, vantage: Vantage) {
        match self {
            LiveDecoder::Inline(a) => a.packet_of(pkt, vantage),
            LiveDecoder::Threaded(t) => {
                t.batch.data.extend_from_slice(pkt.data);
                let end = t.batch.data.len();
                t.call(Call::Packet {
                    ts_ns: pkt.ts_ns,
                    link: pkt.link,
                    wire_len: pkt.wire_len,
                    end,
                    vantage,
                });
            }
        }
    }

    /// [`Analyzer::unsampled`].
    pub fn unsampled(&mut self, now: i64, u: &Unsampled) {
        match self {
            LiveDecoder::Inline(a) => a.unsampled(now, u),
            LiveDecoder::Threaded(t) => t.call(Call::Unsampled(now, *u)),
        }
    }

    /// The id of `owner` in the analyzer's owner table, adding it if new.
    pub fn intern(&mut self, owner: Owner) -> OwnerId {
        match self {
            LiveDecoder::Inline(a) => a.owners().intern(owner),
            LiveDecoder::Threaded(t) => {
                let (len, overflowed) = (t.owners.len(), t.owners.overflowed);
                let id = t.owners.intern(owner.clone());
                if t.owners.len() != len || t.owners.overflowed != overflowed {
                    t.call(Call::Owner(owner));
                }
                id
            }
        }
    }

    /// Replaces the peer book encrypted relay bytes take their shards from.
    pub fn set_peers(&mut self, book: PeerBook) {
        match self {
            LiveDecoder::Inline(a) => *a.peers_mut() = book,
            LiveDecoder::Threaded(t) => t.call(Call::Peers(Box::new(book))),
        }
    }

    /// [`Analyzer::tick`]; returns what is ready for the sinks (on another thread: the
    /// hand-outs of the ticks it has decoded up to since the last call).
    pub fn tick(&mut self, now_ns: i64) -> Vec<Handout> {
        match self {
            LiveDecoder::Inline(a) => {
                a.tick(now_ns);
                vec![handout(a, Vec::new())]
            }
            LiveDecoder::Threaded(t) => {
                t.call(Call::Tick(now_ns));
                t.send();
                let ready: Vec<Handout> = t.handouts.try_iter().collect();
                if let Some(h) = ready.last() {
                    t.stats.clone_from(&h.stats);
                }
                ready
            }
        }
    }

    /// The statistics so far (on another thread: as of its latest hand-out).
    pub fn stats(&self) -> &Stats {
        match self {
            LiveDecoder::Inline(a) => a.stats(),
            LiveDecoder::Threaded(t) => &t.stats,
        }
    }

    /// Owners interned, the unknown one included.
    pub fn owners(&mut self) -> usize {
        match self {
            LiveDecoder::Inline(a) => a.owners().len(),
            LiveDecoder::Threaded(t) => t.owners.len(),
        }
    }

    /// Ends the run: hands everything left for the sinks to `out`, in order and in chunks of
    /// rows, and returns the final statistics.
    pub fn finish(
        &mut self,
        mut out: impl FnMut(Handout) -> Result<(), Error>,
    ) -> Result<Stats, Error> {
        match self {
            LiveDecoder::Inline(a) => finish(a, out),
            LiveDecoder::Threaded(t) => {
                t.send();
                drop(t.batches.take());
                let mut last = None;
                for h in t.handouts.iter() {
                    last = Some(h.stats.clone());
                    out(h)?;
                }
                match (t.thread.take().map(JoinHandle::join), last) {
                    (Some(Ok(())), Some(stats)) => Ok(*stats),
                    _ => Err(Error::Invalid(
                        "the decoding thread stopped before the end of the run".into(),
                    )),
                }
            }
        }
    }
}

impl Threaded {
    fn call(&mut self, call: Call) {
        self.batch.calls.push(call);
        if self.batch.calls.len() >= BATCH_CALLS {
            self.send();
        }
    }

    /// Hands the calls made so far to the decoding thread (waiting while it is that far behind).
    fn send(&mut self) {
        if self.batch.calls.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Some(tx) = &self.batches
            && tx.send(batch).is_err()
        {
            // The decoding thread is gone; `finish` says so.
            self.batches = None;
        }
    }
}

/// The decoding thread: every call in order, a hand-out at every tick and at the end.
fn decode(mut a: Analyzer, batches: &Receiver<Batch>, handouts: &SyncSender<Handout>) {
    for batch in batches {
        let mut start = 0;
        for call in batch.calls {
            match call {
                Call::Packet {
                    ts_ns,
                    link,
                    wire_len,
                    end,
                    vantage,
                } => {
                    let pkt = RawPacket {
                        ts_ns,
                        link,
                        data: &batch.data[start..end],
                        wire_len,
                    };
                    a.packet_of(&pkt, vantage);
                    start = end;
                }
                Call::Unsampled(now, u) => a.unsampled(now, &u),
                Call::Owner(o) => {
                    a.owners().intern(o);
                }
                Call::Peers(book) => *a.peers_mut() = *book,
                Call::Tick(now) => {
                    a.tick(now);
                    let _ = handouts.send(handout(&mut a, Vec::new()));
                }
            }
        }
    }
    let _ = finish(&mut a, |h| {
        handouts
            .send(h)
            .map_err(|_| Error::Invalid("the reading thread is gone".into()))
    });
}

/// What `a` has ready for the sinks, with `rows`' rows first.
fn handout(a: &mut Analyzer, mut rows: Vec<Row>) -> Handout {
    rows.extend(a.take_rows());
    Handout {
        rows,
        messages: a.take_messages(),
        mesh: a.take_mesh(),
        stats: Box::new(a.stats().clone()),
    }
}

/// Ends `a`'s run: hands its last hand-outs to `out` (the rows in chunks, each drained once the
/// one before was taken), each carrying the final statistics, which it returns.
fn finish(
    a: &mut Analyzer,
    mut out: impl FnMut(Handout) -> Result<(), Error>,
) -> Result<Stats, Error> {
    let stats = a.finish();
    out(handout(a, Vec::new()))?;
    loop {
        let rows = a.drain(FINAL_ROWS);
        if rows.is_empty() {
            return Ok(stats);
        }
        out(handout(a, rows))?;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::source::pcap_file::CaptureSet;

    /// Every row, relay message and final statistic of a sample fed to `decoder` the way a live
    /// run feeds it: owners interned as they appear, packets, bytes counted unsampled, ticks.
    fn feed(mut decoder: LiveDecoder) -> (Vec<Row>, Vec<MessageRow>, String) {
        let sample =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/relay-meshsub-gossip.pcap");
        let mut set = CaptureSet::open(&[sample]).expect("the sample opens");
        let mut out = Vec::new();
        let mut n = 0u32;
        set.for_each(|pkt, _| {
            n += 1;
            let owner = decoder.intern(Owner {
                pid: Some(n % 3),
                ..Owner::default()
            });
            let vantage = Vantage {
                owner,
                ..Vantage::default()
            };
            decoder.packet_of(pkt, vantage);
            if n.is_multiple_of(50) {
                let u = Unsampled {
                    vantage,
                    tuple: None,
                    direction: crate::account::record::Direction::In,
                    bytes: u64::from(n),
                    packets: 1,
                };
                decoder.unsampled(pkt.ts_ns, &u);
            }
            if n.is_multiple_of(200) {
                out.extend(decoder.tick(pkt.ts_ns + 30_000_000_000));
            }
        });
        let stats = decoder
            .finish(|h| {
                out.push(h);
                Ok(())
            })
            .expect("the decoder ends");
        let rows = out.iter().flat_map(|h| h.rows.clone()).collect();
        let messages = out.iter().flat_map(|h| h.messages.clone()).collect();
        let stats = serde_json::to_string(&stats).expect("statistics serialize");
        (rows, messages, stats)
    }

    /// On a thread of its own, the analyzer hands out the rows, messages and statistics it hands
    /// out on the reading thread, in the same order.
    #[test]
    fn a_decoding_thread_gives_what_the_reading_thread_gives() {
        let cfg = Config {
            messages: true,
            ..Config::default()
        };
        let inline = feed(LiveDecoder::new(cfg.clone(), false).expect("inline"));
        let threaded = feed(LiveDecoder::new(cfg, true).expect("a thread starts"));
        assert!(
            inline.0.len() > 20 && !inline.1.is_empty(),
            "rows and messages"
        );
        assert!(
            inline.0.iter().any(|r| r.owner.pid == Some(2)),
            "owners interned"
        );
        assert!(inline == threaded, "the same hand-outs");
    }
}
