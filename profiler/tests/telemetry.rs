//! The telemetry forwarder against a local service that enforces the status-im telemetry
//! contract: `wakuprof forward` killed mid-request and during an outage, then restarted; and
//! `wakuprof live --telemetry` across an outage and a restart. Every window must arrive, repeats
//! only under the same idempotency key, Σ bytes equal to the Parquet the runs wrote, and no
//! private data in the bodies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::service::{Mode, Received, Service};
use serde_json::Value;

fn wakuprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wakuprof"))
}

/// The records the service accepted (201), each once, checking that a record sent more than
/// once always carried the same key and the same body.
#[derive(Default)]
struct Accepted {
    /// `ProtocolStats` bodies by `Idempotency-Key`.
    stats: BTreeMap<String, Value>,
    /// `/record-metrics` items by `id`.
    usage: BTreeMap<u64, Value>,
    /// Records received more than once.
    repeats: u64,
}

fn accepted(received: &[Received]) -> Accepted {
    let mut a = Accepted::default();
    let mut seen_stats: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen_items: BTreeMap<u64, Value> = BTreeMap::new();
    for r in received {
        assert_ne!(r.status, Some(429), "the client passed the rate limit");
        assert_ne!(
            r.status,
            Some(400),
            "a body broke the contract: {}",
            r.answer
        );
        match r.path.as_str() {
            "/protocol-stats" => {
                let key = r
                    .idempotency_key
                    .clone()
                    .expect("every ProtocolStats carries an Idempotency-Key");
                if let Some(before) = seen_stats.insert(key.clone(), r.body.clone()) {
                    assert_eq!(before, r.body, "key {key} sent with two bodies");
                    a.repeats += 1;
                }
                if r.status == Some(201) {
                    a.stats.insert(key, r.body.clone());
                }
            }
            "/record-metrics" => {
                let items = r.body.as_array().expect("an array of items");
                if r.status == Some(201) {
                    assert_eq!(r.answer, "[]", "items the service refused");
                }
                for item in items {
                    let id = item["id"].as_u64().expect("an integer id");
                    if let Some(before) = seen_items.insert(id, item.clone()) {
                        assert_eq!(&before, item, "id {id} sent with two bodies");
                        a.repeats += 1;
                    }
                    if r.status == Some(201) {
                        a.usage.insert(id, item.clone());
                    }
                }
            }
            other => panic!("unexpected request to {other}"),
        }
    }
    a
}

/// Per window start (s): Σ bytes, and relay bytes in and out, from Parquet under `dirs`.
fn parquet_truth(dirs: &[&Path]) -> BTreeMap<i64, (u64, u64, u64)> {
    let files: Vec<String> = dirs
        .iter()
        .map(|d| format!("'{}/**/*.parquet'", d.display()))
        .collect();
    let sql = format!(
        "SELECT CAST(epoch_us(window_start) / 1000000 AS BIGINT), SUM(bytes), \
         SUM(CASE WHEN category IN ('relay_control', 'relay_chat') AND direction = 'in' THEN bytes ELSE 0 END), \
         SUM(CASE WHEN category IN ('relay_control', 'relay_chat') AND direction = 'out' THEN bytes ELSE 0 END) \
         FROM read_parquet([{}], hive_partitioning = false) GROUP BY 1 ORDER BY 1",
        files.join(", ")
    );
    common::duckdb_rows(&sql)
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<u64>().expect("a number");
            (r[0].parse().expect("a window"), (n(1), n(2), n(3)))
        })
        .collect()
}

/// Distinct values of the private columns in the Parquet: none may appear in a body.
fn private_values(dir: &Path) -> Vec<String> {
    let sql = format!(
        "SELECT DISTINCT v FROM (SELECT UNNEST([local_addr, remote_addr, content_topic, pubsub_topic, comm]) AS v \
         FROM read_parquet('{}/**/*.parquet', hive_partitioning = false)) WHERE v IS NOT NULL",
        dir.display()
    );
    common::duckdb_rows(&sql)
        .into_iter()
        .map(|r| r[0].clone())
        .filter(|v| v.len() >= 4)
        .collect()
}

