//! The BitTorrent samples against what aria2, transmission and opentracker reported: the
//! scenario's bytes are `bittorrent`, the peer-wire messages by kind equal those the clients
//! logged, the file's blocks travel as piece messages (or uTP data), the UDP tracker and DHT
//! exchanges are there, and RC4-encrypted MSE connections are attributed by correlation. Between
//! aria2 and transmission, in each of their MSE/PE modes, every byte of every peer connection is
//! `bittorrent`, each connection's bytes from transmission equal what it wrote, and the outcome
//! of its MSE handshake (plaintext or RC4) is the one transmission logged.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wakuprof::account::record::{Category, Direction, Method, Row};
use wakuprof::analyze::Config;

fn bt_samples() -> Vec<(PathBuf, Value)> {
    let samples: Vec<(PathBuf, Value)> = common::samples()
        .into_iter()
        .filter_map(|p| {
            let t = truth(&p);
            t.get("torrent").is_some().then_some((p, t))
        })
        .collect();
    assert!(samples.len() >= 3, "BitTorrent samples in samples/");
    samples
}

fn truth(capture: &Path) -> Value {
    let path = capture.with_extension("truth.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("truth is JSON")
}

fn count(t: &Value, map: &str, key: &str) -> u64 {
    t[map][key].as_u64().unwrap_or(0)
}

/// Σ of `f` over the rows of `protocol` / `kind`.
fn total(rows: &[Row], protocol: &str, kind: &str, f: impl Fn(&Row) -> u64) -> u64 {
    rows.iter()
        .filter(|r| r.label.protocol.as_ref() == protocol && r.label.kind.as_ref() == kind)
        .map(f)
        .sum()
}

fn messages(rows: &[Row], protocol: &str, kind: &str) -> u64 {
    total(rows, protocol, kind, |r| r.counters.messages)
}

/// Wire bytes per `category/protocol/kind`, for failure messages.
fn by_label(rows: &[Row]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in rows {
        let l = &r.label;
        let key = format!("{}/{}/{}", l.category.as_str(), l.protocol, l.kind);
        *out.entry(key).or_default() += r.counters.bytes;
    }
    out
}

#[test]
fn bittorrent_samples_match_the_clients() {
    for (capture, t) in bt_samples() {
        let name = capture.display().to_string();
        let (rows, stats, errors) =
            common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        let packets = t["capture"]["packets"].as_u64();
        assert_eq!(Some(stats.packets), packets, "{name}");

        let all: u64 = rows.iter().map(|r| r.counters.bytes).sum();
        let bt: u64 = rows
            .iter()
            .filter(|r| r.label.category == Category::Bittorrent)
            .map(|r| r.counters.bytes)
            .sum();
        assert!(
            bt * 1000 >= all * 999,
            "{name}: {bt} of {all} bytes are bittorrent: {:?}",
            by_label(&rows)
        );

        // opentracker's own counters: each request it received was answered once.
        for (action, n) in t["tracker_stats"].as_object().expect("tracker_stats") {
            let want = 2 * n.as_u64().expect("count");
            let got = messages(&rows, "bt-tracker-udp", action);
            assert_eq!(got, want, "{name}: UDP tracker {action} requests + replies");
        }
        for (action, n) in t["tracker_http_stats"]
            .as_object()
            .expect("tracker_http_stats")
        {
            let want = 2 * n.as_u64().expect("count");
            let got = messages(&rows, "bt-tracker-http", action);
            assert_eq!(
                got, want,
                "{name}: HTTP tracker {action} requests + responses"
            );
        }
        if mixed(&t) {
            // aria2 and transmission: see `mse_in_every_outcome`.
            continue;
        }
        let non_empty = |key: &str| t[key].as_object().is_some_and(|m| !m.is_empty());
        if non_empty("tracker_udp") {
            aria2_udp_tracker(&name, &rows, &t);
        }
        if non_empty("dht_sent") {
            aria2_dht(&name, &rows, &t);
        } else {
            for (protocol, kind) in [("bt-dht", "ping"), ("utp", "syn")] {
                let n = messages(&rows, protocol, kind);
                assert!(n > 0, "{name}: {protocol} {kind}");
            }
        }

        let blocks = t["torrent"]["blocks"].as_u64().expect("blocks");
        let file_size = t["torrent"]["file_size"].as_u64().expect("file size");
        let encryption = t["torrent"]["encryption"].as_str().expect("encryption");
        if encryption.starts_with("uTP") {
            let stats = &t["transmission_stats"];
            let downloaded = stats["leecher"]["downloaded-bytes"].as_u64();
            assert_eq!(downloaded, Some(file_size), "{name}");
            let uploaded = stats["seeder"]["uploaded-bytes"]
                .as_u64()
                .expect("uploaded");
            assert!(uploaded >= file_size, "{name}: the seeder sent the file");
            let packets = messages(&rows, "utp", "data");
            assert!(packets >= blocks, "{name}: {packets} uTP data packets");
            let pieces = messages(&rows, "bittorrent", "piece");
            assert_eq!(
                pieces, blocks,
                "{name}: one piece message per block inside uTP"
            );
            let requests = messages(&rows, "bittorrent", "request");
            assert_eq!(requests, blocks, "{name}: one request per block inside uTP");
            assert_eq!(messages(&rows, "bittorrent", "handshake"), 2, "{name}");
            piece_bytes_match(&name, &rows, file_size, blocks);
        } else if encryption.contains("selects plaintext") {
            peer_wire_matches(&name, &rows, &t);
            piece_bytes_match(&name, &rows, file_size, blocks);
        } else {
            let tcp: Vec<&Row> = rows
                .iter()
                .filter(|r| r.endpoints.transport == "tcp")
                .collect();
            assert!(
                tcp.iter()
                    .all(|r| r.label.protocol.as_ref() == "mse"
                        && r.label.method == Method::Heuristic),
                "{name}: TCP connections are MSE, heuristic: {:?}",
                by_label(&rows)
            );
            let payload: u64 = tcp.iter().map(|r| r.counters.payload_bytes).sum();
            assert!(
                payload >= file_size,
                "{name}: {payload} MSE bytes carry the file"
            );
        }
    }
}

/// Each piece message: length (4) + id (1) + index (4) + begin (4) + its block.
fn piece_bytes_match(name: &str, rows: &[Row], file_size: u64, blocks: u64) {
    let piece_bytes = total(rows, "bittorrent", "piece", |r| r.counters.payload_bytes);
    assert_eq!(
        piece_bytes,
        file_size + 13 * blocks,
        "{name}: piece payload bytes"
    );
}

/// aria2's UDP tracker messages: every request it logged and every reply, one message each.
fn aria2_udp_tracker(name: &str, rows: &[Row], t: &Value) {
    for action in ["connect", "announce"] {
        let want = count(t, "tracker_udp", &format!("{action} request"))
            + count(t, "tracker_udp", &format!("{action} reply"));
        assert!(want > 0, "{name}: the truth has {action}s");
        let got = messages(rows, "bt-tracker-udp", action);
        assert_eq!(got, want, "{name}: UDP tracker {action} requests + replies");
    }
}

/// DHT messages by method equal those aria2 logged (queries and responses; a response under the
/// method of its query).
fn aria2_dht(name: &str, rows: &[Row], t: &Value) {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (key, n) in t["dht_sent"].as_object().expect("dht_sent") {
        let method = key.split(' ').nth(1).expect("`query method`").to_owned();
        *want.entry(method).or_default() += n.as_u64().expect("count");
    }
    let both = want.contains_key("ping") && want.contains_key("find_node");
    assert!(both, "{name}: {want:?}");
    for (method, n) in &want {
        assert_eq!(messages(rows, "bt-dht", method), *n, "{name}: DHT {method}");
    }
}

/// Peer-wire messages by kind equal those aria2 logged as sent, with one piece per block.
fn peer_wire_matches(name: &str, rows: &[Row], t: &Value) {
    let want: BTreeMap<String, u64> = t["peer_wire_sent"]
        .as_object()
        .expect("peer_wire_sent")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("count")))
        .collect();
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.label.protocol.as_ref() == "bittorrent")
    {
        if r.counters.messages > 0 {
            *got.entry(r.label.kind.to_string()).or_default() += r.counters.messages;
        }
    }
    assert_eq!(got, want, "{name}: peer-wire messages by kind");
    let blocks = t["torrent"]["blocks"].as_u64();
    let pieces = want.get("piece").copied();
    assert_eq!(
        pieces, blocks,
        "{name}: one piece message per block, no duplicate"
    );
}

