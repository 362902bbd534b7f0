//! Gossipsub RPCs on a relay stream (protocols.md §3), split field by field as design.md rule 4
//! says: each `RPC.publish` entry is relay chat, each `RPC.subscriptions` entry and each control
//! entry (IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT) relay control of its kind, the RPC's length
//! prefix and the `RPC.control` tag + length relay control framing. An entry that names a topic
//! (subscription, publish, IHAVE, GRAFT, PRUNE) is labelled with that topic's shard once the
//! topic has been read; a field key or length split across muxer frames is labelled framing.

use super::ordered::{Ordered, Pending};
use super::{LabelId, LabelTable};
use crate::account::record::Category;

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
    /// A length-delimited field's length; `label` is the entry's.
    /// A length-delimited field's length; `label` is the entry's, `topic` the field number
    /// of its topic (0: none).
    Len {
        label: LabelId,
        units: u32,
        control: bool,
        topic: u64,
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
    /// The entry whose topic is being looked for.
    entry: Option<Entry>,
}

/// An entry whose label waits for its topic.
#[derive(Debug)]
struct Entry {
    token: u32,
    base: LabelId,
    finder: TopicFinder,
}

impl RpcWalker {
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

    /// Labels `bytes`, appending spans for every byte to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], labels: &mut LabelTable, out: &mut Ordered) {
        while !bytes.is_empty() {
            match self.state {
                State::Broken => {
                    out.push(bytes.len() as u64, Pending::Now(self.labels.unparsed), 0);
                    return;
                }
                State::Skip { left, label } => {
                    let n = left.min(bytes.len() as u64);
                    let mut label = label;
                    match &mut self.entry {
                        Some(e) => {
                            let waiting = Pending::Later {
                                token: e.token,
                                fallback: e.base,
                            };
                            out.push(n, waiting, 0);
                            if let Some(topic) = e.finder.feed(&bytes[..n as usize]) {
                                label = labels.with_topic(e.base, &String::from_utf8_lossy(&topic));
                                out.resolve(e.token, label);
                                self.entry = None;
                            }
                        }
                        None => out.push(n, Pending::Now(label), 0),
                    }
                    self.consume(n);
                    bytes = &bytes[n as usize..];
                    if n == left {
                        self.end_entry(out);
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

    /// Gives a waiting entry its label without a topic.
    fn end_entry(&mut self, out: &mut Ordered) {
        if let Some(e) = self.entry.take() {
            out.resolve(e.token, e.base);
        }
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
                out.push(fresh, now(l.framing), 0);
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
                        // The topic's field: SubOpts.topicid, Message.topic, and topicID in
                        // IHAVE, GRAFT and PRUNE; IWANT and IDONTWANT carry none.
                        let (label, units, topic) = match (control, field) {
                            (false, RPC_SUBSCRIPTIONS) => (l.subscribe, 1, 2),
                            (false, RPC_PUBLISH) => (l.message, 1, 4),
                            (true, 1 | 3 | 4) => (l.control[field as usize - 1], 1, 1),
                            (true, 2 | 5) => (l.control[field as usize - 1], 1, 0),
                            _ => (l.framing, 0, 0),
                        };
                        self.entry_head = fresh;
                        self.state = State::Len {
                            label,
                            units,
                            control: !control && field == RPC_CONTROL,
                            topic,
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
                topic,
            } => {
                let head = self.entry_head + fresh;
                self.entry_head = 0;
                let fits = value <= self.rpc_left
                    && (self.control_left == 0 || value <= self.control_left);
                if topic > 0 && value > 0 && fits {
                    let token = out.token();
                    let waiting = Pending::Later {
                        token,
                        fallback: label,
                    };
                    out.push(head, waiting, units);
                    self.entry = Some(Entry {
                        token,
                        base: label,
                        finder: TopicFinder::new(topic),
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

/// Longest topic captured; a longer one leaves the entry without a shard.
const MAX_TOPIC: u64 = 255;

/// Finds the first length-delimited field `field` in a message body fed in pieces.
#[derive(Debug)]
struct TopicFinder {
    field: u64,
    varint: Vec<u8>,
    /// Reading: a key (`None`), or the length of field `Some(f)`.
    len_of: Option<u64>,
    /// Bytes to skip before the next key.
    skip: u64,
    /// The topic's bytes while `capture` is set, and how many are still to come.
    topic: Vec<u8>,
    capture: Option<u64>,
    /// The body cannot be read further.
    done: bool,
}

impl TopicFinder {
    fn new(field: u64) -> TopicFinder {
        TopicFinder {
            field,
            varint: Vec::new(),
            len_of: None,
            skip: 0,
            topic: Vec::new(),
            capture: None,
            done: false,
        }
    }

    /// Reads more of the body; returns the topic once its last byte is read.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<Vec<u8>> {
        while !bytes.is_empty() && !self.done {
            if let Some(left) = self.capture {
                let n = left.min(bytes.len() as u64);
                self.topic.extend_from_slice(&bytes[..n as usize]);
                bytes = &bytes[n as usize..];
                self.capture = Some(left - n);
                if n == left {
                    self.done = true;
                    return Some(std::mem::take(&mut self.topic));
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            self.varint.push(b);
            if b & 0x80 != 0 {
                self.done = self.varint.len() >= MAX_VARINT;
                continue;
            }
            let v = varint_value(&self.varint);
            self.varint.clear();
            match self.len_of {
                None => match v & 7 {
                    WIRE_LEN => self.len_of = Some(v >> 3),
                    WIRE_VARINT => self.skip_varint(&mut bytes),
                    WIRE_I64 => self.skip = 8,
                    WIRE_I32 => self.skip = 4,
                    _ => self.done = true,
                },
                Some(f) => {
                    self.len_of = None;
                    if f == self.field && v <= MAX_TOPIC {
                        self.capture = Some(v);
                        if v == 0 {
                            self.done = true;
                            return Some(Vec::new());
                        }
                    } else if f == self.field {
                        self.done = true;
                    } else {
                        self.skip = v;
                    }
                }
            }
        }
        None
    }

    /// Skips a varint value that may continue into later pieces.
    fn skip_varint(&mut self, bytes: &mut &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            *bytes = rest;
            if b & 0x80 == 0 {
                return;
            }
        }
        self.done = true;
    }
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
    use crate::decode::{DecodeCtx, Side};

    /// One RPC: a subscription, a publish and a control message with one IHAVE, prefixed by its
    /// length (a single-decoder fixture; the samples test the walker on real RPCs).
    const RPC: &[u8] = &[
        19, // RPC length
        0x0a, 3, 0x08, 0x01,
        0x12, // subscriptions { subscribe: true, topicid: ... } (3 bytes)
        0x12, 4, 0x12, 2, 0xaa, 0xbb, // publish { data: [aa bb] }
        0x1a, 6, 0x0a, 4, 0x0a, 2, b'/', b'w', // control { ihave { topicID: "/w" } }
    ];

    fn walk(chunks: &[&[u8]]) -> Vec<(u64, &'static str, u32)> {
        let mut labels = LabelTable::default();
        let mut spans = Vec::new();
        let mut w = RpcWalker::new(RelayLabels::new("/vac/waku/relay/2.0.0", &mut labels));
        let mut ordered = Ordered::default();
        for c in chunks {
            w.feed(c, &mut labels, &mut ordered);
        }
        let mut ctx = DecodeCtx {
            labels: &mut labels,
            spans: &mut spans,
        };
        ordered.flush(Side::Initiator, &mut ctx);
        spans
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
            .collect()
    }

    #[test]
    fn splits_an_rpc_field_by_field() {
        let got = walk(&[RPC]);
        let sum = |k: &str| got.iter().filter(|x| x.1 == k).map(|x| x.0).sum::<u64>();
        assert_eq!(sum("framing"), 1 + 2);
        assert_eq!(sum("subscribe"), 5);
        assert_eq!(sum("message"), 6);
        assert_eq!(sum("ihave"), 6);
        assert_eq!(got.iter().map(|x| x.2).sum::<u32>(), 3);
    }

    #[test]
    fn split_anywhere_covers_every_byte() {
        for cut in 0..=RPC.len() {
            let got = walk(&[&RPC[..cut], &RPC[cut..], RPC]);
            assert_eq!(
                got.iter().map(|x| x.0).sum::<u64>(),
                2 * RPC.len() as u64,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn entries_take_the_shard_of_their_topic() {
        let mut labels = LabelTable::default();
        let mut spans = Vec::new();
        let mut w = RpcWalker::new(RelayLabels::new("/vac/waku/relay/2.0.0", &mut labels));
        let mut ordered = Ordered::default();
        // publish { data: [aa], topic: "/waku/2/rs/16/32" }, split inside the data.
        let mut rpc = vec![23, 0x12, 21, 0x12, 1, 0xaa, 0x22, 16];
        rpc.extend_from_slice(b"/waku/2/rs/16/32");
        for part in rpc.chunks(4) {
            w.feed(part, &mut labels, &mut ordered);
        }
        let mut ctx = DecodeCtx {
            labels: &mut labels,
            spans: &mut spans,
        };
        ordered.drain(Side::Initiator, &mut ctx);
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

    #[test]
    fn garbage_is_unparsed_not_lost() {
        let junk = [0xff; 40];
        let got = walk(&[&junk]);
        assert_eq!(got.iter().map(|x| x.0).sum::<u64>(), 40);
    }
}
