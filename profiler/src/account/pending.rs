//! Packets whose stream bytes are delivered but not yet labelled, per TCP direction. When the
//! decoder's spans arrive, each packet's wire bytes are split over them in proportion to payload
//! bytes (rule 2), with integer shares that add up to the packet's wire length exactly.

use std::collections::VecDeque;

use super::record::Counters;
use crate::decode::LabelId;

/// A packet's new stream bytes `[start, end)` and what it costs on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    /// Wire bytes (IP total length) of the packet.
    pub wire: u32,
    /// Start of the packet's window, ns.
    pub window: i64,
    /// The packet also repeated bytes already seen.
    pub retrans: bool,
}

#[derive(Debug)]
struct Entry {
    seg: Segment,
    /// Payload bytes of this segment already labelled, and the wire bytes they took.
    done_payload: u64,
    done_wire: u64,
}

/// A contribution to one row: `window`, `label` and the counters to add.
pub type Contribution = (i64, LabelId, Counters);

/// The unlabelled packets of one direction, in stream order.
#[derive(Debug, Default)]
pub struct PendingQueue {
    entries: VecDeque<Entry>,
    /// Stream offset up to which spans have been applied.
    cursor: u64,
    /// Stream bytes of the queued packets not labelled yet.
    bytes: u64,
    /// The most recent label applied, for retransmissions of labelled bytes.
    pub last_label: Option<LabelId>,
}

impl PendingQueue {
    /// Queues a packet whose bytes were just delivered to the decoder.
    pub fn push(&mut self, seg: Segment) {
        self.bytes += seg.end - seg.start;
        self.entries.push_back(Entry {
            seg,
            done_payload: 0,
            done_wire: 0,
        });
    }

    /// Heap bytes of the queue.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::deque_bytes(&self.entries)
    }

    /// Unlabelled stream bytes queued.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Applies the next span, `len` bytes with `label` (`units` messages starting in it), to the
    /// queued packets it covers; bytes no queued packet covers (gaps) contribute nothing. With
    /// `framing`, the span is framing carried by `label`'s unit: wire bytes and packets go to
    /// `label`, payload bytes to `framing`.
    pub fn apply(
        &mut self,
        len: u64,
        label: LabelId,
        units: u32,
        framing: Option<LabelId>,
        out: &mut impl FnMut(Contribution),
    ) {
        let to = self.cursor + len;
        self.cursor = to;
        self.last_label = Some(label);
        let mut units = u64::from(units);
        while let Some(e) = self.entries.front_mut() {
            if e.seg.start >= to {
                break;
            }
            let lo = e.seg.start + e.done_payload;
            let hi = to.min(e.seg.end);
            if hi > lo {
                let part = hi - lo;
                let c = take(e, part, std::mem::take(&mut units));
                match framing {
                    Some(f) => {
                        let payload = Counters {
                            payload_bytes: part,
                            ..Counters::default()
                        };
                        out((e.seg.window, f, payload));
                        let wire = Counters {
                            payload_bytes: 0,
                            ..c
                        };
                        out((e.seg.window, label, wire));
                    }
                    None => out((e.seg.window, label, c)),
                }
                self.bytes -= part;
            }
            if e.seg.end <= to {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Labels everything still queued with `label` (flow end, decoder lag limit).
    pub fn flush(&mut self, label: LabelId, out: &mut impl FnMut(Contribution)) {
        while let Some(mut e) = self.entries.pop_front() {
            let part = e.seg.end - e.seg.start - e.done_payload;
            out((e.seg.window, label, take(&mut e, part, 0)));
        }
        self.bytes = 0;
    }
}

/// Splits one datagram of `payload` bytes costing `wire` over `spans` (in order, from its first
/// payload byte) as [`PendingQueue::apply`] does; bytes the spans leave go to `rest`.
pub fn split_datagram(
    seg: Segment,
    spans: impl IntoIterator<Item = crate::decode::Span>,
    rest: LabelId,
    out: &mut impl FnMut(Contribution),
) {
    let mut q = PendingQueue::default();
    q.push(seg);
    for s in spans {
        q.apply(s.len, s.label, s.units, s.framing, out);
    }
    q.flush(rest, out);
}

/// Takes `part` more payload bytes of an entry, with their share of its wire bytes. The packet is
/// counted once, with its first labelled bytes.
fn take(e: &mut Entry, part: u64, units: u64) -> Counters {
    let payload = e.seg.end - e.seg.start;
    let first = e.done_payload == 0;
    e.done_payload += part;
    let wire = u64::from(e.seg.wire);
    let wire_done = (wire * e.done_payload).checked_div(payload).unwrap_or(wire);
    let share = wire_done - e.done_wire;
    e.done_wire = wire_done;
    Counters {
        bytes: share,
        payload_bytes: part,
        packets: u64::from(first),
        messages: units,
        duplicates: 0,
        retrans_bytes: if e.seg.retrans { share } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, end: u64, wire: u32) -> Segment {
        Segment {
            start,
            end,
            wire,
            window: 0,
            retrans: false,
        }
    }

    #[test]
    fn wire_bytes_split_exactly_over_spans() {
        let mut q = PendingQueue::default();
        q.push(seg(0, 3, 55));
        q.push(seg(3, 10, 59));
        let mut got = Vec::new();
        for (len, l) in [(2, 1), (2, 2), (6, 3)] {
            q.apply(len, LabelId(l), 1, None, &mut |c| got.push(c));
        }
        let wire: u64 = got.iter().map(|c| c.2.bytes).sum();
        let payload: u64 = got.iter().map(|c| c.2.payload_bytes).sum();
        let packets: u64 = got.iter().map(|c| c.2.packets).sum();
        assert_eq!((wire, payload, packets), (114, 10, 2));
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn flush_takes_the_rest() {
        let mut q = PendingQueue::default();
        q.push(seg(0, 10, 60));
        let mut got = Vec::new();
        q.apply(4, LabelId(1), 1, None, &mut |c| got.push(c));
        q.flush(LabelId(2), &mut |c| got.push(c));
        assert_eq!(got.iter().map(|c| c.2.bytes).sum::<u64>(), 60);
        assert_eq!(got[1].2.payload_bytes, 6);
    }
}
