//! The services sample against its truth: JSON-RPC calls of jsonrpsee clients (HTTP and
//! WebSocket, single calls and batches) counted per method as the clients made them and the
//! server served them; rustls connections named by their SNI; the node's own HTTP ports.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;
use wakuprof::account::record::{Category, Direction, Row};
use wakuprof::analyze::Config;

fn sample() -> (Vec<Row>, Value) {
    let capture = common::repo().join("samples/services-rpc-tls.pcap");
    let text = std::fs::read_to_string(capture.with_file_name("services-rpc-tls.truth.json"))
        .expect("truth file");
    let (rows, _, errors) = common::analyze(&[capture], Config::default());
    assert_eq!(errors, 0);
    (rows, serde_json::from_str(&text).expect("truth is JSON"))
}

fn addr(v: &Value) -> SocketAddr {
    v.as_str().and_then(|s| s.parse().ok()).expect("address")
}

/// Rows of the TCP connection from `dialer` to `listener`.
fn connection<'a>(rows: &'a [Row], c: &Value) -> Vec<&'a Row> {
    let (dialer, listener) = (addr(&c["dialer"]), addr(&c["listener"]));
    rows.iter()
        .filter(|r| {
            let e = &r.endpoints;
            e.local_addr == Some(dialer.ip())
                && e.local_port == Some(dialer.port())
                && e.remote_addr == Some(listener.ip())
                && e.remote_port == Some(listener.port())
        })
        .collect()
}

/// The (category, protocol) the default rules give each service of the truth.
fn expected(service: &str) -> (Category, &str) {
    match service {
        "rpc" => (Category::Rpc, "tls:mainnet.infura.io"),
        "other/doh" => (Category::Other, "doh"),
        "other/telemetry" => (Category::Other, "telemetry"),
        "other/tls" => (Category::Other, "tls"),
        "node-rest" => (Category::Other, "node-rest"),
        "node-metrics" => (Category::Other, "node-metrics"),
        other => panic!("unknown service {other}"),
    }
}

#[test]
fn every_connection_lands_in_its_service() {
    let (rows, t) = sample();
    let conns = t["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 8);
    for c in conns {
        let service = c["service"].as_str().expect("service");
        let rows = connection(&rows, c);
        let total: u64 = rows.iter().map(|r| r.counters.bytes).sum();
        assert!(total > 0, "{service}: the connection is in the capture");
        let right: u64 = rows
            .iter()
            .filter(|r| match service {
                "jsonrpc" => r.label.category == Category::Rpc,
                s => (r.label.category, r.label.protocol.as_ref()) == expected(s),
            })
            .map(|r| r.counters.bytes)
            .sum();
        assert_eq!(
            right, total,
            "{service}: every byte in its service: {rows:?}"
        );
    }
}

#[test]
fn json_rpc_calls_are_counted_per_method_both_ways() {
    let (rows, t) = sample();
    let mut made: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in t["calls_made"].as_array().expect("calls") {
        let protocol = match c["transport"].as_str() {
            Some("http") => "jsonrpc",
            _ => "jsonrpc-ws",
        };
        let method = c["method"].as_str().expect("method").to_string();
        *made.entry((protocol.into(), method)).or_default() += c["calls"].as_u64().expect("n");
    }
    let served: u64 = t["calls_served"]
        .as_object()
        .expect("served")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(
        made.values().sum::<u64>(),
        served,
        "the server served every call"
    );
    for direction in [Direction::Out, Direction::In] {
        let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.direction == direction) {
            let p = r.label.protocol.as_ref();
            let method = r.label.kind.to_string();
            if (p == "jsonrpc" || p == "jsonrpc-ws") && method.contains('_') {
                *counted.entry((p.into(), method)).or_default() += r.counters.messages;
            }
        }
        assert_eq!(
            counted, made,
            "{direction:?}: calls (out) and responses (in) per method"
        );
    }
}