/// Checks what the service accepted against the Parquet truth: every window once per record
/// type (all parts summed), Σ bytes per window, relay totals, one host id.
fn check_against(acc: &Accepted, truth: &BTreeMap<i64, (u64, u64, u64)>, host_id: &str) {
    let mut bytes: BTreeMap<i64, u64> = BTreeMap::new();
    for item in acc.usage.values() {
        assert_eq!(item["telemetry_type"], "BandwidthUsage");
        let d = &item["telemetry_data"];
        assert_eq!(d["hostID"], host_id);
        let rows = d["rows"].as_array().expect("rows");
        let sum: u64 = rows
            .iter()
            .map(|r| r["bytes"].as_u64().expect("bytes"))
            .sum();
        *bytes
            .entry(d["windowStart"].as_i64().expect("windowStart"))
            .or_default() += sum;
    }
    let want: BTreeMap<i64, u64> = truth.iter().map(|(w, t)| (*w, t.0)).collect();
    assert_eq!(
        bytes, want,
        "Σ rows.bytes per window differs from the Parquet"
    );
    assert_eq!(
        acc.stats.len(),
        acc.usage.len(),
        "one ProtocolStats per BandwidthUsage record"
    );
    let (mut relay_in, mut relay_out) = (0, 0);
    for s in acc.stats.values() {
        assert_eq!(s["hostID"], host_id);
        relay_in += s["relay"]["totalIn"].as_u64().expect("totalIn");
        relay_out += s["relay"]["totalOut"].as_u64().expect("totalOut");
    }
    let want_in: u64 = truth.values().map(|t| t.1).sum();
    let want_out: u64 = truth.values().map(|t| t.2).sum();
    assert_eq!((relay_in, relay_out), (want_in, want_out), "relay totals");
}

fn host_id(state: &Path) -> String {
    let id = std::fs::read_to_string(state.join("host-id")).expect("the host id is stored");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    id
}

fn forward(dir: &Path, state: &Path, service: &Service) -> Child {
    wakuprof()
        .arg("forward")
        .arg(dir)
        .args([
            "--telemetry",
            &service.url(),
            "--format",
            "json",
            "--state-dir",
        ])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wakuprof forward starts")
}

fn kill(mut child: Child) {
    child.kill().expect("kills");
    child.wait().expect("reaped");
}

/// Waits for a child with a timeout.
fn finish(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("polls").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collected");
            panic!(
                "still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collected")
}

fn count(received: &[Received], status: Option<u16>) -> usize {
    received.iter().filter(|r| r.status == status).count()
}

#[test]
fn forward_delivers_every_window_across_a_kill_mid_request_and_an_outage() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (out, state) = (tmp.path().join("usage"), tmp.path().join("state"));
    let st = wakuprof()
        .arg("analyze")
        .args(common::samples())
        .args(["--window", "1", "-q", "--out"])
        .arg(&out)
        .status()
        .expect("analyze runs");
    assert!(st.success());
    let truth = parquet_truth(&[&out]);
    assert!(truth.len() >= 30, "{} windows: too few to cut", truth.len());
    let service = Service::start(&[]);

    // Killed while the service holds a request unanswered.
    let first = forward(&out, &state, &service);
    service.wait_for("10 answers", Duration::from_secs(60), |r| {
        count(r, Some(201)) >= 10
    });
    service.set_mode(Mode::StallNext);
    let start = Instant::now();
    while !service.stalled() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no request stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(first);

    // Restarted into an outage, killed during it.
    service.set_mode(Mode::Unavailable);
    let second = forward(&out, &state, &service);
    service.wait_for("two 503s", Duration::from_secs(30), |r| {
        count(r, Some(503)) >= 2
    });
    kill(second);

    // Restarted again: still down (503, then connections closed), then back.
    let third = forward(&out, &state, &service);
    service.wait_for("a third 503", Duration::from_secs(30), |r| {
        count(r, Some(503)) >= 3
    });
    service.set_mode(Mode::Gone);
    std::thread::sleep(Duration::from_millis(1500));
    service.set_mode(Mode::Up);
    let done = finish(third, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "forward failed: {stderr}");
    assert!(
        stderr.contains("retrying with backoff"),
        "the outage is reported: {stderr}"
    );
    let report: Value = serde_json::from_slice(&done.stdout).expect("a JSON report");
    assert_eq!(report["telemetry"]["left_in_spool"], 0);

    let received = service.received();
    let acc = accepted(&received);
    let id = host_id(&state);
    check_against(&acc, &truth, &id);
    assert_eq!(
        acc.usage.len(),
        truth.len(),
        "one record per window (no parts)"
    );
    assert!(acc.repeats >= 1, "the stalled request was sent again");
    let private = private_values(&out);
    for r in &received {
        for v in private.iter().take(200) {
            assert!(!r.raw.contains(v.as_str()), "{v} left the host: {}", r.raw);
        }
        assert!(!r.raw.contains("_port") && !r.raw.contains("_addr"));
    }

    // Nothing more to send: a fourth run sends nothing.
    let n = received.len();
    let again = finish(forward(&out, &state, &service), Duration::from_secs(60));
    assert!(again.status.success());
    assert_eq!(service.received().len(), n, "a finished replay sent again");
}

