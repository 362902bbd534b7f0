//! What the sizes of encrypted frames say about the muxed traffic they hide (design.md method
//! `inferred`): the inference is the security layer of a Noise or TLS connection, guessing what
//! the layers above would have emitted. Every libp2p stack writes one muxer frame per write and
//! its security layer encrypts each write as one frame, cut at the frame's maximum (README,
//! "Encrypted connections"), so a frame's plaintext is a muxer header (yamux: 12 bytes; mplex:
//! two varints) and a body whose size matches a multistream message, a ping, identify, a
//! gossipsub control RPC (IHAVE/IWANT/IDONTWANT carry 34-byte ids) or an RPC publishing
//! messages; a frame filled to the maximum goes on in the next one. Every frame is labelled by
//! those shapes; payload_bytes follow rule 4 as the plaintext decoder would count them. The muxer
//! is named in ALPN (TLS), negotiated with multistream-select inside the channel, or (js-libp2p's
//! Noise extensions) agreed in the handshake: then a frame shorter than a yamux header shows mplex.

use crate::account::record::{Category, Method};
use crate::decode::libp2p::mplex;
use crate::decode::libp2p::yamux;
use crate::decode::relay::relay_book::RelayBook;
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side};

/// The AEAD tag of a Noise frame or TLS 1.3 record.
const TAG: u64 = 16;
/// A yamux frame header.
const YAMUX_HEADER: u64 = 12;
/// Largest yamux data frame rust-libp2p sends: longer messages span several frames.
pub const SPLIT_SIZE: u64 = 16 * 1024;
/// The data of yamux frames that a longer write goes on after: rust-libp2p's split, and
/// js-libp2p's `maxMessageSize` of 64 KiB, header included.
const YAMUX_SPLITS: [u64; 2] = [SPLIT_SIZE, 64 * 1024 - YAMUX_HEADER];
/// The data of mplex frames that a longer write goes on after: rust-libp2p's `split_send_size`
/// (8 KiB) and js-libp2p's `maxMsgSize` (1 MiB).
const MPLEX_SPLITS: [u64; 2] = [8 * 1024, 1 << 20];
/// mplex frames this short carry no stream data: a close or reset (two varints, the length 0)
/// or a new stream named by its number (js-libp2p, rust-libp2p).
const MPLEX_FRAMING_MAX: u64 = 5;
/// Largest Noise plaintext: 65,535 less the tag (js-libp2p, go-libp2p, rust-libp2p), and
/// nim-libp2p's 65,535 − 32 − 16.
const NOISE_MAX: [u64; 2] = [65_535 - TAG, 65_535 - 32 - TAG];
/// Largest TLS record plaintext (RFC 8446 §5.1).
const TLS_MAX: u64 = 16_384;
/// Go's crypto/tls sizes the records of a connection's first 128 KiB to grow by this much per
/// record (one TCP segment's worth: 1,208 less header, tag and content type).
const GO_TLS_STEP: u64 = 1_208 - 5 - TAG - 1;
const GO_TLS_BOOST: u64 = 128 * 1024;
/// multistream-select's header `/multistream/1.0.0\n` with its length prefix.
const MULTISTREAM_HEADER: u64 = 20;
/// Plaintext sizes while the muxer is negotiated inside Noise: the header, `/yamux/1.0.0\n`
/// (14 bytes with its prefix), or both at once.
const MUXER_PROPOSAL: u64 = 14;
/// The protocols whose multistream proposals and echoes are recognised by their length.
const STREAM_PROTOCOLS: &[&str] = &[
    "/ipfs/ping/1.0.0",
    "/ipfs/id/1.0.0",
    "/ipfs/id/push/1.0.0",
    "/vac/waku/relay/2.0.0",
    "/meshsub/1.1.0",
    "/meshsub/1.2.0",
    "/meshsub/1.3.0",
    "/vac/waku/metadata/1.0.0",
];
/// A ping's body.
const PING: u64 = 32;
/// Identify is the first body of at least this size in the first frames of a direction.
const IDENTIFY_MIN: u64 = 100;
const IDENTIFY_WITHIN: u32 = 40;
/// Relay RPC bodies this small are control (GRAFT, PRUNE, subscriptions, short gossip): 64
/// bytes, and two header-only yamux frames written with them (Node's TLS coalesces writes).
const CONTROL_MAX: u64 = 64 + 2 * YAMUX_HEADER;
/// A message id entry (`bytes` field of 32 bytes: tag, length, id).
const ID_ENTRY: u64 = 34;
/// Lengths of the static-sharding topics `/waku/2/rs/<cluster>/<shard>` an IHAVE may name:
/// clusters and shards of up to four digits together (wider ranges mistake messages for gossip).
const TOPIC_LENS: std::ops::RangeInclusive<u64> = 14..=18;
/// The proposal of `/vac/waku/relay/2.0.0` with its length prefix and newline.
const RELAY_PROPOSAL: u64 = 23;
/// Topics a side's first relay RPC is looked at for, at most.
const SUBSCRIPTIONS_MAX: u64 = 16;
/// What a subscription entry may hold besides its topic: `subscribe` and the topic's tag and
/// length (6 bytes with the entry's own), and in gossipsub 1.3 (rust-libp2p 0.50) also
/// `requestsPartial` and `supportsPartial` (4 bytes).
const SUBSCRIPTION_EXTRA: [u64; 2] = [6, 10];
/// Topics of mixed lengths a first relay RPC is looked at for, at most (more fit almost any size).
const MIXED_MAX: u64 = 3;
/// Gossipsub 1.3's first RPC on a stream when it sends its extensions apart (rust-libp2p 0.50):
/// `RPC.control.extensions`, empty. The subscriptions follow.
const EXTENSIONS_RPC: u64 = 5;
/// The opening of a relay stream a side's first relay frame may hold, as (data writes, bytes,
/// header-only frames at least): none, or multistream-select's header and proposal in one write
/// (as js-libp2p and rust-libp2p write them) after the frame that opens the stream (mplex's
/// new stream, js-libp2p yamux's window update with SYN).
const OPENING: [(u64, u64, u64); 2] = [(0, 0, 0), (1, MULTISTREAM_HEADER + RELAY_PROPOSAL, 1)];
/// The echo of the other side's opening it may hold: none, the proposal's alone (once the
/// side wrote a header alone before), or both, in one write or two. A side's first RPC comes
/// with an echo but not with its own opening: multistream-select sends it once the other side
/// echoed the opening.
const ECHO: [(u64, u64, u64); 4] = [
    (0, 0, 0),
    (1, RELAY_PROPOSAL, 0),
    (1, MULTISTREAM_HEADER + RELAY_PROPOSAL, 0),
    (2, MULTISTREAM_HEADER + RELAY_PROPOSAL, 0),
];
/// Header-only muxer frames (window updates, streams opened or closed) written together with a
/// side's first relay frame, at most.
const HEADER_ONLY_MAX: u64 = 8;
/// How long after an IHAVE the IWANT answering it may come: three heartbeats (1 s in every
/// gossipsub implementation) and a round trip.
const IWANT_AFTER_NS: i64 = 3_500_000_000;
/// Message frames after an IWANT in which its answer is looked for.
const ANSWER_WITHIN: u32 = 3;

