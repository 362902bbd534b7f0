//! MSE/PE (BitTorrent Message Stream Encryption, protocols.md §8.5) as a passive observer sees
//! it. The key exchange is Diffie-Hellman, so RC4 streams stay opaque; but after a handshake whose
//! crypto_select picks plaintext the peer wire shows in clear, and its handshake
//! (`\x13BitTorrent protocol`) must come within the largest MSE handshake the padding rules
//! allow. Per side the handshake is, in order of flights:
//!
//! - initiator: Ya (96) ‖ PadA (≤ 512) | HASH req1 (20) ‖ HASH req2⊕req3 (20) ‖ VC (8) ‖
//!   crypto_provide (4) ‖ len PadC (2) ‖ PadC (≤ 512) ‖ len IA (2) ‖ IA (RC4 even when plaintext
//!   is selected: the initial payload, often the peer-wire handshake);
//! - responder: Yb (96) ‖ PadB (≤ 512) | VC (8) ‖ crypto_select (4) ‖ len PadD (2) ‖ PadD (≤ 512),
//!   then its payload: in clear, the peer-wire handshake, after a plaintext selection.
//!
//! Each side's bytes are held until the connection's verdict: plaintext (a side shows the
//! peer-wire handshake in reach; the initiator's clear peer wire then starts with its next flight
//! if its own handshake went in the IA), encrypted (a side's third flight or the largest
//! handshake passes without it, and an endpoint is a known BitTorrent peer), or not BitTorrent.

use super::wire::{HANDSHAKE_LEN, PROTOCOL, WireLabels, WireStream};
use super::{Endpoint, MSE_CONFIDENCE_PERMILLE, PEER_WIRE};
use crate::account::record::{Category, Label, Method};
use crate::decode::classify::unknown_tcp;
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side, StreamDecoder};

/// Bytes of a side within which an MSE handshake that selected plaintext must reach the
/// peer-wire handshake: the initiator's Ya, PadA, hashes, VC, crypto_provide, PadC and their
/// lengths (96 + 512 + 40 + 8 + 4 + 2 + 512 + 2 = 1176; the responder's is 1134), rounded up.
pub const SCAN_LIMIT: u64 = 1200;
/// Bytes of a side past which, without a clear peer-wire handshake, the connection is RC4 (or
/// not BitTorrent): the scan limit and an initial payload holding the peer-wire handshake.
pub const HANDSHAKE_LIMIT: u64 = SCAN_LIMIT + HANDSHAKE_LEN;

/// First bytes of an initiator the distinct-byte test looks at.
const RANDOM_WINDOW: usize = 64;
/// Distinct values among the first 64 bytes from which they look random (a DH public value):
/// 64 uniform bytes hold about 57; text and most binary headers far fewer.
const RANDOM_DISTINCT: usize = 44;

/// Whether the first bytes an initiator sent look like an MSE public key (uniform bytes).
pub fn looks_random(first: &[u8]) -> bool {
    let Some(window) = first.get(..RANDOM_WINDOW) else {
        return false;
    };
    let mut seen = [false; 256];
    for &b in window {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|&&s| s).count() >= RANDOM_DISTINCT
}

/// What the connection turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Open,
    Plaintext,
    Encrypted,
    NotBittorrent,
}

/// Where one side is.
enum Stage {
    /// Looking for the peer-wire handshake; `held` bytes not labelled yet.
    Scanning,
    /// The clear peer wire, after the MSE handshake.
    Wire(WireStream),
    /// RC4: handshake bytes up to the side's second flight, then `encrypted`.
    Opaque,
    /// Not BitTorrent: `other` / `tcp`.
    Other,
}

struct SideState {
    stage: Stage,
    held: Vec<u8>,
    /// Bytes of this side labelled so far.
    labelled: u64,
    /// Bytes received so far.
    seen: u64,
    /// Flights (runs of bytes without the other side speaking in between) so far.
    flights: u8,
    /// Bytes of the first two flights: the side's MSE handshake.
    first_flights: u64,
}

