//! The BitTorrent samples against what aria2 and opentracker reported: the scenario's bytes are
//! `bittorrent`, the peer-wire messages by kind equal those the clients logged, the file's blocks
//! travel as piece messages, the UDP tracker and DHT exchanges are there, and the MSE
//! connections are attributed by correlation.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wakuprof::account::record::{Category, Method, Row};
use wakuprof::analyze::Config;

fn bt_samples() -> Vec<(PathBuf, Value)> {
    let samples: Vec<(PathBuf, Value)> = common::samples()
        .into_iter()
        .filter_map(|p| {
            let t = truth(&p);
            t.get("torrent").is_some().then_some((p, t))
        })
        .collect();
    assert!(samples.len() >= 2, "BitTorrent samples in samples/");
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

#[test]
fn bittorrent_samples_match_the_clients() {
    for (capture, t) in bt_samples() {
        let name = capture.display();
        let (rows, stats, errors) =
            common::analyze(std::slice::from_ref(&capture), Config::default());
        assert_eq!(errors, 0, "{name}");
        assert_eq!(
            Some(stats.packets),
            t["capture"]["packets"].as_u64(),
            "{name}"
        );

        let all: u64 = rows.iter().map(|r| r.counters.bytes).sum();
        let bt: u64 = rows
            .iter()
            .filter(|r| r.label.category == Category::Bittorrent)
            .map(|r| r.counters.bytes)
            .sum();
        let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            let key = format!(
                "{}/{}/{}",
                r.label.category.as_str(),
                r.label.protocol,
                r.label.kind
            );
            *by_label.entry(key).or_default() += r.counters.bytes;
        }
        assert!(
            bt * 1000 >= all * 999,
            "{name}: {bt} of {all} bytes are bittorrent: {by_label:?}"
        );

        // The UDP tracker: every request and reply aria2 logged, one message each.
        for action in ["connect", "announce"] {
            let want = count(&t, "tracker_udp", &format!("{action} request"))
                + count(&t, "tracker_udp", &format!("{action} reply"));
            assert!(want > 0, "{name}: the truth has {action}s");
            assert_eq!(
                messages(&rows, "bt-tracker-udp", action),
                want,
                "{name}: UDP tracker {action} requests + replies"
            );
        }

        // The DHT: queries and their responses under the query's method.
        let dht: &serde_json::Map<String, Value> = t["dht_sent"].as_object().expect("dht_sent");
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for (key, n) in dht {
            let method = key.split(' ').nth(1).expect("`query method`").to_owned();
            *want.entry(method).or_default() += n.as_u64().expect("count");
        }
        assert!(
            want.contains_key("ping") && want.contains_key("find_node"),
            "{name}: {want:?}"
        );
        for (method, n) in &want {
            assert_eq!(
                messages(&rows, "bt-dht", method),
                *n,
                "{name}: DHT {method}"
            );
        }

        let blocks = t["torrent"]["blocks"].as_u64().expect("blocks");
        let file_size = t["torrent"]["file_size"].as_u64().expect("file size");
        if t["torrent"]["encryption"]
            .as_str()
            .is_some_and(|e| e.starts_with("none"))
        {
            // The peer wire: messages by kind as aria2 logged them sent.
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
            assert_eq!(
                count(&t, "peer_wire_sent", "piece"),
                blocks,
                "{name}: no duplicate piece"
            );
            // Each piece message: length (4) + id (1) + index (4) + begin (4) + its block.
            let piece_bytes = total(&rows, "bittorrent", "piece", |r| r.counters.payload_bytes);
            assert_eq!(
                piece_bytes,
                file_size + 13 * blocks,
                "{name}: piece payload bytes"
            );
        } else {
            let mse: Vec<&Row> = rows
                .iter()
                .filter(|r| {
                    r.endpoints.transport == "tcp" && r.label.category == Category::Bittorrent
                })
                .collect();
            assert!(
                mse.iter()
                    .all(|r| r.label.protocol.as_ref() == "mse"
                        && r.label.method == Method::Heuristic),
                "{name}: TCP connections are MSE, heuristic: {by_label:?}"
            );
            let payload: u64 = mse.iter().map(|r| r.counters.payload_bytes).sum();
            assert!(
                payload >= file_size,
                "{name}: {payload} MSE payload bytes carry the file"
            );
        }
    }
}