/// Confidence of each inference, per mille: how much of the bytes of rows of that shape the
/// truth of the samples holds too (README, "Encrypted connections", calibration; tested in
/// tests/js_samples.rs). Gossip and control shapes are right for about half their bytes on the
/// JavaScript stacks.
pub const SURE: u16 = 990;
pub const LIKELY: u16 = 900;
const GUESS: u16 = 500;

/// Bytes of a protobuf varint holding `v`.
pub fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// The length prefix of an RPC of `total` bytes with its prefix (at most `total`).
fn rpc_prefix(total: u64) -> u64 {
    (1..=total.min(10))
        .find(|&v| varint_len(total - v) == v)
        .unwrap_or(total.min(1))
}

/// A length-delimited field around `body`: tag, length, body.
fn field(body: u64) -> u64 {
    1 + varint_len(body) + body
}

/// An RPC of `body` bytes with its length prefix.
fn rpc(body: u64) -> u64 {
    varint_len(body) + body
}

/// How a security protocol wraps a frame of plaintext.
#[derive(Clone, Copy, Debug)]
struct Wrap {
    /// Bytes before the ciphertext: Noise's length prefix, a TLS record header.
    prefix: u64,
    /// Bytes after the plaintext: the tag (and TLS 1.3's inner content type byte).
    trailer: u64,
    /// Whether a frame of `plain` bytes was cut from a longer write, given the frames and
    /// bytes its side sent before it.
    full: fn(plain: u64, frames: u32, bytes: u64) -> bool,
}

/// Noise: `u16` length, ciphertext, tag.
const NOISE: Wrap = Wrap {
    prefix: 2,
    trailer: TAG,
    full: |plain, _, _| NOISE_MAX.contains(&plain),
};
/// TLS 1.3 application data record: 5-byte header, ciphertext, content type byte, tag.
const TLS: Wrap = Wrap {
    prefix: 5,
    trailer: TAG + 1,
    full: |plain, frames, bytes| {
        plain == TLS_MAX
            || (bytes < GO_TLS_BOOST && plain == (GO_TLS_STEP * u64::from(frames)).min(TLS_MAX))
    },
};

/// How the muxer's writes show in the frames the inference is given.
#[derive(Clone, Copy, Debug)]
enum Writes {
    /// Each write is a frame of its own (Noise over TCP or `/ws`: one Noise frame per write).
    One,
    /// Writes made while the socket is busy share a frame (Node's TLS encrypts them as one
    /// record); each after the first adds the `extra` bytes a side's layers between put around
    /// it, and a frame given of more than `longer.0` bytes may be short by `longer.1` (the
    /// layer between sized the header of its first write for them all: WebSocket's 16-bit
    /// length).
    Coalesced { extra: [u64; 2], longer: (u64, u64) },
}

/// The muxer whose frames an encrypted connection is taken to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Muxer {
    Yamux,
    Mplex,
}

impl Muxer {
    /// The protocol id of its framing label.
    fn id(self) -> &'static str {
        match self {
            Muxer::Yamux => "/yamux/1.0.0",
            Muxer::Mplex => "/mplex/6.7.0",
        }
    }

    /// The header bytes of a data frame of `body` bytes of stream data.
    fn data_header(self, body: u64) -> u64 {
        match self {
            Muxer::Yamux => YAMUX_HEADER,
            Muxer::Mplex => 1 + varint_len(body),
        }
    }

    /// The sizes of a frame of the muxer's own: a yamux header; an mplex close or reset, or a
    /// new stream with its name.
    fn header_only(self) -> std::ops::RangeInclusive<u64> {
        match self {
            Muxer::Yamux => YAMUX_HEADER..=YAMUX_HEADER,
            Muxer::Mplex => 2..=MPLEX_FRAMING_MAX,
        }
    }

    /// The header bytes of a frame of `plain` plaintext bytes that carries stream data, or
    /// `None` for a frame of the muxer's own (all header).
    fn header(self, plain: u64) -> Option<u64> {
        match self {
            Muxer::Yamux => (plain > YAMUX_HEADER).then_some(YAMUX_HEADER),
            // A one-byte stream varint (streams 0 to 15) and the body's length varint.
            Muxer::Mplex => (plain > MPLEX_FRAMING_MAX).then(|| {
                (1..=4)
                    .map(|v| 1 + v)
                    .find(|&h| varint_len(plain - h) == h - 1)
                    .unwrap_or(2)
            }),
        }
    }
}

/// The labels an inference gives, all with method `inferred`.
#[derive(Clone, Copy, Debug)]
struct Labels {
    /// `<security>` / `framing`: the frame's prefix and trailer.
    security: LabelId,
    muxer: LabelId,
    negotiation: LabelId,
    ping: LabelId,
    identify: LabelId,
    message: LabelId,
    relay_framing: LabelId,
    control: LabelId,
    ihave: LabelId,
    ids: LabelId,
}

impl Labels {
    /// The relay labels for bytes of `topic`.
    fn on_topic(mut self, topic: &str, labels: &mut LabelTable) -> Labels {
        for l in [
            &mut self.message,
            &mut self.relay_framing,
            &mut self.control,
            &mut self.ihave,
            &mut self.ids,
        ] {
            *l = labels.with_topic(*l, topic);
        }
        self
    }

    fn new(security: &str, muxer: Muxer, labels: &mut LabelTable) -> Labels {
        let mut l = |category, protocol: &str, kind: &str, permille| {
            let id = labels.decoded(category, protocol, kind);
            labels.with_method(id, Method::Inferred, permille)
        };
        let relay = "/vac/waku/relay/2.0.0";
        Labels {
            security: l(Category::Libp2p, security, "framing", SURE),
            muxer: l(Category::Libp2p, muxer.id(), "framing", SURE),
            negotiation: l(
                Category::Libp2p,
                "/multistream/1.0.0",
                "negotiation",
                LIKELY,
            ),
            ping: l(Category::Libp2p, "/ipfs/ping/1.0.0", "data", LIKELY),
            identify: l(Category::Libp2p, "/ipfs/id/1.0.0", "data", GUESS),
            message: l(Category::RelayChat, relay, "message", LIKELY),
            relay_framing: l(Category::RelayControl, relay, "framing", LIKELY),
            control: l(Category::RelayControl, relay, "control", GUESS),
            ihave: l(Category::RelayControl, relay, "ihave", GUESS),
            ids: l(Category::RelayControl, relay, "iwant|idontwant", GUESS),
        }
    }
}

