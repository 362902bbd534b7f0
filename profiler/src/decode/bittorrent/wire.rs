//! The peer wire protocol (BEP 3, protocols.md §8.1–8.2): a 68-byte handshake, then messages
//! `u32 BE length ‖ u8 id ‖ payload`; length 0 is a keep-alive. A message's bytes are its
//! length prefix, id and payload.

use super::{PEER_WIRE, label};
use crate::decode::error::DecodeError;
use crate::decode::framing::{Framer, Piece};
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side, StreamDecoder};

/// The handshake's protocol string, with its length byte in front.
pub const PROTOCOL: &[u8] = b"\x13BitTorrent protocol";
/// Handshake length: 1 (pstrlen) + 19 (pstr) + 8 (reserved) + 20 (info-hash) + 20 (peer id).
pub const HANDSHAKE_LEN: u64 = 68;
/// Length of a message's length prefix.
pub const PREFIX_LEN: usize = 4;
/// Longest message accepted (a 16 KiB block plus room for large bitfields and extension
/// messages); a longer length prefix means the stream is not the peer wire.
pub const MAX_MESSAGE_LEN: u64 = 1 << 21;

/// Message ids (BEP 3, 5, 6, 10) and their kinds.
const KINDS: &[(u8, &str)] = &[
    (0, "choke"),
    (1, "unchoke"),
    (2, "interested"),
    (3, "not_interested"),
    (4, "have"),
    (5, "bitfield"),
    (6, "request"),
    (7, "piece"),
    (8, "cancel"),
    (9, "port"),
    (13, "suggest"),
    (14, "have_all"),
    (15, "have_none"),
    (16, "reject"),
    (17, "allowed_fast"),
    (20, "extended"),
];

/// `Some(true)` if `first` starts with the handshake's protocol string, `Some(false)` if it is
/// a proper prefix of it, `None` if it is something else.
pub fn starts_with_handshake(first: &[u8]) -> Option<bool> {
    let n = first.len().min(PROTOCOL.len());
    if first.is_empty() || first[..n] != PROTOCOL[..n] {
        None
    } else {
        Some(n == PROTOCOL.len())
    }
}

/// Body length (id + payload) of a message from its length prefix.
pub fn body_len(prefix: &[u8; PREFIX_LEN]) -> u64 {
    u64::from(u32::from_be_bytes(*prefix))
}

/// Labels of the peer wire's units, interned once.
#[derive(Clone, Debug)]
pub struct WireLabels {
    handshake: LabelId,
    keepalive: LabelId,
    unknown: LabelId,
    /// Indexed by message id; ids without a name map to `unknown`.
    by_id: Vec<LabelId>,
    /// Bytes that are not (or no longer) peer-wire messages.
    pub unparsed: LabelId,
}

impl WireLabels {
    /// Interns the labels of `protocol` (the peer wire over TCP or inside uTP).
    pub fn new(labels: &mut LabelTable, protocol: &str) -> WireLabels {
        let unknown = label(labels, protocol, "unknown");
        let mut by_id = vec![unknown; 21];
        for &(id, kind) in KINDS {
            by_id[usize::from(id)] = label(labels, protocol, kind);
        }
        WireLabels {
            handshake: label(labels, protocol, "handshake"),
            keepalive: label(labels, protocol, "keepalive"),
            unknown,
            by_id,
            unparsed: label(labels, protocol, "unparsed"),
        }
    }

    /// The label of a message with this id.
    pub fn of_id(&self, id: u8) -> LabelId {
        self.by_id
            .get(usize::from(id))
            .copied()
            .unwrap_or(self.unknown)
    }
}

/// Where one direction of the peer wire is.
#[derive(Clone, Debug)]
enum Phase {
    /// Nothing seen yet: a handshake follows if the first byte is its length byte.
    Start,
    /// `left` handshake bytes still to come.
    Handshake { left: u64 },
    /// Messages; `pending` counts bytes of a started message whose id has not arrived yet,
    /// `current` is the label of the message in progress.
    Messages {
        framer: Framer<PREFIX_LEN>,
        pending: u64,
        current: LabelId,
    },
    /// Every further byte is `unparsed`.
    Settled,
}

impl Phase {
    fn messages(l: &WireLabels) -> Phase {
        Phase::Messages {
            framer: Framer::default(),
            pending: 0,
            current: l.unparsed,
        }
    }
}

/// Splits one direction of the peer wire into handshake and messages.
#[derive(Clone, Debug)]
pub struct WireStream {
    phase: Phase,
}

impl Default for WireStream {
    fn default() -> Self {
        WireStream {
            phase: Phase::Start,
        }
    }
}

