//! Decoding on several threads gives the one-thread output: the same Parquet rows (every column)
//! in the same files, and the same summary, on every sample (where flows share decoder state
//! and the run goes back to one thread) and on the mixed capture the benchmark is made of
//! (where the threads keep to their flows to the end, or diverge midway under a small budget).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use parquet::file::reader::SerializedFileReader;
use serde_json::Value;
use wakuprof::source::LinkType;
use wakuprof::source::pcap_file::CaptureSet;

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

/// Longer than any run here takes, even on a loaded machine: past it the run is stuck.
const HANG: Duration = Duration::from_secs(300);

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wakuprof"));
        cmd.args(&args).env("WAKUPROF_LOG", "wakuprof=info");
        let output = common::wait_within(common::spawn(&mut cmd), HANG);
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

/// `copies` of a sample's packets (read with libpcap) to `to`, a classic pcap with the sample's
/// header (little-endian, microseconds), one copy after the other `gap_us` apart, each squeezed
/// `squeeze` times in time and with its ports above 1024 shifted by 7 per copy, so that every
/// copy opens new flows. The bytes stay the sample's.
fn copies(from: &Path, to: &Path, copies: u16, squeeze: i64, gap_us: i64) {
    let mut header = [0; 24];
    std::io::Read::read_exact(&mut std::fs::File::open(from).expect("sample"), &mut header)
        .expect("a pcap header");
    assert_eq!(
        header[..4],
        [0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian, microseconds"
    );
    let mut records = Vec::new();
    let mut sample = CaptureSet::open(&[from.to_path_buf()]).expect("the sample opens");
    sample.for_each(|p, _| records.push((p.ts_ns / 1000, p.link, p.wire_len, p.data.to_vec())));
    let first = records.first().expect("a packet").0;
    let mut out = header.to_vec();
    for k in 0..copies {
        for (us, link, wire, data) in &records {
            let mut data = data.clone();
            let ip = match link {
                LinkType::LinuxSll => 16,
                LinkType::Ethernet => 14,
                other => panic!("{}: link type {other:?}", from.display()),
            };
            if data.len() > ip + 20 && data[ip] >> 4 == 4 && matches!(data[ip + 9], 6 | 17) {
                let ports = ip + usize::from(data[ip] & 15) * 4;
                for p in [ports, ports + 2] {
                    let port = u16::from_be_bytes([data[p], data[p + 1]]);
                    if port > 1024 {
                        let shifted = port.wrapping_add(7 * k);
                        data[p..p + 2].copy_from_slice(&shifted.to_be_bytes());
                    }
                }
            }
            let t = first + (us - first) / squeeze + i64::from(k) * gap_us;
            for field in [
                t / 1_000_000,
                t % 1_000_000,
                data.len() as i64,
                i64::from(*wire),
            ] {
                out.extend_from_slice(&(field as u32).to_le_bytes());
            }
            out.extend_from_slice(&data);
        }
    }
    std::fs::write(to, out).expect("write the copies");
}

/// One host pair busy for many batches while the other workers get none, and new flows on it
/// (each asks whether an end is a known BitTorrent peer, a question that waits for the other
/// workers): the run ends, with the one-thread output.
#[test]
fn a_worker_without_packets_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let busy = dir.path().join("busy-pair.pcap");
    // 15 copies of 496 packets within 3 s: about 7 batches on one host pair, no idle sweep.
    copies(
        &common::repo().join("samples/bt-transmission-utp.pcap"),
        &busy,
        15,
        100,
        200_000,
    );
    assert_eq!(
        same_output(&busy, 2, &[]),
        None,
        "decoded threaded to the end"
    );
}
