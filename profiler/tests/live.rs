//! `wakuprof live` against real traffic, as root: Python's HTTP and UDP implementations exchange
//! a known workload over loopback and across a network-namespace pair while the eBPF probe, the
//! pcap source and an independent libpcap capture watch (with the decoding on a thread of its
//! own in the pcap run and the namespace run). Per-process bytes from the probe must
//! equal the IP lengths libpcap saw (to 0.1 %), none of them unowned, the server's cgroup must be
//! the one it was put in, categories must agree with the pcap source and with offline analysis
//! of the capture, and no program may stay attached.

mod common;

use std::process::Command;
use std::time::Duration;

use common::live::{
    Capture, Cgroup, LIVE, Live, Netns, assert_close, assert_nothing_attached, bytes_by_category,
    check_owners, exchange,
};

#[test]
fn probe_attributes_loopback_tcp_and_udp_to_their_processes() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let (tcp, udp) = (18545, 18546);
    let filter = format!("port {tcp} or port {udp}");
    let capture = Capture::start("lo", &filter, &tmp.path().join("lo.pcap"));
    let mut ebpf = Live::start(&["--source", "ebpf"], &tmp.path().join("ebpf"));
    // Decoding on a thread of its own gives the rows of the one-thread offline analysis.
    let mut pcap = Live::start(
        &["--source", "pcap", "--interface", "lo", "--threads", "2"],
        &tmp.path().join("pcap"),
    );
    let cg = Cgroup::new(&format!("wakuprof-test-{}", std::process::id()));
    let (http_server, http_client) = exchange(None, "http", "127.0.0.1", tcp, 40, &cg);
    let (udp_server, udp_client) = exchange(None, "udp", "::1", udp, 200, &cg);
    std::thread::sleep(Duration::from_millis(500));
    let summary = ebpf.stop();
    let _ = pcap.stop();
    let capture = capture.finish();
    assert!(summary.contains("\"source\": \"ebpf\""), "{summary}");
    check_owners(&ebpf, &capture, tcp, http_server, http_client, &cg);
    check_owners(&ebpf, &capture, udp, udp_server, udp_client, &cg);

    let offline = tmp.path().join("offline");
    let st = Command::new(env!("CARGO_BIN_EXE_wakuprof"))
        .arg("analyze")
        .arg(&capture)
        .arg("--out")
        .arg(&offline)
        .arg("--quiet")
        .status()
        .expect("wakuprof analyze runs");
    assert!(st.success());
    let offline = format!("read_parquet('{}/**/*.parquet')", offline.display());
    for port in [tcp, udp] {
        let want = bytes_by_category(&offline, port);
        assert!(want.contains_key("rpc/jsonrpc") || port == udp, "{want:?}");
        assert_eq!(
            bytes_by_category(&pcap.parquet(), port),
            want,
            "pcap source, port {port}"
        );
        // The probe sees each loopback packet twice: leaving one socket, reaching the other.
        let ebpf_bytes = bytes_by_category(&ebpf.parquet(), port);
        assert_eq!(
            ebpf_bytes.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "probe categories, port {port}"
        );
        for (category, bytes) in &want {
            assert_close(category, ebpf_bytes[category], 2 * bytes);
        }
    }
    drop((ebpf, pcap));
    assert_nothing_attached();
}

#[test]
fn probe_attributes_traffic_across_a_namespace_pair() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let ns = Netns::new("wpt", "10.231.0.1", "10.231.0.2");
    let port = 18547;
    let capture = Capture::start(
        &ns.host_if,
        &format!("port {port}"),
        &tmp.path().join("veth.pcap"),
    );
    let mut ebpf = Live::start(
        &["--source", "ebpf", "--threads", "2"],
        &tmp.path().join("ebpf"),
    );
    let cg = Cgroup::new(&format!("wakuprof-test-ns-{}", std::process::id()));
    let (server, client) = exchange(Some(&ns.name), "http", "10.231.0.2", port, 200, &cg);
    std::thread::sleep(Duration::from_millis(500));
    let _ = ebpf.stop();
    let capture = capture.finish();
    check_owners(&ebpf, &capture, port, server, client, &cg);
    drop(ebpf);
    assert_nothing_attached();
}

#[test]
fn without_the_capabilities_the_probe_names_them_and_auto_falls_back_to_pcap() {
    common::require_root();
    let _one = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let drop_caps = [
        "--bounding-set=-bpf,-perfmon,-sys_admin,-net_admin",
        "--inh-caps=-all",
    ];
    let run = |source: &str| {
        Command::new("setpriv")
            .args(drop_caps)
            .arg(env!("CARGO_BIN_EXE_wakuprof"))
            .args([
                "live",
                "--source",
                source,
                "--duration",
                "1",
                "--quiet",
                "--metrics",
                "none",
                "--out",
            ])
            .arg(tmp.path().join(source))
            .output()
            .expect("setpriv runs")
    };
    let ebpf = run("ebpf");
    let err = String::from_utf8_lossy(&ebpf.stderr);
    assert!(
        !ebpf.status.success(),
        "--source ebpf must fail without CAP_BPF"
    );
    assert!(err.contains("missing capability CAP_BPF"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let auto = run("auto");
    let err = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "auto must fall back to pcap: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("CAP_BPF") && warnings[0].contains("libpcap"),
        "{err}"
    );
    assert_nothing_attached();
}
