//! Per-process exactness of `wakuprof live --source ebpf` on the workloads that stress it, as root:
//! a bulk transfer that closes within a second, a thousand short connections, a long-lived
//! stream that was open before the probe started, and bursts of UDP datagrams — on loopback and
//! across a veth pair, with segmentation offload on (packets over 64 KiB at the socket) and off.
//! wakuprof is stopped by SIGTERM the moment the traffic ends. For every process and direction
//! its bytes must equal what an independent libpcap capture saw, to 0.1 %, none of them unowned,
//! and every sender's packets the frames the capture saw: a large packet that the device splits
//! in software after the socket sent it counts as the segments on the wire.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

use common::live::{
    Capture, Cgroup, LIVE, Live, Netns, assert_nothing_attached, check_owners, exchange, role,
};

/// Bytes the bulk client sends (the server answers a quarter of it).
const BULK: u32 = 2_000_000;
/// Short connections, 10,000 bytes each.
const SHORT: u32 = 1000;
/// Bytes the stream client sends at each step, and the steps.
const STREAM_CHUNK: u32 = 1_000_000;
const STREAM_STEPS: usize = 8;
/// UDP datagrams of 400 bytes sent back to back.
const BURST: u32 = 2000;

/// Segmentation offload turned off on one device for the test, turned back on afterwards.
struct OffloadOff {
    device: String,
    netns: Option<String>,
}

impl OffloadOff {
    const FEATURES: [&str; 6] = ["tso", "off", "gso", "off", "gro", "off"];

    fn new(device: &str, netns: Option<&str>) -> OffloadOff {
        let guard = OffloadOff {
            device: device.to_string(),
            netns: netns.map(str::to_string),
        };
        assert!(guard.ethtool("off"), "ethtool -K {device} failed");
        guard
    }

    fn ethtool(&self, state: &str) -> bool {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ethtool"]);
                c
            }
            None => Command::new("ethtool"),
        };
        let features = Self::FEATURES.map(|f| if f == "off" { state } else { f });
        cmd.args(["-K", &self.device])
            .args(features)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OffloadOff {
    fn drop(&mut self) {
        self.ethtool("on");
    }
}

/// Where the servers run: loopback, or a namespace at the other end of a veth pair.
enum Route {
    Loopback,
    /// The namespace and the server's address in it.
    Veth(Netns, &'static str),
}

impl Route {
    fn netns(&self) -> Option<&str> {
        match self {
            Route::Loopback => None,
            Route::Veth(ns, _) => Some(&ns.name),
        }
    }

    fn server_host(&self) -> &'static str {
        match self {
            Route::Loopback => "127.0.0.1",
            Route::Veth(_, addr) => addr,
        }
    }

    /// The interface the independent capture watches.
    fn device(&self) -> &str {
        match self {
            Route::Loopback => "lo",
            Route::Veth(ns, _) => &ns.host_if,
        }
    }
}

/// A stream connection opened before the probe starts, then fed a chunk at each `step`.
struct Stream {
    server: std::process::Child,
    client: std::process::Child,
    go: std::process::ChildStdin,
    said: BufReader<std::process::ChildStdout>,
}

impl Stream {
    fn open(route: &Route, port: u16, cgroup: &Cgroup) -> Stream {
        let host = route.server_host();
        let (mut server, mut go) = role(route.netns(), "stream-server", host, port, 0);
        cgroup.add(server.id());
        writeln!(go, "go").expect("server told to go");
        let mut server_said = BufReader::new(server.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        server_said.read_line(&mut line).expect("server reports");
        assert_eq!(line.trim(), "ready", "the stream server did not start");
        let (mut client, mut go) = role(None, "stream-client", host, port, STREAM_CHUNK);
        writeln!(go, "go").expect("client told to go");
        let mut said = BufReader::new(client.stdout.take().expect("stdout piped"));
        line.clear();
        said.read_line(&mut line).expect("client reports");
        assert_eq!(
            line.trim(),
            "connected",
            "the stream client did not connect"
        );
        Stream {
            server,
            client,
            go,
            said,
        }
    }

    fn step(&mut self) {
        writeln!(self.go, "send").expect("client told to send");
        let mut line = String::new();
        self.said.read_line(&mut line).expect("client reports");
        assert_eq!(line.trim(), "sent", "the stream client did not send");
    }

    /// Closes the connection; returns (server pid, client pid).
    fn close(mut self) -> (u32, u32) {
        drop(self.go);
        assert!(self.client.wait().expect("client runs").success());
        assert!(self.server.wait().expect("server runs").success());
        (self.server.id(), self.client.id())
    }
}

/// Frames a capture saw of each TCP or UDP port in `ports`: sent from it, and sent to it.
fn capture_frames(capture: &Path, ports: &[u16]) -> Vec<[u64; 2]> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-T", "fields", "-e", "tcp.srcport", "-e", "udp.srcport"])
        .args(["-e", "tcp.dstport", "-e", "udp.dstport"])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark failed");
    let mut frames = vec![[0; 2]; ports.len()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let port = |pair: &[&str]| pair.iter().find_map(|p| p.parse::<u16>().ok());
        let (src, dst) = (port(&f[..2]), port(&f[2..]));
        for (i, &p) in ports.iter().enumerate() {
            if src == Some(p) {
                frames[i][0] += 1;
            } else if dst == Some(p) {
                frames[i][1] += 1;
            }
        }
    }
    frames
}

