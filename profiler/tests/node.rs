//! The node's own view: peers and shards from nwaku's admin API, and its byte counters from its
//! Prometheus endpoint, read from fixtures in the exact formats nwaku v0.36 serves
//! (tests/fixtures/nwaku, see its FINDINGS.md) and set against real Noise captures.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::wakuprof;
use serde_json::Value;
use wakuprof::account::record::{Category, Row};
use wakuprof::analyze::Config;
use wakuprof::node;

fn fixture(name: &str) -> PathBuf {
    common::repo()
        .join("profiler/tests/fixtures/nwaku")
        .join(name)
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `wakuprof analyze CAPTURE ARGS… --format json`, which must succeed: its JSON document.
fn analyze_json(capture: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["analyze", path_str(capture)];
    all.extend_from_slice(args);
    all.extend(["--format", "json"]);
    let out = wakuprof(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn nwaku_fixtures_read_as_nwaku_means_them() {
    let c = node::read_counters(path_str(&fixture("metrics.txt"))).expect("metrics");
    assert_eq!(c.relay(None, "gross", "in"), 1_800_000.0);
    assert_eq!(c.relay(None, "net", "in"), 1_440_000.0);
    assert_eq!(c.relay(Some("/waku/2/rs/16/32"), "net", "out"), 900_000.0);
    assert_eq!(
        c.relay(None, "gross", "out"),
        0.0,
        "nwaku counts sent bytes as net only"
    );
    assert_eq!(c.libp2p["in"], 2_100_000.0);
    assert_eq!(c.libp2p["out"], 1_200_000.0);
    let store = ("/vac/waku/store-query/3.0.0".to_string(), "in".to_string());
    assert_eq!(c.services[&store], 50_000.0);

    let book = node::read_peers(path_str(&fixture("admin-peers.json")), 16).expect("peers");
    assert_eq!(book.len(), 3);
    let shards = |a: &str| {
        book.shards_of(a.parse().expect("addr"))
            .map(|s| (s.cluster, s.shards.clone()))
    };
    assert_eq!(shards("10.0.0.2:60000"), Some((Some(16), vec![32])));
    assert_eq!(shards("10.0.0.3:60001"), Some((Some(16), vec![32, 64])));
    assert_eq!(shards("10.0.0.4:60002"), Some((Some(16), vec![64])));
    // An inbound connection from a peer's address, on another port, is still that peer.
    assert_eq!(shards("10.0.0.4:51000"), Some((Some(16), vec![64])));

    let old = node::read_peers(path_str(&fixture("admin-peers-v1.json")), 16).expect("v1 peers");
    assert!(old.is_empty(), "before v0.36 the API names no shards");
}

/// Writes `text` to a fresh file under the test's temp dir.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wakuprof-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// The fixture scrape with every counter halved: the scrape at the capture's start.
fn halved_scrape() -> PathBuf {
    let text = std::fs::read_to_string(fixture("metrics.txt")).expect("fixture");
    let halved: Vec<String> = text
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((k, v)) if k.contains("_total") && !l.starts_with('#') => {
                let v: f64 = v.parse().expect("value");
                format!("{k} {:.1}", v / 2.0)
            }
            _ => l.to_string(),
        })
        .collect();
    temp_file("start.txt", &(halved.join("\n") + "\n"))
}

/// The node's peers for relay-noise-gossip in nwaku's v0.36 format: node1 on shard 64 alone,
/// node2 on 32 and 64.
fn gossip_peers(t: &Value) -> String {
    let listen = |n: usize| {
        t["nodes"][n]["listen"]
            .as_str()
            .expect("listen")
            .to_string()
    };
    let peer = |n: usize, shards: &str| {
        let (ip, port) = listen(n)
            .rsplit_once(':')
            .map(|(a, p)| (a.to_string(), p.to_string()))
            .expect("ip:port");
        format!(
            r#"{{"multiaddr":"/ip4/{ip}/tcp/{port}/p2p/16Uiu2HAm4VZqM6rh8x2toGxyLMuMawcTHXomRNgBYMKEjiVv9b7j","protocols":["/vac/waku/relay/2.0.0"],"shards":[{shards}],"connected":"Connected","agent":"nwaku-v0.36.0","origin":"Static"}}"#
        )
    };
    format!("[{},{}]", peer(1, "64"), peer(2, "32,64"))
}

fn truth(name: &str) -> Value {
    let p = common::repo()
        .join("samples")
        .join(format!("{name}.truth.json"));
    serde_json::from_str(&std::fs::read_to_string(p).expect("truth")).expect("json")
}

/// Whether a row's connection has `ip` at one end.
fn touches(r: &Row, ip: &str) -> bool {
    let ip: std::net::IpAddr = ip.parse().expect("ip");
    r.endpoints.local_addr == Some(ip) || r.endpoints.remote_addr == Some(ip)
}

fn relay(r: &Row) -> bool {
    matches!(
        r.label.category,
        Category::RelayChat | Category::RelayControl
    )
}

#[test]
fn encrypted_relay_bytes_take_the_shard_of_a_single_shard_peer() {
    let capture = common::repo().join("samples/relay-noise-gossip.pcap");
    let t = truth("relay-noise-gossip");
    let peers_file = temp_file("gossip-peers.json", &gossip_peers(&t));
    let book = node::read_peers(path_str(&peers_file), 16).expect("peers");
    let (plain, _, _) = common::analyze(std::slice::from_ref(&capture), Config::default());
    let cfg = Config {
        peers: book,
        ..Config::default()
    };
    let (rows, _, errors) = common::analyze(std::slice::from_ref(&capture), cfg);
    assert_eq!(errors, 0);

    let (node1, node2) = ("127.0.0.2", "127.0.0.3");
    let sum = |rows: &[Row], f: &dyn Fn(&Row) -> bool| -> (u64, u64) {
        rows.iter().filter(|r| f(r)).fold((0, 0), |(b, p), r| {
            (b + r.counters.bytes, p + r.counters.payload_bytes)
        })
    };
    // The connection node1 → node2 is node2's: the book finds a peer by its listening end first.
    let want = sum(&plain, &|r| {
        relay(r) && touches(r, node1) && !touches(r, node2)
    });
    assert!(want.0 > 10_000, "node1's relay bytes: {want:?}");
    let on_64 = sum(&rows, &|r| relay(r) && r.label.shard == Some(64));
    assert_eq!(on_64, want, "node1's relay bytes, all on shard 64");
    for r in rows.iter().filter(|r| relay(r) && r.label.shard.is_some()) {
        assert!(
            touches(r, node1),
            "only node1's connections get a shard: {r:?}"
        );
        assert_eq!(r.label.cluster_id, Some(16));
        assert_eq!(r.label.pubsub_topic.as_deref(), Some("/waku/2/rs/16/64"));
        assert_eq!(r.label.method, wakuprof::account::record::Method::Inferred);
    }
    assert_eq!(
        sum(&rows, &|_| true),
        sum(&plain, &|_| true),
        "shards move no byte"
    );

    // node2 serves two shards: its relay bytes are apportioned by the node's counters.
    let doc = analyze_json(
        &capture,
        &[
            "--node-api",
            path_str(&peers_file),
            "--node-metrics",
            path_str(&fixture("metrics.txt")),
        ],
    );
    let n = &doc["node"];
    let multi = sum(&rows, &|r| {
        relay(r) && touches(r, node2) && r.label.shard.is_none()
    });
    assert_eq!(n["apportioned_bytes"].as_u64(), Some(multi.0));
    let shares: BTreeMap<String, u64> =
        serde_json::from_value(n["apportioned"].clone()).expect("shares");
    let total: u64 = shares.values().sum();
    assert!(
        total.abs_diff(multi.0) <= 2,
        "apportioned {shares:?} of {}",
        multi.0
    );
    assert!(
        shares["32"] > shares["64"],
        "shard 32 carries most of the node's relay bytes: {shares:?}"
    );
}

#[test]
fn app_against_wire_from_two_scrapes() {
    let capture = common::repo().join("samples/relay-noise-mix.pcap");
    let t = truth("relay-noise-mix");
    let start = halved_scrape();
    let doc = analyze_json(
        &capture,
        &[
            "--node-metrics",
            path_str(&start),
            "--node-metrics",
            path_str(&fixture("metrics.txt")),
        ],
    );
    let n = &doc["node"];
    assert_eq!(
        n["in"]["node_relay"].as_f64(),
        Some(900_000.0),
        "gross in, end − start"
    );
    assert_eq!(
        n["out"]["node_relay"].as_f64(),
        Some(500_000.0),
        "net out, end − start"
    );
    assert_eq!(n["in"]["node_libp2p"].as_f64(), Some(1_050_000.0));
    assert_eq!(n["out"]["node_services"].as_f64(), Some(17_000.0));
    assert_eq!(n["topics"].as_array().map(Vec::len), Some(2));

    // The wire side: libp2p stream bytes are the TCP payload the nodes wrote (their truth), and
    // the causes split every wire byte.
    let truth_payload: u64 = t["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            c["bytes_dialer_to_listener"].as_u64().unwrap_or(0)
                + c["bytes_listener_to_dialer"].as_u64().unwrap_or(0)
        })
        .sum();
    let streams = n["in"]["wire_libp2p_streams"].as_u64().unwrap_or(0)
        + n["out"]["wire_libp2p_streams"].as_u64().unwrap_or(0);
    assert_eq!(
        streams, truth_payload,
        "libp2p stream bytes against the nodes' writes"
    );
    let truth_messages: u64 = t["relay_parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter(|p| p["kind"] == "message")
        .map(|p| p["bytes"].as_u64().unwrap_or(0))
        .sum();
    let mut wire_total = 0;
    let mut messages = 0;
    for d in ["in", "out"] {
        let side = &n[d];
        let causes: u64 = side["causes"]
            .as_object()
            .expect("causes")
            .values()
            .map(|v| v.as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            Some(causes),
            side["wire_total"].as_u64(),
            "{d}: the causes add up to the wire"
        );
        wire_total += causes;
        messages += side["causes"]["relay_messages"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        messages, truth_messages,
        "relay message payload against the nodes' truth"
    );
    let stats_bytes: u64 = ["ip_bytes_in", "ip_bytes_out"]
        .iter()
        .map(|k| doc["stats"][k].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(wire_total, stats_bytes, "every IP byte of the capture");
}

#[test]
fn bad_node_sources_get_clear_errors() {
    let capture = common::repo().join("samples/relay-noise-mix.pcap");
    let c = path_str(&capture);
    let garbage = temp_file("garbage.txt", "<html>nginx</html>\n");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--node-metrics", path_str(&garbage)],
            "not the format nwaku serves",
        ),
        (&["--node-api", path_str(&garbage)], "GET /admin/v1/peers"),
        (
            &["--node-api", "http://127.0.0.1:9/admin/v1/peers"],
            "reachable",
        ),
        (
            &[
                "--node-metrics",
                "a",
                "--node-metrics",
                "b",
                "--node-metrics",
                "c",
            ],
            "two",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["analyze", c];
        args.extend_from_slice(extra);
        let out = wakuprof(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}
