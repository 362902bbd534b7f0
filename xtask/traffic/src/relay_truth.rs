//! Ground truth of every gossipsub RPC part, from the bytes each node wrote on its substreams
//! (recorded by [`crate::tap`]): each substream's multistream-select exchange gives its protocol,
//! and on relay streams every length-prefixed RPC is decoded with prost and split as design.md
//! rule 4 says — each `RPC.publish` entry is a `message`, each `RPC.subscriptions` entry a
//! `subscribe`, each control entry an `ihave` / `iwant` / `graft` / `prune` / `idontwant`, and the
//! RPC's length prefix, the `RPC.control` tag + length and any field that is no entry (rust-libp2p's
//! `ControlMessage.extensions`) `framing`. An entry's bytes are its protobuf tag + length + body.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::{Context as _, bail, ensure};
use prost::{
    Message as _,
    encoding::{decode_varint, encoded_len_varint, key_len, message},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    rpc::{ControlIds, Rpc},
    tap::StreamRecord,
    transport::ConnSide,
};

/// Stream protocols whose bytes are gossipsub RPCs.
pub const RELAY_PROTOCOLS: &[&str] = &[
    "/vac/waku/relay/2.0.0",
    "/meshsub/1.0.0",
    "/meshsub/1.1.0",
    "/meshsub/1.2.0",
    "/meshsub/1.3.0",
];

/// multistream-select's own protocol id (its header message).
const MULTISTREAM: &str = "/multistream/1.0.0";
/// A responder's "not available".
const NA: &str = "na";

/// The bytes one connection side sent of one kind on one pubsub topic.
#[derive(Clone, Debug, Serialize)]
pub struct RelayPart {
    /// Sender's socket address.
    pub from: SocketAddr,
    /// Receiver's socket address.
    pub to: SocketAddr,
    /// Sending node.
    pub from_node: String,
    /// Receiving node.
    pub to_node: String,
    /// Stream protocol id.
    pub protocol: String,
    /// `message`, `subscribe`, `ihave`, `iwant`, `graft`, `prune`, `idontwant` or `framing`.
    pub kind: &'static str,
    /// The pubsub topic the bytes belong to (none for framing and unknown message ids).
    pub pubsub_topic: Option<String>,
    /// Entries (RPCs for framing).
    pub entries: u64,
    /// Payload bytes: Σ entry tag + length + body (framing: prefixes and envelopes).
    pub bytes: u64,
}

/// How often one node was sent one message.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// Receiving node.
    pub node: String,
    /// Its host address.
    pub host: IpAddr,
    /// Gossipsub message id (sha256 of the WakuMessage bytes), hex.
    pub message_id: String,
    /// The message's pubsub topic.
    pub pubsub_topic: String,
    /// `RPC.publish` entries carrying the message sent to the node (duplicates = this − 1).
    pub publish_entries: u64,
}

/// Relay parts and deliveries of a whole scenario.
#[derive(Debug, Default)]
pub struct RelayTruth {
    /// Parts per (sending side, protocol, kind, topic), sorted.
    pub parts: Vec<RelayPart>,
    /// Deliveries per (node, message id, topic), sorted.
    pub deliveries: Vec<Delivery>,
}

impl RelayTruth {
    /// Entries per kind over all parts.
    pub fn entries_by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for p in &self.parts {
            *out.entry(p.kind).or_default() += p.entries;
        }
        out
    }
}

/// One multistream-select message at the start of `bytes`: its length on the wire and its text
/// without the trailing newline.
fn ms_message(bytes: &[u8]) -> Option<(usize, &str)> {
    let mut buf = bytes;
    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
    let prefix = bytes.len() - buf.len();
    let body = buf.get(..len)?;
    let text = std::str::from_utf8(body.strip_suffix(b"\n")?).ok()?;
    Some((prefix + len, text))
}

/// The multistream-select messages at the start of `bytes`, as long as `accept` takes them.
fn ms_messages(mut bytes: &[u8], mut accept: impl FnMut(&str) -> bool) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    while let Some((len, text)) = ms_message(bytes) {
        if !accept(text) {
            break;
        }
        out.push((len, text));
        bytes = &bytes[len..];
    }
    out
}

/// What one side's writes on a substream start with.
#[derive(Debug, PartialEq, Eq)]
struct Negotiation {
    /// The agreed protocol, if negotiation finished.
    protocol: Option<String>,
    /// Bytes of multistream-select messages this side wrote.
    len: usize,
}

