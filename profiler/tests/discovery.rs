//! The discovery sample against its truth: discv5 nodes of the `discv5` crate (Waku's `d5waku`
//! id and the standard one) counted by the crate's own metrics and session events, and an
//! EIP-1459 tree served by dnsmasq and walked by dig, with dig's own message sizes; libp2p's
//! dnsaddr lookup is `discovery` / `dnsaddr`, other DNS `other` / `dns`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use wakuprof::account::record::{Category, Direction, Method, Row};
use wakuprof::analyze::Config;
use wakuprof::rules::Rules;

fn sample() -> (PathBuf, Value) {
    let capture = common::repo().join("samples/discovery-discv5-dns.pcap");
    let text = std::fs::read_to_string(capture.with_file_name("discovery-discv5-dns.truth.json"))
        .expect("truth file");
    (capture, serde_json::from_str(&text).expect("truth is JSON"))
}

/// The rules the operator of the tree would set: its domain, and node ids to unmask with.
fn config(node_ids: Vec<String>) -> Config {
    let mut rules = Rules::default();
    rules.discovery.enrtree_domains = vec!["nodes.waku.test".into()];
    rules.discovery.node_ids = node_ids;
    Config {
        rules,
        ..Config::default()
    }
}

fn rows_of(config: Config) -> Vec<Row> {
    let (capture, _) = sample();
    let (rows, _, errors) = common::analyze(&[capture], config);
    assert_eq!(errors, 0);
    rows
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("a count")
}

fn uses_port(r: &Row, port: u16) -> bool {
    r.endpoints.local_port == Some(port) || r.endpoints.remote_port == Some(port)
}

/// The nodes of one discv5 network (one protocol id) in the truth.
fn network<'a>(t: &'a Value, protocol_id: &str) -> Vec<&'a Value> {
    t["discv5_nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["protocol_id"] == protocol_id)
        .collect()
}

fn node_addr(n: &Value) -> SocketAddr {
    n["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("node address")
}

/// Checks the discv5 rows sent by the nodes of one network against what the crate counted.
fn check_network(rows: &[Row], nodes: &[&Value], method: Method, what: &str) {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| node_addr(n)).collect();
    let sent_by_them = |r: &&Row| {
        let e = &r.endpoints;
        let (local, remote) = (
            e.local_addr.zip(e.local_port).map(SocketAddr::from),
            e.remote_addr.zip(e.remote_port).map(SocketAddr::from),
        );
        let from = if r.direction == Direction::Out {
            local
        } else {
            remote
        };
        from.is_some_and(|f| addrs.contains(&f))
    };
    let theirs: Vec<&Row> = rows
        .iter()
        .filter(|r| uses_port(r, 9000))
        .filter(sent_by_them)
        .collect();
    let wrong: Vec<&&Row> = theirs
        .iter()
        .filter(|r| {
            r.label.protocol.as_ref() != "discv5"
                || r.label.method != method
                || r.label.category != Category::Discovery
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: not discv5 by {method:?}: {wrong:?}"
    );
    let sent: u64 = nodes.iter().map(|n| u(&n["bytes_sent"])).sum();
    let payload: u64 = theirs.iter().map(|r| r.counters.payload_bytes).sum();
    assert_eq!(
        payload, sent,
        "{what}: UDP payload = the crate's bytes_sent"
    );
    let sessions: u64 = nodes.iter().map(|n| u(&n["sessions_established"])).sum();
    assert!(sessions >= 2, "{what}: sessions were established");
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &theirs {
        *kinds.entry(r.label.kind.as_ref()).or_default() += r.counters.messages;
    }
    let packets: u64 = theirs.iter().map(|r| r.counters.packets).sum();
    let handshakes = sessions / 2;
    assert_eq!(
        kinds.get("whoareyou"),
        Some(&handshakes),
        "{what}: {kinds:?}"
    );
    assert_eq!(
        kinds.get("handshake"),
        Some(&handshakes),
        "{what}: {kinds:?}"
    );
    assert_eq!(
        kinds.get("ordinary"),
        Some(&(packets - 2 * handshakes)),
        "{what}: {kinds:?}"
    );
}

#[test]
fn discv5_bytes_and_kinds_match_the_nodes() {
    let (_, t) = sample();
    let (waku, standard) = (network(&t, "d5waku"), network(&t, "discv5"));
    let id = |n: &Value| n["node_id"].as_str().expect("id").to_string();
    // One id per network: every other id is learned from the packets.
    let rows = rows_of(config(vec![id(waku[1]), id(standard[0])]));
    check_network(&rows, &waku, Method::Decoded, "d5waku, one id given");
    check_network(&rows, &standard, Method::Decoded, "discv5, one id given");
    // No id: the Waku nodes' ids come from the ENRs of the DNS tree walked before their
    // lookups; the standard nodes are in no tree and go by the heuristic.
    let rows = rows_of(Config::default());
    check_network(
        &rows,
        &waku,
        Method::Decoded,
        "d5waku, ids from the tree's ENRs",
    );
    check_network(&rows, &standard, Method::Heuristic, "discv5, no id");
    let on_port: u64 = rows
        .iter()
        .filter(|r| uses_port(r, 9000))
        .map(|r| r.counters.packets)
        .sum();
    assert_eq!(
        on_port,
        u(&t["discv5_packets"]),
        "every packet on port 9000 counted"
    );
}

/// (messages, payload bytes) the truth's dig runs give per (protocol, kind).
fn dns_truth(t: &Value) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for d in t["dns"].as_array().expect("dns") {
        let prefix = if d["transport"] == "tcp" { 2 } else { 0 };
        let (protocol, query, answer) = match d["record"].as_str() {
            Some("dnsaddr") => ("dnsaddr", "query", "response"),
            Some(record) => ("dns-enrtree", "query", record),
            None => ("dns", "query", "response"),
        };
        for (kind, bytes) in [(query, &d["query_bytes"]), (answer, &d["response_bytes"])] {
            let e = m.entry((protocol.into(), kind.into())).or_default();
            e.0 += 1;
            e.1 += u(bytes) + prefix;
        }
    }
    m
}