/// What a frame was taken for, as the frames table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guess {
    MuxerNegotiation,
    MuxerFraming,
    Negotiation,
    Ping,
    Identify,
    RelayControl,
    Ihave,
    Ids,
    Message,
    MessageContinued,
}

impl Guess {
    /// The name in the frames table.
    pub fn as_str(self) -> &'static str {
        match self {
            Guess::MuxerNegotiation => "muxer-negotiation",
            Guess::MuxerFraming => "muxer-framing",
            Guess::Negotiation => "negotiation",
            Guess::Ping => "ping",
            Guess::Identify => "identify",
            Guess::RelayControl => "relay-control",
            Guess::Ihave => "ihave",
            Guess::Ids => "iwant|idontwant",
            Guess::Message => "relay-message",
            Guess::MessageContinued => "relay-message-continued",
        }
    }
}

/// One run of a frame's bytes: `left` bytes of `label`, `units` messages starting in it, and
/// the framing label its stream bytes count for when the unit only carries them.
#[derive(Clone, Copy, Debug)]
struct Seg {
    left: u64,
    label: LabelId,
    units: u32,
    framing: Option<LabelId>,
}

/// How the frame after a message's frame goes on with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Run {
    #[default]
    None,
    /// In a new yamux frame (rust-libp2p's 16 KiB split): it has a muxer header.
    Muxed,
    /// Where the security layer cut the write: it has no header of its own.
    Cut,
}

/// What one direction has seen.
#[derive(Debug, Default)]
struct SideState {
    frames: u32,
    /// Plaintext bytes of the frames so far.
    bytes: u64,
    /// The muxer is negotiated: frames carry a muxer header.
    muxed: bool,
    identified: bool,
    /// The side sent its first relay RPC (gossipsub's subscriptions, sent first on a stream).
    hello: bool,
    /// The side sent gossipsub 1.3's extensions apart: its subscriptions, if it has any, come
    /// next in an RPC of their own, and a frame of another shape is not them.
    extended: bool,
    /// The side sent multistream-select's header alone (an echo whose proposal may follow).
    lone_header: bool,
    /// The topic name lengths (bit t set) its subscriptions may have named.
    topic_lens: u32,
    /// Inside a message longer than one frame.
    run: Run,
    /// Entry bytes of the publish entries of the message frames of the current run.
    entry: u64,
    /// Data bytes of the muxer frame the last message frame belongs to.
    frame_data: u64,
    /// Message ids the other side asked for (IWANT) and this side has not answered yet, and
    /// the message frames left in which the answer is looked for.
    asked: u32,
    asked_within: u32,
    /// The time and ids of the last IHAVE the side sent: an IWANT answers one.
    offered: Option<(i64, u64)>,
    /// The current frame's segments, consumed in order as its bytes arrive.
    plan: Vec<Seg>,
    next: usize,
}

/// The inference of one encrypted connection (both directions).
#[derive(Debug)]
pub struct Inference {
    conn: Conn,
    wrap: Wrap,
    writes: Writes,
    /// The security protocol's id, and the muxer: named (ALPN) or taken from the frames.
    security: &'static str,
    muxer: Muxer,
    muxer_named: bool,
    /// The labels without a shard, and those in use: on the shard of a peer known to serve
    /// only one, as of peer book generation `peers_seen`.
    base: Labels,
    labels: Labels,
    peers_seen: Option<u64>,
    sides: [SideState; 2],
    /// multistream headers seen whose proposal or echo may come alone.
    expect: u32,
    /// Messages the current frame's body starts beyond its first (an RPC answering an IWANT).
    more: u32,
    /// Bytes of header-only muxer frames before the current frame's body.
    lead: u64,
    /// Bytes of a stream's negotiation written before the current frame's body.
    negotiated: u64,
    /// The connection's number in the relay book, once it carried a relay frame.
    link: Option<u64>,
}

impl Inference {
    /// The inference for the Noise transport frames of connection `conn`.
    pub fn noise(conn: Conn, labels: &mut LabelTable) -> Inference {
        Inference::new(conn, NOISE, Writes::One, "/noise", labels)
    }

    /// The inference for Noise frames of connection `conn` that reach it joined: each write
    /// after the first in a frame adds `extra` bytes (per side: initiator, responder) of the
    /// layers around its Noise frame (a WebSocket frame's header and Noise's prefix and tag in
    /// one TLS record, over wss); a frame of more than `longer.0` bytes may be `longer.1` short.
    pub fn noise_coalesced(
        conn: Conn,
        extra: [u64; 2],
        longer: (u64, u64),
        labels: &mut LabelTable,
    ) -> Inference {
        let writes = Writes::Coalesced { extra, longer };
        Inference::new(conn, NOISE, writes, "/noise", labels)
    }

    /// The inference for the TLS 1.3 application data records of connection `conn`.
    pub fn tls(conn: Conn, labels: &mut LabelTable) -> Inference {
        let writes = Writes::Coalesced {
            extra: [0, 0],
            longer: (0, 0),
        };
        Inference::new(conn, TLS, writes, "/tls/1.0.0", labels)
    }

    fn new(
        conn: Conn,
        wrap: Wrap,
        writes: Writes,
        security: &'static str,
        labels: &mut LabelTable,
    ) -> Inference {
        let base = Labels::new(security, Muxer::Yamux, labels);
        Inference {
            conn,
            wrap,
            writes,
            security,
            muxer: Muxer::Yamux,
            muxer_named: false,
            base,
            labels: base,
            peers_seen: None,
            sides: Default::default(),
            expect: 0,
            more: 0,
            lead: 0,
            negotiated: 0,
            link: None,
        }
    }

    /// The muxer the connection agreed on (ALPN), when it is one the inference knows.
    pub fn name_muxer(&mut self, id: &[u8], labels: &mut LabelTable) {
        let muxer = match id {
            yamux::ID => Muxer::Yamux,
            mplex::ID => Muxer::Mplex,
            _ => return,
        };
        self.set_muxer(muxer, labels);
        self.muxer_named = true;
    }

    fn set_muxer(&mut self, muxer: Muxer, labels: &mut LabelTable) {
        if muxer != self.muxer {
            self.muxer = muxer;
            self.base = Labels::new(self.security, muxer, labels);
            self.labels = self.base;
            self.peers_seen = None;
        }
    }

