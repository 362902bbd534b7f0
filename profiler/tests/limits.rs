//! The memory budget: floods of new flows, and of streams in one connection, keep the peak RSS
//! of `wakuprof analyze` within `--memory-budget` plus a fixed overhead, retire flows for memory,
//! and still count every IP byte. The floods are synthetic load (xtask/flood), not parser input.

mod common;

use std::path::Path;

use flood::Flood;
use serde_json::Value;

/// The budget the floods run under.
const BUDGET: &str = "16M";
const BUDGET_BYTES: u64 = 16 << 20;
/// The fixed overhead beyond the small flood's RSS: the allocator's slack, which varies by about
/// 1 MiB between runs of the same input (measured peaks of the 150 k floods: 35.3–36.0 MiB against
/// a small flood's 19.6–20.4 MiB at a 16 MiB budget).
const SLACK: u64 = 2 << 20;

/// Runs `analyze` on `capture` with `budget`, Parquet under `out`; returns the JSON summary and
/// the peak RSS.
fn analyze(capture: &Path, budget: &str, out: &Path) -> (Value, u64) {
    let (o, rss) = common::wakuprof_rss(&[
        "analyze",
        capture.to_str().expect("utf-8 path"),
        "--memory-budget",
        budget,
        "--out",
        out.to_str().expect("utf-8 path"),
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}: {stderr}", capture.display());
    let summary = serde_json::from_slice(&o.stdout).expect("JSON summary");
    (summary, rss)
}

/// Every IP byte and packet the flood wrote is in the summary and in the Parquet files.
fn assert_conserved(summary: &Value, written: flood::Written, out: &Path) {
    assert_eq!(summary["totals"]["bytes"].as_u64(), Some(written.ip_bytes));
    assert_eq!(summary["stats"]["packets"].as_u64(), Some(written.packets));
    let glob = format!("{}/**/*.parquet", out.display());
    let row = common::duckdb(&format!(
        "SELECT sum(bytes), sum(packets) FROM read_parquet('{glob}', hive_partitioning=true)"
    ));
    assert_eq!(
        row,
        [written.ip_bytes.to_string(), written.packets.to_string()]
    );
}

fn evicted_for_memory(summary: &Value) -> u64 {
    summary["stats"]["flow"]["evicted_memory"]
        .as_u64()
        .expect("stats.flow.evicted_memory")
}

#[test]
fn floods_of_flows_stay_within_the_budget_and_conserve_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let small = dir.path().join("small.pcap");
    flood::write(&small, Flood::Libp2p, 1000).expect("write the small flood");
    let (_, overhead) = analyze(&small, BUDGET, &dir.path().join("small"));
    for (kind, n) in [(Flood::Libp2p, 150_000), (Flood::Syn, 150_000)] {
        let capture = dir.path().join(format!("{kind:?}.pcap"));
        let written = flood::write(&capture, kind, n).expect("write the flood");
        let out = dir.path().join(format!("{kind:?}"));
        let (summary, rss) = analyze(&capture, BUDGET, &out);
        assert_conserved(&summary, written, &out);
        assert!(evicted_for_memory(&summary) > 0, "{kind:?}: flows retired");
        println!(
            "{kind:?}: peak RSS {} KiB, the small flood's {} KiB, budget {} KiB",
            rss >> 10,
            overhead >> 10,
            BUDGET_BYTES >> 10
        );
        assert!(
            rss <= overhead + SLACK + BUDGET_BYTES,
            "{kind:?}: peak RSS {} MiB > {} MiB (the small flood's) + 2 MiB + the budget",
            rss >> 20,
            overhead >> 20
        );
        if kind == Flood::Libp2p {
            // The same flood with room for every flow: the bound above is the budget's doing.
            let (summary, rss) = analyze(&capture, "1G", &dir.path().join("unbounded"));
            assert_eq!(evicted_for_memory(&summary), 0);
            assert!(
                rss > overhead + SLACK + BUDGET_BYTES,
                "without the bound the flood takes {} MiB",
                rss >> 20
            );
        }
    }
}

#[test]
fn many_streams_in_one_connection_stay_within_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let small = dir.path().join("small.pcap");
    flood::write(&small, Flood::Streams, 100).expect("write the small flood");
    let (_, overhead) = analyze(&small, BUDGET, &dir.path().join("small"));
    let capture = dir.path().join("streams.pcap");
    let written = flood::write(&capture, Flood::Streams, 50_000).expect("write the flood");
    let out = dir.path().join("out");
    let (summary, rss) = analyze(&capture, BUDGET, &out);
    assert_conserved(&summary, written, &out);
    assert!(
        rss <= overhead + BUDGET_BYTES,
        "peak RSS {} MiB > {} MiB + the budget",
        rss >> 20,
        overhead >> 20
    );
}
