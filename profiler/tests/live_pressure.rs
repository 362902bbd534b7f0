//! `wakuprof live --source ebpf` past its limits, as root: the probe is loaded with room for 64
//! sockets and a 16 KiB ring buffer, then a burst of 20,000 small UDP datagrams and 500 TCP
//! connections open at once (1,001 sockets with the listener) go over loopback while an
//! independent libpcap capture watches. Packets of sockets the probe has no room for are counted against
//! their process, samples the ring has no room for are counted unsampled: every process's bytes
//! per direction must still equal what libpcap saw (to 0.1 %), and the summary must say how
//! many samples were dropped and how many packets were counted per process.

mod common;

use std::collections::BTreeMap;

use common::live::{
    Capture, Cgroup, LIVE, Live, assert_nothing_attached, capture_bytes, check_ends, exchange,
};

/// Connections open at once, against room for [`SOCKETS`] sockets.
const CONNECTIONS: u32 = 500;
const SOCKETS: &str = "64";
/// Datagrams of 400 bytes sent back to back, against a ring of [`RING`] bytes.
const BURST: u32 = 20_000;
const RING: &str = "16K";

/// Bytes per (pid, direction) of every row of `pids`, ports or none: packets counted apart
/// from their socket carry no connection.
fn bytes_by_pid(live: &Live, pids: &[u32]) -> BTreeMap<(u32, String), u64> {
    let list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "select pid, direction, sum(bytes) from {} where pid in ({list}) group by all",
        live.parquet()
    );
    common::duckdb_rows(&sql)
        .into_iter()
        .map(|r| {
            (
                (r[0].parse().expect("a pid"), r[1].clone()),
                r[2].parse().expect("a sum"),
            )
        })
        .collect()
}

/// The probe's counters in a JSON summary: ring drops, packets past the socket map, and bytes
/// counted per process (ingress, egress).
fn probe_stats(summary: &str) -> (u64, u64, [u64; 2]) {
    let json: serde_json::Value = serde_json::from_str(summary).expect("a JSON summary");
    let probe = &json["live"]["probe"];
    let number = |v: &serde_json::Value| v.as_u64().expect("a counter");
    let per_process = [0, 1].map(|d| number(&probe["per_process"][d][0]));
    (
        number(&probe["ring_drops"]),
        number(&probe["map_full"]),
        per_process,
    )
}

#[test]
fn full_socket_map_and_ring_keep_process_bytes_exact() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let (many, burst) = (18640, 18641);
    let cg = Cgroup::new(&format!("wakuprof-pressure-{}", std::process::id()));
    let filter = format!("port {many} or port {burst}");
    let capture = Capture::headers("lo", &filter, &tmp.path().join("capture.pcap"));
    let mut live = Live::start(
        &[
            "--source",
            "ebpf",
            "--probe-sockets",
            SOCKETS,
            "--probe-ring",
            RING,
        ],
        &tmp.path().join("ebpf"),
    );
    // The burst first, while its sockets find room in the map: their samples overflow the ring.
    let (burst_server, burst_client) = exchange(None, "burst", "127.0.0.1", burst, BURST, &cg);
    let (many_server, many_client) = exchange(None, "many", "127.0.0.1", many, CONNECTIONS, &cg);
    let summary = live.stop();
    let capture = capture.finish();
    let got = bytes_by_pid(
        &live,
        &[many_server, many_client, burst_server, burst_client],
    );
    for (port, server, client) in [
        (many, many_server, many_client),
        (burst, burst_server, burst_client),
    ] {
        let (from_server, to_server) = capture_bytes(&capture, port);
        assert!(to_server > 0, "the capture saw nothing sent to port {port}");
        let of = |pid: u32, dir: &str| got.get(&(pid, dir.to_string())).copied().unwrap_or(0);
        check_ends(
            port,
            [
                of(server, "out"),
                of(server, "in"),
                of(client, "out"),
                of(client, "in"),
            ],
            (from_server, to_server),
        );
    }
    let (ring_drops, map_full, per_process) = probe_stats(&summary);
    println!(
        "probe: {ring_drops} samples dropped, {map_full} packets past the socket map, bytes counted per process: in {}, out {}",
        per_process[0], per_process[1]
    );
    assert!(
        ring_drops > 0,
        "the ring buffer never overflowed: {summary}"
    );
    assert!(map_full > 0, "the socket map never filled: {summary}");
    assert!(
        per_process.iter().all(|&b| b > 0),
        "nothing was counted per process: {summary}"
    );
    drop(live);
    assert_nothing_attached();
}