    /// A transport frame of `body` bytes (ciphertext and trailer) starts on `side`: classifies
    /// it and plans the labels of its stream bytes (prefix and body).
    pub fn start(&mut self, side: Side, body: u64, ctx: &mut DecodeCtx<'_>) -> Guess {
        let Wrap {
            prefix: head,
            trailer,
            ..
        } = self.wrap;
        let plain = body.saturating_sub(trailer);
        let was = &self.sides[side.index()];
        let run = was.run;
        if !self.muxer_named && run == Run::None && plain < YAMUX_HEADER {
            // No yamux frame is that short.
            self.set_muxer(Muxer::Mplex, ctx.labels);
        }
        let guess = self.guess(side, plain, ctx.relay, ctx.now_ns);
        let peers = &ctx.relay.peers;
        if self.peers_seen != Some(peers.generation) {
            self.peers_seen = Some(peers.generation);
            self.labels = match peers.shards(self.conn.ends()) {
                Some(s) if s.shards.len() == 1 => match s.cluster {
                    Some(c) => {
                        let topic = format!("/waku/2/rs/{c}/{}", s.shards[0]);
                        self.base.on_topic(&topic, ctx.labels)
                    }
                    None => self.base,
                },
                _ => self.base,
            };
        }
        let l = self.labels;
        let s = &mut self.sides[side.index()];
        s.plan.clear();
        s.next = 0;
        let mut seg = |left, label, units, framing| {
            s.plan.push(Seg {
                left,
                label,
                units,
                framing,
            })
        };
        let unit = match guess {
            Guess::MuxerNegotiation | Guess::MuxerFraming => {
                let unit = if guess == Guess::MuxerFraming {
                    l.muxer
                } else {
                    l.negotiation
                };
                seg(head + (body - plain), unit, 0, Some(l.security));
                seg(plain, unit, 1, None);
                return guess;
            }
            Guess::Negotiation => l.negotiation,
            Guess::Ping => l.ping,
            Guess::Identify => l.identify,
            Guess::RelayControl => l.control,
            Guess::Ihave => l.ihave,
            Guess::Ids => l.ids,
            Guess::Message | Guess::MessageContinued => l.message,
        };
        // Every guess but muxer framing has a body after the muxer header (see `guess`), but
        // a cut message's next frame has no header.
        let header = match run {
            Run::Cut if guess == Guess::MessageContinued => 0,
            _ => self.muxer.header(plain).unwrap_or(0) + self.lead,
        };
        let d = plain - header - self.negotiated;
        // An RPC's varint length prefix is relay framing; a message longer than one frame
        // (16 KiB to 2 MiB) has a 3-byte one.
        let prefix = match guess {
            Guess::Message if s.run != Run::None => 3,
            Guess::Message | Guess::RelayControl | Guess::Ihave | Guess::Ids => rpc_prefix(d),
            _ => 0,
        };
        let units = match guess {
            Guess::MessageContinued => self.more,
            _ => 1 + self.more,
        };
        seg(head, unit, 0, Some(l.security));
        seg(header, unit, 0, Some(l.muxer));
        seg(self.negotiated, l.negotiation, 0, None);
        seg(prefix, l.relay_framing, 0, None);
        seg(d - prefix, unit, units, None);
        seg(body - plain, unit, 0, Some(l.security));
        guess
    }

    /// Labels the next `len` stream bytes of `side`'s current frame.
    pub fn consume(&mut self, side: Side, mut len: u64, ctx: &mut DecodeCtx<'_>) {
        let s = &mut self.sides[side.index()];
        while len > 0 {
            let Some(seg) = s.plan.get_mut(s.next) else {
                // Bytes past the plan cannot occur for a frame of the planned length; label them
                // as the security protocol's framing rather than lose them.
                ctx.emit(side, len, self.labels.security, 0);
                return;
            };
            let n = len.min(seg.left);
            ctx.emit_carried(side, n, seg.label, seg.units, seg.framing);
            seg.units = 0;
            seg.left -= n;
            len -= n;
            if seg.left == 0 {
                s.next += 1;
            }
        }
    }