/// The responder's answers in `bytes`: its header, then `na`s up to and including the echo.
fn answers(bytes: &[u8]) -> Vec<(usize, &str)> {
    let mut done = false;
    let mut first = true;
    ms_messages(bytes, |text| {
        let take = !done && (if first { text == MULTISTREAM } else { true });
        if !first && text != NA {
            done = true;
        }
        first = false;
        take
    })
}

/// The protocol the responder's answers (from [`answers`]) accepted: their last one after the
/// header, unless it is `na`.
fn echo<'a>(answered: &[(usize, &'a str)]) -> Option<&'a str> {
    answered
        .get(1..)
        .and_then(|a| a.last())
        .map(|(_, t)| *t)
        .filter(|t| *t != NA)
}

/// Reads one side's multistream-select exchange: the opener writes the header and proposals
/// (one per answer of the responder, which it read), the responder the header and its answers.
fn negotiation(record: &StreamRecord) -> anyhow::Result<Negotiation> {
    let written = record.written();
    if record.outbound {
        let read = record.read();
        let answered = answers(&read);
        let echo = echo(&answered);
        let mut first = true;
        let sent = ms_messages(&written, |text| {
            let ok = if first {
                text == MULTISTREAM
            } else {
                text.starts_with('/')
            };
            first = false;
            ok
        });
        let proposals = answered.len().saturating_sub(1).max(1);
        let sent = if sent.len() > proposals {
            &sent[..=proposals]
        } else {
            &sent[..]
        };
        let proposed = sent.get(1..).and_then(|s| s.last()).map(|(_, t)| *t);
        if let (Some(echo), Some(proposed)) = (echo, proposed) {
            ensure!(
                echo == proposed,
                "the responder echoed {echo}, the opener proposed {proposed}"
            );
        }
        Ok(Negotiation {
            protocol: echo.map(str::to_owned),
            len: sent.iter().map(|(n, _)| n).sum(),
        })
    } else {
        let answered = answers(&written);
        let echo = echo(&answered);
        Ok(Negotiation {
            protocol: echo.map(str::to_owned),
            len: answered.iter().map(|(n, _)| n).sum(),
        })
    }
}