/// Whether a sample pairs aria2 with transmission (its truth lists transmission's peers).
fn mixed(t: &Value) -> bool {
    t["transmission_peers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// The address whose bytes a row counts.
fn source(r: &Row) -> Option<IpAddr> {
    match r.direction {
        Direction::Out => r.endpoints.local_addr,
        Direction::In => r.endpoints.remote_addr,
    }
}

/// The address a row's bytes went to.
fn destination(r: &Row) -> Option<IpAddr> {
    match r.direction {
        Direction::Out => r.endpoints.remote_addr,
        Direction::In => r.endpoints.local_addr,
    }
}

/// Whether a row is of the TCP connection between `addr` and the endpoint `peer`.
fn of_connection(r: &Row, addr: IpAddr, peer: (IpAddr, u16)) -> bool {
    let e = &r.endpoints;
    let local = (e.local_addr, e.local_port);
    let remote = (e.remote_addr, e.remote_port);
    let peer = (Some(peer.0), Some(peer.1));
    e.transport == "tcp"
        && ((local == peer && e.remote_addr == Some(addr))
            || (remote == peer && e.local_addr == Some(addr)))
}

/// aria2 against transmission in each MSE/PE mode: every TCP byte but the tracker's is
/// `bittorrent`; per connection transmission logged, the payload bytes it sent equal what it
/// wrote, and the labels follow its crypto_select: plaintext → the MSE handshake then
/// the peer wire decoded message by message, RC4 → `mse` only, no MSE → the peer wire.
#[test]
fn mse_in_every_outcome() {
    let samples: Vec<(PathBuf, Value)> =
        bt_samples().into_iter().filter(|(_, t)| mixed(t)).collect();
    assert!(
        samples.len() >= 4,
        "aria2 × transmission samples in samples/"
    );
    let mut outcomes: BTreeMap<(bool, Option<u64>), u64> = BTreeMap::new();
    for (capture, t) in samples {
        let name = capture.display().to_string();
        let (rows, _, errors) = common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        let tracker = |r: &&Row| {
            let e = &r.endpoints;
            e.local_port == Some(6969) || e.remote_port == Some(6969)
        };
        let peer_tcp: Vec<Row> = rows
            .iter()
            .filter(|r| r.endpoints.transport == "tcp" && !tracker(r))
            .cloned()
            .collect();
        let foreign: Vec<&Row> = peer_tcp
            .iter()
            .filter(|r| r.label.category != Category::Bittorrent)
            .collect();
        assert!(
            foreign.is_empty(),
            "{name}: peer TCP bytes not bittorrent: {:?}",
            by_label(&peer_tcp)
        );
        let address = |role: &str| -> IpAddr {
            let c = t["clients"].as_array().expect("clients");
            let c = c.iter().find(|c| c["role"] == role).expect("client");
            c["address"].as_str().expect("address").parse().expect("ip")
        };
        let mut all_plain = true;
        for p in t["transmission_peers"].as_array().expect("peers") {
            let own = address(p["client"].as_str().expect("client"));
            let peer: std::net::SocketAddr =
                p["peer"].as_str().expect("peer").parse().expect("peer");
            let conn: Vec<&Row> = peer_tcp
                .iter()
                .filter(|r| of_connection(r, own, (peer.ip(), peer.port())))
                .collect();
            let payload = |from: IpAddr| -> u64 {
                conn.iter()
                    .filter(|r| source(r) == Some(from))
                    .map(|r| r.counters.payload_bytes)
                    .sum()
            };
            let what = format!("{name}: {} with {peer}", p["client"]);
            assert_eq!(
                Some(payload(own)),
                p["wrote"].as_u64(),
                "{what}: bytes written"
            );
            let has = |protocol: &str, kind: &str| {
                conn.iter()
                    .any(|r| r.label.protocol.as_ref() == protocol && r.label.kind.as_ref() == kind)
            };
            let select = p["crypto_select"].as_u64();
            let wire = conn
                .iter()
                .any(|r| r.label.protocol.as_ref() == "bittorrent");
            match select {
                Some(1) => {
                    assert!(
                        has("mse", "handshake"),
                        "{what}: MSE handshake: {:?}",
                        by_label(&conn.iter().map(|r| (*r).clone()).collect::<Vec<_>>())
                    );
                    assert!(
                        has("bittorrent", "handshake") || has("bittorrent", "bitfield"),
                        "{what}: clear peer wire after plaintext"
                    );
                    assert!(!has("mse", "encrypted"), "{what}: nothing is RC4");
                }
                Some(_) => {
                    all_plain = false;
                    assert!(
                        has("mse", "handshake") && has("mse", "encrypted"),
                        "{what}: RC4"
                    );
                    assert!(!wire, "{what}: no clear peer wire under RC4");
                }
                None => {
                    assert!(has("bittorrent", "handshake"), "{what}: plain handshake");
                    assert!(!has("mse", "handshake"), "{what}: no MSE");
                }
            }
            *outcomes
                .entry((p["outgoing"].as_bool() == Some(true), select))
                .or_default() += 1;
        }
        if all_plain {
            let blocks = t["torrent"]["blocks"].as_u64().expect("blocks");
            let file_size = t["torrent"]["file_size"].as_u64().expect("file size");
            piece_bytes_match(&name, &peer_tcp, file_size, blocks);
            let (aria2, transmission) = if t["transmission_stats"]["seeder"].is_null() {
                (address("seeder"), address("leecher"))
            } else {
                (address("leecher"), address("seeder"))
            };
            aria2_sent_matches(&name, &peer_tcp, &t, aria2, transmission);
        }
    }
    eprintln!("(transmission opened, crypto_select) → connections: {outcomes:?}");
    for outcome in [(false, Some(1)), (false, Some(2)), (true, Some(2))] {
        assert!(
            outcomes.contains_key(&outcome),
            "(transmission opened, crypto_select) {outcome:?} among {outcomes:?}"
        );
    }
}

/// Peer-wire messages by kind aria2 sent to transmission equal those it logged as sent to
/// transmission's address (its connections to itself, on its own address, are not compared).
fn aria2_sent_matches(name: &str, rows: &[Row], t: &Value, aria2: IpAddr, to: IpAddr) {
    let logged = t["peer_wire_sent_to"][to.to_string()]
        .as_object()
        .expect("peer_wire_sent_to");
    let want: BTreeMap<String, u64> = logged
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("count")))
        .collect();
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| {
        r.label.protocol.as_ref() == "bittorrent"
            && r.counters.messages > 0
            && source(r) == Some(aria2)
            && destination(r) == Some(to)
    }) {
        *got.entry(r.label.kind.to_string()).or_default() += r.counters.messages;
    }
    assert_eq!(
        got, want,
        "{name}: peer-wire messages aria2 sent to {to}, by kind"
    );
}
