//! A `wakusim run`, and a `wakusim serve` running a scenario, killed with SIGKILL, as root:
//! 3 nodes over plaintext, killed a few seconds after the nodes started. Within a few seconds
//! nothing of the run may remain (no namespace, no process wakusim started, no veth or bridge
//! on the host), and the node captures it wrote so far must open with libpcap and hold packets.

use std::{
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod common;

const SCENARIO: &str = r#"
duration_secs = 60
seed = 9
transport = "plaintext"

[network]
nodes = 3
degree = 2

[[community]]
name = "open"
members = [0, 1, 2]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 300
rate_per_min = 120
"#;

const NODES: usize = 3;
/// How long everything may take to go once wakusim is killed.
const CLEANUP: Duration = Duration::from_secs(5);

/// The processes whose parent is `parent`, with their arguments.
fn children(parent: u32) -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status.lines().any(|l| l == format!("PPid:\t{parent}")) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            found.push((pid, args));
        }
    }
    found
}

/// Whether process `pid` still runs (a zombie has ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:\tZ")))
}

/// The host's network namespaces whose names start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    common::namespaces()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The links of the host's own namespace whose names start with one of `prefixes`.
fn host_links(prefixes: &[&str]) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// What a killed run may have left, removed when the test ends however it ends.
struct Leftovers {
    prefix: String,
    pids: Vec<u32>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: kill has no memory preconditions; a pid gone already gets ESRCH.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        for name in namespaces(&self.prefix) {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

/// The packets in a capture a killed writer left, and the wall-clock time of its last one:
/// libpcap must open it; its last record may be cut short (libpcap then says "truncated"),
/// every one before it must read.
fn packets(file: &Path) -> (u64, SystemTime) {
    let mut cap = pcap::Capture::from_file(file)
        .unwrap_or_else(|e| panic!("libpcap opens {}: {e}", file.display()));
    let mut packets = 0;
    let mut last = UNIX_EPOCH;
    loop {
        match cap.next_packet() {
            Ok(p) => {
                packets += 1;
                last = UNIX_EPOCH
                    + Duration::from_secs(p.header.ts.tv_sec as u64)
                    + Duration::from_micros(p.header.ts.tv_usec as u64);
            }
            Err(pcap::Error::NoMorePackets) => return (packets, last),
            Err(e) => {
                assert!(
                    e.to_string().contains("truncated"),
                    "{} after {packets} packets: {e}",
                    file.display()
                );
                return (packets, last);
            }
        }
    }
}

/// Waits until `child` (a `wakusim` running a scenario of [`NODES`] nodes with its captures in
/// `out`) runs its nodes, kills it with SIGKILL a few seconds later, and asserts that nothing of
/// it remains and that its captures hold packets.
fn kill_mid_run(child: &mut Child, out: &Path) {
    let wakusim = child.id();
    let tag = wakusim % 100_000;
    let prefix = format!("wsim{tag}-");
    let mut leftovers = Leftovers {
        prefix: prefix.clone(),
        pids: Vec::new(),
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let started = children(wakusim);
        let nodes = started
            .iter()
            .filter(|(_, args)| args.get(1).is_some_and(|a| a == "node"))
            .count();
        if nodes == NODES && namespaces(&prefix).len() > NODES {
            break started;
        }
        assert!(
            Instant::now() < deadline,
            "the run's {NODES} nodes did not start: {started:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    leftovers.pids = started.iter().map(|(pid, _)| *pid).collect();
    // The nodes connect, form their meshes and publish.
    thread::sleep(Duration::from_secs(3));
    child.kill().expect("SIGKILL wakusim");
    child.wait().expect("wakusim ends");
    let killed = Instant::now();
    let killed_at = SystemTime::now();

    let veths = [format!("ws{tag}n"), "wsbr".to_owned()];
    let veths = veths.each_ref().map(String::as_str);
    let left = || {
        let running: Vec<_> = started
            .iter()
            .filter(|(pid, _)| alive(*pid))
            .cloned()
            .collect();
        (namespaces(&prefix), running, host_links(&veths))
    };
    let mut remains = left();
    while remains != Default::default() && killed.elapsed() < CLEANUP {
        thread::sleep(Duration::from_millis(50));
        remains = left();
    }
    eprintln!(
        "cleaned up {:?} after SIGKILL",
        killed.elapsed().min(CLEANUP)
    );
    let (netns, running, links) = remains;
    assert!(netns.is_empty(), "namespaces left behind: {netns:?}");
    assert!(running.is_empty(), "processes left running: {running:?}");
    assert!(links.is_empty(), "links left on the host: {links:?}");

    for i in 0..NODES {
        let file = out.join(format!("node{i}.pcap"));
        let (n, last) = packets(&file);
        let age = killed_at.duration_since(last).unwrap_or_default();
        eprintln!(
            "{}: {n} packets, the last {age:?} before the kill",
            file.display()
        );
        assert!(n > 0, "{} holds no packet", file.display());
    }
}

#[test]
fn a_killed_run_leaves_nothing_and_keeps_its_captures() {
    if !common::root() {
        return;
    }
    let (_dir, out, mut child) = common::start("run", SCENARIO, &[]);
    kill_mid_run(&mut child, &out);
}

#[test]
fn a_killed_server_leaves_nothing_of_its_run() {
    if !common::root() {
        return;
    }
    let state = tempfile::tempdir().expect("temp dir");
    let mut server = common::Server::start(state.path());
    let (status, run) = server.call("POST", "/runs", SCENARIO);
    assert_eq!(status, 202, "{run}");
    let out = state.path().join(format!("runs/run{}", run["id"]));
    kill_mid_run(&mut server.child, &out);
}
