//! Decoding on several threads gives the one-thread output: the same Parquet rows (every column)
//! in the same files, and the same summary, on every sample (where flows share decoder state
//! and the run goes back to one thread) and on the mixed capture the benchmark is made of
//! (where the threads keep to their flows to the end, or diverge midway under a small budget).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parquet::file::reader::SerializedFileReader;
use serde_json::Value;

/// Every row of every Parquet file under `dir`, as text, by file directory (the partition).
/// Rows are sorted within a partition: within a window, row order is a hash map's.
fn parquet_rows(dir: &Path) -> BTreeMap<PathBuf, Vec<String>> {
    let mut rows: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("output directory readable") {
            let path = e.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let file = std::fs::File::open(&path).expect("Parquet file opens");
                let reader = SerializedFileReader::new(file).expect("valid Parquet");
                let partition = path
                    .parent()
                    .and_then(|p| p.strip_prefix(dir).ok())
                    .expect("file under the output directory")
                    .to_path_buf();
                let part = rows.entry(partition).or_default();
                for row in reader {
                    part.push(row.expect("row decodes").to_string());
                }
            }
        }
    }
    for part in rows.values_mut() {
        part.sort();
    }
    rows
}

/// The JSON summary without the memory peak (the threads' analyzers each hold their own).
fn summary(stdout: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(stdout).expect("JSON summary");
    let stats = v["stats"].as_object_mut().expect("stats object");
    assert!(
        stats.remove("memory_peak").is_some(),
        "memory_peak reported"
    );
    v
}

/// Where the run went back to one thread (packets whose rows the threads had handed out) and
/// why, or `None` when the threads kept to their flows.
fn went_back(stderr: &[u8]) -> Option<(u64, String)> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains("decoding on one thread from the start"))?;
    let n = line.split("packets=").nth(1)?;
    let n = n.split(' ').next()?.parse().ok()?;
    let why = line.split("why=").nth(1)?.split('"').nth(1)?;
    Some((n, why.to_string()))
}

/// Analyzes `capture` with one and with `threads` threads; asserts the same rows and summary.
/// Returns where the threaded run went back to one thread.
fn same_output(capture: &Path, threads: u32, extra: &[&str]) -> Option<(u64, String)> {
    // The mixed capture spans decades: a thousand hourly files, each synced; memory is faster.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let mut outputs = Vec::new();
    for t in [1, threads] {
        let out = dir.path().join(format!("t{t}"));
        let out_arg = out.to_str().expect("utf-8 path").to_string();
        let t_arg = t.to_string();
        let cap = capture.to_str().expect("utf-8 path");
        let mut args = vec!["analyze", cap, "--out", &out_arg, "--threads", &t_arg];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--format", "json"]);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wakuprof"))
            .args(&args)
            .env("WAKUPROF_LOG", "wakuprof=info")
            .output()
            .expect("wakuprof runs");
        assert!(
            output.status.success(),
            "{}: {}",
            capture.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push((output, parquet_rows(&out)));
    }
    let name = capture.display();
    let (one, many) = (&outputs[0], &outputs[1]);
    assert!(!one.1.is_empty(), "{name}: rows written");
    assert_eq!(
        one.1.keys().collect::<Vec<_>>(),
        many.1.keys().collect::<Vec<_>>(),
        "{name}: same partitions"
    );
    for (partition, rows) in &one.1 {
        assert!(
            *rows == many.1[partition],
            "{name}: rows of {} differ with {threads} threads ({} vs {} rows)",
            partition.display(),
            rows.len(),
            many.1[partition].len()
        );
    }
    assert_eq!(
        summary(&one.0.stdout),
        summary(&many.0.stdout),
        "{name}: summary"
    );
    went_back(&many.0.stderr)
}

/// Every sample, with more threads than the machine may have cores. Those whose flows share
/// relay or discovery state go back to one thread; the BitTorrent ones (peers shared across
/// host pairs) and the RPC one stay threaded.
#[test]
fn every_sample_gives_the_one_thread_output() {
    let mut threaded = Vec::new();
    for s in common::samples().iter().chain(&common::js_samples()) {
        if same_output(s, 4, &[]).is_none() {
            threaded.push(s.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
    }
    let bittorrent = threaded
        .iter()
        .flatten()
        .filter(|n| n.starts_with("bt-"))
        .count();
    assert_eq!(
        bittorrent, 8,
        "BitTorrent samples decoded threaded: {threaded:?}"
    );
}

/// The benchmark's capture: the threads keep to their flows from start to end.
#[test]
fn the_mixed_capture_stays_threaded_and_gives_the_one_thread_output() {
    let mix = common::ndpi_mix();
    assert_eq!(
        same_output(&mix, 2, &[]),
        None,
        "decoded threaded to the end"
    );
}

/// Under a small memory budget the threads stop being exact midway: the run goes on on one
/// thread without repeating or losing the rows they had handed out.
#[test]
fn going_back_to_one_thread_midway_keeps_every_row_once() {
    let mix = common::ndpi_mix();
    let back = same_output(&mix, 4, &["--memory-budget", "16M"]);
    assert!(
        back.as_ref()
            .is_some_and(|(n, why)| *n > 1000 && why == "memory"),
        "went back to one thread midway, for memory: {back:?}"
    );
}
