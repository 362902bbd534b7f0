//! The first decoder of every TCP connection: holds the first bytes each side sends, offers them
//! to the probes in [`TCP_PROBES`] order, and hands the connection to the decoder that claims it.

use std::net::IpAddr;

use super::udp::UdpState;
use super::{
    DecodeCtx, LabelId, LabelTable, PROBE_WINDOW, Probe, ProbeInfo, Side, StreamDecoder, TCP_PROBES,
};
use crate::account::record::Category;

/// A connection whose protocol is not known yet, or known.
pub struct Classifier {
    held: [Vec<u8>; 2],
    endpoints: [(IpAddr, u16); 2],
    state: State,
    /// `other` / `tcp`: the label while probing and when no decoder claims the connection.
    unknown: LabelId,
}

enum State {
    Probing,
    Decoding(Box<dyn StreamDecoder>),
    /// No decoder claimed it: every byte is `other` / `tcp`.
    Unknown,
}

impl Classifier {
    /// A classifier for a connection between `endpoints` (initiator, responder).
    pub fn new(endpoints: [(IpAddr, u16); 2], labels: &mut LabelTable) -> Classifier {
        Classifier {
            held: [Vec::new(), Vec::new()],
            endpoints,
            state: State::Probing,
            unknown: unknown_tcp(labels),
        }
    }

    /// Whether a decoder (or the `other` verdict) has been chosen.
    pub fn decided(&self) -> bool {
        !matches!(self.state, State::Probing)
    }

    fn probe(
        &mut self,
        side: Side,
        labels: &mut LabelTable,
        udp: &UdpState,
    ) -> Option<Box<dyn StreamDecoder>> {
        let first = &self.held[side.index()];
        let info = ProbeInfo {
            endpoints: self.endpoints,
            udp,
        };
        let mut undecided = false;
        for p in TCP_PROBES {
            match p.probe(side, first, &info, labels) {
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
                if let Some(d) = self.probe(side, ctx.labels, ctx.udp) {
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
            State::Unknown | State::Probing => self.unknown,
        }
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        match &self.state {
            State::Decoding(d) => d.settled(side),
            State::Unknown => Some(self.unknown),
            State::Probing => None,
        }
    }
}