/// One part of one RPC: kind, topic, entries, bytes.
type Piece = (&'static str, Option<String>, u64, u64);

/// Splits an IWANT / IDONTWANT entry: each id's field goes to its message's topic (none if
/// unknown), the entry's tag + length and the entry count go with its first id.
fn id_pieces(
    kind: &'static str,
    tag: u32,
    entry: &ControlIds,
    topic_of: &HashMap<Vec<u8>, String>,
    out: &mut Vec<Piece>,
) {
    let body = entry.encoded_len();
    let head = (key_len(tag) + encoded_len_varint(body as u64)) as u64;
    if entry.message_ids.is_empty() {
        out.push((kind, None, 1, head));
    }
    for (i, id) in entry.message_ids.iter().enumerate() {
        let field = (key_len(1) + encoded_len_varint(id.len() as u64) + id.len()) as u64;
        let topic = topic_of.get(id).cloned();
        if i == 0 {
            out.push((kind, topic, 1, head + field));
        } else {
            out.push((kind, topic, 0, field));
        }
    }
}

/// One control entry that names its topic: tag + length + body, on that topic.
fn topic_entry(
    kind: &'static str,
    tag: u32,
    topic: &Option<String>,
    e: &impl prost::Message,
) -> Piece {
    (kind, topic.clone(), 1, message::encoded_len(tag, e) as u64)
}

/// The parts of one RPC whose length prefix took `prefix` bytes and which took `wire` bytes in
/// all; publish entries go to `published` as (message id, topic).
fn rpc_pieces(
    rpc: &Rpc,
    prefix: usize,
    wire: usize,
    topic_of: &HashMap<Vec<u8>, String>,
    published: &mut Vec<(Vec<u8>, String)>,
) -> anyhow::Result<Vec<Piece>> {
    let mut out: Vec<Piece> = Vec::new();
    let mut framing = prefix;
    for s in &rpc.subscriptions {
        let n = message::encoded_len(1, s) as u64;
        out.push(("subscribe", s.topicid.clone(), 1, n));
    }
    for m in &rpc.publish {
        let n = message::encoded_len(2, m) as u64;
        let topic = m
            .topic
            .clone()
            .context("a published message without topic")?;
        let id = Sha256::digest(m.data.as_deref().unwrap_or_default()).to_vec();
        published.push((id, topic.clone()));
        out.push(("message", Some(topic), 1, n));
    }
    if let Some(c) = &rpc.control {
        framing += key_len(3) + encoded_len_varint(c.encoded_len() as u64);
        if let Some(e) = &c.extensions {
            framing += message::encoded_len(6, e);
        }
        for e in &c.ihave {
            out.push(topic_entry("ihave", 1, &e.topic_id, e));
        }
        for e in &c.iwant {
            id_pieces("iwant", 2, e, topic_of, &mut out);
        }
        for e in &c.graft {
            out.push(topic_entry("graft", 3, &e.topic_id, e));
        }
        for e in &c.prune {
            out.push(topic_entry("prune", 4, &e.topic_id, e));
        }
        for e in &c.idontwant {
            id_pieces("idontwant", 5, e, topic_of, &mut out);
        }
    }
    if let Some(p) = &rpc.partial {
        framing += message::encoded_len(10, p);
    }
    out.push(("framing", None, 1, framing as u64));
    let total: u64 = out.iter().map(|p| p.3).sum();
    ensure!(
        total == wire as u64,
        "the parts of an RPC add up to {total} bytes, the RPC has {wire} on the wire \
         (a field the schema does not know?)"
    );
    Ok(out)
}

/// Decodes the RPCs in `bytes` (a relay stream's data after negotiation).
fn stream_pieces(
    mut bytes: &[u8],
    topic_of: &HashMap<Vec<u8>, String>,
    published: &mut Vec<(Vec<u8>, String)>,
) -> anyhow::Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while !bytes.is_empty() {
        let mut buf = bytes;
        let len = decode_varint(&mut buf).with_context(|| format!("RPC length at {offset}"))?;
        let prefix = bytes.len() - buf.len();
        let len = usize::try_from(len)?;
        let body = buf
            .get(..len)
            .with_context(|| format!("RPC at {offset} cut short: {len} bytes announced"))?;
        let rpc = Rpc::decode(body).with_context(|| format!("RPC at {offset}"))?;
        out.extend(rpc_pieces(&rpc, prefix, prefix + len, topic_of, published)?);
        bytes = &buf[len..];
        offset += prefix + len;
    }
    Ok(out)
}

