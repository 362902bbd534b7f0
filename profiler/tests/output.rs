//! Faults around the output of `wakuprof analyze`: a disk that fills up, a directory that is
//! read-only or missing, a run stopped by SIGINT/SIGTERM or killed, and several inputs of which
//! a later one is bad. Files already written stay valid, nothing half-written looks like data,
//! what was counted is kept, and the exit status says what happened.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Tmpfs {
        common::require_root();
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "mount -t tmpfs -o {options}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
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

fn name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Σ bytes and rows of the Parquet files under `dir`, read by DuckDB (which fails on any
/// invalid file).
fn parquet_bytes(dir: &Path) -> u64 {
    let glob = format!("{}/**/*.parquet", dir.display());
    let row = common::duckdb(&format!(
        "SELECT coalesce(sum(bytes), 0) FROM read_parquet('{glob}', hive_partitioning=true)"
    ));
    row[0].parse().expect("a sum")
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_full_disk_keeps_the_written_files_valid_and_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("small-disk");
    let _disk = Tmpfs::mount(&out, "size=1m");
    let mix = common::ndpi_mix();
    let o = common::wakuprof(&["analyze", arg(&mix), "--out", arg(&out), "--format", "json"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "exit status says so: {stderr}");
    assert!(
        stderr.contains("output incomplete") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let s = summary(&o);
    let (reference, _) = common::tshark_wire_bytes(&mix);
    assert_eq!(
        s["totals"]["bytes"].as_u64(),
        Some(reference),
        "the summary covers all"
    );
    let written = files(&out);
    assert!(
        written.iter().all(|f| !name(f).ends_with(".tmp")),
        "no temporary file left: {written:?}"
    );
    assert!(
        !written.is_empty(),
        "some files were written before the disk filled"
    );
    let bytes = parquet_bytes(&out);
    assert!(
        bytes > 0 && bytes < reference,
        "valid files with part of the bytes: {bytes}"
    );
}

#[test]
fn a_read_only_or_missing_output_directory_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ro = dir.path().join("read-only");
    let _ro = Tmpfs::mount(&ro, "ro,size=64k");
    let mix = common::ndpi_mix();
    let o = common::wakuprof(&["analyze", arg(&mix), "--out", arg(&ro)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write in it"), "{stderr}");
    assert!(o.stdout.is_empty(), "nothing was read or summed up");

    let deep = dir.path().join("no/such/dir");
    let o = common::wakuprof(&["analyze", arg(&mix), "--out", arg(&deep)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mkdir -p"),
        "says how to create it: {stderr}"
    );
    assert!(!deep.exists());

    let fresh = dir.path().join("results");
    let sample = common::samples().into_iter().next().expect("a sample");
    let o = common::wakuprof(&["analyze", arg(&sample), "--out", arg(&fresh), "--quiet"]);
    assert!(
        o.status.success(),
        "a directory whose parent exists is created"
    );
    assert!(parquet_bytes(&fresh) > 0);
}

/// A flood long enough that a signal sent after a second arrives mid-run, written with a small
/// budget so that Parquet files are being written all along.
fn long_run(dir: &Path) -> (PathBuf, flood::Written) {
    let capture = dir.join("long.pcap");
    let written = flood::write(&capture, flood::Flood::Libp2p, 400_000).expect("write the flood");
    (capture, written)
}

fn start(capture: &Path, out: &Path) -> common::Spawned {
    common::spawn_wakuprof(&[
        "analyze",
        arg(capture),
        "--out",
        arg(out),
        "--memory-budget",
        "16M",
        "--format",
        "json",
    ])
}

fn signal(s: &common::Spawned, sig: libc::c_int) {
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: the child is ours and not reaped yet.
    assert_eq!(unsafe { libc::kill(s.child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn sigint_and_sigterm_finish_the_files_and_keep_what_was_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (capture, written) = long_run(dir.path());
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let out = dir.path().join(format!("out-{sig}"));
        let run = start(&capture, &out);
        signal(&run, sig);
        let (o, _) = common::wait_rss(run);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "signal {sig}: {stderr}");
        let s = summary(&o);
        let packets = s["stats"]["packets"].as_u64().expect("packets");
        assert!(
            packets < written.packets,
            "signal {sig} arrived before the end ({packets} packets read)"
        );
        let left = files(&out);
        assert!(
            left.iter().all(|f| !name(f).ends_with(".tmp")),
            "signal {sig}: no temporary file left: {left:?}"
        );
        assert_eq!(
            Some(parquet_bytes(&out)),
            s["totals"]["bytes"].as_u64(),
            "signal {sig}: everything counted was written"
        );
    }
}

#[test]
fn sigkill_leaves_only_valid_parquet_and_the_next_run_cleans_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (capture, _) = long_run(dir.path());
    let out = dir.path().join("out");
    let run = start(&capture, &out);
    signal(&run, libc::SIGKILL);
    let _ = common::wait_rss(run);
    let left = files(&out);
    assert!(
        left.iter()
            .filter(|f| name(f).ends_with(".tmp"))
            .all(|f| name(f).starts_with('.')),
        "a temporary file left is hidden from readers: {left:?}"
    );
    parquet_bytes(&out);
    let partition = left
        .iter()
        .find_map(|f| f.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| out.clone());
    std::fs::write(
        partition.join(".part-1-999999999-00001.parquet.tmp"),
        b"half a file",
    )
    .expect("plant a stale temporary file");
    let sample = common::samples().into_iter().next().expect("a sample");
    let o = common::wakuprof(&["analyze", arg(&sample), "--out", arg(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let left = files(&out);
    assert!(
        left.iter().all(|f| !name(f).ends_with(".tmp")),
        "the next run removed the stale temporary files: {left:?}"
    );
}

#[test]
fn a_bad_later_input_keeps_the_bytes_of_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sample = common::samples()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("libp2p-plaintext-yamux.pcap"))
        .expect("the plaintext sample");
    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"not a capture at all, just words").expect("write");
    let whole = std::fs::read(common::ndpi_mix()).expect("read ndpi-mix");
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &whole[..500_003]).expect("write the cut capture");
    let out = dir.path().join("out");
    let o = common::wakuprof(&[
        "analyze",
        arg(&sample),
        arg(&cut),
        arg(&garbage),
        "--out",
        arg(&out),
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("garbage.pcap: cannot open capture"),
        "{stderr}"
    );
    assert!(stderr.contains("cut.pcap: packet "), "{stderr}");
    let expected = common::tshark_wire_bytes(&sample).0 + common::tshark_wire_bytes(&cut).0;
    assert_eq!(summary(&o)["totals"]["bytes"].as_u64(), Some(expected));
    assert_eq!(
        parquet_bytes(&out),
        expected,
        "each file's bytes were written"
    );
}
