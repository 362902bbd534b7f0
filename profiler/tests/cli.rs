//! The `wakuprof` binary end to end: Parquet that DuckDB reads, JSON summaries, and clear errors
//! with nothing lost on bad input.

mod common;

use std::path::Path;
use std::process::Output;

use common::wakuprof;
use serde_json::Value;

/// `wakuprof analyze CAPTURE --out DIR --format json`.
fn analyze_to_parquet(capture: &Path, dir: &Path) -> Output {
    wakuprof(&[
        "analyze",
        capture.to_str().expect("utf-8 path"),
        "--out",
        dir.to_str().expect("utf-8 path"),
        "--format",
        "json",
    ])
}

fn json_summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn parquet_opens_in_duckdb_with_the_summary_totals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("results");
    let mix = common::ndpi_mix();
    let out = analyze_to_parquet(&mix, &out_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_summary(&out);
    let files = parquet_files(&out_dir);
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "parquet")),
        "no temporary files left: {files:?}"
    );
    assert!(
        files.iter().all(|f| f.to_string_lossy().contains("/date=")),
        "Hive partitions: {files:?}"
    );
    let glob = format!("{}/**/*.parquet", out_dir.display());
    let row = common::duckdb(&format!(
        "SELECT sum(bytes), sum(packets), count(DISTINCT date), min(CAST(hour AS INTEGER)) BETWEEN 0 AND 23, \
         sum(bytes) FILTER (WHERE direction = 'in'), count(*) FILTER (WHERE confidence <> 1.0 AND method = 'decoded') \
         FROM read_parquet('{glob}', hive_partitioning=true)"
    ));
    let totals = &summary["totals"];
    assert_eq!(row[0], totals["bytes"].to_string());
    assert_eq!(row[1], totals["packets"].to_string());
    assert_eq!(row[1], summary["stats"]["packets"].to_string());
    assert!(
        row[2].parse::<u64>().expect("date count") > 1,
        "several dates in ndpi-mix"
    );
    assert_eq!(row[3], "True");
    assert_eq!(row[4], totals["bytes_in"].to_string());
    assert_eq!(row[5], "0");
    let types = common::duckdb(&format!(
        "SELECT typeof(window_start), typeof(bytes), typeof(local_port), typeof(shard), typeof(category) \
         FROM read_parquet('{glob}', hive_partitioning=true) LIMIT 1"
    ));
    assert_eq!(
        types,
        [
            "TIMESTAMP WITH TIME ZONE",
            "UBIGINT",
            "USMALLINT",
            "USMALLINT",
            "VARCHAR"
        ]
    );
}

