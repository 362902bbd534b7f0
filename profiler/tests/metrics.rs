//! The Prometheus exporter and the Grafana dashboards: rows of real samples go through the
//! exporter, served over HTTP; every query of the dashboards must use metric families the
//! exporter serves and labels its series carry, and the served byte counters must add up to the
//! rows' bytes.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use wakuprof::analyze::Config;
use wakuprof::sink::Sink;
use wakuprof::sink::metrics::{self, MetricsSink};

/// Every `expr` string anywhere in a dashboard.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// GET /metrics from the exporter.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("exporter listens");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request sent");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn dashboards_query_only_what_the_exporter_serves() {
    let samples = [
        common::repo().join("samples/relay-meshsub-gossip.pcap"),
        common::repo().join("samples/discovery-discv5-dns.pcap"),
    ];
    let (rows, _, _) = common::analyze(&samples, Config::default());
    let registry = metrics::Shared::default();
    let mut sink = MetricsSink {
        registry: Arc::clone(&registry),
    };
    sink.write(&rows).expect("rows added");
    let addr = metrics::serve("127.0.0.1:0".parse().unwrap(), registry).expect("exporter starts");
    let body = scrape(addr);

    let families: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let labels: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.split_once('{')?.1.split_once('}')?.0.to_string()))
        .flat_map(|ls| {
            ls.split("\",")
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served_bytes: u64 = body
        .lines()
        .filter(|l| l.starts_with("wakuprof_bytes_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        served_bytes,
        rows.iter().map(|r| r.counters.bytes).sum::<u64>()
    );
    assert!(
        body.contains("category=\"relay_control\""),
        "relay rows are served"
    );

    let mut queries = Vec::new();
    for entry in std::fs::read_dir(common::repo().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("dashboard readable");
            let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
            exprs(&v, &mut queries);
        }
    }
    assert!(
        queries.len() >= 8,
        "the dashboards hold {} queries",
        queries.len()
    );
    for q in &queries {
        let used: Vec<&str> = q
            .match_indices("wakuprof_")
            .map(|(i, _)| {
                let rest = &q[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        assert!(!used.is_empty(), "query uses no wakuprof metric: {q}");
        for m in used {
            assert!(
                families.contains(m),
                "{q}: {m} is not served ({families:?})"
            );
        }
        for group in q.match_indices("by (").map(|(i, _)| &q[i + 4..]) {
            let list = group.split(')').next().unwrap_or("");
            for label in list.split(',').map(str::trim) {
                assert!(
                    labels.contains(label),
                    "{q}: label {label} is on no series ({labels:?})"
                );
            }
        }
    }
}
