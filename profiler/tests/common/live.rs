//! The harness of the live tests: a `wakuprof live` child, an independent libpcap capture, a
//! cgroup and a network namespace made for one test, the Python workload's roles, and the
//! per-process comparison of the probe's rows with the capture.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One live run at a time: each attaches to the whole host, and the check that nothing stays
/// attached must not see another test's probe.
pub static LIVE: Mutex<()> = Mutex::new(());

pub fn workload() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/live/workload.py")
}

/// A `wakuprof live` process, its stderr lines forwarded to a channel.
pub struct Live {
    child: Child,
    lines: Receiver<String>,
    pub out: PathBuf,
}

impl Live {
    /// Starts `wakuprof live ARGS --out OUT` and waits until it reports that it is capturing.
    pub fn start(args: &[&str], out: &Path) -> Live {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wakuprof"))
            .arg("live")
            .args(args)
            .arg("--out")
            .arg(out)
            .args(["--window", "1", "--format", "json", "--metrics", "none"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wakuprof starts");
        let (tx, lines) = channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let live = Live {
            child,
            lines,
            out: out.to_path_buf(),
        };
        live.wait_for("live from", Duration::from_secs(30));
        live
    }

    pub fn wait_for(&self, text: &str, timeout: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(timeout) {
            let done = line.contains(text);
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("wakuprof never said {text:?}; it said: {seen:?}");
    }

    /// Stops it with SIGTERM; returns its stdout (the JSON summary) after checking it exited 0.
    pub fn stop(&mut self) -> String {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let mut stdout = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut stdout).expect("stdout readable");
        }
        let status = self.child.wait().expect("wakuprof exits");
        let rest: Vec<String> = self.lines.try_iter().collect();
        assert!(
            status.success(),
            "wakuprof live failed: {status}; stderr: {rest:?}"
        );
        stdout
    }

    pub fn parquet(&self) -> String {
        format!("read_parquet('{}/**/*.parquet')", self.out.display())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A libpcap capture of one interface into a file, on its own thread.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Capture {
    /// Captures whole packets.
    pub fn start(device: &str, filter: &str, path: &Path) -> Capture {
        Capture::with_snaplen(device, filter, path, 65535)
    }

    /// Captures the first 128 bytes of each packet: enough for lengths and ports.
    pub fn headers(device: &str, filter: &str, path: &Path) -> Capture {
        Capture::with_snaplen(device, filter, path, 128)
    }

    fn with_snaplen(device: &str, filter: &str, path: &Path, snaplen: i32) -> Capture {
        let mut cap = pcap::Capture::from_device(device)
            .expect("device exists")
            .immediate_mode(true)
            .snaplen(snaplen)
            .buffer_size(64 << 20)
            .open()
            .expect("libpcap opens the device")
            .setnonblock()
            .expect("non-blocking capture");
        cap.filter(filter, true).expect("filter compiles");
        let mut file = cap.savefile(path).expect("capture file");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match cap.next_packet() {
                    Ok(p) => file.write(&p),
                    Err(pcap::Error::TimeoutExpired) => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("capture failed: {e}"),
                }
            }
            file.flush().expect("capture written");
            let stats = cap.stats().expect("capture stats");
            assert_eq!(stats.dropped, 0, "libpcap dropped packets");
        });
        Capture {
            stop,
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }

    pub fn finish(mut self) -> PathBuf {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("capture thread");
        }
        self.path.clone()
    }
}

/// A cgroup v2 made for one test, removed afterwards.
pub struct Cgroup {
    dir: PathBuf,
    /// Its path as /proc/PID/cgroup shows it.
    pub path: String,
}

impl Cgroup {
    pub fn new(name: &str) -> Cgroup {
        let root = wakuprof::source::probe::cgroup2_root().expect("cgroup v2 is mounted");
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("cgroup created");
        Cgroup {
            dir,
            path: format!("/{name}"),
        }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("moved to cgroup");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A task that has just been reaped can keep the cgroup busy for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A network namespace joined to this one by a veth pair, removed afterwards.
pub struct Netns {
    pub name: String,
    pub host_if: String,
}

impl Netns {
    /// `NAME` with veth `NAME-h` (here, HOST_ADDR/24) ↔ `NAME-n` (inside, NS_ADDR/24), MTU 1500.
    pub fn new(name: &str, host_addr: &str, ns_addr: &str) -> Netns {
        let host_if = format!("{name}-h");
        let ns_if = format!("{name}-n");
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip runs");
            assert!(st.success(), "ip {args:?} failed");
        };
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let _ = Command::new("ip").args(["link", "del", &host_if]).status();
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "mtu", "1500", "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{ns_addr}/24"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", name, "link", "set", &ns_if, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Starts a workload role (optionally inside a namespace) waiting for its go line.
pub fn role(
    netns: Option<&str>,
    role: &str,
    host: &str,
    port: u16,
    count: u32,
) -> (Child, ChildStdin) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    let mut child = cmd
        .arg(workload())
        .args([role, host, &port.to_string(), &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdin = child.stdin.take().expect("stdin piped");
    (child, stdin)
}

/// Runs one server/client exchange; the server goes into `cgroup` first. Returns their pids.
pub fn exchange(
    netns: Option<&str>,
    kind: &str,
    host: &str,
    port: u16,
    count: u32,
    cgroup: &Cgroup,
) -> (u32, u32) {
    let (mut server, mut go) = role(netns, &format!("{kind}-server"), host, port, count);
    cgroup.add(server.id());
    writeln!(go, "go").expect("server told to go");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("stdout piped"))
        .read_line(&mut ready)
        .expect("server reports");
    assert_eq!(ready.trim(), "ready", "the {kind} server did not start");
    let (mut client, mut go) = role(None, &format!("{kind}-client"), host, port, count);
    writeln!(go, "go").expect("client told to go");
    assert!(
        client.wait().expect("client runs").success(),
        "{kind} client failed"
    );
    assert!(
        server.wait().expect("server runs").success(),
        "{kind} server failed"
    );
    (server.id(), client.id())
}

/// IP bytes an Ethernet capture saw, sent from `port` and sent to it. A packet whose IP length
/// field is 0 (segmentation offload over 64 KiB) counts its frame's length past the Ethernet header.
pub fn capture_bytes(capture: &Path, port: u16) -> (u64, u64) {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "ip.len",
            "-e",
            "ipv6.plen",
            "-e",
            "tcp.srcport",
        ])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "udp.dstport",
        ])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark failed");
    let (mut from, mut to) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (frame, f) = line.split_once('\t').expect("tab-separated fields");
        let f: Vec<&str> = f.split('\t').collect();
        let len = match (f[0], f[1]) {
            ("0", _) | ("", "0") => frame.parse::<u64>().expect("frame.len") - 14,
            ("", plen) => 40 + plen.parse::<u64>().expect("ipv6.plen"),
            (len, _) => len.parse::<u64>().expect("ip.len"),
        };
        let port_of = |fields: [&str; 2]| -> u16 {
            fields
                .iter()
                .find(|s| !s.is_empty())
                .and_then(|s| s.parse().ok())
                .expect("a port")
        };
        if port_of([f[2], f[3]]) == port {
            from += len;
        } else if port_of([f[4], f[5]]) == port {
            to += len;
        }
    }
    (from, to)
}

