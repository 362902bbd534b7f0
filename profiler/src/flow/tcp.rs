//! TCP reassembly of one direction: segments in, each stream byte delivered once and in order.
//! Out-of-order segments wait in a bounded buffer; when a bound is hit the missing bytes become a
//! gap. Every packet's wire bytes are queued for labelling ([`PendingQueue`]) or reported as a
//! retransmission, so none is lost.

use std::collections::BTreeMap;

use crate::account::pending::{PendingQueue, Segment};

/// Out-of-order bytes one direction may hold before the oldest hole is declared a gap.
pub const DIRECTION_BUFFER_LIMIT: usize = 256 * 1024;

/// What reassembly hands on, in stream order.
pub enum Chunk<'a> {
    /// New stream bytes (their packet is already queued for labelling).
    Data(&'a [u8]),
    /// Stream bytes that will never be seen (lost, cut by the snap length, or given up on).
    Gap(u64),
    /// A packet that carried only bytes already delivered: counted as a retransmission.
    Retransmission { wire: u32, window: i64 },
}

/// The shared bound on out-of-order bytes held by all flows, and how often it or a direction's
/// own bound was hit.
#[derive(Debug)]
pub struct Budget {
    pub used: usize,
    pub limit: usize,
    pub hits: u64,
    /// Whether the shared bound itself was ever exceeded.
    pub exceeded: bool,
}

/// A segment waiting for the bytes in front of it.
struct Held {
    data: Vec<u8>,
    /// Payload length on the wire (≥ `data.len()` when the snap length cut it).
    wire_payload: u64,
    wire: u32,
    window: i64,
}

/// Reassembly state of one direction.
#[derive(Default)]
pub struct Direction {
    next_seq: Option<u32>,
    /// Stream offset of `next_seq`.
    offset: u64,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Packets delivered but not labelled yet.
    pub pending: PendingQueue,
}

/// One segment's fields, as reassembly needs them.
pub struct Seg<'a> {
    pub seq: u32,
    pub syn: bool,
    /// Captured payload bytes.
    pub payload: &'a [u8],
    /// Payload length on the wire.
    pub wire_payload: u32,
    /// IP total length of the packet.
    pub wire: u32,
    pub window: i64,
}