/// Packets each process sent on rows touching `ports`.
fn packets_sent(live: &Live, ports: &[u16]) -> BTreeMap<u32, u64> {
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "select pid, sum(packets) from {} where direction = 'out' and pid is not null and (local_port in ({ports}) or remote_port in ({ports})) group by pid",
        live.parquet()
    );
    common::duckdb_rows(&sql)
        .into_iter()
        .map(|r| (r[0].parse().expect("a pid"), r[1].parse().expect("a sum")))
        .collect()
}

/// Each sender's packets equal the frames the capture saw from it (`frames`: from the server's
/// port, to it): a packet the device split counts as its segments.
fn check_packets_sent(sent: &BTreeMap<u32, u64>, port: u16, frames: [u64; 2], pids: [u32; 2]) {
    for ((who, pid), frames) in ["server", "client"].into_iter().zip(pids).zip(frames) {
        let packets = sent.get(&pid).copied().unwrap_or(0);
        println!("port {port}: {who} sent {packets} packets, libpcap saw {frames} frames");
        assert_eq!(
            packets, frames,
            "port {port}: the {who}'s packets against the capture's frames"
        );
    }
}

/// Runs every workload on `path` while the probe and a capture watch, then checks each one.
fn every_workload_is_exact(route: &Route, first_port: u16, tmp: &Path) {
    let [bulk, short, stream_port, burst] = [0, 1, 2, 3].map(|i| first_port + i);
    let host = route.server_host();
    let cg = Cgroup::new(&format!(
        "wakuprof-exact-{}-{first_port}",
        std::process::id()
    ));
    // Opened before the capture and the probe: its handshake is seen by neither.
    let mut stream = Stream::open(route, stream_port, &cg);
    let filter = format!("port {bulk} or port {short} or port {stream_port} or port {burst}");
    let capture = Capture::headers(route.device(), &filter, &tmp.join("capture.pcap"));
    let mut live = Live::start(&["--source", "ebpf"], &tmp.join("ebpf"));
    stream.step();
    let (bulk_server, bulk_client) = exchange(route.netns(), "bulk", host, bulk, BULK, &cg);
    stream.step();
    let (short_server, short_client) = exchange(route.netns(), "short", host, short, SHORT, &cg);
    let (burst_server, burst_client) = exchange(route.netns(), "burst", host, burst, BURST, &cg);
    for _ in 2..STREAM_STEPS {
        stream.step();
    }
    let (stream_server, stream_client) = stream.close();
    // Stopped the moment the traffic ends: the last bytes must still reach the Parquet.
    let summary = live.stop();
    let capture = capture.finish();
    assert!(summary.contains("\"ring_drops\": 0"), "{summary}");
    let exchanges = [
        (bulk, bulk_server, bulk_client),
        (short, short_server, short_client),
        (stream_port, stream_server, stream_client),
        (burst, burst_server, burst_client),
    ];
    let ports = exchanges.map(|(port, ..)| port);
    let frames = capture_frames(&capture, &ports);
    let sent = packets_sent(&live, &ports);
    for ((port, server, client), frames) in exchanges.into_iter().zip(frames) {
        check_owners(&live, &capture, port, server, client, &cg);
        check_packets_sent(&sent, port, frames, [server, client]);
    }
    drop(live);
    assert_nothing_attached();
}

#[test]
fn loopback_with_offload_is_exact_per_process() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    every_workload_is_exact(&Route::Loopback, 18600, tmp.path());
}

#[test]
fn loopback_without_offload_is_exact_per_process() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let _off = OffloadOff::new("lo", None);
    every_workload_is_exact(&Route::Loopback, 18610, tmp.path());
}

#[test]
fn veth_with_offload_is_exact_per_process() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let route = Route::Veth(Netns::new("wpx", "10.232.0.1", "10.232.0.2"), "10.232.0.2");
    every_workload_is_exact(&route, 18620, tmp.path());
}

#[test]
fn veth_without_offload_is_exact_per_process() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let ns = Netns::new("wpy", "10.233.0.1", "10.233.0.2");
    let (host_if, inside_if, name) = (
        ns.host_if.clone(),
        format!("{}-n", ns.name),
        ns.name.clone(),
    );
    let route = Route::Veth(ns, "10.233.0.2");
    let _host = OffloadOff::new(&host_if, None);
    let _inside = OffloadOff::new(&inside_if, Some(&name));
    every_workload_is_exact(&route, 18630, tmp.path());
}
