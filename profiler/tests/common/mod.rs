//! Helpers shared by the integration tests: where the captures are, and independent references
//! (tshark, DuckDB) to check the profiler against.

#![allow(dead_code)]

pub mod service;

use std::path::{Path, PathBuf};
use std::process::Command;

use wakuprof::account::record::{Direction, Row};
use wakuprof::analyze::{Analyzer, Config, Stats};
use wakuprof::source::pcap_file::CaptureSet;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bundled samples, every pcap/pcapng under samples/.
pub fn samples() -> Vec<PathBuf> {
    captures_in("samples")
}

/// The bundled captures of the JavaScript stacks (js-libp2p, js-waku), under samples/js/.
pub fn js_samples() -> Vec<PathBuf> {
    captures_in("samples/js")
}

/// Every pcap/pcapng in `dir` (relative to the repository), sorted.
fn captures_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}/ is readable: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    v
}

/// The shared mixed capture (shared/captures/ndpi-mix.pcap beside the repository, or
/// `$WAKUPROF_SHARED/captures/ndpi-mix.pcap`).
pub fn ndpi_mix() -> PathBuf {
    let shared = std::env::var_os("WAKUPROF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    let p = shared.join("captures/ndpi-mix.pcap");
    assert!(
        p.exists(),
        "{} is missing: the shared captures must sit beside the repository (or set WAKUPROF_SHARED)",
        p.display()
    );
    p
}

/// Runs the `wakuprof` binary with `args`.
pub fn wakuprof(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wakuprof"))
        .args(args)
        .output()
        .expect("wakuprof runs")
}

/// Runs the library pipeline over `paths`; returns all rows and the statistics.
pub fn analyze(paths: &[PathBuf], cfg: Config) -> (Vec<Row>, Stats, usize) {
    let mut set = CaptureSet::open(paths).expect("captures open");
    let mut a = Analyzer::new(cfg);
    let mut rows = Vec::new();
    set.for_each(|p, _| {
        a.packet(p);
        rows.extend(a.take_rows());
    });
    let errors = set.take_errors().len();
    let stats = a.finish();
    rows.extend(a.drain(usize::MAX));
    (rows, stats, errors)
}

/// Σ bytes of rows in one direction.
pub fn bytes(rows: &[Row], d: Direction) -> u64 {
    rows.iter()
        .filter(|r| r.direction == d)
        .map(|r| r.counters.bytes)
        .sum()
}

/// Wire bytes of a capture by tshark, as the accounting rules define them: the outermost IP
/// header's total length for IP packets, the frame length for everything else (including frames
/// that carry IP only inside a second Ethernet header). Returns (bytes, frames).
pub fn tshark_wire_bytes(path: &Path) -> (u64, u64) {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "ip.len",
            "-e",
            "ipv6.plen",
            "-e",
            "frame.len",
            "-E",
            "occurrence=f",
        ])
        .output()
        .expect("tshark runs (cargo xtask test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("cut short"),
        "tshark failed: {stderr}"
    );
    let mut total = 0u64;
    let mut frames = 0u64;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        frames += 1;
        let f: Vec<&str> = line.split('\t').collect();
        let protos: Vec<&str> = f[0].split(':').collect();
        let first_ip = protos.iter().position(|p| *p == "ip" || *p == "ipv6");
        let eth_in_eth = protos.iter().skip(1).position(|p| *p == "eth");
        let ip = match (first_ip, eth_in_eth) {
            (Some(i), Some(e)) if e + 1 < i => None,
            (Some(i), _) => Some(protos[i]),
            (None, _) => None,
        };
        let n: u64 = match ip {
            Some("ip") => f[1].parse().expect("ip.len"),
            Some(_) => 40 + f[2].parse::<u64>().expect("ipv6.plen"),
            None => f[3].parse().expect("frame.len"),
        };
        total += n;
    }
    (total, frames)
}

/// Runs a DuckDB query through Python (cargo xtask test installs the `duckdb` module) and
/// returns its first row as strings.
pub fn duckdb(sql: &str) -> Vec<String> {
    duckdb_rows(sql).into_iter().next().unwrap_or_default()
}

/// Runs a DuckDB query (as [`duckdb`]) and returns every row, each as strings.
pub fn duckdb_rows(sql: &str) -> Vec<Vec<String>> {
    let script = format!(
        "import duckdb\nfor row in duckdb.connect().execute({sql:?}).fetchall():\n    print('\\t'.join(str(x) for x in row))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "DuckDB query failed (is the duckdb Python module installed? `cargo xtask test` installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Fails unless the tests run as root (the live tests attach eBPF programs and create network
/// namespaces).
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the live tests attach eBPF programs and create network namespaces: run the suite as root"
    );
}

/// Runs the library pipeline over `paths` with the frames table on; returns its rows.
pub fn analyze_frames(paths: &[PathBuf]) -> Vec<wakuprof::account::frames::FrameRow> {
    let mut set = CaptureSet::open(paths).expect("captures open");
    let mut a = Analyzer::new(Config {
        frames: true,
        ..Config::default()
    });
    let mut frames = Vec::new();
    set.for_each(|p, _| {
        a.packet(p);
        frames.extend(a.take_frames());
    });
    a.finish();
    frames.extend(a.take_frames());
    frames
}