/// Decodes every relay stream every node wrote. `node_name` names node indexes; `topic_of`
/// maps every published message's gossipsub id to its pubsub topic.
pub fn decode(
    sides: &[Arc<ConnSide>],
    node_name: impl Fn(usize) -> String,
    topic_of: &HashMap<Vec<u8>, String>,
) -> anyhow::Result<RelayTruth> {
    let node_at: HashMap<SocketAddr, usize> = sides.iter().map(|s| (s.local, s.node)).collect();
    type Key = (SocketAddr, SocketAddr, String, &'static str, Option<String>);
    let mut parts: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    let mut deliveries: BTreeMap<(usize, Vec<u8>, String), u64> = BTreeMap::new();
    for side in sides {
        let to_node = *node_at
            .get(&side.remote)
            .with_context(|| format!("no node owns {}", side.remote))?;
        for (n, record) in side.streams().iter().enumerate() {
            let what = || format!("{} -> {} substream {n}", side.local, side.remote);
            let negotiated = negotiation(record).with_context(what)?;
            let Some(protocol) = negotiated.protocol else {
                continue;
            };
            if !RELAY_PROTOCOLS.contains(&protocol.as_str()) {
                continue;
            }
            let written = record.written();
            let data = &written[negotiated.len..];
            let mut published = Vec::new();
            let pieces = stream_pieces(data, topic_of, &mut published).with_context(what)?;
            let total: u64 = pieces.iter().map(|p| p.3).sum();
            ensure!(
                total == data.len() as u64,
                "{}: relay parts hold {total} bytes, the stream {} after {} bytes of multistream",
                what(),
                data.len(),
                negotiated.len
            );
            for (kind, topic, entries, bytes) in pieces {
                let key = (side.local, side.remote, protocol.clone(), kind, topic);
                let sum = parts.entry(key).or_default();
                sum.0 += entries;
                sum.1 += bytes;
            }
            for (id, topic) in published {
                *deliveries.entry((to_node, id, topic)).or_default() += 1;
            }
        }
    }
    let name_at = |addr: &SocketAddr| -> anyhow::Result<String> {
        match node_at.get(addr) {
            Some(n) => Ok(node_name(*n)),
            None => bail!("no node owns {addr}"),
        }
    };
    let host_of = |node: usize| sides.iter().find(|s| s.node == node).map(|s| s.local.ip());
    let mut truth = RelayTruth::default();
    for ((from, to, protocol, kind, pubsub_topic), (entries, bytes)) in parts {
        truth.parts.push(RelayPart {
            from,
            to,
            from_node: name_at(&from)?,
            to_node: name_at(&to)?,
            protocol,
            kind,
            pubsub_topic,
            entries,
            bytes,
        });
    }
    for ((node, id, pubsub_topic), publish_entries) in deliveries {
        truth.deliveries.push(Delivery {
            node: node_name(node),
            host: host_of(node).context("a node without connections")?,
            message_id: crate::scenario::hex(&id),
            pubsub_topic,
            publish_entries,
        });
    }
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{ControlMessage, ControlPrune, Message, SubOpts};

    fn ms(text: &str) -> Vec<u8> {
        let mut v = vec![(text.len() + 1) as u8];
        v.extend_from_slice(text.as_bytes());
        v.push(b'\n');
        v
    }

    fn record(outbound: bool, written: &[u8], read: &[u8]) -> StreamRecord {
        let r = StreamRecord::for_test(outbound);
        r.push_written(written);
        r.push_read(read);
        r
    }

    #[test]
    fn reads_both_sides_of_a_negotiation_with_na() {
        let relay = "/vac/waku/relay/2.0.0";
        let mut opener = [ms(MULTISTREAM), ms("/meshsub/1.3.0"), ms(relay)].concat();
        let head = opener.len();
        opener.extend_from_slice(&[4, 0x1a, 2, 0x32, 0]);
        let mut responder = [ms(MULTISTREAM), ms(NA), ms(relay)].concat();
        let answer = responder.len();
        responder.extend_from_slice(&[2, 0x1a, 0]);
        let got = negotiation(&record(true, &opener, &responder)).expect("opener");
        assert_eq!(
            got,
            Negotiation {
                protocol: Some(relay.into()),
                len: head
            }
        );
        let got = negotiation(&record(false, &responder, &opener)).expect("responder");
        assert_eq!(
            got,
            Negotiation {
                protocol: Some(relay.into()),
                len: answer
            }
        );
    }

    #[test]
    fn splits_an_rpc_into_entries_that_add_up() {
        let id_a = vec![0xaa; 32];
        let id_b = vec![0xbb; 32];
        let rpc = Rpc {
            subscriptions: vec![SubOpts {
                subscribe: Some(true),
                topicid: Some("/t/1".into()),
                requests_partial: Some(false),
                supports_partial: Some(false),
            }],
            publish: vec![Message {
                data: Some(vec![1, 2, 3]),
                topic: Some("/t/1".into()),
                ..Message::default()
            }],
            control: Some(ControlMessage {
                iwant: vec![ControlIds {
                    message_ids: vec![id_a.clone(), id_b.clone()],
                }],
                prune: vec![ControlPrune {
                    topic_id: Some("/t/2".into()),
                    backoff: Some(60),
                    ..ControlPrune::default()
                }],
                ..ControlMessage::default()
            }),
            partial: None,
        };
        let body = rpc.encode_to_vec();
        let mut wire = vec![body.len() as u8];
        wire.extend_from_slice(&body);
        let topic_of = HashMap::from([(id_b, "/t/2".to_owned())]);
        let mut published = Vec::new();
        let pieces = stream_pieces(&wire, &topic_of, &mut published).expect("decodes");
        assert_eq!(pieces.iter().map(|p| p.3).sum::<u64>(), wire.len() as u64);
        let iwant: Vec<&Piece> = pieces.iter().filter(|p| p.0 == "iwant").collect();
        // First id: the entry's tag + length (2) + its field (34), unknown topic; second: 34.
        assert_eq!(iwant[0], &("iwant", None, 1, 2 + 34));
        assert_eq!(iwant[1], &("iwant", Some("/t/2".into()), 0, 34));
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].0, Sha256::digest([1, 2, 3]).to_vec());
    }

    #[test]
    fn fails_on_fields_it_does_not_know() {
        // An RPC with an unknown field 7 (varint): prost skips it, the parts fall short.
        let wire = [4, 0x38, 1, 0x1a, 0];
        let err = stream_pieces(&wire, &HashMap::new(), &mut Vec::new());
        assert!(err.is_err());
    }
}
