//! Helpers shared by the integration tests: where the captures are, and independent references
//! (tshark, DuckDB) to check the profiler against.

#![allow(dead_code)]

pub mod attached;
pub mod live;
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

/// The kind of an inferred relay row that a relay part of a truth file is counted under:
/// GRAFT, PRUNE and subscriptions are one `control` kind, IWANT and IDONTWANT one
/// `iwant|idontwant`.
pub fn inferred_kind(truth: &str) -> &str {
    match truth {
        "graft" | "prune" | "subscribe" | "unsubscribe" => "control",
        "iwant" | "idontwant" => "iwant|idontwant",
        k => k,
    }
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

/// Runs the `wakuprof` binary with `args` to its end; returns its output and its peak RSS in
/// bytes (from wait4's rusage, so the child's own).
pub fn wakuprof_rss(args: &[&str]) -> (std::process::Output, u64) {
    let child = spawn_wakuprof(args);
    wait_rss(child)
}

/// Starts the `wakuprof` binary with `args`, its stdout and stderr going to files that
/// [`wait_rss`] reads back.
pub fn spawn_wakuprof(args: &[&str]) -> Spawned {
    spawn(Command::new(env!("CARGO_BIN_EXE_wakuprof")).args(args))
}

/// Starts `cmd` (a `wakuprof` command line), its stdout and stderr going to files that
/// [`wait_rss`] and [`wait_within`] read back.
pub fn spawn(cmd: &mut Command) -> Spawned {
    let stdout = tempfile::tempfile().expect("temp file");
    let stderr = tempfile::tempfile().expect("temp file");
    let child = cmd
        .stdout(stdout.try_clone().expect("dup"))
        .stderr(stderr.try_clone().expect("dup"))
        .spawn()
        .expect("wakuprof starts");
    Spawned {
        child,
        stdout,
        stderr,
    }
}

/// A running `wakuprof` and the files its output goes to.
pub struct Spawned {
    pub child: std::process::Child,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

impl Spawned {
    /// Its output, once it ended with `status`.
    fn output(self, status: std::process::ExitStatus) -> std::process::Output {
        use std::io::{Read, Seek};
        let read = |mut f: std::fs::File| {
            let mut v = Vec::new();
            f.rewind().expect("rewind");
            f.read_to_end(&mut v).expect("read output");
            v
        };
        std::process::Output {
            status,
            stdout: read(self.stdout),
            stderr: read(self.stderr),
        }
    }
}

/// Waits for a spawned `wakuprof`; returns its output and peak RSS in bytes.
pub fn wait_rss(s: Spawned) -> (std::process::Output, u64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = s.child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage holds only integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not reaped yet; status and usage are live and writable.
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        assert_eq!(
            std::io::Error::last_os_error().kind(),
            std::io::ErrorKind::Interrupted,
            "wait4"
        );
    }
    let out = s.output(std::process::ExitStatus::from_raw(status));
    // ru_maxrss is in KiB on Linux.
    (out, usage.ru_maxrss as u64 * 1024)
}

/// Waits at most `limit` for a spawned `wakuprof`; past it, kills it and fails: it is stuck.
pub fn wait_within(mut s: Spawned, limit: std::time::Duration) -> std::process::Output {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().expect("wait") {
            return s.output(status);
        }
        if started.elapsed() > limit {
            let _ = s.child.kill();
            let _ = s.child.wait();
            panic!("wakuprof still ran after {limit:?}: stuck");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
/// header's total length for IP packets (at most what the frame held from it on), the frame
/// length for everything else (including frames
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
        let frame_len: u64 = f[3].parse().expect("frame.len");
        // An IP header never counts more than the frame carried from it on (README, "Hostile
        // input"): the frame's length less the link headers in front of the IP one.
        let link_len: u64 = protos[..first_ip.unwrap_or(0)]
            .iter()
            .map(|p| match *p {
                "eth" => 14,
                "vlan" => 4,
                // tshark 4.0 names SLL v2 "sll" too: its 4 more bytes matter only under a
                // header that lies by less than 4 bytes.
                "sll" => 16,
                "null" | "loop" => 4,
                "pppoes" => 6,
                "ppp" => 2,
                _ => 0,
            })
            .sum();
        let room = frame_len.saturating_sub(link_len);
        let n: u64 = match ip {
            Some("ip") => room.min(f[1].parse().expect("ip.len")),
            Some(_) => room.min(40 + f[2].parse::<u64>().expect("ipv6.plen")),
            None => frame_len,
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