#[test]
fn truncated_capture_keeps_what_was_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mix = std::fs::read(common::ndpi_mix()).expect("read ndpi-mix");
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &mix[..1_000_003]).expect("write the cut capture");
    let out_dir = dir.path().join("results");
    let out = analyze_to_parquet(&cut, &out_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status says input was bad: {stderr}"
    );
    assert!(
        stderr.contains("cut.pcap: packet "),
        "names the file and packet: {stderr}"
    );
    let summary = json_summary(&out);
    let (reference, frames) = common::tshark_wire_bytes(&cut);
    assert_eq!(summary["stats"]["packets"].as_u64(), Some(frames));
    assert_eq!(summary["totals"]["bytes"].as_u64(), Some(reference));
    let glob = format!("{}/**/*.parquet", out_dir.display());
    let row = common::duckdb(&format!(
        "SELECT sum(bytes) FROM read_parquet('{glob}', hive_partitioning=true)"
    ));
    assert_eq!(
        row[0],
        reference.to_string(),
        "the counted bytes were written"
    );
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bogus = dir.path().join("notes.txt");
    std::fs::write(&bogus, b"this is not a packet capture\n").expect("write");
    let out = wakuprof(&["analyze", bogus.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("notes.txt: cannot open capture"),
        "{stderr}"
    );
    let missing = wakuprof(&["analyze", "/nonexistent/x.pcap"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.pcap"));
}

#[test]
fn several_files_merge_into_one_run() {
    let mix = common::ndpi_mix();
    let m = mix.to_str().expect("utf-8 path");
    let one = json_summary(&wakuprof(&["analyze", m, "--format", "json"]));
    let two = json_summary(&wakuprof(&["analyze", m, m, "--format", "json"]));
    let b = |v: &Value| v["totals"]["bytes"].as_u64().expect("bytes");
    assert_eq!(b(&two), 2 * b(&one));
    assert_eq!(
        two["stats"]["packets"].as_u64(),
        one["stats"]["packets"].as_u64().map(|p| 2 * p)
    );
}

#[test]
fn local_address_decides_direction() {
    let mix = common::ndpi_mix();
    let m = mix.to_str().expect("utf-8 path");
    let plain = json_summary(&wakuprof(&["analyze", m, "--format", "json"]));
    let local = json_summary(&wakuprof(&[
        "analyze",
        m,
        "--format",
        "json",
        "--local",
        "178.62.197.130",
    ]));
    assert_eq!(plain["totals"]["bytes"], local["totals"]["bytes"]);
    assert_ne!(plain["totals"]["bytes_in"], local["totals"]["bytes_in"]);
    let bad = wakuprof(&["analyze", m, "--local", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an address"));
}

#[test]
fn schema_lists_every_column() {
    let out = wakuprof(&["schema", "--format", "json"]);
    assert!(out.status.success());
    let cols: Value = serde_json::from_slice(&out.stdout).expect("JSON schema");
    let names: Vec<&str> = cols
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in [
        "window_start",
        "pid",
        "category",
        "kind",
        "shard",
        "direction",
        "bytes",
        "payload_bytes",
        "method",
        "confidence",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
}

#[test]
fn messages_table_lists_every_published_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sample = common::repo().join("samples/libp2p-plaintext-yamux.pcap");
    let truth: Value = serde_json::from_slice(
        &std::fs::read(sample.with_extension("truth.json")).expect("truth file"),
    )
    .expect("truth is JSON");
    let messages_dir = dir.path().join("messages");
    let out = wakuprof(&[
        "analyze",
        sample.to_str().expect("utf-8 path"),
        "--messages",
        messages_dir.to_str().expect("utf-8 path"),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_summary(&out);
    let chat = |field: &str| -> u64 {
        summary["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .filter(|c| c["category"] == "relay_chat")
            .map(|c| c[field].as_u64().expect("counter"))
            .sum()
    };
    let glob = format!("{}/**/*.parquet", messages_dir.display());
    let row = common::duckdb(&format!(
        "SELECT count(*), sum(entry_bytes), sum(duplicate::INT), count(DISTINCT message_id), \
         count(*) FILTER (WHERE shard IS NULL OR cluster_id <> 16 OR content_topic IS NULL), \
         typeof(any_value(time)) FROM read_parquet('{glob}', hive_partitioning=true)"
    ));
    assert_eq!(row[0], chat("messages").to_string(), "one row per entry");
    assert_eq!(row[1], chat("payload_bytes").to_string(), "entry bytes");
    assert_eq!(row[2], chat("duplicates").to_string(), "duplicates");
    let published = truth["messages"].as_array().expect("messages");
    assert_eq!(row[3], published.len().to_string(), "distinct messages");
    assert_eq!(row[4], "0", "every message has its shard and content topic");
    assert_eq!(row[5], "TIMESTAMP WITH TIME ZONE");
    for m in published {
        let id = m["message_id"].as_str().expect("id");
        let row = common::duckdb(&format!(
            "SELECT DISTINCT pubsub_topic, content_topic, waku_message_bytes, payload_bytes \
             FROM read_parquet('{glob}', hive_partitioning=true) WHERE message_id = '{id}'"
        ));
        let expected = [
            m["pubsub_topic"].as_str().expect("topic").to_string(),
            m["content_topic"]
                .as_str()
                .expect("content topic")
                .to_string(),
            m["waku_message_bytes"].to_string(),
            m["payload_bytes"].to_string(),
        ];
        assert_eq!(row, expected, "message {id}");
    }
    let schema = wakuprof(&["schema", "--table", "messages"]);
    let text = String::from_utf8_lossy(&schema.stdout);
    assert!(
        text.contains("message_id") && text.contains("duplicate"),
        "{text}"
    );
}