    /// The kind of a frame of `plain` plaintext bytes on `side`; sets `more` for its body.
    fn guess(&mut self, side: Side, plain: u64, relay: &mut RelayBook, now: i64) -> Guess {
        self.more = 0;
        self.lead = 0;
        self.negotiated = 0;
        let (muxer, full) = (self.muxer, self.wrap.full);
        let link = *self.link.get_or_insert_with(|| relay.link());
        // The topic lengths both sides' subscriptions agree on (the frame of one may have held
        // more than its subscriptions).
        let lens = self.sides[0].topic_lens & self.sides[1].topic_lens;
        let offered = self.sides[side.other().index()].offered;
        let s = &mut self.sides[side.index()];
        s.frames += 1;
        let cut = full(plain, s.frames, s.bytes);
        s.bytes += plain;
        if !s.muxed {
            match plain {
                MULTISTREAM_HEADER => return Guess::MuxerNegotiation,
                MUXER_PROPOSAL | 34 => {
                    s.muxed = true;
                    return Guess::MuxerNegotiation;
                }
                _ => s.muxed = true,
            }
        }
        if s.run != Run::None {
            let header = match s.run {
                Run::Cut => 0,
                _ => muxer.header(plain).unwrap_or(plain),
            };
            let d = plain - header;
            s.entry += d;
            s.frame_data = if s.run == Run::Cut {
                s.frame_data + d
            } else {
                d
            };
            s.run = next(cut, muxer, s.frame_data);
            if s.run == Run::None {
                self.more = answered(s, relay, now, link);
            }
            return Guess::MessageContinued;
        }
        let Some(header) = muxer.header(plain) else {
            return Guess::MuxerFraming;
        };
        let d = plain - header;
        // Once a side's relay stream is open, the size of its negotiation is an RPC of two
        // GRAFTs (a 16-character topic each).
        let relay_again = s.hello && d == MULTISTREAM_HEADER + RELAY_PROPOSAL;
        if !relay_again && negotiation(d, &mut self.expect) {
            s.lone_header |= d == MULTISTREAM_HEADER;
            return Guess::Negotiation;
        }
        // A window update written together with a stream's opening, header and proposal
        // (Node's TLS coalesces them), while the connection sets up its first streams.
        if muxer == Muxer::Yamux
            && !s.identified
            && d > YAMUX_HEADER + MULTISTREAM_HEADER
            && proposal(d - YAMUX_HEADER - MULTISTREAM_HEADER)
        {
            self.lead = YAMUX_HEADER;
            return Guess::Negotiation;
        }
        if d == PING {
            return Guess::Ping;
        }
        if !s.identified && s.frames <= IDENTIFY_WITHIN && d >= IDENTIFY_MIN {
            s.identified = true;
            return Guess::Identify;
        }
        // A side's first relay RPC is its subscriptions, however long (with the stream's
        // negotiation and header-only frames when they are written together).
        if !s.hello && d == EXTENSIONS_RPC {
            s.extended = true;
            return Guess::RelayControl;
        }
        if !s.hello {
            let coalesced = match self.writes {
                Writes::One => None,
                Writes::Coalesced { extra, longer } => Some((extra[side.index()], longer)),
            };
            match hello(plain, header, muxer, coalesced, s.lone_header) {
                Some(Hello::Negotiation { lead }) => {
                    self.lead = lead;
                    return Guess::Negotiation;
                }
                Some(Hello::Rpc {
                    lead,
                    negotiated,
                    topic_lens,
                }) => {
                    self.lead = lead;
                    self.negotiated = negotiated;
                    s.topic_lens = topic_lens;
                    s.hello = true;
                    return Guess::RelayControl;
                }
                // Without subscriptions' shape, a frame after the extensions is not them.
                None if s.extended => s.hello = true,
                None => {
                    s.hello = true;
                    return Guess::RelayControl;
                }
            }
        }
        if d <= CONTROL_MAX {
            return Guess::RelayControl;
        }
        let recent = relay.recent_messages(now) as u64;
        let seen = relay.seen_size(now, d - rpc_prefix(d));
        // An IWANT answers an IHAVE of at least its ids that the other side sent lately
        // (IDONTWANT, sent per message at once, carries one id: control-sized).
        let believed = |&(k, topic): &(u64, bool)| {
            topic || offered.is_some_and(|(t, n)| n >= k && now.saturating_sub(t) <= IWANT_AFTER_NS)
        };
        let sender = match side {
            Side::Initiator => self.conn.initiator.0,
            Side::Responder => self.conn.responder.0,
        };
        let gossip = gossip_ids(d, recent, lens, s.extended)
            .filter(|_| !seen)
            .filter(believed)
            .filter(|&(_, topic)| !topic || relay.in_phase(sender, now));
        if let Some((k, topic)) = gossip {
            if topic {
                s.offered = Some((now, k));
            } else {
                let other = &mut self.sides[side.other().index()];
                other.asked = u32::try_from(k).unwrap_or(u32::MAX);
                other.asked_within = ANSWER_WITHIN;
            }
            return if topic { Guess::Ihave } else { Guess::Ids };
        }
        relay.saw_message(now, link);
        s.frame_data = d;
        s.run = next(cut, muxer, d);
        s.entry = d - if s.run == Run::None { rpc_prefix(d) } else { 3 };
        if s.run == Run::None {
            self.more = answered(s, relay, now, link);
        }
        Guess::Message
    }
}

/// Whether a stream body of `d` bytes is multistream-select: its header, the header and a
/// proposal, or an echo after a header seen (`expect` counts headers whose echo may follow).
fn negotiation(d: u64, expect: &mut u32) -> bool {
    if d == MULTISTREAM_HEADER {
        *expect += 1;
        return true;
    }
    if d > MULTISTREAM_HEADER && proposal(d - MULTISTREAM_HEADER) {
        return true;
    }
    if *expect > 0 && proposal(d) {
        *expect -= 1;
        return true;
    }
    false
}

/// Whether `d` bytes are the multistream proposal (or echo) of a stream protocol.
fn proposal(d: u64) -> bool {
    STREAM_PROTOCOLS.iter().any(|p| p.len() as u64 + 2 == d)
}

/// How the frame after a message's frame of a muxer frame of `data` bytes goes on with it:
/// after a cut frame, or after a muxer frame of the size a muxer splits long writes at.
fn next(cut: bool, muxer: Muxer, data: u64) -> Run {
    let splits: &[u64] = match muxer {
        Muxer::Yamux => &YAMUX_SPLITS,
        Muxer::Mplex => &MPLEX_SPLITS,
    };
    if cut {
        Run::Cut
    } else if splits.contains(&data) {
        Run::Muxed
    } else {
        Run::None
    }
}

/// When `s` owes an answer to an IWANT, the messages beyond the first that its message just
/// ended holds, if its entries add up to messages that went by recently; notes its size, or
/// the messages beyond the first as carried by connection `link`.
fn answered(s: &mut SideState, relay: &mut RelayBook, now: i64, link: u64) -> u32 {
    let n = match s.asked {
        0 | 1 => 1,
        asked => relay.messages_summing(s.entry, asked, now).unwrap_or(1),
    };
    s.asked_within = s.asked_within.saturating_sub(1);
    if n > 1 || s.asked_within == 0 {
        s.asked = 0;
    }
    if n == 1 {
        relay.message_size(now, s.entry);
    }
    for _ in 1..n {
        relay.saw_message(now, link);
    }
    n.saturating_sub(1)
}

/// What a side's first relay frame holds besides its subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    /// Only the negotiation of relay streams (one side's, or the echo and its own) after
    /// `lead` bytes of header-only muxer frames and coalesced writes' framing: the
    /// subscriptions are still to come.
    Negotiation { lead: u64 },
    /// `lead` bytes of header-only muxer frames and coalesced writes' framing, `negotiated`
    /// bytes of the stream's negotiation, then an RPC subscribing to topics of one of the
    /// lengths of `topic_lens` (bit t set: those of every split that fits).
    Rpc {
        lead: u64,
        negotiated: u64,
        topic_lens: u32,
    },
}

