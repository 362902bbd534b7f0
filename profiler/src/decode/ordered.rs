//! Spans whose label is decided after later bytes arrive (a gossipsub entry's topic comes after
//! its data), kept in stream order: they leave for accounting only once everything before them
//! is labelled. Muxed streams interleave, so one waiting entry holds back the spans behind it.

use std::collections::VecDeque;

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
    /// The label of the next span (a muxer frame header counts with the body it carries);
    /// `fallback` when no span follows.
    Next {
        fallback: LabelId,
    },
}

/// Unlabelled bytes a side may hold before every waiting span takes its fallback.
pub const WAIT_LIMIT: u64 = 512 * 1024;

/// The spans of one side not yet handed on.
#[derive(Debug, Default)]
pub struct Ordered {
    slots: VecDeque<(u64, Pending, u32)>,
    bytes: u64,
    next_token: u32,
    /// Bytes of the next spans pushed that were already handed on (see [`Ordered::skip`]).
    skip: u64,
}

impl Ordered {
    /// A fresh token for a label to be decided later.
    pub fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    /// Drops the first `n` bytes of the spans pushed next: they were handed on already, under
    /// a label given before their meaning was known.
    pub fn skip(&mut self, n: u64) {
        self.skip += n;
    }

    /// Appends a span.
    pub fn push(&mut self, len: u64, label: Pending, units: u32) {
        let cut = len.min(self.skip);
        self.skip -= cut;
        let len = len - cut;
        if len > 0 || units > 0 {
            self.bytes += len;
            self.slots.push_back((len, label, units));
        }
    }

    /// Decides the label of every span waiting on `token`.
    pub fn resolve(&mut self, token: u32, label: LabelId) {
        for slot in self.slots.iter_mut().rev() {
            if matches!(slot.1, Pending::Later { token: t, .. } if t == token) {
                slot.1 = Pending::Now(label);
            }
        }
    }

    /// Hands on the spans whose labels are known, in order; past [`WAIT_LIMIT`] waiting spans
    /// take their fallback first.
    pub fn drain(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        if self.bytes > WAIT_LIMIT {
            self.settle();
        }
        while let Some(&(len, label, units)) = self.slots.front() {
            let label = match label {
                Pending::Now(l) => l,
                Pending::Later { .. } => return,
                Pending::Next { .. } => match self.slots.get(1) {
                    Some((_, Pending::Now(l), _)) => *l,
                    _ => return,
                },
            };
            self.slots.pop_front();
            self.bytes -= len;
            ctx.emit(side, len, label, units);
        }
    }

    /// Gives every waiting span its fallback and hands everything on (gaps, limits).
    pub fn flush(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        self.settle();
        self.drain(side, ctx);
    }

    fn settle(&mut self) {
        let mut next = None;
        for slot in self.slots.iter_mut().rev() {
            slot.1 = match slot.1 {
                Pending::Later { fallback, .. } => Pending::Now(fallback),
                Pending::Next { fallback } => Pending::Now(next.unwrap_or(fallback)),
                now => now,
            };
            if let Pending::Now(l) = slot.1 {
                next = Some(l);
            }
        }
    }
}