impl SideState {
    fn new() -> SideState {
        SideState {
            stage: Stage::Scanning,
            held: Vec::new(),
            labelled: 0,
            seen: 0,
            flights: 0,
            first_flights: 0,
        }
    }
}

/// The labels an MSE connection uses.
struct Labels {
    handshake: LabelId,
    encrypted: LabelId,
    unknown: LabelId,
    wire: WireLabels,
}

/// An obfuscated (MSE/PE) peer connection, or a connection that may be one: the key exchange
/// and padding are `mse` / `handshake` (heuristic), RC4 bytes `mse` / `encrypted`, and after a
/// plaintext selection the peer wire is decoded message by message.
pub struct Mse {
    sides: [SideState; 2],
    verdict: Verdict,
    /// Whether an endpoint was a known BitTorrent peer when the connection was probed.
    anchored: bool,
    conn: Conn,
    last: Option<Side>,
    labels: Labels,
}

impl Mse {
    /// A decoder for `conn`; `anchored` when an endpoint is a known BitTorrent peer.
    pub fn new(labels: &mut LabelTable, conn: Conn, anchored: bool) -> Mse {
        let mut heuristic = |kind: &str| {
            let protocol = labels.string("mse");
            let kind = labels.string(kind);
            let mut l = Label::decoded(Category::Bittorrent, &protocol, &kind);
            l.method = Method::Heuristic;
            l.confidence_permille = MSE_CONFIDENCE_PERMILLE;
            labels.intern(l)
        };
        let (handshake, encrypted) = (heuristic("handshake"), heuristic("encrypted"));
        Mse {
            sides: [SideState::new(), SideState::new()],
            verdict: Verdict::Open,
            anchored,
            conn,
            last: None,
            labels: Labels {
                handshake,
                encrypted,
                unknown: unknown_tcp(labels),
                wire: WireLabels::new(labels, PEER_WIRE),
            },
        }
    }

    /// Emits `len` bytes of `side`, counting them as labelled; the first handshake bytes of a
    /// side count one unit.
    fn emit(&mut self, side: Side, len: u64, label: LabelId, ctx: &mut DecodeCtx<'_>) {
        let st = &mut self.sides[side.index()];
        let units = u32::from(st.labelled == 0 && len > 0 && label == self.labels.handshake);
        st.labelled += len;
        ctx.emit(side, len, label, units);
    }

    /// Feeds `bytes` to the clear peer wire of `side`.
    fn feed_wire(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let st = &mut self.sides[side.index()];
        if let Stage::Wire(stream) = &mut st.stage {
            let labelled = &mut st.labelled;
            let broken = stream.feed(bytes, &self.labels.wire, &mut |len, label, units| {
                *labelled += len;
                ctx.emit(side, len, label, units);
            });
            if let Some(e) = broken {
                ctx.malformed(e);
            }
        }
    }

    /// Starts the clear peer wire of `side` after `at` held bytes of MSE handshake.
    fn start_wire(&mut self, side: Side, at: usize, ctx: &mut DecodeCtx<'_>) {
        let held = std::mem::take(&mut self.sides[side.index()].held);
        self.emit(side, at as u64, self.labels.handshake, ctx);
        self.sides[side.index()].stage = Stage::Wire(WireStream::default());
        self.feed_wire(side, &held[at..], ctx);
    }

    /// `side` showed the peer-wire handshake at `at` of its held bytes: plaintext was selected.
    fn plaintext(&mut self, side: Side, at: usize, ctx: &mut DecodeCtx<'_>) {
        self.verdict = Verdict::Plaintext;
        ctx.udp.bittorrent.learn_peer(self.conn.responder);
        self.start_wire(side, at, ctx);
        let other = match side {
            Side::Initiator => Side::Responder,
            Side::Responder => Side::Initiator,
        };
        if !matches!(self.sides[other.index()].stage, Stage::Scanning) {
            return;
        }
        if other == Side::Initiator {
            // The responder answers only after the initiator's whole handshake (with its IA):
            // what the initiator sent so far is MSE, what it sends next is clear.
            let n = self.sides[other.index()].held.len();
            self.start_wire(other, n, ctx);
        } else {
            self.release_scanned(other, ctx);
        }
    }

