//! Reading capture files on a thread of their own, so that libpcap's reads and copies (about a
//! third of a one-thread run) overlap the decoding. Packets reach the caller in batches, in the
//! order [`CaptureSet::for_each`] reads them, with the same progress counts. A stop request ends
//! the reading; the batches already read (a few thousand packets at most) are still handed over.

use std::sync::mpsc;

use super::pcap_file::CaptureSet;
use super::{LinkType, RawPacket};

/// Packets per batch, at most.
const BATCH_PACKETS: usize = 1024;
/// Bytes of packet data per batch before it is handed over early.
const BATCH_BYTES: usize = 512 * 1024;
/// Batches read ahead of the decoding, at most: with the batch being read and the one being
/// decoded, about 3 MiB.
const QUEUED_BATCHES: usize = 4;

/// Packets copied out of libpcap's buffer.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    items: Vec<Item>,
}

/// One packet of a [`Batch`]: its bytes end at `end` in the batch's data, where the previous
/// packet's end.
struct Item {
    ts_ns: i64,
    link: LinkType,
    wire_len: u32,
    end: usize,
    /// Capture bytes read when the packet was, for progress reports.
    read: u64,
}

impl Batch {
    fn push(&mut self, pkt: &RawPacket<'_>, read: u64) {
        self.data.extend_from_slice(pkt.data);
        self.items.push(Item {
            ts_ns: pkt.ts_ns,
            link: pkt.link,
            wire_len: pkt.wire_len,
            end: self.data.len(),
            read,
        });
    }

    fn full(&self) -> bool {
        self.items.len() >= BATCH_PACKETS || self.data.len() >= BATCH_BYTES
    }

    /// Calls `f` on each packet in order.
    fn each(&self, f: &mut impl FnMut(&RawPacket<'_>, u64)) {
        let mut start = 0;
        for it in &self.items {
            let pkt = RawPacket {
                ts_ns: it.ts_ns,
                link: it.link,
                data: &self.data[start..it.end],
                wire_len: it.wire_len,
            };
            f(&pkt, it.read);
            start = it.end;
        }
    }
}

/// Calls `f` for every packet of `captures`, as [`CaptureSet::for_each`] does, with the reading
/// done on another thread when the host has more than one core (on this one otherwise, or when
/// no thread can be started).
pub fn for_each(captures: &mut CaptureSet, mut f: impl FnMut(&RawPacket<'_>, u64)) {
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        return captures.for_each(f);
    }
    let started = std::thread::scope(|s| {
        let (batches, batches_rx) = mpsc::sync_channel::<Batch>(QUEUED_BATCHES);
        let (spent, spent_rx) = mpsc::channel::<Batch>();
        let reading = &mut *captures;
        let spawned = std::thread::Builder::new()
            .name("read".into())
            .spawn_scoped(s, move || {
                let mut b = Batch::default();
                let mut open = true;
                reading.for_each(|pkt, read| {
                    if !open {
                        return;
                    }
                    b.push(pkt, read);
                    if b.full() {
                        let mut next = spent_rx.try_recv().unwrap_or_default();
                        next.data.clear();
                        next.items.clear();
                        open = batches.send(std::mem::replace(&mut b, next)).is_ok();
                    }
                });
                if open && !b.items.is_empty() {
                    let _ = batches.send(b);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a reading thread; reading on this one");
            return false;
        }
        for b in batches_rx {
            b.each(&mut f);
            let _ = spent.send(b);
        }
        true
    });
    if !started {
        captures.for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Each packet's time, link type, bytes, wire length and progress count.
    type Seen = Vec<(i64, LinkType, Vec<u8>, u32, u64)>;

    fn sample(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../samples")
            .join(name)
    }

    /// The packets of `paths` and the errors met, read on this thread or read ahead, stopping
    /// after `stop_after` packets.
    fn read(paths: &[PathBuf], ahead: bool, stop_after: usize) -> (Seen, Vec<String>) {
        let mut set = CaptureSet::open(paths).expect("a sample opens");
        let stop = Arc::new(AtomicBool::new(false));
        set.stop_when(Arc::clone(&stop));
        let mut seen = Seen::new();
        let f = |p: &RawPacket<'_>, read: u64| {
            seen.push((p.ts_ns, p.link, p.data.to_vec(), p.wire_len, read));
            if seen.len() == stop_after {
                stop.store(true, Ordering::Relaxed);
            }
        };
        if ahead {
            for_each(&mut set, f);
        } else {
            set.for_each(f);
        }
        let errors = set.take_errors().iter().map(|e| e.to_string()).collect();
        (seen, errors)
    }

    /// Read ahead, a capture gives the same packets with the same progress counts and errors:
    /// one file, several merged in time order, a truncated one, and a stop request (the packets
    /// read ahead of it are still handed over: the two differ only in where they end).
    #[test]
    fn reading_ahead_reads_what_one_thread_reads() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let whole = std::fs::read(sample("relay-meshsub-gossip.pcap")).expect("the sample");
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).expect("a truncated copy");
        let sets = [
            vec![sample("relay-meshsub-gossip.pcap")],
            vec![
                sample("libp2p-noise-sll.pcap"),
                sample("libp2p-noise-pcapng.pcapng"),
                sample("bt-transmission-utp.pcap"),
            ],
            vec![cut],
        ];
        for paths in &sets {
            let one = read(paths, false, 0);
            assert!(
                one.0.len() > BATCH_PACKETS / 2,
                "{paths:?}: most of a batch"
            );
            assert_eq!(read(paths, true, 0), one, "{paths:?}");
        }
        assert!(
            read(&sets[0], false, 0).0.len() > BATCH_PACKETS,
            "spans batches"
        );
        let cut_errors = &read(&sets[2], true, 0).1;
        assert_eq!(cut_errors.len(), 1, "the truncated file's error is kept");
        let (stopped, _) = read(&sets[0], true, 100);
        let (all, _) = read(&sets[0], false, 0);
        assert!(stopped.len() >= 100);
        assert_eq!(stopped[..], all[..stopped.len()]);
    }
}