/// How a side's first relay frame of `plain` bytes (`header` of them the first muxer header)
/// splits. With writes coalesced (Node's TLS writes a relay stream's opening, its negotiation
/// and the first RPC in one record), each write after the first adds `extra` bytes around its
/// muxer frame (a frame given of more than `longer.0` bytes may be `longer.1` short of them),
/// and writes of the relay streams' negotiation ([`OPENING`], [`ECHO`]) and header-only frames
/// may come with the RPC; else the frame is the RPC alone. `RPC.subscriptions` entries of
/// `subscribe` and `topicid` are 6 bytes and the name each. Negotiation alone when it fits;
/// else, of the RPC splits that fit, the one with the fewest bytes of headers and framing, and
/// the topic lengths of all; `None` when none does.
fn hello(
    plain: u64,
    header: u64,
    muxer: Muxer,
    coalesced: Option<(u64, (u64, u64))>,
    lone_header: bool,
) -> Option<Hello> {
    let d = plain - header;
    // The fewest writes `rest` bytes, after `data` data writes, their headers and bytes, may be
    // the framing of: the writes after the first, and (at least `least`) header-only frames.
    let fits = |rest: u64, data: u64, least: u64| match coalesced {
        None => (data == 1 && rest == 0 && least == 0).then_some(1),
        Some((extra, (above, by))) => (least..=HEADER_ONLY_MAX).map(|n| data + n).find(|&writes| {
            let only = muxer.header_only();
            let n = writes - data;
            let short = if writes > 1 && plain > above { by } else { 0 };
            (rest + short)
                .checked_sub((writes - 1) * extra)
                .is_some_and(|r| (n * only.start()..=n * only.end()).contains(&r))
        }),
    };
    // The echoes a frame may hold, and with the side's opening: (data writes, bytes,
    // header-only frames at least).
    let echoes = || {
        ECHO.iter()
            .filter(move |e| lone_header || e.1 != RELAY_PROPOSAL)
            .copied()
    };
    let negotiations = || {
        OPENING
            .iter()
            .flat_map(move |o| echoes().map(move |e| (o.0 + e.0, o.1 + e.1, o.2 + e.2)))
    };
    let headers = |writes: u64| writes * muxer.data_header(RELAY_PROPOSAL);
    // Negotiation alone, in the fewest writes, when it fits; else the RPC split of the fewest
    // bytes of headers and framing, with the topic lengths of every RPC split.
    let only = negotiations()
        .filter(|n| n.0 > 0)
        .filter_map(|(writes, bytes, least)| {
            let rest = plain.checked_sub(bytes + headers(writes))?;
            Some((fits(rest, writes, least)?, d - bytes))
        })
        .min();
    if let Some((_, lead)) = only {
        return Some(Hello::Negotiation { lead });
    }
    let mut best: Option<(u64, u64)> = None;
    let mut topic_lens = 0;
    // Subscriptions to n topics whose names add up to `sum` bytes: of one length first, else of
    // mixed lengths (each length the sum allows); entries without gossipsub 1.3's flags first.
    let shapes = SUBSCRIPTION_EXTRA
        .into_iter()
        .flat_map(|extra| [false, true].map(|mixed| (extra, mixed)));
    for (extra, mixed) in shapes {
        if best.is_some() {
            break;
        }
        for (n, sum) in subscriptions().filter(|&(n, _)| !mixed || n <= MIXED_MAX) {
            let (lo, hi) = match (mixed, sum % n == 0) {
                (false, true) => (sum / n, sum / n),
                (true, false) => (
                    (*TOPIC_LENS.start()).max(sum.saturating_sub((n - 1) * TOPIC_LENS.end())),
                    (*TOPIC_LENS.end()).min(sum - (n - 1) * TOPIC_LENS.start()),
                ),
                _ => continue,
            };
            let rpc = rpc(n * extra + sum);
            for (writes, bytes, least) in echoes() {
                let used = rpc + muxer.data_header(rpc) + bytes + headers(writes);
                let rest = plain.checked_sub(used);
                if rest.and_then(|r| fits(r, writes + 1, least)).is_none() {
                    continue;
                }
                topic_lens |= (lo..=hi).fold(0, |m, t| m | 1 << t);
                let split = (d - rpc - bytes, bytes);
                if best.is_none_or(|b| split < b) {
                    best = Some(split);
                }
            }
        }
    }
    best.map(|(lead, negotiated)| Hello::Rpc {
        lead,
        negotiated,
        topic_lens,
    })
}

/// The subscriptions a first relay frame may hold: (topics, bytes of their names together).
fn subscriptions() -> impl Iterator<Item = (u64, u64)> {
    (1..=SUBSCRIPTIONS_MAX)
        .flat_map(|n| (n * TOPIC_LENS.start()..=n * TOPIC_LENS.end()).map(move |sum| (n, sum)))
}

