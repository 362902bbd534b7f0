//! Gossipsub RPCs on a relay stream (protocols.md §3), split field by field as design.md rule 4
//! says: each `RPC.publish` entry is relay chat, each `RPC.subscriptions` entry and each control
//! entry (IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT) relay control of its kind, the RPC's length
//! prefix and the `RPC.control` tag + length relay control framing. An entry that names a topic
//! (subscription, publish, IHAVE, GRAFT, PRUNE) is labelled with that topic's shard once the
//! entry has been read whole and decoded with prost; IWANT and IDONTWANT ids take the topics the
//! [`RelayBook`] learned for them. A field key or length split across muxer frames is labelled
//! framing.

use std::sync::Arc;

use prost::Message as _;

use crate::account::record::Category;
use crate::decode::error::DecodeError;
use crate::decode::ordered::{Ordered, Pending, WAIT_LIMIT};
use crate::decode::relay::gossipsub_pb::{
    ControlIHave, ControlIds, ControlTopic, Message, SubOpts,
};
use crate::decode::relay::relay_book::{MeshKind, Published, RelayBook};
use crate::decode::relay::waku_message::{self, relay_id};
use crate::decode::{DecodeCtx, LabelId, LabelTable, Side};

/// Longest varint read (a u64).
const MAX_VARINT: usize = 10;
/// `RPC` field numbers.
const RPC_SUBSCRIPTIONS: u64 = 1;
const RPC_PUBLISH: u64 = 2;
const RPC_CONTROL: u64 = 3;
/// Protobuf wire types.
const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

/// The labels of one relay protocol's parts.
#[derive(Clone, Copy, Debug)]
pub struct RelayLabels {
    framing: LabelId,
    subscribe: LabelId,
    message: LabelId,
    /// IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT: `ControlMessage` fields 1 to 5.
    control: [LabelId; 5],
    /// Bytes after a malformed RPC.
    unparsed: LabelId,
}

impl RelayLabels {
    /// The labels for the relay protocol `protocol`.
    pub fn new(protocol: &str, labels: &mut LabelTable) -> RelayLabels {
        let mut control = |kind| labels.decoded(Category::RelayControl, protocol, kind);
        let c = [
            control("ihave"),
            control("iwant"),
            control("graft"),
            control("prune"),
            control("idontwant"),
        ];
        RelayLabels {
            framing: labels.decoded(Category::RelayControl, protocol, "framing"),
            subscribe: labels.decoded(Category::RelayControl, protocol, "subscribe"),
            message: labels.decoded(Category::RelayChat, protocol, "message"),
            control: c,
            unparsed: labels.decoded(Category::Libp2p, protocol, "unparsed"),
        }
    }
}

/// Where the walker is in the RPC stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The RPC's varint length prefix.
    Prefix,
    /// A field key, at the top level or inside `RPC.control`.
    Key,
    /// A length-delimited field's length; `label` is the entry's, `kind` what it holds.
    Len {
        label: LabelId,
        units: u32,
        control: bool,
        kind: Option<EntryKind>,
    },
    /// A varint field's value.
    Value,
    /// `left` bytes of a fixed-size field or an entry's body.
    Skip { left: u64, label: LabelId },
    /// Malformed: the rest of this stream side is unparsed.
    Broken,
}

/// The walker of one side of one relay stream.
#[derive(Debug)]
pub struct RpcWalker {
    labels: RelayLabels,
    state: State,
    /// Varint bytes read so far, and how many of them were already labelled.
    varint: Vec<u8>,
    emitted: usize,
    /// Key + length bytes of the entry being read, not yet labelled.
    entry_head: u64,
    /// Bytes left in the current RPC and in its `control` field (0: not inside it).
    rpc_left: u64,
    control_left: u64,
    /// The entry being read, whose label waits until it is complete.
    entry: Option<Entry>,
}

/// What an `RPC` or `ControlMessage` entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Subscribe,
    Publish,
    IHave,
    IWant,
    Graft,
    Prune,
    IDontWant,
}

impl EntryKind {
    /// The kind of a `ControlMessage` field (1 to 5).
    fn control(field: u64) -> Option<EntryKind> {
        [
            EntryKind::IHave,
            EntryKind::IWant,
            EntryKind::Graft,
            EntryKind::Prune,
            EntryKind::IDontWant,
        ]
        .get(field.checked_sub(1)? as usize)
        .copied()
    }
}

/// An entry whose label waits until its body is read.
#[derive(Debug)]
struct Entry {
    token: u32,
    base: LabelId,
    kind: EntryKind,
    /// Tag + length bytes, and the body read so far (dropped past [`WAIT_LIMIT`]).
    head: u64,
    body: Vec<u8>,
    whole: bool,
}