fn dns_counted(rows: &[Row]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| uses_port(r, 53)) {
        if r.label.kind.as_ref() == "transport" {
            continue;
        }
        let e = m
            .entry((r.label.protocol.to_string(), r.label.kind.to_string()))
            .or_default();
        e.0 += r.counters.messages;
        e.1 += r.counters.payload_bytes;
    }
    m
}

#[test]
fn the_tree_walk_is_discovery_message_by_message() {
    let (_, t) = sample();
    let rows = rows_of(config(Vec::new()));
    let truth = dns_truth(&t);
    for kind in ["query", "response"] {
        let dnsaddr = truth.get(&("dnsaddr".into(), kind.into()));
        assert_eq!(
            dnsaddr.map(|m| m.0),
            Some(1),
            "one dnsaddr {kind} in the truth"
        );
    }
    assert_eq!(dns_counted(&rows), truth, "(messages, payload) per kind");
    for r in rows.iter().filter(|r| uses_port(r, 53)) {
        let expected = match r.label.protocol.as_ref() {
            "dns-enrtree" | "dnsaddr" => Category::Discovery,
            _ => Category::Other,
        };
        assert_eq!(r.label.category, expected, "{r:?}");
    }
    let tcp: Vec<&Row> = rows
        .iter()
        .filter(|r| uses_port(r, 53) && r.endpoints.transport == "tcp")
        .collect();
    assert!(
        tcp.iter().all(|r| r.label.category == Category::Discovery),
        "the TCP query's connection, handshake included, is discovery: {tcp:?}"
    );
}

#[test]
fn an_unconfigured_tree_is_learned_from_its_root_answer() {
    let (_, t) = sample();
    let rows = rows_of(Config::default());
    let mut expected = dns_truth(&t);
    let first_root_query = &t["dns"][0];
    assert_eq!(first_root_query["record"], "root");
    let query_bytes = u(&first_root_query["query_bytes"]);
    let tree = expected
        .get_mut(&("dns-enrtree".into(), "query".into()))
        .expect("tree queries");
    *tree = (tree.0 - 1, tree.1 - query_bytes);
    let plain = expected
        .get_mut(&("dns".into(), "query".into()))
        .expect("plain queries");
    *plain = (plain.0 + 1, plain.1 + query_bytes);
    assert_eq!(
        dns_counted(&rows),
        expected,
        "only the first root query, before any answer named the tree, is plain DNS"
    );
}

/// libp2p's dnsaddr lookup is discovery / dnsaddr: one query and one answer, whose bytes are
/// dig's message sizes plus an IPv4 and a UDP header each.
#[test]
fn the_dnsaddr_lookup_is_discovery() {
    let (_, t) = sample();
    let rows = rows_of(Config::default());
    let lookups: Vec<&Value> = t["dns"]
        .as_array()
        .expect("dns")
        .iter()
        .filter(|d| d["record"] == "dnsaddr")
        .collect();
    assert_eq!(lookups.len(), 1, "one dnsaddr lookup in the truth");
    let dig = lookups[0];
    assert_eq!(dig["transport"], "udp");
    let dnsaddr: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label.protocol.as_ref() == "dnsaddr")
        .collect();
    assert!(
        dnsaddr
            .iter()
            .all(|r| r.label.category == Category::Discovery && uses_port(r, 53)),
        "{dnsaddr:?}"
    );
    let sum = |f: fn(&Row) -> u64| -> u64 { dnsaddr.iter().map(|r| f(r)).sum() };
    let payload = u(&dig["query_bytes"]) + u(&dig["response_bytes"]);
    assert_eq!(sum(|r| r.counters.messages), 2, "a query and its answer");
    assert_eq!(sum(|r| r.counters.packets), 2, "one datagram each");
    assert_eq!(sum(|r| r.counters.payload_bytes), payload, "dig's sizes");
    assert_eq!(
        sum(|r| r.counters.bytes),
        payload + 2 * (20 + 8),
        "IPv4 and UDP headers around dig's messages"
    );
}
