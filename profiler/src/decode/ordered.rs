//! Spans whose label is decided after later bytes arrive (a gossipsub entry's topic comes after
//! its data), kept in stream order: they leave for accounting only once everything before them
//! is labelled. Muxed streams interleave, so one waiting entry holds back the spans behind it.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{DecodeCtx, LabelId, Side};

/// A span's label: known now, decided later, or the same as the span after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    Now(LabelId),
    /// Decided by [`Ordered::resolve`] with this token; `fallback` if it never is.
    Later {
        token: u32,
        fallback: LabelId,
    },
    /// The label of the next span: a muxer frame header, framing `fallback` carried by the
    /// first unit of its body (rule 3); `fallback` alone when no span follows.
    Next {
        fallback: LabelId,
    },
    /// A resolved [`Pending::Next`]: framing carried by `label`.
    Carried {
        label: LabelId,
        framing: LabelId,
    },
}

/// Unlabelled bytes a side may hold before every waiting span takes its fallback.
pub const WAIT_LIMIT: u64 = 512 * 1024;
/// Spans a side may hold (empty ones carrying units count too) before the same happens.
pub const WAIT_SPANS: usize = 1 << 16;

/// One span waiting: `seq` numbers it in push order (the pieces of a cut span share it).
#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    len: u64,
    label: Pending,
    units: u32,
}

/// The spans of one side not yet handed on.
#[derive(Debug, Default)]
pub struct Ordered {
    slots: VecDeque<Slot>,
    bytes: u64,
    next_token: u32,
    next_seq: u64,
    /// The slots waiting on each token, by `seq`: resolving looks at those alone, so many
    /// small spans piling up behind a waiting one cost nothing per resolve.
    waiting: FxHashMap<u32, Vec<u64>>,
    /// Bytes of the next spans pushed that were already handed on (see [`Ordered::skip`]).
    skip: u64,
    /// Slots looked at by resolves, to test their cost.
    #[cfg(test)]
    visits: u64,
}

