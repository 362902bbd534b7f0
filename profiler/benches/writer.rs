//! `cargo bench -p wakuprof --bench writer`: rows/s of the Parquet usage writer alone, on rows
//! shaped like a day of capture (75 keys per 10 s window over 24 hours), written directly and
//! through the writer thread (there the time is what the analysis waits for, plus the end).
//! The last line is the numbers as JSON, for `cargo xtask bench`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use wakuprof::account::record::{Category, Counters, Direction, Endpoints, Label, Owner, Row};
use wakuprof::memory::{DEFAULT_BUDGET, Shares};
use wakuprof::sink::Sink;
use wakuprof::sink::background::Background;
use wakuprof::sink::parquet::ParquetSink;

/// Rows per 10 s window and windows in a day.
const ROWS_PER_WINDOW: u64 = 75;
const WINDOWS: u64 = 8640;
/// 2024-01-01 00:00:00 UTC, µs.
const START_US: i64 = 1_704_067_200_000_000;
/// Rows handed over at a time, as the analysis does between packets.
const HANDED: usize = 4096;

fn main() {
    let rows = day_of_rows();
    let pending = Shares::of(DEFAULT_BUDGET).pending_rows;
    let direct = time(&rows, |dir| {
        let mut w = ParquetSink::new(dir).expect("writer");
        w.limit_rows(pending);
        Box::new(w)
    });
    let threaded = time(&rows, |dir| {
        let mut w = ParquetSink::new(dir).expect("writer");
        w.limit_rows(pending);
        Box::new(Background::spawn(w, pending).expect("writer thread"))
    });
    let n = rows.len() as f64;
    println!(
        "parquet usage writer: {} rows, {:.3} s directly ({:.0} rows/s), {:.3} s through the writer thread ({:.0} rows/s)",
        rows.len(),
        direct,
        n / direct,
        threaded,
        n / threaded
    );
    println!(
        "{{\"rows\": {}, \"direct_secs\": {direct:.6}, \"threaded_secs\": {threaded:.6}}}",
        rows.len()
    );
}

/// The best of three runs writing `rows` into a fresh directory, seconds.
fn time(rows: &[Row], sink: impl Fn(&std::path::Path) -> Box<dyn Sink>) -> f64 {
    (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().expect("temp dir");
            let start = Instant::now();
            let mut s = sink(dir.path());
            for batch in rows.chunks(HANDED) {
                s.write(batch).expect("write");
            }
            s.finish().expect("finish");
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// A day of rows: each window's keys are TCP and UDP flows between varied addresses, labelled
/// from a handful of protocols, with counters that vary.
fn day_of_rows() -> Vec<Row> {
    let owner = Arc::new(Owner::default());
    let labels: Vec<Label> = [("tcp", "transport"), ("udp", "data"), ("dns", "query")]
        .iter()
        .map(|(p, k)| Label::decoded(Category::Other, &Arc::from(*p), &Arc::from(*k)))
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut rows = Vec::with_capacity((WINDOWS * ROWS_PER_WINDOW) as usize);
    for w in 0..WINDOWS {
        for _ in 0..ROWS_PER_WINDOW {
            let r = next();
            let addr = |x: u64| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (x as u32 & 0xfff)));
            let bytes = 40 + r % 20_000;
            rows.push(Row {
                window_start_us: START_US + (w * 10_000_000) as i64,
                window_secs: 10,
                owner: Arc::clone(&owner),
                endpoints: Endpoints {
                    transport: if r & 1 == 0 { "tcp" } else { "udp" },
                    local_addr: Some(addr(r >> 8)),
                    local_port: Some((r >> 20) as u16),
                    remote_addr: Some(addr(r >> 36)),
                    remote_port: Some([53, 443, 80, 60000][(r >> 48) as usize % 4]),
                },
                label: labels[(r >> 52) as usize % labels.len()].clone(),
                direction: if r & 2 == 0 {
                    Direction::In
                } else {
                    Direction::Out
                },
                counters: Counters {
                    bytes,
                    payload_bytes: bytes - 40,
                    packets: 1 + bytes / 1400,
                    ..Counters::default()
                },
            });
        }
    }
    rows
}
