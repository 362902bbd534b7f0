//! The frames of encrypted libp2p connections as decoders see them (the `--frames` table): each
//! Noise transport frame and TLS record, its size, and what the inference took it for.

use super::Side;

/// One frame or record, as its first bytes arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEvent {
    pub side: Side,
    pub time_ns: i64,
    /// `/noise` or `/tls/1.0.0`.
    pub security: &'static str,
    /// Stream bytes of the frame: the length prefix or record header and the body.
    pub bytes: u32,
    /// What the frame was taken for (`handshake`, `relay-message`, …; for TLS the record type).
    pub kind: &'static str,
}

/// The events of the packet being decoded, when the frames table is written.
#[derive(Debug, Default)]
pub struct FrameLog {
    /// Keep events (`--frames`); off, [`FrameLog::push`] does nothing.
    pub on: bool,
    pub events: Vec<FrameEvent>,
}

impl FrameLog {
    /// Keeps `event` if the table is written.
    pub fn push(&mut self, event: FrameEvent) {
        if self.on {
            self.events.push(event);
        }
    }
}