    /// Labels the held bytes of a side still scanning after a plaintext verdict, but for those
    /// that may start the peer-wire handshake.
    fn release_scanned(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        let st = &mut self.sides[side.index()];
        let keep = st.held.len().min(PROTOCOL.len() - 1);
        let done = st.held.len() - keep;
        st.held.drain(..done);
        self.emit(side, done as u64, self.labels.handshake, ctx);
    }

    /// No clear peer-wire handshake in reach: RC4 if an endpoint is a known BitTorrent peer,
    /// else not BitTorrent.
    fn opaque(&mut self, ctx: &mut DecodeCtx<'_>) {
        let book = &ctx.udp.bittorrent;
        let peer = |e: &Endpoint| book.is_peer(e);
        self.verdict = if self.anchored || peer(&self.conn.initiator) || peer(&self.conn.responder)
        {
            Verdict::Encrypted
        } else {
            Verdict::NotBittorrent
        };
        for side in Side::BOTH {
            let st = &mut self.sides[side.index()];
            st.stage = match self.verdict {
                Verdict::Encrypted => Stage::Opaque,
                _ => Stage::Other,
            };
            let held = std::mem::take(&mut st.held);
            self.opaque_bytes(side, held.len() as u64, ctx);
        }
    }

    /// Labels `len` further bytes of an opaque or foreign side.
    fn opaque_bytes(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let st = &self.sides[side.index()];
        match st.stage {
            Stage::Other => self.emit(side, len, self.labels.unknown, ctx),
            _ => {
                let handshake = st.first_flights.min(HANDSHAKE_LIMIT);
                let n = handshake.saturating_sub(st.labelled).min(len);
                self.emit(side, n, self.labels.handshake, ctx);
                self.emit(side, len - n, self.labels.encrypted, ctx);
            }
        }
    }

    /// Looks for the peer-wire handshake in the held bytes of a scanning `side`, and decides
    /// what can be decided.
    fn scan(&mut self, side: Side, ctx: &mut DecodeCtx<'_>) {
        let st = &self.sides[side.index()];
        let start = st.labelled;
        if let Some(at) = find(&st.held, PROTOCOL).filter(|&at| start + at as u64 <= SCAN_LIMIT) {
            if self.verdict == Verdict::Plaintext {
                self.start_wire(side, at, ctx);
            } else {
                self.plaintext(side, at, ctx);
            }
            return;
        }
        let past_flights = st.seen - st.first_flights;
        let out_of_reach = st.seen > HANDSHAKE_LIMIT
            || (st.flights > 2 && past_flights >= HANDSHAKE_LEN)
            || start + st.held.len() as u64 > SCAN_LIMIT + PROTOCOL.len() as u64;
        match self.verdict {
            Verdict::Plaintext if out_of_reach => {
                let n = self.sides[side.index()].held.len();
                self.start_wire(side, n, ctx);
            }
            Verdict::Plaintext => self.release_scanned(side, ctx),
            _ if st.seen > HANDSHAKE_LIMIT || (st.flights > 2 && past_flights >= HANDSHAKE_LEN) => {
                self.opaque(ctx)
            }
            _ => {}
        }
    }
}