/// Bytes per (pid, cgroup, direction) of the rows of a live run touching `port`.
pub fn bytes_by_owner(live: &Live, port: u16) -> BTreeMap<(String, String, String), u64> {
    let sql = format!(
        "select coalesce(cast(pid as varchar), 'none'), coalesce(cgroup, 'none'), direction, sum(bytes) from {} where local_port = {port} or remote_port = {port} group by all",
        live.parquet()
    );
    super::duckdb_rows(&sql)
        .into_iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone(), r[2].clone()),
                r[3].parse().expect("a sum"),
            )
        })
        .collect()
}

/// Bytes per category/protocol of the rows touching `port` in a Parquet directory.
pub fn bytes_by_category(parquet: &str, port: u16) -> BTreeMap<String, u64> {
    let sql = format!(
        "select category || '/' || protocol, sum(bytes) from {parquet} where local_port = {port} or remote_port = {port} group by all"
    );
    super::duckdb_rows(&sql)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().expect("a sum")))
        .collect()
}

pub fn assert_close(what: &str, got: u64, want: u64) {
    let diff = got.abs_diff(want) as f64;
    assert!(
        diff <= want as f64 * 0.001,
        "{what}: wakuprof {got} bytes, libpcap {want} bytes (must agree to 0.1 %)"
    );
}

/// Checks the probe's per-process bytes for one exchange against the capture.
pub fn check_owners(live: &Live, capture: &Path, port: u16, server: u32, client: u32, cg: &Cgroup) {
    let (from_server, to_server) = capture_bytes(capture, port);
    assert!(to_server > 0, "the capture saw nothing sent to port {port}");
    let got = bytes_by_owner(live, port);
    let unowned: u64 = got
        .iter()
        .filter(|((pid, ..), _)| pid == "none" || pid == "0")
        .map(|(_, b)| b)
        .sum();
    assert_eq!(unowned, 0, "bytes of port {port} with no owner: {got:?}");
    let of = |pid: u32, dir: &str| -> (u64, Vec<String>) {
        let rows: Vec<_> = got
            .iter()
            .filter(|((p, _, d), _)| p == &pid.to_string() && d == dir)
            .collect();
        (
            rows.iter().map(|(_, b)| **b).sum(),
            rows.iter().map(|((_, c, _), _)| c.clone()).collect(),
        )
    };
    let (server_out, server_cgroups) = of(server, "out");
    let (server_in, server_in_cgroups) = of(server, "in");
    let (client_out, _) = of(client, "out");
    let (client_in, _) = of(client, "in");
    check_ends(
        port,
        [server_out, server_in, client_out, client_in],
        (from_server, to_server),
    );
    let mut server_cgroups = [server_cgroups, server_in_cgroups].concat();
    server_cgroups.sort();
    server_cgroups.dedup();
    assert_eq!(
        server_cgroups,
        vec![cg.path.clone()],
        "port {port}: the server's cgroup"
    );
}

/// Checks one exchange's bytes as wakuprof counted them (`got`: server out, server in, client
/// out, client in) against the capture's (`seen`: from the server's port, to it).
pub fn check_ends(port: u16, got: [u64; 4], seen: (u64, u64)) {
    let [server_out, server_in, client_out, client_in] = got;
    let (from_server, to_server) = seen;
    println!(
        "port {port}: wakuprof / libpcap bytes: server out {server_out} / {from_server}, in {server_in} / {to_server}; client out {client_out} / {to_server}, in {client_in} / {from_server}"
    );
    let want = [from_server, to_server, to_server, from_server];
    let what = [
        "server sent",
        "server received",
        "client sent",
        "client received",
    ];
    for ((what, got), want) in what.into_iter().zip(got).zip(want) {
        assert_close(&format!("port {port}: {what}"), got, want);
    }
}

/// Asserts that none of the probe's programs is loaded after `wakuprof live` exited.
pub fn assert_nothing_attached() {
    super::attached::assert_nothing_attached("wakuprof");
}