#[test]
fn forward_sends_private_fields_only_when_included() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (out, state) = (tmp.path().join("usage"), tmp.path().join("state"));
    let sample = common::repo().join("samples/relay-meshsub-gossip.pcap");
    let st = wakuprof()
        .arg("analyze")
        .arg(&sample)
        .args(["-q", "--out"])
        .arg(&out)
        .status()
        .expect("analyze runs");
    assert!(st.success());
    let include = ["addresses", "ports", "pubsub-topics"];
    let service = Service::start(&include);
    let done = wakuprof()
        .arg("forward")
        .arg(&out)
        .args(["--telemetry", &service.url(), "-q", "--state-dir"])
        .arg(&state)
        .args(["--telemetry-include", &include.join(",")])
        .output()
        .expect("forward runs");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let acc = accepted(&service.received());
    check_against(&acc, &parquet_truth(&[&out]), &host_id(&state));
    let fields: BTreeSet<String> = acc
        .usage
        .values()
        .flat_map(|i| {
            i["telemetry_data"]["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|r| {
            r.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    for f in [
        "local_addr",
        "remote_addr",
        "local_port",
        "remote_port",
        "pubsub_topic",
    ] {
        assert!(fields.contains(f), "{f} was asked for: {fields:?}");
    }
    assert!(!fields.contains("comm") && !fields.contains("content_topic"));
}

#[test]
fn forward_says_what_is_wrong_with_its_arguments() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        let out = wakuprof()
            .arg("forward")
            .arg(tmp.path())
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let state = tmp.path().join("state");
    let state = state.to_str().expect("utf-8");
    let e = run(&["--telemetry", "telemetry.status.im", "--state-dir", state]);
    assert!(e.contains("not an http(s) URL"), "{e}");
    let e = run(&[
        "--telemetry",
        "http://127.0.0.1:9",
        "--state-dir",
        state,
        "--telemetry-include",
        "payloads",
    ]);
    assert!(
        e.contains("payloads") && e.contains("content-topics"),
        "{e}"
    );
    let e = run(&["--telemetry", "http://127.0.0.1:9", "--state-dir", state]);
    assert!(e.contains("no .parquet files"), "{e}");
}

/// Loopback traffic for a live run: a new TCP connection every few milliseconds, each moving
/// some kilobytes, until `stop`.
fn traffic(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("non-blocking");
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut c) = TcpStream::connect(addr) {
                let _ = c.write_all(&[7u8; 4000]);
                if let Ok((mut s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 4000];
                    let _ = s.read_exact(&mut buf);
                    let _ = s.write_all(&buf[..1000]);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn live(out: &Path, state: &Path, service: &Service, secs: u32, extra: &[&str]) -> Output {
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(Arc::clone(&stop));
    let res = wakuprof()
        .arg("live")
        .args(["--window", "1", "--metrics", "none", "-q", "--duration"])
        .arg(secs.to_string())
        .args(["--telemetry", &service.url(), "--out"])
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .output()
        .expect("wakuprof live runs");
    stop.store(true, Ordering::Relaxed);
    load.join().expect("traffic thread");
    assert!(
        res.status.success(),
        "live failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    res
}

#[test]
fn live_forwards_every_window_across_an_outage_and_a_restart() {
    common::require_root();
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    let (out1, out2) = (tmp.path().join("run1"), tmp.path().join("run2"));
    let service = Service::start(&[]);

    service.set_mode(Mode::Unavailable);
    let first = live(&out1, &state, &service, 5, &["--telemetry-drain", "1"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("stay in the spool"),
        "the undelivered records are named: {stderr}"
    );
    assert!(count(&service.received(), Some(503)) >= 1);

    service.set_mode(Mode::Up);
    let second = live(&out2, &state, &service, 3, &["--telemetry-drain", "60"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("stay in the spool"), "{stderr}");

    let acc = accepted(&service.received());
    let truth = parquet_truth(&[&out1, &out2]);
    assert!(truth.len() >= 6, "{} windows", truth.len());
    check_against(&acc, &truth, &host_id(&state));
}

#[test]
fn a_live_spool_at_its_bound_drops_the_oldest_and_says_so() {
    common::require_root();
    let tmp = tempfile::tempdir().expect("temp dir");
    let service = Service::start(&[]);
    service.set_mode(Mode::Gone);
    let run = live(
        &tmp.path().join("usage"),
        &tmp.path().join("state"),
        &service,
        8,
        &["--telemetry-spool-max", "4K", "--telemetry-drain", "0"],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("over its bound of 4096 bytes: dropped the"),
        "{stderr}"
    );
    let spool: u64 = std::fs::read_dir(tmp.path().join("state/spool"))
        .expect("the spool exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(spool <= 4096, "{spool} bytes spooled");
}

#[test]
fn live_with_a_bad_config_refuses_before_the_forwarder_starts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let service = Service::start(&[]);
    let state = tmp.path().join("state");
    let config = tmp.path().join("rules.toml");
    std::fs::write(&config, "[rpc]\nprovider = []\n").expect("write config");
    let res = wakuprof()
        .arg("live")
        .args(["--metrics", "none", "-q", "--duration", "1"])
        .args(["--telemetry", &service.url(), "--out"])
        .arg(tmp.path().join("usage"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("wakuprof live runs");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "a bad config is refused: {stderr}");
    assert!(
        stderr.contains("rules.toml"),
        "the error names the file: {stderr}"
    );
    assert!(
        !state.exists(),
        "no host id or spool made before the config was read"
    );
    assert!(service.received().is_empty(), "nothing sent");
}