impl RpcWalker {
    /// Heap bytes: this walker (boxed by its stream) and what it holds of the current entry.
    pub fn heap_bytes(&self) -> usize {
        size_of::<RpcWalker>()
            + self.varint.capacity()
            + self.entry.as_ref().map_or(0, |e| e.body.capacity())
    }

    /// A walker at the start of a relay stream's data.
    pub fn new(labels: RelayLabels) -> RpcWalker {
        RpcWalker {
            labels,
            state: State::Prefix,
            varint: Vec::new(),
            emitted: 0,
            entry_head: 0,
            rpc_left: 0,
            control_left: 0,
            entry: None,
        }
    }

    /// Labels `bytes` that `side` sent, appending spans for every byte to `out`.
    pub fn feed(
        &mut self,
        side: Side,
        mut bytes: &[u8],
        ctx: &mut DecodeCtx<'_>,
        out: &mut Ordered,
    ) {
        while !bytes.is_empty() {
            match self.state {
                State::Broken => {
                    out.push(bytes.len() as u64, Pending::Now(self.labels.unparsed), 0);
                    return;
                }
                State::Skip { left, label } => {
                    let n = left.min(bytes.len() as u64);
                    match &mut self.entry {
                        Some(e) => {
                            let waiting = Pending::Later {
                                token: e.token,
                                fallback: e.base,
                            };
                            out.push(n, waiting, 0);
                            let piece = &bytes[..n as usize];
                            if e.whole && (e.body.len() + piece.len()) as u64 <= WAIT_LIMIT {
                                e.body.extend_from_slice(piece);
                            } else if e.whole {
                                e.whole = false;
                                e.body = Vec::new();
                            }
                        }
                        None => out.push(n, Pending::Now(label), 0),
                    }
                    self.consume(n);
                    bytes = &bytes[n as usize..];
                    if n == left {
                        self.end_entry(side, ctx, out);
                        self.state = self.after_field();
                    } else {
                        self.state = State::Skip {
                            left: left - n,
                            label,
                        };
                    }
                }
                State::Prefix | State::Key | State::Len { .. } | State::Value => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.varint.push(b);
                    if self.state != State::Prefix {
                        self.consume(1);
                    }
                    if b & 0x80 != 0 {
                        if self.varint.len() >= MAX_VARINT {
                            self.break_off(out);
                        } else if bytes.is_empty() {
                            // The varint continues in a later chunk: label what is here now.
                            let n = (self.varint.len() - self.emitted) as u64;
                            out.push(n, Pending::Now(self.labels.framing), 0);
                            self.emitted = self.varint.len();
                        }
                        continue;
                    }
                    let value = varint_value(&self.varint);
                    let fresh = (self.varint.len() - self.emitted) as u64;
                    self.varint.clear();
                    self.emitted = 0;
                    self.varint_done(value, fresh, out);
                }
            }
        }
    }

    /// Counts `n` bytes against the enclosing RPC and control field.
    fn consume(&mut self, n: u64) {
        self.rpc_left = self.rpc_left.saturating_sub(n);
        self.control_left = self.control_left.saturating_sub(n);
    }

    /// The state after a field ends: the next key, or the next RPC.
    fn after_field(&self) -> State {
        if self.rpc_left == 0 {
            State::Prefix
        } else {
            State::Key
        }
    }

    /// Decodes the entry just read and decides the label of its bytes.
    fn end_entry(&mut self, side: Side, ctx: &mut DecodeCtx<'_>, out: &mut Ordered) {
        let Some(e) = self.entry.take() else { return };
        let book = &mut *ctx.relay;
        if !e.whole {
            book.stats.entries_too_large += 1;
            out.resolve(e.token, e.base);
            return;
        }
        let labels = &mut *ctx.labels;
        let topical = |topic: Option<String>, labels: &mut LabelTable| match topic {
            Some(t) => labels.with_topic(e.base, &t),
            None => e.base,
        };
        let label = match e.kind {
            EntryKind::Subscribe => SubOpts::decode(&e.body[..]).map(|m| {
                let kind = if m.subscribe.unwrap_or(false) {
                    MeshKind::Subscribe
                } else {
                    MeshKind::Unsubscribe
                };
                let label = topical(m.topic_id, labels);
                book.mesh_event(side, kind, label);
                label
            }),
            EntryKind::Graft | EntryKind::Prune => ControlTopic::decode(&e.body[..]).map(|m| {
                let kind = if e.kind == EntryKind::Graft {
                    MeshKind::Graft
                } else {
                    MeshKind::Prune
                };
                let label = topical(m.topic_id, labels);
                book.mesh_event(side, kind, label);
                label
            }),
            EntryKind::IHave => ControlIHave::decode(&e.body[..]).map(|m| {
                if let Some(t) = &m.topic_id {
                    let topic = labels.string(t);
                    for id in &m.message_ids {
                        book.learn(id, &topic);
                    }
                }
                topical(m.topic_id, labels)
            }),
            EntryKind::Publish => Message::decode(&e.body[..]).map(|m| {
                let label = topical(m.topic.clone(), labels);
                let data = m.data.unwrap_or_default();
                let id = relay_id(&data);
                let topic = m.topic.map(|t| labels.string(&t));
                let waku = waku_message::decode(topic.as_deref().unwrap_or_default(), &data);
                if let Some(topic) = &topic {
                    book.learn(&id, topic);
                    if let Some(w) = &waku {
                        book.learn(&w.message_hash, topic);
                    }
                }
                book.mesh_event(side, MeshKind::Publish, label);
                book.published.push(Published {
                    side,
                    label,
                    id,
                    entry_bytes: e.head + e.body.len() as u64,
                    data_bytes: data.len() as u64,
                    waku,
                });
                label
            }),
            EntryKind::IWant | EntryKind::IDontWant => match ControlIds::decode(&e.body[..]) {
                Ok(m) => {
                    let parts = id_parts(&m.message_ids, e.head, e.base, book, labels);
                    if parts.iter().map(|p| p.0).sum::<u64>() == e.head + e.body.len() as u64 {
                        out.resolve_parts(e.token, &parts);
                        return;
                    }
                    Ok(parts.first().map_or(e.base, |p| p.1))
                }
                Err(err) => Err(err),
            },
        };
        let label = label.unwrap_or_else(|_| {
            book.stats.entries_malformed += 1;
            let what = "an RPC entry's protobuf does not decode";
            ctx.errors.count(DecodeError::new("gossipsub", what));
            e.base
        });
        out.resolve(e.token, label);
    }

    fn break_off(&mut self, out: &mut Ordered) {
        let n = (self.varint.len() - self.emitted) as u64;
        out.push(n, Pending::Now(self.labels.unparsed), 0);
        self.varint.clear();
        self.emitted = 0;
        self.state = State::Broken;
    }

    /// A varint of `fresh` not yet labelled bytes ended with `value`.
    fn varint_done(&mut self, value: u64, fresh: u64, out: &mut Ordered) {
        let l = self.labels;
        let now = Pending::Now;
        match self.state {
            State::Prefix => {
                // One RPC: it counts as one framing message.
                out.push(fresh, now(l.framing), 1);
                self.rpc_left = value;
                self.control_left = 0;
                if value > 0 {
                    self.state = State::Key;
                }
            }
            State::Key => {
                let (field, wire) = (value >> 3, value & 7);
                let control = self.control_left > 0;
                match wire {
                    WIRE_LEN => {
                        let kind = match (control, field) {
                            (false, RPC_SUBSCRIPTIONS) => Some(EntryKind::Subscribe),
                            (false, RPC_PUBLISH) => Some(EntryKind::Publish),
                            (true, f) => EntryKind::control(f),
                            _ => None,
                        };
                        let label = match kind {
                            Some(EntryKind::Subscribe) => l.subscribe,
                            Some(EntryKind::Publish) => l.message,
                            Some(_) => usize::try_from(field)
                                .ok()
                                .and_then(|f| l.control.get(f.checked_sub(1)?))
                                .copied()
                                .unwrap_or(l.framing),
                            None => l.framing,
                        };
                        self.entry_head = fresh;
                        self.state = State::Len {
                            label,
                            units: u32::from(kind.is_some()),
                            control: !control && field == RPC_CONTROL,
                            kind,
                        };
                    }
                    WIRE_VARINT => {
                        out.push(fresh, now(l.framing), 0);
                        self.state = State::Value;
                    }
                    WIRE_I64 | WIRE_I32 => {
                        out.push(fresh, now(l.framing), 0);
                        let left = if wire == WIRE_I64 { 8 } else { 4 };
                        self.state = State::Skip {
                            left,
                            label: l.framing,
                        };
                    }
                    _ => {
                        out.push(fresh, now(l.unparsed), 0);
                        self.state = State::Broken;
                    }
                }
            }
            State::Len {
                label,
                units,
                control,
                kind,
            } => {
                let head = self.entry_head + fresh;
                self.entry_head = 0;
                let fits = value <= self.rpc_left
                    && (self.control_left == 0 || value <= self.control_left);
                if let Some(kind) = kind.filter(|_| value > 0 && fits) {
                    let token = out.token();
                    let waiting = Pending::Later {
                        token,
                        fallback: label,
                    };
                    out.push(head, waiting, units);
                    self.entry = Some(Entry {
                        token,
                        base: label,
                        kind,
                        head,
                        body: Vec::new(),
                        whole: true,
                    });
                } else {
                    out.push(head, now(label), units);
                }
                self.state = if !fits {
                    State::Broken
                } else if control {
                    self.control_left = value;
                    if value == 0 {
                        self.after_field()
                    } else {
                        State::Key
                    }
                } else if value == 0 {
                    self.after_field()
                } else {
                    State::Skip { left: value, label }
                };
            }
            State::Value => {
                out.push(fresh, now(l.framing), 0);
                self.state = self.after_field();
            }
            State::Skip { .. } | State::Broken => {}
        }
    }
}