impl WireStream {
    /// Labels `bytes`, the next in-order bytes of this direction, calling `emit(len, label,
    /// units)` for each run in order. Returns the error when these bytes broke the framing
    /// (everything from there on is `unparsed`).
    #[must_use]
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        l: &WireLabels,
        emit: &mut impl FnMut(u64, LabelId, u32),
    ) -> Option<DecodeError> {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Start => {
                    self.phase = if bytes[0] == PROTOCOL[0] {
                        Phase::Handshake {
                            left: HANDSHAKE_LEN,
                        }
                    } else {
                        Phase::messages(l)
                    };
                }
                Phase::Handshake { left } => {
                    let n = bytes.len().min(*left as usize);
                    emit(n as u64, l.handshake, u32::from(*left == HANDSHAKE_LEN));
                    *left -= n as u64;
                    if *left == 0 {
                        self.phase = Phase::messages(l);
                    }
                    bytes = &bytes[n..];
                }
                Phase::Messages {
                    framer,
                    pending,
                    current,
                } => {
                    let mut broken = false;
                    framer.feed(bytes, body_len, |p: Piece<'_, PREFIX_LEN>| {
                        let len = p.len as u64;
                        if broken {
                            emit(len, l.unparsed, 0);
                        } else if p.starts && body_len(&p.header) > MAX_MESSAGE_LEN {
                            broken = true;
                            emit(*pending + len, l.unparsed, 0);
                            *pending = 0;
                        } else if p.starts && body_len(&p.header) == 0 {
                            emit(len, l.keepalive, 1);
                        } else if p.starts || *pending > 0 {
                            match p.body.first() {
                                Some(&id) => {
                                    let label = l.of_id(id);
                                    emit(*pending + len, label, 1);
                                    *pending = 0;
                                    *current = label;
                                }
                                None => *pending += len,
                            }
                        } else {
                            emit(len, *current, 0);
                        }
                    });
                    if broken {
                        self.phase = Phase::Settled;
                        return Some(DecodeError::new(
                            "bittorrent",
                            "message longer than the protocol allows",
                        ));
                    }
                    return None;
                }
                Phase::Settled => {
                    emit(bytes.len() as u64, l.unparsed, 0);
                    return None;
                }
            }
        }
        None
    }

    /// Bytes received but not labelled yet (a split length prefix, a message without its id).
    pub fn held(&self) -> u64 {
        match &self.phase {
            Phase::Messages {
                framer, pending, ..
            } => framer.held() as u64 + pending,
            _ => 0,
        }
    }

    /// Gives up on this direction: further bytes are `unparsed`.
    pub fn settle(&mut self) {
        self.phase = Phase::Settled;
    }
}

/// Decoder of a peer-wire TCP connection.
pub struct WireDecoder {
    sides: [WireStream; 2],
    labels: WireLabels,
}

impl WireDecoder {
    /// A decoder whose connection starts with a handshake.
    pub fn new(labels: &mut LabelTable) -> WireDecoder {
        WireDecoder {
            sides: Default::default(),
            labels: WireLabels::new(labels, PEER_WIRE),
        }
    }
}

impl StreamDecoder for WireDecoder {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let stream = &mut self.sides[side.index()];
        let broken = stream.feed(bytes, &self.labels, &mut |len, label, units| {
            ctx.emit(side, len, label, units)
        });
        if let Some(e) = broken {
            ctx.malformed(e);
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let stream = &mut self.sides[side.index()];
        ctx.emit(side, stream.held() + len, self.labels.unparsed, 0);
        stream.settle();
    }

    fn connection_label(&self) -> LabelId {
        self.labels.unparsed
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        matches!(self.sides[side.index()].phase, Phase::Settled).then_some(self.labels.unparsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    /// A handshake, a keep-alive, an interested, a have and a 3-byte piece.
    fn stream() -> Vec<u8> {
        let mut s = PROTOCOL.to_vec();
        s.extend_from_slice(&[0; 48]);
        s.extend_from_slice(&[0, 0, 0, 0]);
        s.extend_from_slice(&[0, 0, 0, 1, 2]);
        s.extend_from_slice(&[0, 0, 0, 5, 4, 0, 0, 0, 9]);
        s.extend_from_slice(&[0, 0, 0, 12, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc]);
        s
    }

    fn kinds(t: &TestCtx) -> Vec<(String, u64, u32)> {
        let mut out: Vec<(String, u64, u32)> = Vec::new();
        for s in &t.spans {
            let kind = t.labels.get(s.label).kind.to_string();
            match out.last_mut() {
                Some(last) if last.0 == kind && s.units == 0 => last.1 += s.len,
                _ => out.push((kind, s.len, s.units)),
            }
        }
        out
    }

    #[test]
    fn probe_needs_the_protocol_string() {
        assert_eq!(starts_with_handshake(b"\x13Bit"), Some(false));
        assert_eq!(starts_with_handshake(&stream()), Some(true));
        assert_eq!(starts_with_handshake(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn messages_split_anywhere() {
        let s = stream();
        let want = vec![
            ("handshake".to_owned(), 68, 1),
            ("keepalive".to_owned(), 4, 1),
            ("interested".to_owned(), 5, 1),
            ("have".to_owned(), 9, 1),
            ("piece".to_owned(), 16, 1),
        ];
        for cut in 0..=s.len() {
            let mut t = TestCtx::default();
            let mut d = WireDecoder::new(&mut t.labels);
            for chunk in [&s[..cut], &s[cut..]] {
                d.data(Side::Initiator, chunk, &mut t.ctx());
            }
            assert_eq!(kinds(&t), want, "cut {cut}");
        }
    }

    #[test]
    fn huge_length_settles() {
        let mut t = TestCtx::default();
        let mut d = WireDecoder::new(&mut t.labels);
        d.data(Side::Responder, &[0x7f, 0, 0, 0, 1, 2, 3], &mut t.ctx());
        assert_eq!(kinds(&t), vec![("unparsed".to_owned(), 7, 0)]);
        assert!(d.settled(Side::Responder).is_some());
        assert_eq!(
            t.errors.iter().collect::<Vec<_>>(),
            vec![("bittorrent", 1)],
            "counted as malformed"
        );
    }
}
