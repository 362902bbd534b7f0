//! A small sweep end to end as root: a two-community scenario over plaintext run with 3 and
//! then 5 nodes. The table (CSV, Parquet and sweep.json) must hold one row per value, its relay
//! bytes must equal the nodes' truth summed from each run's report (itself exact per node),
//! and the chart must be there.

use std::fs::File;

use arrow_array::{Array as _, Float64Array, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

mod common;

const SCENARIO: &str = r#"
duration_secs = 2
seed = 11
transport = "plaintext"

[network]
nodes = 4
degree = 2

[[community]]
name = "guarded"
shard = 200
protected = true
members = [0, 1]

[[community.message]]
content_topic = "/guarded/1/chat/proto"
size = 200
size_max = 1500
rate_per_min = 120

[[community]]
name = "open"
members = [2, 3]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 300
rate_per_min = 60
"#;

/// Relay payload bytes of a run's report: (wakuprof's, the truth's), over every node; each
/// node ran as its own process, not `wakusim`'s.
fn relay_totals(report: &Value, wakusim: u32) -> (u64, u64) {
    common::own_processes(report, wakusim, &[]);
    let mut totals = (0, 0);
    for node in report["per_node"].as_array().expect("per_node") {
        common::relay_exact(node);
        common::health_exact(node);
        for c in node["relay_vs_truth"].as_array().expect("checks") {
            totals.0 += c["profiler_bytes"].as_u64().expect("bytes");
            totals.1 += c["truth_bytes"].as_u64().expect("bytes");
        }
    }
    totals
}

#[test]
fn a_nodes_sweep_tabulates_every_value_and_matches_the_truth() {
    if !common::root() {
        return;
    }
    let (_dir, out, wakusim) =
        common::wakusim("sweep", SCENARIO, &["--param", "nodes", "--values", "3,5"]);

    let sweep: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).expect("sweep.json"))
            .expect("JSON");
    assert_eq!(sweep["param"], "nodes");
    let rows = sweep["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "one row per value");
    let mut truths = Vec::new();
    for (row, nodes) in rows.iter().zip([3u64, 5]) {
        assert_eq!(row["nodes"], nodes);
        let dir = out.join(format!("nodes-{nodes}"));
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("report.json")).expect("the run's report.json"),
        )
        .expect("JSON");
        assert_eq!(report["nodes"], nodes);
        let (profiler, truth) = relay_totals(&report, wakusim);
        assert!(truth > 0, "the {nodes}-node run relayed messages");
        assert_eq!(profiler, truth, "{nodes} nodes: wakuprof's relay bytes");
        assert_eq!(
            row["relay_bytes"], truth,
            "{nodes} nodes: the row's relay bytes"
        );
        assert_eq!(row["truth_relay_bytes"], truth);
        assert!(row["per_node_bps"]["message"].as_f64() > Some(0.0));
        truths.push(truth);
    }

    let csv = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv");
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines.len(), 3, "a header and a row per value: {csv}");
    let at = |name: &str| {
        lines[0]
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name}: {csv}"))
    };
    for (line, (nodes, truth)) in lines[1..].iter().zip([3, 5].iter().zip(&truths)) {
        assert_eq!(line.len(), lines[0].len());
        assert_eq!(line[at("param")], "nodes");
        assert_eq!(line[at("value")], nodes.to_string());
        assert_eq!(line[at("relay_bytes")], truth.to_string());
        for kind in ["message_bps", "graft_bps", "subscribe_bps", "control_share"] {
            let v: f64 = line[at(kind)].parse().expect("a number");
            assert!(v > 0.0, "{nodes} nodes: {kind} {v}");
        }
    }

    let file = File::open(out.join("sweep.parquet")).expect("sweep.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("Parquet")
        .build()
        .expect("a reader");
    let batches: Vec<_> = reader.map(|b| b.expect("a batch")).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let batch = &batches[0];
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let values = column("value")
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("value is float");
    assert_eq!(values.values().to_vec(), [3.0, 5.0]);
    let relay = column("relay_bytes")
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("relay_bytes is a count");
    assert_eq!(relay.values().to_vec(), truths);
    assert!(column("message_bps").null_count() == 0);

    let svg = std::fs::read_to_string(out.join("sweep.svg")).expect("sweep.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect").count(),
        2 * 9 + 9,
        "9 stacked kinds per value, 9 in the legend"
    );
}