/// The gossip an RPC of `d` bytes may be, with at most `most` 34-byte ids: the number of ids
/// and whether they are IHAVE. IWANT/IDONTWANT is `RPC.control.{iwant,idontwant}.messageIDs`
/// (no topic). IHAVE is the gossip of a heartbeat: `RPC.control.ihave` entries, one per topic
/// (js-libp2p-gossipsub names all its topics in one RPC; up to two are looked for),
/// each a static-sharding topic and its ids, and the GRAFT a heartbeat may send with them;
/// only one topic where the side writes each control action in an RPC of its own
/// (`one_per_rpc`: rust-libp2p, known by the extensions it sends apart).
fn gossip_ids(d: u64, most: u64, lens: u32, one_per_rpc: bool) -> Option<(u64, bool)> {
    // Without the topics' lengths, many shapes fit almost any size: one topic of any length.
    let (lens, several) = match lens {
        0 => (TOPIC_LENS.fold(0, |m, t| m | 1 << t), false),
        l => (l, !one_per_rpc),
    };
    // The RPC's fields around the ids take less than three ids' bytes.
    let k1 = d / ID_ENTRY;
    let ks = || k1.saturating_sub(3).max(1)..=k1.min(most);
    for k in ks() {
        if rpc(field(field(ID_ENTRY * k))) == d {
            return Some((k, false));
        }
    }
    let ihave = |t: u64, k: u64| field(2 + t + ID_ENTRY * k);
    for t in TOPIC_LENS.filter(|t| lens & 1 << t != 0) {
        let grafts = if several {
            &[0, field(2 + t)][..]
        } else {
            &[0]
        };
        for &graft in grafts {
            for k in ks() {
                if rpc(field(ihave(t, k) + graft)) == d {
                    return Some((k, true));
                }
                // Two topics, k ids between them.
                for t2 in TOPIC_LENS.filter(|&t2| several && t2 >= t && lens & 1 << t2 != 0) {
                    let split = [1, 2, 3, 4, k / 2, k.saturating_sub(4), k.saturating_sub(1)];
                    if split.iter().any(|&k1| {
                        (1..k).contains(&k1)
                            && rpc(field(ihave(t, k1) + ihave(t2, k - k1) + graft)) == d
                    }) {
                        return Some((k, true));
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    fn conn() -> Conn {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        Conn {
            initiator: (ip, 40000),
            responder: (ip, 60000),
        }
    }

    /// The sizes of a connection's first frames as rust-libp2p sends them: the muxer
    /// negotiation, a stream's header and proposal, its echo, then RPCs.
    #[test]
    fn shapes_of_a_connection() {
        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| inf.start(side, plain + TAG, &mut ctx);
        assert_eq!(g(Side::Initiator, 34), Guess::MuxerNegotiation);
        assert_eq!(g(Side::Responder, 20), Guess::MuxerNegotiation);
        assert_eq!(g(Side::Responder, 14), Guess::MuxerNegotiation);
        assert_eq!(g(Side::Initiator, 12), Guess::MuxerFraming);
        assert_eq!(g(Side::Initiator, 12 + 20 + 23), Guess::Negotiation);
        assert_eq!(g(Side::Responder, 12 + 20), Guess::Negotiation);
        assert_eq!(g(Side::Responder, 12 + 23), Guess::Negotiation);
        assert_eq!(g(Side::Initiator, 12 + 32), Guess::Ping);
        assert_eq!(g(Side::Initiator, 12 + 400), Guess::Identify);
        assert_eq!(g(Side::Initiator, 12 + 40), Guess::RelayControl);
        // Three ids gossiped before three messages crossed the connection are taken for a
        // message.
        let ids3 = rpc(field(field(3 * ID_ENTRY)));
        assert_eq!(g(Side::Initiator, 12 + ids3), Guess::Message);
        let ids4 = rpc(field(field(4 * ID_ENTRY)));
        assert_eq!(g(Side::Responder, 12 + 500), Guess::Identify);
        // A side's first relay RPC is its subscriptions, however long.
        assert_eq!(g(Side::Responder, 12 + 120), Guess::RelayControl);
        for _ in 0..3 {
            assert_eq!(g(Side::Responder, 12 + 500), Guess::Message);
        }
        // IWANT answers an IHAVE of at least its ids from the other side: before one, the
        // shape is a message.
        let ihave4 = rpc(field(field(2 + 16 + 4 * ID_ENTRY)));
        assert_eq!(g(Side::Responder, 12 + ihave4), Guess::Ihave);
        assert_eq!(g(Side::Initiator, 12 + ids4), Guess::Ids);
        let ihave2 = rpc(field(field(2 + 16 + 2 * ID_ENTRY)));
        assert_eq!(g(Side::Responder, 12 + ihave2), Guess::Ihave);
        assert_eq!(g(Side::Initiator, 12 + SPLIT_SIZE), Guess::Message);
        assert_eq!(g(Side::Initiator, 12 + SPLIT_SIZE), Guess::MessageContinued);
        assert_eq!(g(Side::Initiator, 12 + 5), Guess::MessageContinued);
        assert_eq!(g(Side::Initiator, 12 + 5), Guess::RelayControl);
        // An RPC of the size of a message that went by is that message, not gossip.
        assert_eq!(g(Side::Initiator, 12 + ids3), Guess::Message);
    }

    /// Once both sides' subscriptions showed their topics' length (one written after
    /// header-only frames and the stream's negotiation, as Node's TLS does), a heartbeat's
    /// gossip for two topics with a GRAFT is IHAVE; an RPC of two GRAFTs is not negotiation.
    #[test]
    fn gossip_on_topics_the_subscriptions_named() {
        let mut t = TestCtx::default();
        let mut inf = Inference::tls(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| inf.start(side, plain + TAG + 1, &mut ctx);
        let subscribe2 = rpc(2 * (6 + 16));
        for side in Side::BOTH {
            assert_eq!(g(side, 12 + 400), Guess::Identify);
        }
        // The responder echoes the initiator's relay stream and opens its own, after
        // window updates: negotiation only.
        let opened = MULTISTREAM_HEADER + RELAY_PROPOSAL;
        assert_eq!(
            g(Side::Responder, 12 + 3 * 12 + 2 * opened),
            Guess::Negotiation
        );
        assert_eq!(
            g(Side::Initiator, 12 + 4 * 12 + opened + subscribe2),
            Guess::RelayControl
        );
        assert_eq!(
            g(Side::Responder, 12 + 2 * 12 + subscribe2),
            Guess::RelayControl
        );
        assert_eq!(g(Side::Initiator, 12 + rpc(field(40))), Guess::RelayControl);
        for _ in 0..10 {
            assert_eq!(g(Side::Initiator, 12 + 1000), Guess::Message);
        }
        let ihave = |k: u64| field(2 + 16 + k * ID_ENTRY);
        let two_topics = rpc(field(ihave(6) + ihave(4) + field(2 + 16)));
        assert_eq!(g(Side::Responder, 12 + two_topics), Guess::Ihave);
    }

    /// rust-libp2p (gossipsub 1.3) sends its extensions in an RPC of their own, then its
    /// subscriptions, with two flags per topic, to topics of different lengths; it writes each
    /// IHAVE in an RPC of its own, on one of those topics. A side with nothing to subscribe
    /// sends a message after its extensions.
    #[test]
    fn extensions_then_subscriptions_of_mixed_lengths() {
        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| inf.start(side, plain + TAG, &mut ctx);
        for side in Side::BOTH {
            assert_eq!(g(side, 12 + 400), Guess::Identify);
            assert_eq!(g(side, 12 + EXTENSIONS_RPC), Guess::RelayControl);
        }
        assert_eq!(
            g(Side::Initiator, 12 + rpc(2 * 10 + 16 + 17)),
            Guess::RelayControl
        );
        assert_eq!(g(Side::Responder, 12 + rpc(10 + 16)), Guess::RelayControl);
        for _ in 0..10 {
            assert_eq!(g(Side::Initiator, 12 + 1000), Guess::Message);
        }
        let ihave = |t: u64, k: u64| rpc(field(field(2 + t + k * ID_ENTRY)));
        assert_eq!(g(Side::Initiator, 12 + ihave(16, 5)), Guess::Ihave);
        assert_eq!(g(Side::Initiator, 12 + ihave(14, 6)), Guess::Message);
        let two = |k: u64| field(2 + 16 + k * ID_ENTRY);
        assert_eq!(
            g(Side::Initiator, 12 + rpc(field(two(3) + two(4)))),
            Guess::Message
        );

        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| inf.start(side, plain + TAG, &mut ctx);
        assert_eq!(g(Side::Initiator, 12 + 400), Guess::Identify);
        assert_eq!(g(Side::Initiator, 12 + EXTENSIONS_RPC), Guess::RelayControl);
        assert_eq!(g(Side::Initiator, 12 + 167), Guess::Message);
    }

    /// Over wss, Node's TLS joins the Noise frames written while its socket is busy in one
    /// record, each in a WebSocket frame: a side's first relay frame may hold only negotiation
    /// (the echo of the other's relay stream and its own opening), or an echo and the
    /// subscriptions; their topics' length still shows, and a heartbeat's gossip for two topics
    /// is IHAVE.
    #[test]
    fn subscriptions_in_frames_joined_over_wss() {
        let mut t = TestCtx::default();
        let extra = [6 + 18, 2 + 18];
        let mut inf = Inference::noise_coalesced(conn(), extra, (107, 2), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| inf.start(side, plain + TAG, &mut ctx);
        assert_eq!(g(Side::Responder, 3), Guess::MuxerFraming);
        for side in Side::BOTH {
            assert_eq!(g(side, 2 + 400), Guess::Identify);
        }
        // Echo of the header, a new stream, the opening, echo of the proposal: four writes,
        // under a WebSocket header taken for one frame of them all (2 bytes longer).
        let joined = |sizes: &[u64], extra: u64| {
            sizes.iter().sum::<u64>() + (sizes.len() as u64 - 1) * extra
        };
        let (echo_header, echo_proposal, opening) = (2 + 20, 2 + 23, 2 + 43);
        let subscribe2 = 2 + rpc(2 * (6 + 16));
        let responder = joined(&[echo_header, 3, opening, echo_proposal], extra[1]) - 2;
        assert_eq!(g(Side::Responder, responder), Guess::Negotiation);
        assert_eq!(g(Side::Initiator, echo_header), Guess::Negotiation);
        let initiator = joined(&[echo_proposal, subscribe2], extra[0]);
        assert_eq!(g(Side::Initiator, initiator), Guess::RelayControl);
        assert_eq!(g(Side::Responder, subscribe2), Guess::RelayControl);
        for _ in 0..6 {
            assert_eq!(g(Side::Initiator, 3 + 1000), Guess::Message);
        }
        let ihave = |k: u64| field(2 + 16 + k * ID_ENTRY);
        let two_topics = rpc(field(ihave(3) + ihave(3)));
        assert_eq!(
            g(Side::Responder, 1 + varint_len(two_topics) + two_topics),
            Guess::Ihave
        );
    }

    /// Every byte of a frame fed in pieces is labelled once; a message's payload is its entry.
    #[test]
    fn a_message_frame_in_pieces() {
        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        inf.start(Side::Initiator, 20 + TAG, &mut ctx);
        inf.consume(Side::Initiator, 2 + 20 + TAG, &mut ctx);
        inf.start(Side::Initiator, 14 + TAG, &mut ctx);
        inf.consume(Side::Initiator, 2 + 14 + TAG, &mut ctx);
        for d in [300, 45] {
            inf.start(Side::Initiator, YAMUX_HEADER + d + TAG, &mut ctx);
            inf.consume(Side::Initiator, 2 + YAMUX_HEADER + d + TAG, &mut ctx);
        }
        ctx.spans.clear();
        let d = 1000;
        let body = YAMUX_HEADER + d + TAG;
        assert_eq!(inf.start(Side::Initiator, body, &mut ctx), Guess::Message);
        for _ in 0..(2 + body) / 7 {
            inf.consume(Side::Initiator, 7, &mut ctx);
        }
        inf.consume(Side::Initiator, (2 + body) % 7, &mut ctx);
        let spans = std::mem::take(ctx.spans);
        assert_eq!(spans.iter().map(|s| s.len).sum::<u64>(), 2 + body);
        let entry: u64 = spans
            .iter()
            .filter(|s| s.framing.is_none() && t.labels.get(s.label).kind.as_ref() == "message")
            .map(|s| s.len)
            .sum();
        assert_eq!(entry, d - varint_len(d));
        assert_eq!(spans.iter().map(|s| s.units).sum::<u32>(), 1);
    }

    /// A connection whose frames are shorter than a yamux header carries mplex: its headers are
    /// two varints; a Noise frame filled to the maximum goes on in the next, without a header;
    /// js-libp2p's yamux frames of 64 KiB go on in the next yamux frame.
    #[test]
    fn mplex_and_long_messages() {
        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |plain: u64| inf.start(Side::Initiator, plain + TAG, &mut ctx);
        assert_eq!(g(3), Guess::MuxerFraming);
        assert_eq!(g(2 + 20 + 16), Guess::Negotiation);
        assert_eq!(g(3 + 382), Guess::Identify);
        assert_eq!(g(2 + 45), Guess::RelayControl);
        assert_eq!(g(3 + 1091), Guess::Message);
        assert_eq!(g(NOISE_MAX[0]), Guess::Message);
        assert_eq!(g(100), Guess::MessageContinued);
        assert_eq!(g(3 + 1091), Guess::Message);
        assert_eq!(inf.muxer, Muxer::Mplex);

        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |plain: u64| inf.start(Side::Initiator, plain + TAG, &mut ctx);
        assert_eq!(g(12 + 400), Guess::Identify);
        assert_eq!(g(12 + 45), Guess::RelayControl);
        assert_eq!(g(NOISE_MAX[0]), Guess::Message);
        assert_eq!(g(64 * 1024 - NOISE_MAX[0]), Guess::MessageContinued);
        assert_eq!(g(12 + 6227), Guess::MessageContinued);
        assert_eq!(g(12 + 6227), Guess::Message);
    }

    /// After an IWANT of k ids, an RPC whose entries add up to messages that went by counts as
    /// that many messages.
    #[test]
    fn an_iwant_answer_counts_its_messages() {
        let mut t = TestCtx::default();
        let mut inf = Inference::noise(conn(), &mut t.labels);
        let mut ctx = t.ctx();
        let mut g = |side, plain: u64| {
            let guess = inf.start(side, plain + TAG, &mut ctx);
            inf.consume(side, 2 + plain + TAG, &mut ctx);
            guess
        };
        for side in Side::BOTH {
            assert_eq!(g(side, 12 + 400), Guess::Identify);
            assert_eq!(g(side, 12 + 45), Guess::RelayControl);
        }
        let entries = [1089, 10305, 165];
        for e in entries {
            assert_eq!(g(Side::Responder, 12 + rpc(e)), Guess::Message);
        }
        let iwant = rpc(field(field(3 * ID_ENTRY)));
        let ihave = rpc(field(field(2 + 16 + 3 * ID_ENTRY)));
        assert_eq!(g(Side::Responder, 12 + ihave), Guess::Ihave);
        assert_eq!(g(Side::Initiator, 12 + iwant), Guess::Ids);
        let answer = 12 + rpc(entries.iter().sum());
        assert_eq!(g(Side::Responder, answer), Guess::Message);
        let spans = std::mem::take(ctx.spans);
        let messages: u32 = spans
            .iter()
            .filter(|s| t.labels.get(s.label).kind.as_ref() == "message")
            .map(|s| s.units)
            .sum();
        assert_eq!(messages, 3 + 3);
    }

    #[test]
    fn gossip_id_shapes() {
        assert_eq!(
            gossip_ids(rpc(field(field(34 * 7))), 7, 1 << 16, false),
            Some((7, false))
        );
        assert_eq!(
            gossip_ids(rpc(field(field(34 * 7))), 6, 1 << 16, false),
            None
        );
        assert_eq!(
            gossip_ids(rpc(field(field(2 + 16 + 34 * 200))), 300, 1 << 16, false),
            Some((200, true))
        );
        assert_eq!(gossip_ids(1000, 100, 1 << 16, false), None);
    }
}