impl Ordered {
    /// Heap bytes of the spans held.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::deque_bytes(&self.slots)
    }

    /// A fresh token for a label to be decided later.
    pub fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    /// Drops the first `n` bytes of the spans pushed next: they were handed on already, under
    /// a label given before their meaning was known.
    pub fn skip(&mut self, n: u64) {
        self.skip = self.skip.saturating_add(n);
    }

    /// Appends a span.
    pub fn push(&mut self, len: u64, label: Pending, units: u32) {
        let cut = len.min(self.skip);
        self.skip -= cut;
        let len = len - cut;
        if len > 0 || units > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Pending::Later { token, .. } = label {
                self.waiting.entry(token).or_default().push(seq);
            }
            self.bytes += len;
            self.slots.push_back(Slot {
                seq,
                len,
                label,
                units,
            });
        }
    }

    /// The index of the first slot numbered `seq`, if it still waits on `token`.
    fn find(&mut self, seq: u64, token: u32) -> Option<usize> {
        let i = self.slots.partition_point(|s| s.seq < seq);
        #[cfg(test)]
        {
            self.visits += 1;
        }
        let s = self.slots.get(i)?;
        (s.seq == seq && matches!(s.label, Pending::Later { token: t, .. } if t == token))
            .then_some(i)
    }

    /// Decides the label of every span waiting on `token`.
    pub fn resolve(&mut self, token: u32, label: LabelId) {
        for seq in self.waiting.remove(&token).unwrap_or_default() {
            if let Some(i) = self.find(seq, token) {
                self.slots[i].label = Pending::Now(label);
            }
        }
    }

    /// Decides the spans waiting on `token` part by part: the first `parts[0].0` of their bytes
    /// (in stream order) take `parts[0].1`, the next ones `parts[1].1`, and so on; bytes past the
    /// parts take the last part's label. Spans are cut where a part ends inside one.
    pub fn resolve_parts(&mut self, token: u32, parts: &[(u64, LabelId)]) {
        let Some(&(_, last)) = parts.last() else {
            return;
        };
        let mut part = 0;
        let mut left = parts[0].0;
        for seq in self.waiting.remove(&token).unwrap_or_default() {
            let Some(mut i) = self.find(seq, token) else {
                continue;
            };
            loop {
                let Slot { len, label, .. } = self.slots[i];
                while left == 0 && part + 1 < parts.len() {
                    part += 1;
                    left = parts[part].0;
                }
                let here = if part + 1 < parts.len() {
                    parts[part].1
                } else {
                    last
                };
                if len > left && part + 1 < parts.len() {
                    // The part ends inside this span: cut it, the rest waits for the next part.
                    self.slots[i].len = left;
                    self.slots[i].label = Pending::Now(here);
                    i += 1;
                    self.slots.insert(
                        i,
                        Slot {
                            seq,
                            len: len - left,
                            label,
                            units: 0,
                        },
                    );
                    left = 0;
                } else {
                    self.slots[i].label = Pending::Now(here);
                    left = left.saturating_sub(len);
                    break;
                }
            }
        }
    }

    /// Hands on the spans whose labels are known, in order; past [`WAIT_LIMIT`] bytes or
    /// [`WAIT_SPANS`] spans, waiting spans take their fallback first.
    pub fn drain(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        if self.bytes > WAIT_LIMIT || self.slots.len() > WAIT_SPANS {
            self.settle();
        }
        while let Some(&Slot {
            len, label, units, ..
        }) = self.slots.front()
        {
            let (label, framing) = match label {
                Pending::Now(l) => (l, None),
                Pending::Carried { label, framing } => (label, Some(framing)),
                Pending::Later { .. } => return,
                Pending::Next { fallback } => match self.slots.get(1).map(|s| s.label) {
                    Some(Pending::Now(l)) => (l, Some(fallback)),
                    _ => return,
                },
            };
            self.slots.pop_front();
            self.bytes -= len;
            ctx.emit_carried(side, len, label, units, framing);
        }
    }

    /// Gives every waiting span its fallback and hands everything on (gaps, limits).
    pub fn flush(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        self.settle();
        self.drain(side, ctx);
    }

    fn settle(&mut self) {
        self.waiting.clear();
        let mut next = None;
        for slot in self.slots.iter_mut().rev() {
            slot.label = match slot.label {
                Pending::Later { fallback, .. } => Pending::Now(fallback),
                Pending::Next { fallback } => Pending::Carried {
                    label: next.unwrap_or(fallback),
                    framing: fallback,
                },
                now => now,
            };
            next = match slot.label {
                Pending::Now(l) => Some(l),
                _ => next,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    #[test]
    fn parts_cut_waiting_spans_in_stream_order() {
        let other = LabelId(9);
        let (a, b) = (LabelId(1), LabelId(2));
        let mut o = Ordered::default();
        let t = o.token();
        let later = Pending::Later {
            token: t,
            fallback: other,
        };
        o.push(3, later, 1);
        o.push(5, Pending::Now(other), 0);
        o.push(40, later, 0);
        o.resolve_parts(t, &[(20, a), (23, b)]);
        let mut t = TestCtx::default();
        o.drain(Side::Initiator, &mut t.ctx());
        let got: Vec<(u64, LabelId, u32)> =
            t.spans.iter().map(|s| (s.len, s.label, s.units)).collect();
        assert_eq!(got, vec![(3, a, 1), (5, other, 0), (17, a, 0), (23, b, 0)]);
    }

    #[test]
    fn many_small_spans_behind_a_waiting_one_cost_one_look_per_resolve() {
        let (a, b) = (LabelId(1), LabelId(2));
        let mut o = Ordered::default();
        let mut t = TestCtx::default();
        let first = o.token();
        o.push(
            10,
            Pending::Later {
                token: first,
                fallback: b,
            },
            1,
        );
        let n = 20_000u64;
        for _ in 0..n {
            let tok = o.token();
            o.push(
                1,
                Pending::Later {
                    token: tok,
                    fallback: b,
                },
                1,
            );
            o.push(1, Pending::Now(b), 0);
            o.resolve(tok, a);
            o.drain(Side::Initiator, &mut t.ctx());
        }
        assert!(t.spans.is_empty(), "all held behind the first span");
        o.resolve_parts(first, &[(4, b), (6, a)]);
        o.drain(Side::Initiator, &mut t.ctx());
        assert_eq!(t.spans.iter().map(|s| s.len).sum::<u64>(), 10 + 2 * n);
        assert_eq!(
            t.spans.iter().filter(|s| s.label == a).count() as u64,
            1 + n
        );
        // One look per waiting span: scanning the pile on each resolve would be n² / 2.
        assert_eq!(o.visits, n + 1);
    }
}
