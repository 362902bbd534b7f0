//! The bundled samples against the ground truth of the implementations that made them: every
//! libp2p connection is recognised with its security protocol, and the TCP payload the profiler
//! reassembled per connection and direction equals what each node wrote into its socket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;
use wakuprof::account::record::{Category, Direction, Row};
use wakuprof::analyze::Config;

fn truth(capture: &Path) -> Value {
    let name = capture
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("sample name");
    let path = capture.with_file_name(format!("{name}.truth.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("truth is JSON")
}

fn addr(v: &Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .expect("socket address")
}

/// Rows of the connection `dialer` → `listener` (the dialer is local: no `--local` given).
fn connection(rows: &[Row], dialer: SocketAddr, listener: SocketAddr) -> Vec<&Row> {
    rows.iter()
        .filter(|r| {
            let e = &r.endpoints;
            e.transport == "tcp"
                && e.local_addr == Some(dialer.ip())
                && e.local_port == Some(dialer.port())
                && e.remote_addr == Some(listener.ip())
                && e.remote_port == Some(listener.port())
        })
        .collect()
}

/// Bytes of a protobuf varint holding `v`.
fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

fn sum(rows: &[&Row], d: Direction, f: impl Fn(&Row) -> u64) -> u64 {
    rows.iter().filter(|r| r.direction == d).map(|r| f(r)).sum()
}

#[test]
fn every_sample_matches_its_ground_truth() {
    let samples = common::samples();
    assert!(
        samples.len() >= 8,
        "samples/ holds the captures: {samples:?}"
    );
    for capture in samples {
        let t = truth(&capture);
        let name = capture.display();
        let (rows, stats, errors) =
            common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        assert_eq!(
            Some(stats.packets),
            t["capture"]["packets"].as_u64(),
            "{name}: packets"
        );
        let Some(conns) = t["connections"].as_array() else {
            continue;
        };
        assert!(!conns.is_empty(), "{name}: connections in the truth");
        for c in conns {
            let (dialer, listener) = (addr(&c["dialer"]), addr(&c["listener"]));
            let rows = connection(&rows, dialer, listener);
            let what = format!("{name}: {dialer} → {listener}");
            let payload = |r: &Row| r.counters.payload_bytes;
            assert_eq!(
                Some(sum(&rows, Direction::Out, payload)),
                c["bytes_dialer_to_listener"].as_u64(),
                "{what}: dialer → listener TCP payload"
            );
            assert_eq!(
                Some(sum(&rows, Direction::In, payload)),
                c["bytes_listener_to_dialer"].as_u64(),
                "{what}: listener → dialer TCP payload"
            );
            let Some(security) = c["security"].as_str() else {
                continue;
            };
            let other: Vec<&&Row> = rows
                .iter()
                .filter(|r| {
                    !matches!(
                        r.label.category,
                        Category::Libp2p | Category::RelayControl | Category::RelayChat
                    )
                })
                .collect();
            assert!(
                other.is_empty(),
                "{what}: every byte is libp2p or relay: {other:?}"
            );
            let handshakes = |d: Direction| {
                rows.iter()
                    .filter(|r| r.direction == d && r.label.kind.as_ref() == "handshake")
                    .filter(|r| r.label.protocol.as_ref() == security)
                    .map(|r| r.counters.messages)
                    .sum::<u64>()
            };
            let expected = if security == "/noise" { (2, 1) } else { (1, 1) };
            assert_eq!(
                (handshakes(Direction::Out), handshakes(Direction::In)),
                expected,
                "{what}: {security} handshake messages (dialer, listener)"
            );
            let negotiation = |d: Direction| {
                rows.iter()
                    .filter(|r| r.direction == d && r.label.kind.as_ref() == "negotiation")
                    .map(|r| r.counters.messages)
                    .sum::<u64>()
            };
            assert!(
                negotiation(Direction::Out) >= 2 && negotiation(Direction::In) >= 2,
                "{what}: multistream header and proposal/echo on both sides"
            );
        }
    }
}

#[test]
fn plaintext_streams_carry_their_protocol_ids() {
    let mut checked = 0;
    for capture in common::samples() {
        let t = truth(&capture);
        if t["connections"][0]["security"] != "/plaintext/2.0.0" {
            continue;
        }
        checked += 1;
        let relay = t["relay"]["protocol_id"]
            .as_str()
            .expect("relay protocol id");
        let name = capture.display();
        let (rows, _, _) = common::analyze(std::slice::from_ref(&capture), Config::default());
        for c in t["connections"].as_array().expect("connections") {
            let conn = connection(&rows, addr(&c["dialer"]), addr(&c["listener"]));
            let muxer = c["muxer"].as_str().expect("muxer");
            for id in [relay, "/ipfs/id/1.0.0", muxer] {
                assert!(
                    conn.iter().any(|r| r.label.protocol.as_ref() == id),
                    "{name}: {} → {}: no {id} bytes",
                    c["dialer"],
                    c["listener"]
                );
            }
        }
        // Each transmission of a message is one `RPC.publish` entry: tag + length + a pubsub
        // Message of `data` (the WakuMessage) and `topic` (unsigned: nothing else).
        let messages = t["messages"].as_array().expect("messages");
        let entry = |m: &Value| {
            let w = m["waku_message_bytes"].as_u64().expect("size");
            let topic = m["pubsub_topic"].as_str().expect("topic").len() as u64;
            let body = 1 + varint_len(w) + w + 1 + varint_len(topic) + topic;
            1 + varint_len(body) + body
        };
        let received = |m: &Value| m["received_by"].as_u64().expect("received_by");
        for topic in ["/waku/2/rs/16/32", "/waku/2/rs/16/64"] {
            let on_topic = |m: &&Value| m["pubsub_topic"] == topic;
            let chat: Vec<&Row> = rows
                .iter()
                .filter(|r| r.label.category == Category::RelayChat)
                .filter(|r| r.label.pubsub_topic.as_deref() == Some(topic))
                .collect();
            let shard = topic.rsplit('/').next().and_then(|s| s.parse::<u16>().ok());
            assert!(
                chat.iter()
                    .all(|r| r.label.shard == shard && r.label.cluster_id == Some(16))
            );
            let chat_bytes: u64 = chat.iter().map(|r| r.counters.payload_bytes).sum();
            let chat_messages: u64 = chat.iter().map(|r| r.counters.messages).sum();
            let least_bytes: u64 = messages
                .iter()
                .filter(on_topic)
                .map(|m| entry(m) * received(m))
                .sum();
            let least_messages: u64 = messages.iter().filter(on_topic).map(received).sum();
            assert!(
                least_messages > 0,
                "{name}: messages were delivered on {topic}"
            );
            if t["nodes"].as_array().map(Vec::len) == Some(2) {
                // Two nodes: every message crosses once, from its publisher to the other node.
                assert_eq!(
                    (chat_messages, chat_bytes),
                    (least_messages, least_bytes),
                    "{name}: relay chat on {topic}"
                );
            } else {
                assert!(
                    chat_messages >= least_messages,
                    "{name}: {topic}: {chat_messages} < {least_messages} messages"
                );
                assert!(
                    chat_bytes >= least_bytes,
                    "{name}: {topic}: {chat_bytes} < {least_bytes} bytes"
                );
            }
        }
        let unsharded = rows
            .iter()
            .filter(|r| r.label.category == Category::RelayChat && r.label.shard.is_none())
            .count();
        assert_eq!(unsharded, 0, "{name}: every relay message has its shard");
        assert!(
            rows.iter()
                .any(|r| r.label.category == Category::RelayControl
                    && r.label.kind.as_ref() == "subscribe"),
            "{name}: subscriptions"
        );
    }
    assert!(
        checked >= 6,
        "samples/ holds six plaintext captures (libp2p-plaintext-*, relay-plaintext-mplex, relay-meshsub-gossip): {checked} found"
    );
}

/// A relay part's key: sender, receiver, kind and pubsub topic.
type PartKey = (SocketAddr, SocketAddr, String, Option<String>);

/// Entries and payload bytes per part, as the nodes wrote them (`relay_parts` of the truth).
fn truth_parts(t: &Value) -> BTreeMap<PartKey, (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in t["relay_parts"].as_array().expect("relay_parts") {
        let key = (
            addr(&p["from"]),
            addr(&p["to"]),
            p["kind"].as_str().expect("kind").to_owned(),
            p["pubsub_topic"].as_str().map(str::to_owned),
        );
        let sum: &mut (u64, u64) = out.entry(key).or_default();
        sum.0 += p["entries"].as_u64().expect("entries");
        sum.1 += p["bytes"].as_u64().expect("bytes");
    }
    out
}

/// Messages and payload bytes per part of the relay kinds the truth names, as wakuprof counted.
fn counted_parts(rows: &[Row], kinds: &BTreeSet<String>) -> BTreeMap<PartKey, (u64, u64)> {
    let mut out = BTreeMap::new();
    for r in rows {
        let relay = matches!(
            r.label.category,
            Category::RelayChat | Category::RelayControl
        );
        if !relay || !kinds.contains(r.label.kind.as_ref()) {
            continue;
        }
        let e = &r.endpoints;
        let local = SocketAddr::new(e.local_addr.expect("local"), e.local_port.expect("port"));
        let remote = SocketAddr::new(e.remote_addr.expect("remote"), e.remote_port.expect("port"));
        let (from, to) = match r.direction {
            Direction::Out => (local, remote),
            Direction::In => (remote, local),
        };
        let topic = r.label.pubsub_topic.as_deref().map(str::to_owned);
        let key = (from, to, r.label.kind.to_string(), topic);
        let sum: &mut (u64, u64) = out.entry(key).or_default();
        sum.0 += r.counters.messages;
        sum.1 += r.counters.payload_bytes;
    }
    out.retain(|_, v| *v != (0, 0));
    out
}

/// Sums parts per (kind, pubsub topic).
fn per_kind(
    parts: &BTreeMap<PartKey, (u64, u64)>,
) -> BTreeMap<(String, Option<String>), (u64, u64)> {
    let mut out = BTreeMap::new();
    for ((_, _, kind, topic), (n, b)) in parts {
        let sum: &mut (u64, u64) = out.entry((kind.clone(), topic.clone())).or_default();
        sum.0 += n;
        sum.1 += b;
    }
    out
}

#[test]
fn relay_kinds_per_shard_match_the_nodes_to_the_byte() {
    let mut checked = BTreeSet::new();
    for capture in common::samples() {
        let t = truth(&capture);
        if t["connections"][0]["security"] != "/plaintext/2.0.0" {
            continue;
        }
        let name = capture.display();
        let truth = truth_parts(&t);
        let kinds: BTreeSet<String> = truth.keys().map(|k| k.2.clone()).collect();
        let (rows, _, errors) = common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        let counted = counted_parts(&rows, &kinds);
        assert_eq!(
            per_kind(&counted),
            per_kind(&truth),
            "{name}: (messages, payload bytes) per (kind, pubsub topic)"
        );
        assert_eq!(
            counted, truth,
            "{name}: per sender, receiver, kind and topic"
        );
        checked.extend(kinds);

        // Nodes on hosts of their own: a message sent to a host again is a duplicate.
        let hosts: BTreeSet<&str> = t["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["listen"].as_str()?.rsplit_once(':').map(|(ip, _)| ip))
            .collect();
        if hosts.len() == t["nodes"].as_array().map_or(0, Vec::len) {
            for topic in ["/waku/2/rs/16/32", "/waku/2/rs/16/64"] {
                let want: u64 = t["deliveries"]
                    .as_array()
                    .expect("deliveries")
                    .iter()
                    .filter(|d| d["pubsub_topic"] == topic)
                    .map(|d| d["publish_entries"].as_u64().expect("entries") - 1)
                    .sum();
                let got: u64 = rows
                    .iter()
                    .filter(|r| r.label.pubsub_topic.as_deref() == Some(topic))
                    .map(|r| r.counters.duplicates)
                    .sum();
                assert_eq!(got, want, "{name}: duplicates on {topic}");
            }
        }
    }
    for kind in [
        "message",
        "subscribe",
        "ihave",
        "iwant",
        "graft",
        "prune",
        "idontwant",
        "framing",
    ] {
        assert!(
            checked.contains(kind),
            "no plaintext sample shows {kind}: {checked:?}"
        );
    }
}

/// Relay message and relay control payload bytes, as (message, control).
fn relay_split(parts: &BTreeMap<PartKey, (u64, u64)>) -> (u64, u64) {
    parts
        .iter()
        .fold((0, 0), |(m, c), ((_, _, kind, _), (_, b))| {
            if kind == "message" {
                (m + b, c)
            } else {
                (m, c + b)
            }
        })
}

/// Relative error of `got` against `want`, in per cent.
fn error_pct(got: u64, want: u64) -> f64 {
    (got as f64 - want as f64).abs() * 100.0 / want.max(1) as f64
}

/// What the inference made of one encrypted sample's relay traffic, against its truth.
struct Inferred {
    message_error_pct: f64,
    control_error_pct: f64,
    messages: u64,
    truth_messages: u64,
}

/// The inferred relay payload bytes and messages of every sample whose connections use
/// `security` and that has relay truth, by sample.
fn inferred_relay(security: &str) -> Vec<(String, Inferred)> {
    let mut out = Vec::new();
    for capture in common::samples() {
        let t = truth(&capture);
        if t["connections"][0]["security"] != security || t["relay_parts"].is_null() {
            continue;
        }
        let name = capture.display().to_string();
        let (rows, _, errors) = common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        let relay: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                matches!(
                    r.label.category,
                    Category::RelayChat | Category::RelayControl
                )
            })
            .collect();
        assert!(
            relay
                .iter()
                .all(|r| r.label.method == wakuprof::account::record::Method::Inferred),
            "{name}: relay rows of {security} connections are inferred"
        );
        assert!(
            rows.iter().all(|r| r.label.category != Category::Other),
            "{name}: no libp2p connection left other"
        );
        let payload = |c: Category| -> u64 {
            relay
                .iter()
                .filter(|r| r.label.category == c)
                .map(|r| r.counters.payload_bytes)
                .sum()
        };
        let (message, control) = relay_split(&truth_parts(&t));
        let (got_message, got_control) = (
            payload(Category::RelayChat),
            payload(Category::RelayControl),
        );
        let messages: u64 = relay
            .iter()
            .filter(|r| r.label.category == Category::RelayChat)
            .map(|r| r.counters.messages)
            .sum();
        let truth_messages: u64 = truth_parts(&t)
            .iter()
            .filter(|(k, _)| k.2 == "message")
            .map(|(_, v)| v.0)
            .sum();
        let parts = truth_parts(&t);
        let mut per_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for ((_, _, kind, _), (_, b)) in &parts {
            per_kind.entry(common::inferred_kind(kind)).or_default().1 += b;
        }
        for r in &relay {
            per_kind.entry(r.label.kind.as_ref()).or_default().0 += r.counters.payload_bytes;
        }
        eprintln!("{name}: per kind (inferred, truth): {per_kind:?}");
        let inferred = Inferred {
            message_error_pct: error_pct(got_message, message),
            control_error_pct: error_pct(got_control, control),
            messages,
            truth_messages,
        };
        eprintln!(
            "{name}: relay message {got_message} of {message} B ({:.2} %), relay control {got_control} of {control} B ({:.2} %), messages {messages} of {truth_messages}",
            inferred.message_error_pct, inferred.control_error_pct
        );
        out.push((name, inferred));
    }
    out
}

#[test]
fn noise_frames_give_relay_message_and_control_bytes_within_five_percent() {
    let samples = inferred_relay("/noise");
    for (name, i) in &samples {
        assert!(i.message_error_pct <= 5.0, "{name}: relay message bytes");
        assert!(i.control_error_pct <= 5.0, "{name}: relay control bytes");
        assert_eq!(i.messages, i.truth_messages, "{name}: relay messages");
    }
    assert!(
        samples.len() >= 5,
        "Noise samples with relay truth: {}",
        samples.len()
    );
}

#[test]
fn frames_table_covers_each_noise_connection_in_order() {
    let mut checked = 0;
    for capture in common::samples() {
        let t = truth(&capture);
        let Some(conns) = t["connections"].as_array() else {
            continue;
        };
        if conns.first().and_then(|c| c["security"].as_str()) != Some("/noise") {
            continue;
        }
        let name = capture.display();
        let frames = common::analyze_frames(std::slice::from_ref(&capture));
        for c in conns {
            let (dialer, listener) = (addr(&c["dialer"]), addr(&c["listener"]));
            let of: Vec<_> = frames
                .iter()
                .filter(|f| {
                    let e = &f.endpoints;
                    e.local_addr == Some(dialer.ip())
                        && e.local_port == Some(dialer.port())
                        && e.remote_addr == Some(listener.ip())
                        && e.remote_port == Some(listener.port())
                })
                .collect();
            let what = format!("{name}: {dialer} → {listener}");
            for (d, key, handshakes) in [
                (Direction::Out, "bytes_dialer_to_listener", 2),
                (Direction::In, "bytes_listener_to_dialer", 1),
            ] {
                let side: Vec<_> = of.iter().filter(|f| f.direction == d).collect();
                let sum: u64 = side.iter().map(|f| u64::from(f.bytes)).sum();
                // Every stream byte after the prelude (`/multistream/1.0.0` and `/noise`, each
                // with its length prefix and newline) is in a frame.
                let prelude = 20 + 8;
                assert_eq!(
                    Some(sum + prelude),
                    c[key].as_u64(),
                    "{what}: {d:?} frame bytes"
                );
                let kinds: Vec<&str> = side.iter().map(|f| f.kind).collect();
                assert_eq!(
                    kinds.iter().take_while(|k| **k == "handshake").count(),
                    handshakes,
                    "{what}: {d:?} starts with the Noise handshake: {kinds:?}"
                );
                assert!(
                    side.windows(2).all(|w| w[0].time_us <= w[1].time_us),
                    "{what}: in order"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "Noise samples: {checked}");
}