impl Direction {
    /// Takes one segment with payload; `out` receives what it makes deliverable.
    pub fn segment(&mut self, s: &Seg<'_>, budget: &mut Budget, out: &mut impl FnMut(Chunk<'_>)) {
        let seq = if s.syn { s.seq.wrapping_add(1) } else { s.seq };
        let next = *self.next_seq.get_or_insert(seq);
        let rel = i64::from(seq.wrapping_sub(next) as i32);
        let len = i64::from(s.wire_payload);
        let data = &s.payload[..s.payload.len().min(s.wire_payload as usize)];
        if rel + len <= 0 {
            out(Chunk::Retransmission {
                wire: s.wire,
                window: s.window,
            });
            return;
        }
        if rel > 0 {
            self.hold(self.offset + rel as u64, data, s, budget, out);
            return;
        }
        let skip = (-rel) as usize;
        let data = data.get(skip..).unwrap_or_default();
        self.deliver(
            data,
            (len - rel.abs()) as u64,
            s.wire,
            s.window,
            rel < 0,
            out,
        );
        self.drain(budget, out);
    }

    /// Heap bytes: held segments and packets waiting for a label.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::btree_bytes(&self.held) + self.held_bytes + self.pending.heap_bytes()
    }

    /// Nothing held and nothing waiting for a label.
    pub fn idle(&self) -> bool {
        self.held.is_empty() && self.pending.bytes() == 0
    }

    /// The next expected sequence number, once one was seen.
    pub fn next_seq(&self) -> Option<u32> {
        self.next_seq
    }

    /// Delivers everything still held, declaring the holes in front of it gaps (flow end).
    pub fn finish(&mut self, budget: &mut Budget, out: &mut impl FnMut(Chunk<'_>)) {
        while !self.held.is_empty() {
            self.skip_to_held(out);
            self.drain(budget, out);
        }
    }

    fn hold(
        &mut self,
        at: u64,
        data: &[u8],
        s: &Seg<'_>,
        budget: &mut Budget,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        if self
            .held
            .get(&at)
            .is_some_and(|h| h.wire_payload >= u64::from(s.wire_payload))
        {
            out(Chunk::Retransmission {
                wire: s.wire,
                window: s.window,
            });
            return;
        }
        let held = Held {
            data: data.to_vec(),
            wire_payload: u64::from(s.wire_payload),
            wire: s.wire,
            window: s.window,
        };
        self.held_bytes += held.data.len();
        budget.used += held.data.len();
        if let Some(old) = self.held.insert(at, held) {
            self.held_bytes -= old.data.len();
            budget.used -= old.data.len();
            out(Chunk::Retransmission {
                wire: old.wire,
                window: old.window,
            });
        }
        while self.held_bytes > DIRECTION_BUFFER_LIMIT || budget.used > budget.limit {
            budget.hits += 1;
            budget.exceeded |= budget.used > budget.limit;
            self.skip_to_held(out);
            self.drain(budget, out);
            if self.held.is_empty() {
                break;
            }
        }
    }

    /// Declares the hole before the first held segment a gap.
    fn skip_to_held(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        if let Some(&first) = self.held.keys().next()
            && first > self.offset
        {
            let gap = first - self.offset;
            out(Chunk::Gap(gap));
            self.advance(gap);
        }
    }

    /// Delivers held segments that have become contiguous.
    fn drain(&mut self, budget: &mut Budget, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.offset {
                return;
            }
            let (at, h) = entry.remove_entry();
            self.held_bytes -= h.data.len();
            budget.used -= h.data.len();
            let overlap = self.offset - at;
            if overlap >= h.wire_payload {
                out(Chunk::Retransmission {
                    wire: h.wire,
                    window: h.window,
                });
                continue;
            }
            let data = h.data.get(overlap as usize..).unwrap_or_default();
            self.deliver(
                data,
                h.wire_payload - overlap,
                h.wire,
                h.window,
                overlap > 0,
                out,
            );
        }
    }

    /// Queues the packet and hands its new bytes on; bytes on the wire but not captured are a gap.
    fn deliver(
        &mut self,
        data: &[u8],
        wire_len: u64,
        wire: u32,
        window: i64,
        retrans: bool,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        self.pending.push(Segment {
            start: self.offset,
            end: self.offset + wire_len,
            wire,
            window,
            retrans,
        });
        out(Chunk::Data(data));
        let missing = wire_len - data.len() as u64;
        if missing > 0 {
            out(Chunk::Gap(missing));
        }
        self.advance(wire_len);
    }

    fn advance(&mut self, n: u64) {
        self.offset += n;
        if let Some(s) = &mut self.next_seq {
            *s = s.wrapping_add(n as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(seq offset, bytes)` segments after an initial sequence number of 1000; returns the
    /// delivered stream (gaps as `_`) and the number of retransmissions reported.
    fn run(segs: &[(u32, &[u8])], limit: usize) -> (String, usize, u64) {
        let mut d = Direction::default();
        let mut budget = Budget {
            used: 0,
            limit,
            hits: 0,
            exceeded: false,
        };
        let mut stream = String::new();
        let mut retrans = 0;
        let mut take = |c: Chunk<'_>| match c {
            Chunk::Data(b) => stream.push_str(std::str::from_utf8(b).expect("ascii")),
            Chunk::Gap(n) => stream.push_str(&"_".repeat(n as usize)),
            Chunk::Retransmission { .. } => retrans += 1,
        };
        for &(off, data) in segs {
            let s = Seg {
                seq: 1000 + off,
                syn: false,
                payload: data,
                wire_payload: data.len() as u32,
                wire: 40 + data.len() as u32,
                window: 0,
            };
            d.segment(&s, &mut budget, &mut take);
        }
        d.finish(&mut budget, &mut take);
        assert_eq!(budget.used, 0, "everything held was released");
        (stream, retrans, budget.hits)
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted_segments() {
        let segs: [(u32, &[u8]); 6] = [
            (0, b"012"),
            (6, b"678"),
            (3, b"345"),
            (3, b"345"),
            (2, b"2345"),
            (9, b"9"),
        ];
        assert_eq!(run(&segs, 1 << 20), ("0123456789".to_string(), 2, 0));
    }

    #[test]
    fn overlapping_segment_delivers_only_new_bytes() {
        let segs: [(u32, &[u8]); 2] = [(0, b"0123"), (2, b"23456")];
        assert_eq!(run(&segs, 1 << 20), ("0123456".to_string(), 0, 0));
    }

    #[test]
    fn lost_segment_becomes_a_gap_at_the_limit_or_at_the_end() {
        let segs: [(u32, &[u8]); 3] = [(0, b"01"), (4, b"45"), (6, b"67")];
        assert_eq!(run(&segs, 1 << 20), ("01__4567".to_string(), 0, 0));
        let (stream, _, hits) = run(&segs, 1);
        assert_eq!((stream.as_str(), hits > 0), ("01__4567", true));
    }

    #[test]
    fn every_packet_is_queued_for_labelling_once() {
        let mut d = Direction::default();
        let mut budget = Budget {
            used: 0,
            limit: 1 << 20,
            hits: 0,
            exceeded: false,
        };
        for (off, data) in [(3u32, &b"345"[..]), (0, b"012")] {
            let s = Seg {
                seq: 1000 + off,
                syn: false,
                payload: data,
                wire_payload: 3,
                wire: 43,
                window: 0,
            };
            d.segment(&s, &mut budget, &mut |_| {});
        }
        assert_eq!(d.pending.bytes(), 3, "the first packet seen set the start");
    }
}
