//! What the wakusim end-to-end tests share: the root check, a run of a scenario, a server, the
//! namespaces left on the host, and the per-node check that wakuprof's relay bytes equal the
//! node's truth.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

/// The small network the end-to-end tests run: 6 nodes over plaintext, a protected community on
/// its own shard 200, one on the shared shard 32, and an attacker publishing unsigned messages
/// onto the protected shard.
pub const SMALL: &str = r#"
duration_secs = 4
seed = 3
transport = "plaintext"

[network]
nodes = 6
degree = 2

[[community]]
name = "guarded"
shard = 200
protected = true
members = [0, 1, 2]

[[community.message]]
content_topic = "/guarded/1/chat/proto"
size = 150
size_max = 3000
rate_per_min = 90

[[community]]
name = "open"
members = [2, 3, 4]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 400
rate_per_min = 60
ephemeral = true

[attacker]
node = 5
community = "guarded"
mode = "unsigned"
messages = 5
"#;

/// [`SMALL`] measured by `measure` (`probe` or `pcap`).
pub fn small(measure: &str) -> String {
    format!("measure = \"{measure}\"\n{SMALL}")
}

/// Whether the test runs as root; says why it is skipped when not.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: wakusim needs root for network namespaces and captures");
    }
    root
}

/// The network namespaces on the host, as `ip netns list` prints them.
pub fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `wakusim SUBCOMMAND scenario.toml ARGS --out DIR` on a scenario given as TOML text
/// and returns the temporary directory holding DIR (kept while it lives), DIR, and the child.
pub fn start(subcommand: &str, scenario: &str, args: &[&str]) -> (TempDir, PathBuf, Child) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("scenario.toml");
    std::fs::write(&file, scenario).expect("write the scenario");
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_wakusim"))
        .arg(subcommand)
        .arg(&file)
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .expect("wakusim starts");
    (dir, out, child)
}

/// Runs `wakusim SUBCOMMAND scenario.toml ARGS --out DIR` (see [`start`]), asserts that it
/// succeeded and left no network namespace behind, and returns the temporary directory holding
/// DIR, DIR, and the process id of that `wakusim`.
pub fn wakusim(subcommand: &str, scenario: &str, args: &[&str]) -> (TempDir, PathBuf, u32) {
    let (dir, out, child) = start(subcommand, scenario, args);
    let wakusim = child.id();
    let tag = wakusim % 100_000;
    let run = child.wait_with_output().expect("wakusim finishes");
    assert!(run.status.success(), "wakusim {subcommand} failed");
    let left = namespaces();
    assert!(
        !left.contains(&format!("wsim{tag}-")),
        "namespaces left behind: {left}"
    );
    (dir, out, wakusim)
}

/// Runs `wakusim run` on a scenario given as TOML text (see [`wakusim`]) and returns its
/// report.json and the process id of the `wakusim` that ran it.
pub fn run(scenario: &str) -> (Value, u32) {
    run_with(scenario, &[])
}

/// [`run`] with further arguments of `wakusim run`.
pub fn run_with(scenario: &str, args: &[&str]) -> (Value, u32) {
    let args = [&["--format", "json"], args].concat();
    let (_dir, out, wakusim) = wakusim("run", scenario, &args);
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    (serde_json::from_str(&text).expect("JSON"), wakusim)
}

/// Asserts every `relay_vs_truth` line of a report's node: wakuprof's bytes and messages equal
/// the node's truth. Returns the lines of published messages that carried bytes.
pub fn relay_exact(node: &Value) -> Vec<&Value> {
    let checks = node["relay_vs_truth"].as_array().expect("checks");
    for c in checks {
        assert_eq!(
            (&c["profiler_bytes"], &c["profiler_messages"]),
            (&c["truth_bytes"], &c["truth_entries"]),
            "{}: {} {} on {}",
            node["node"],
            c["direction"],
            c["kind"],
            c["pubsub_topic"]
        );
    }
    checks
        .iter()
        .filter(|c| c["kind"] == "message" && c["truth_bytes"].as_u64() > Some(0))
        .collect()
}

/// Asserts every shard of a report's node: wakuprof's messages and duplicates sent to the node
/// equal what its peers wrote, and the mesh it followed from GRAFTs and PRUNEs equals the
/// node's gossipsub mesh at the end of publishing. Returns the node's duplicates.
pub fn health_exact(node: &Value) -> u64 {
    let mut duplicates = 0;
    for h in node["shards"].as_array().expect("shards") {
        let at = format!("{} on {}", node["node"], h["pubsub_topic"]);
        assert_eq!(
            h["messages_in"], h["truth_messages_in"],
            "{at}: messages in"
        );
        assert_eq!(
            h["duplicates_in"], h["truth_duplicates_in"],
            "{at}: duplicates"
        );
        assert_eq!(h["mesh_peers"], h["truth_mesh_peers"], "{at}: mesh peers");
        if h["delivered"].as_u64() > Some(0) {
            assert!(h["amplification"].as_f64() > Some(1.0), "{at}: {h}");
        }
        duplicates += h["duplicates_in"].as_u64().expect("duplicates");
    }
    duplicates
}

/// Asserts that each node of a report ran as its own processes (`restarts[i]` more than one
/// for node i): ids distinct across all nodes and not `wakusim`'s, and none still running.
pub fn own_processes(report: &Value, wakusim: u32, restarts: &[usize]) {
    let mut all = std::collections::BTreeSet::new();
    for (i, node) in report["per_node"]
        .as_array()
        .expect("per_node")
        .iter()
        .enumerate()
    {
        let pids: Vec<u64> = node["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p.as_u64().expect("a pid"))
            .collect();
        let starts = 1 + restarts.iter().filter(|r| **r == i).count();
        assert_eq!(pids.len(), starts, "{}: {pids:?}", node["node"]);
        for pid in pids {
            assert_ne!(
                pid,
                u64::from(wakusim),
                "{} ran inside wakusim",
                node["node"]
            );
            assert!(all.insert(pid), "{}: pid {pid} shared", node["node"]);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains("wakusim"),
                "{} (pid {pid}) is still running",
                node["node"]
            );
        }
    }
}

/// A `wakusim serve`, stopped with SIGTERM when the test ends however it ends.
pub struct Server {
    pub child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory preconditions; the pid is our running child's.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// Starts `wakusim --state STATE serve` on a free port of 127.0.0.1 (its runs go to
    /// STATE/runs/run<id>).
    pub fn start(state: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wakusim"))
            .arg("--state")
            .arg(state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("wakusim serve starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the address line");
        let addr = first
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Server { child, addr }
    }

    /// One HTTP/1.0 request (a body without chunks); the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON {e}: {body}"));
        (status, value)
    }

    /// Polls run `id` until it is done.
    pub fn wait(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, run) = self.call("GET", &format!("/runs/{id}"), "");
            assert_eq!(status, 200, "{run}");
            match run["status"].as_str() {
                Some("done") => return run,
                Some("failed") => panic!("run {id} failed: {run}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
            thread::sleep(Duration::from_millis(300));
        }
    }
}