/// Splits an IWANT or IDONTWANT entry id by id: each id's field (tag + length + id) goes to the
/// topic learned for that id, or has no topic; the entry's own tag + length go with its first id.
/// Neighbouring ids of one topic make one part.
fn id_parts(
    ids: &[Vec<u8>],
    head: u64,
    base: LabelId,
    book: &mut RelayBook,
    labels: &mut LabelTable,
) -> Vec<(u64, LabelId)> {
    let mut parts: Vec<(u64, LabelId)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let field = 1 + prost::encoding::encoded_len_varint(id.len() as u64) + id.len();
        let len = field as u64 + if i == 0 { head } else { 0 };
        let label = book
            .topic_of(id)
            .map_or(base, |t: Arc<str>| labels.with_topic(base, &t));
        match parts.last_mut() {
            Some(p) if p.1 == label => p.0 += len,
            _ => parts.push((len, label)),
        }
    }
    parts
}

/// The value of a complete varint (at most [`MAX_VARINT`] bytes).
fn varint_value(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |v, (i, b)| v | (u64::from(b & 0x7f) << (7 * i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    /// One RPC: a subscription, a publish and a control message with one IHAVE, prefixed by its
    /// length (a single-decoder fixture; the samples test the walker on real RPCs). The
    /// subscription is malformed: its topic's key has no length.
    const RPC: &[u8] = &[
        19, // RPC length
        0x0a, 3, 0x08, 0x01,
        0x12, // subscriptions { subscribe: true, topicid: ... } (3 bytes)
        0x12, 4, 0x12, 2, 0xaa, 0xbb, // publish { data: [aa bb] }
        0x1a, 6, 0x0a, 4, 0x0a, 2, b'/', b'w', // control { ihave { topicID: "/w" } }
    ];

    fn walk(chunks: &[&[u8]]) -> Vec<(u64, &'static str, u32)> {
        walk_counting(chunks).0
    }

    /// The spans of `chunks` fed in turn, and how many entries did not decode.
    fn walk_counting(chunks: &[&[u8]]) -> (Vec<(u64, &'static str, u32)>, u64) {
        let mut t = TestCtx::default();
        let mut w = RpcWalker::new(RelayLabels::new("/vac/waku/relay/2.0.0", &mut t.labels));
        let mut ordered = Ordered::default();
        for c in chunks {
            w.feed(Side::Initiator, c, &mut t.ctx(), &mut ordered);
        }
        ordered.flush(Side::Initiator, &mut t.ctx());
        let malformed = t.relay.stats.entries_malformed;
        let TestCtx { labels, spans, .. } = t;
        let spans = spans
            .into_iter()
            .map(|s| (s.len, s.label, s.units))
            .filter(|x| x.0 > 0)
            .map(|(n, l, u)| {
                let kind: &'static str = match labels.get(l).kind.as_ref() {
                    "framing" => "framing",
                    "subscribe" => "subscribe",
                    "message" => "message",
                    "ihave" => "ihave",
                    _ => "other",
                };
                (n, kind, u)
            })
            .collect();
        (spans, malformed)
    }

    #[test]
    fn splits_an_rpc_field_by_field() {
        let (got, malformed) = walk_counting(&[RPC]);
        assert_eq!(malformed, 1, "the cut subscription");
        let sum = |k: &str| got.iter().filter(|x| x.1 == k).map(|x| x.0).sum::<u64>();
        assert_eq!(sum("framing"), 1 + 2);
        assert_eq!(sum("subscribe"), 5);
        assert_eq!(sum("message"), 6);
        assert_eq!(sum("ihave"), 6);
        // The RPC itself (its framing) and its three entries.
        assert_eq!(got.iter().map(|x| x.2).sum::<u32>(), 1 + 3);
    }

    #[test]
    fn split_anywhere_covers_every_byte() {
        for cut in 0..=RPC.len() {
            let (got, malformed) = walk_counting(&[&RPC[..cut], &RPC[cut..], RPC]);
            assert_eq!(malformed, 2, "cut {cut}: the subscription of each RPC");
            assert_eq!(
                got.iter().map(|x| x.0).sum::<u64>(),
                2 * RPC.len() as u64,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn entries_take_the_shard_of_their_topic() {
        let mut t = TestCtx::default();
        let mut w = RpcWalker::new(RelayLabels::new("/vac/waku/relay/2.0.0", &mut t.labels));
        let mut ordered = Ordered::default();
        // publish { data: [aa], topic: "/waku/2/rs/16/32" }, split inside the data.
        let mut rpc = vec![23, 0x12, 21, 0x12, 1, 0xaa, 0x22, 16];
        rpc.extend_from_slice(b"/waku/2/rs/16/32");
        for part in rpc.chunks(4) {
            w.feed(Side::Initiator, part, &mut t.ctx(), &mut ordered);
        }
        ordered.drain(Side::Initiator, &mut t.ctx());
        let TestCtx { labels, spans, .. } = t;
        let message: Vec<_> = spans
            .iter()
            .filter(|s| labels.get(s.label).category == Category::RelayChat)
            .collect();
        assert_eq!(message.iter().map(|s| s.len).sum::<u64>(), 23);
        assert_eq!(
            spans.iter().map(|s| s.len).sum::<u64>(),
            24,
            "prefix + entry"
        );
        for s in message {
            let l = labels.get(s.label);
            assert_eq!((l.cluster_id, l.shard), (Some(16), Some(32)), "{l:?}");
        }
    }

    /// `tag ‖ len ‖ body`.
    fn field(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        prost::encoding::encode_varint(body.len() as u64, &mut v);
        v.extend_from_slice(body);
        v
    }

    /// An RPC holding one control entry, with its length prefix.
    fn control_rpc(entry: Vec<u8>) -> Vec<u8> {
        let control = field(0x1a, &entry);
        let mut v = Vec::new();
        prost::encoding::encode_varint(control.len() as u64, &mut v);
        v.extend(control);
        v
    }

    #[test]
    fn iwant_ids_take_the_topics_ihave_taught() {
        let (a, b) = (vec![1u8; 32], vec![2u8; 32]);
        let ihave = ControlIHave {
            topic_id: Some("/waku/2/rs/16/32".into()),
            message_ids: vec![a.clone()],
        };
        let iwant = ControlIds {
            message_ids: vec![a, b],
        };
        let mut t = TestCtx::default();
        let mut w = RpcWalker::new(RelayLabels::new("/vac/waku/relay/2.0.0", &mut t.labels));
        let mut ordered = Ordered::default();
        for rpc in [
            control_rpc(field(0x0a, &ihave.encode_to_vec())),
            control_rpc(field(0x12, &iwant.encode_to_vec())),
        ] {
            for piece in rpc.chunks(5) {
                w.feed(Side::Initiator, piece, &mut t.ctx(), &mut ordered);
            }
        }
        ordered.flush(Side::Initiator, &mut t.ctx());
        let iwant: Vec<(u64, Option<u16>, u32)> = t
            .spans
            .iter()
            .map(|s| (s, t.labels.get(s.label)))
            .filter(|(_, l)| l.kind.as_ref() == "iwant")
            .map(|(s, l)| (s.len, l.shard, s.units))
            .collect();
        let on = |shard| iwant.iter().filter(move |x| x.1 == shard);
        // The entry's tag and length (2 bytes) go with its first id (34 bytes), on shard 32.
        assert_eq!(on(Some(32)).map(|x| x.0).sum::<u64>(), 2 + 34);
        assert_eq!(on(Some(32)).map(|x| x.2).sum::<u32>(), 1);
        assert_eq!(on(None).map(|x| x.0).sum::<u64>(), 34, "the unknown id");
        assert_eq!(t.relay.stats.ids_resolved, 1);
    }

    #[test]
    fn garbage_is_unparsed_not_lost() {
        let junk = [0xff; 40];
        let got = walk(&[&junk]);
        assert_eq!(got.iter().map(|x| x.0).sum::<u64>(), 40);
    }
}