/// Where `needle` starts in `hay`, if it does.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl StreamDecoder for Mse {
    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let st = &mut self.sides[side.index()];
        if self.last != Some(side) {
            st.flights = st.flights.saturating_add(1);
            self.last = Some(side);
        }
        let len = bytes.len() as u64;
        st.seen += len;
        if st.flights <= 2 {
            st.first_flights += len;
        }
        match st.stage {
            Stage::Wire(_) => self.feed_wire(side, bytes, ctx),
            Stage::Opaque | Stage::Other => self.opaque_bytes(side, len, ctx),
            Stage::Scanning => {
                st.held.extend_from_slice(bytes);
                self.scan(side, ctx);
            }
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        if self.verdict == Verdict::Open {
            self.opaque(ctx);
        }
        let st = &mut self.sides[side.index()];
        st.seen += len;
        let lost = match &mut st.stage {
            Stage::Wire(stream) => stream.held() + len,
            Stage::Scanning => std::mem::take(&mut st.held).len() as u64 + len,
            Stage::Opaque | Stage::Other => return self.opaque_bytes(side, len, ctx),
        };
        let mut settled = WireStream::default();
        settled.settle();
        st.stage = Stage::Wire(settled);
        self.emit(side, lost, self.labels.wire.unparsed, ctx);
    }

    fn connection_label(&self) -> LabelId {
        match self.verdict {
            Verdict::Plaintext => self.labels.wire.unparsed,
            Verdict::NotBittorrent => self.labels.unknown,
            Verdict::Encrypted => self.labels.encrypted,
            Verdict::Open if self.anchored => self.labels.encrypted,
            Verdict::Open => self.labels.unknown,
        }
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        match self.sides[side.index()].stage {
            Stage::Opaque => Some(self.labels.encrypted).filter(|_| {
                let st = &self.sides[side.index()];
                st.flights > 2 || st.labelled >= HANDSHAKE_LIMIT
            }),
            Stage::Other => Some(self.labels.unknown),
            _ => None,
        }
    }

    fn connection_known(&self) -> bool {
        self.verdict != Verdict::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;
    use std::net::{IpAddr, Ipv4Addr};

    fn conn() -> Conn {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        Conn {
            initiator: (ip, 50000),
            responder: (ip, 6881),
        }
    }

    /// (protocol, kind, bytes) runs of one side, neighbours of one label merged.
    fn kinds(t: &TestCtx, side: Side) -> Vec<(String, String, u64)> {
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for s in t.spans.iter().filter(|s| s.side == side) {
            let l = t.labels.get(s.label);
            let key = (l.protocol.to_string(), l.kind.to_string());
            match out.last_mut() {
                Some(last) if (last.0.as_str(), last.1.as_str()) == (&key.0, &key.1) => {
                    last.2 += s.len
                }
                _ => out.push((key.0, key.1, s.len)),
            }
        }
        out
    }

    fn run(s: &[&str]) -> Vec<(String, String, u64)> {
        s.iter()
            .map(|x| {
                let (p, rest) = x.split_once('/').expect("p/k=n");
                let (k, n) = rest.split_once('=').expect("k=n");
                (p.to_owned(), k.to_owned(), n.parse().expect("n"))
            })
            .collect()
    }

    /// Uniform-looking bytes.
    fn noise(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(167).wrapping_add(seed) ^ (i >> 3) as u8)
            .collect()
    }

    fn handshake() -> Vec<u8> {
        let mut h = PROTOCOL.to_vec();
        h.extend_from_slice(&[0; 48]);
        h
    }

    const UNCHOKE: &[u8] = &[0, 0, 0, 1, 1];
    const BITFIELD: &[u8] = &[0, 0, 0, 2, 5, 0xff];

    #[test]
    fn random_first_bytes_look_like_a_key() {
        assert!(looks_random(&noise(96, 1)));
        assert!(!looks_random(
            b"GET /announce?info_hash=abc HTTP/1.1\r\nHost: tracker\r\n\r\nxxxxx"
        ));
        assert!(!looks_random(&noise(40, 1)));
    }

    #[test]
    fn plaintext_after_the_key_exchange_split_anywhere() {
        // Initiator without IA: Ya+PadA, step 3, then its handshake in clear.
        let step3 = noise(80, 3);
        let mut clear = handshake();
        clear.extend_from_slice(UNCHOKE);
        for cut in 0..clear.len() {
            let mut t = TestCtx::default();
            let mut d = Mse::new(&mut t.labels, conn(), false);
            d.data(Side::Initiator, &noise(150, 1), &mut t.ctx());
            d.data(Side::Responder, &noise(120, 2), &mut t.ctx());
            d.data(Side::Initiator, &step3, &mut t.ctx());
            d.data(Side::Responder, &noise(14, 4), &mut t.ctx());
            d.data(Side::Initiator, &clear[..cut], &mut t.ctx());
            d.data(Side::Initiator, &clear[cut..], &mut t.ctx());
            let mut back = handshake();
            back.extend_from_slice(BITFIELD);
            d.data(Side::Responder, &back, &mut t.ctx());
            assert_eq!(
                kinds(&t, Side::Initiator),
                run(&[
                    "mse/handshake=230",
                    "bittorrent/handshake=68",
                    "bittorrent/unchoke=5"
                ]),
                "cut {cut}"
            );
            assert_eq!(
                kinds(&t, Side::Responder),
                run(&[
                    "mse/handshake=134",
                    "bittorrent/handshake=68",
                    "bittorrent/bitfield=6"
                ]),
            );
            assert!(d.connection_known());
        }
    }

    #[test]
    fn plaintext_after_an_initial_payload() {
        // Initiator with IA (its handshake, RC4): the responder's clear handshake shows
        // plaintext, and the initiator's next flight is clear messages.
        let mut t = TestCtx::default();
        let mut d = Mse::new(&mut t.labels, conn(), false);
        d.data(Side::Initiator, &noise(400, 1), &mut t.ctx());
        d.data(Side::Responder, &noise(500, 2), &mut t.ctx());
        d.data(Side::Initiator, &noise(700, 3), &mut t.ctx());
        let mut back = noise(30, 4);
        back.extend_from_slice(&handshake());
        d.data(Side::Responder, &back, &mut t.ctx());
        d.data(Side::Initiator, BITFIELD, &mut t.ctx());
        d.data(Side::Initiator, UNCHOKE, &mut t.ctx());
        assert_eq!(
            kinds(&t, Side::Initiator),
            run(&[
                "mse/handshake=1100",
                "bittorrent/bitfield=6",
                "bittorrent/unchoke=5"
            ]),
        );
        assert_eq!(
            kinds(&t, Side::Responder),
            run(&["mse/handshake=530", "bittorrent/handshake=68"]),
        );
    }

    #[test]
    fn rc4_is_encrypted_after_the_second_flight_when_anchored() {
        let mut t = TestCtx::default();
        let mut d = Mse::new(&mut t.labels, conn(), true);
        d.data(Side::Initiator, &noise(300, 1), &mut t.ctx());
        d.data(Side::Responder, &noise(200, 2), &mut t.ctx());
        d.data(Side::Initiator, &noise(150, 3), &mut t.ctx());
        d.data(Side::Responder, &noise(100, 4), &mut t.ctx());
        d.data(Side::Initiator, &noise(90, 5), &mut t.ctx());
        d.data(Side::Responder, &noise(1000, 6), &mut t.ctx());
        assert_eq!(
            kinds(&t, Side::Initiator),
            run(&["mse/handshake=450", "mse/encrypted=90"]),
        );
        assert_eq!(
            kinds(&t, Side::Responder),
            run(&["mse/handshake=300", "mse/encrypted=1000"]),
        );
        assert_eq!(d.settled(Side::Responder), Some(d.labels.encrypted));
    }

    #[test]
    fn without_a_peer_or_a_clear_handshake_it_is_other() {
        let mut t = TestCtx::default();
        let mut d = Mse::new(&mut t.labels, conn(), false);
        for _ in 0..10 {
            d.data(Side::Responder, &noise(200, 7), &mut t.ctx());
        }
        assert_eq!(kinds(&t, Side::Responder), run(&["tcp/data=2000"]));
        assert!(d.connection_known());
    }
}
