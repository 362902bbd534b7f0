//! The first decoder of every TCP connection: holds the first bytes each side sends, offers them
//! to the probes in [`TCP_PROBES`] order, and hands the connection to the decoder that claims it.

use super::{
    Conn, DecodeCtx, LabelId, LabelTable, PROBE_WINDOW, Probe, Side, StreamDecoder, TCP_PROBES,
};
use crate::account::record::Category;

/// A connection whose protocol is not known yet, or known.
pub struct Classifier {
    held: [Vec<u8>; 2],
    conn: Conn,
    state: State,
    /// `other` / `tcp`: the label when no decoder claims the connection.
    unknown: LabelId,
    /// The label while probing: of a connection that never carries a payload byte.
    silent: LabelId,
}

enum State {
    Probing,
    Decoding(Box<dyn StreamDecoder>),
    /// No decoder claimed it: every byte is `other` / `tcp`.
    Unknown,
}

impl Classifier {
    /// A classifier for connection `conn`; `silent`, if given, labels it while no payload byte
    /// has told what it is (else `other` / `tcp`).
    pub fn new(conn: Conn, labels: &mut LabelTable, silent: Option<LabelId>) -> Classifier {
        let unknown = unknown_tcp(labels);
        Classifier {
            held: [Vec::new(), Vec::new()],
            conn,
            state: State::Probing,
            unknown,
            silent: silent.unwrap_or(unknown),
        }
    }

    /// Whether a decoder (or the `other` verdict) has been chosen.
    pub fn decided(&self) -> bool {
        !matches!(self.state, State::Probing)
    }

    /// Whether the connection's label is final (decided, and the decoder knows it).
    pub fn label_known(&self) -> bool {
        match &self.state {
            State::Decoding(d) => d.connection_known(),
            State::Unknown => true,
            State::Probing => false,
        }
    }

    fn probe(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) -> Option<Box<dyn StreamDecoder>> {
        let first = &self.held[side.index()];
        let mut undecided = false;
        for p in TCP_PROBES {
            match p.probe(side, first, &self.conn, ctx) {
                Probe::Yes(d) => return Some(d),
                Probe::NeedMore => undecided = true,
                Probe::No => {}
            }
        }
        if undecided && first.len() < PROBE_WINDOW {
            return None;
        }
        self.state = State::Unknown;
        None
    }

    /// Replays the held bytes of both sides into the chosen state.
    fn release(&mut self, ctx: &mut DecodeCtx<'_>) {
        for side in Side::BOTH {
            let held = std::mem::take(&mut self.held[side.index()]);
            if !held.is_empty() {
                self.data(side, &held, ctx);
            }
        }
    }
}

/// The label of TCP connections no decoder claimed.
pub fn unknown_tcp(labels: &mut LabelTable) -> LabelId {
    labels.decoded(Category::Other, "tcp", "data")
}

impl StreamDecoder for Classifier {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        match &mut self.state {
            State::Decoding(d) => d.data(side, bytes, ctx),
            State::Unknown => ctx.emit(side, bytes.len() as u64, self.unknown, 0),
            State::Probing => {
                self.held[side.index()].extend_from_slice(bytes);
                if let Some(d) = self.probe(side, ctx) {
                    self.state = State::Decoding(d);
                }
                if self.decided() {
                    self.release(ctx);
                }
            }
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        if let State::Probing = self.state {
            self.state = State::Unknown;
            self.release(ctx);
        }
        match &mut self.state {
            State::Decoding(d) => d.gap(side, len, ctx),
            State::Unknown => ctx.emit(side, len, self.unknown, 0),
            State::Probing => {}
        }
    }

    fn connection_label(&self) -> LabelId {
        match &self.state {
            State::Decoding(d) => d.connection_label(),
            State::Unknown => self.unknown,
            State::Probing if self.held.iter().all(Vec::is_empty) => self.silent,
            State::Probing => self.unknown,
        }
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        match &self.state {
            State::Decoding(d) => d.settled(side),
            State::Unknown => Some(self.unknown),
            State::Probing => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        let held: usize = self.held.iter().map(Vec::capacity).sum();
        match &self.state {
            State::Decoding(d) => held + std::mem::size_of_val(&**d) + d.heap_bytes(),
            State::Unknown | State::Probing => held,
        }
    }
}
