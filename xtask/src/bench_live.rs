//! `cargo xtask bench-live`: what the live probe costs. iperf3 runs flat out over a 1500-MTU
//! loopback inside a network namespace made for the purpose, without and with `wakuprof live`
//! (alternating, median of the runs); then iperf3 sends UDP at fixed packet rates while
//! wakuprof's own CPU time (user + system, from /proc) is read over the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use crate::bench::{Workspace, environment};
use crate::setup::{self, Package};

/// Options of `cargo xtask bench-live`.
#[derive(Args)]
pub struct BenchLiveArgs {
    /// Seconds of each iperf3 run.
    #[arg(long, value_name = "SECS", default_value_t = 8)]
    seconds: u32,
    /// Throughput runs without and with the probe (alternating); the median of each counts.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Live source to measure: `ebpf` (the probe) or `pcap`.
    #[arg(long, default_value = "ebpf")]
    source: String,
    /// Benchmark this wakuprof binary instead of building one with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    wakuprof: Option<PathBuf>,
}

const PACKAGES: &[Package] = &[
    Package {
        name: "iperf3",
        marker: "/usr/bin/iperf3",
    },
    Package {
        name: "iproute2",
        marker: "/usr/sbin/ip",
    },
];

/// The namespace the benchmark makes (and removes).
const NETNS: &str = "wakuprof-bench";
/// UDP payload of the fixed-rate runs: 100 bytes, 128 on the wire.
const UDP_PAYLOAD: u64 = 100;
/// Packet rates of the CPU runs.
const RATES: [u64; 2] = [10_000, 100_000];

pub fn run(args: &BenchLiveArgs) -> Result<()> {
    ensure!(
        setup::is_root(),
        "bench-live attaches the probe and makes a network namespace: run it as root"
    );
    setup::ensure_packages(PACKAGES)?;
    setup::ensure_packages(setup::BUILD)?;
    setup::ensure_probe_toolchain();
    let workspace = Workspace::locate()?;
    let wakuprof = match &args.wakuprof {
        Some(p) => std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?,
        None => workspace.build_wakuprof()?,
    };
    let scratch = tempfile::tempdir()?;
    let _ns = Netns::create()?;
    let _server = IperfServer::start()?;

    let mut without = Vec::new();
    let mut with = Vec::new();
    for run in 1..=args.runs {
        without.push(iperf_tcp(args.seconds)?);
        let live = Live::start(
            &wakuprof,
            &args.source,
            &scratch.path().join(format!("tput-{run}")),
        )?;
        with.push(iperf_tcp(args.seconds)?);
        live.stop()?;
        eprintln!(
            "bench-live: run {run}: {:.2} Gbit/s without, {:.2} Gbit/s with the {} source",
            without[without.len() - 1] / 1e9,
            with[with.len() - 1] / 1e9,
            args.source
        );
    }
    let (base, probed) = (median(&mut without), median(&mut with));

    let mut cpu = Vec::new();
    for rate in RATES {
        let live = Live::start(
            &wakuprof,
            &args.source,
            &scratch.path().join(format!("cpu-{rate}")),
        )?;
        let before = live.cpu()?;
        let started = Instant::now();
        let sent = iperf_udp(args.seconds, rate)?;
        let used = live.cpu()?.saturating_sub(before);
        let wall = started.elapsed();
        live.stop()?;
        cpu.push((rate, sent, used.as_secs_f64() / wall.as_secs_f64() * 100.0));
    }

    let (model, cores) = environment();
    println!(
        "wakuprof live overhead ({} source), {model}, {cores} cores",
        args.source
    );
    println!(
        "iperf3 TCP over a 1500-MTU loopback in a network namespace, {} s per run, median of {}:",
        args.seconds, args.runs
    );
    println!("  without wakuprof   {:>8.2} Gbit/s", base / 1e9);
    println!(
        "  with wakuprof      {:>8.2} Gbit/s   ({:.3}x)",
        probed / 1e9,
        probed / base
    );
    println!(
        "wakuprof's own CPU while iperf3 sends {UDP_PAYLOAD}-byte UDP datagrams at a fixed rate:"
    );
    for (rate, sent, percent) in cpu {
        println!("  {rate:>7} packets/s (measured {sent:>7.0})   {percent:>6.2} % of one core");
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A network namespace whose loopback has a 1500-byte MTU.
struct Netns;

impl Netns {
    fn create() -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        setup::run(Command::new("ip").args(["netns", "add", NETNS]))?;
        let ns = Netns;
        setup::run(
            Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "mtu", "1500", "up"]),
        )?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

fn in_netns(program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS, program]);
    cmd
}

/// iperf3 -s in the namespace.
struct IperfServer(Child);

impl IperfServer {
    fn start() -> Result<IperfServer> {
        let child = in_netns("iperf3")
            .args(["-s", "-B", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start iperf3 -s")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(IperfServer(child))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an iperf3 client in the namespace and returns its JSON report.
fn iperf(args: &[&str]) -> Result<serde_json::Value> {
    let out = in_netns("iperf3")
        .args(["-c", "127.0.0.1", "-J"])
        .args(args)
        .output()
        .context("cannot run iperf3")?;
    ensure!(
        out.status.success(),
        "iperf3 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).context("iperf3 printed no JSON")
}

/// TCP throughput flat out, bits/s received.
fn iperf_tcp(seconds: u32) -> Result<f64> {
    let report = iperf(&["-t", &seconds.to_string()])?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report without end.sum_received")
}

/// UDP at `rate` packets/s; returns the packets/s iperf3 sent.
fn iperf_udp(seconds: u32, rate: u64) -> Result<f64> {
    let bits = rate * UDP_PAYLOAD * 8;
    let report = iperf(&[
        "-u",
        "-l",
        &UDP_PAYLOAD.to_string(),
        "-b",
        &bits.to_string(),
        "-t",
        &seconds.to_string(),
    ])?;
    let packets = report["end"]["sum"]["packets"]
        .as_f64()
        .context("iperf3 report without end.sum.packets")?;
    Ok(packets / f64::from(seconds))
}

/// `wakuprof live` running in the background.
struct Live {
    child: Child,
}

impl Live {
    fn start(wakuprof: &Path, source: &str, out: &Path) -> Result<Live> {
        let child = Command::new(wakuprof)
            .args([
                "live",
                "--quiet",
                "--metrics",
                "none",
                "--source",
                source,
                "--out",
            ])
            .arg(out)
            .spawn()
            .context("cannot start wakuprof live")?;
        // Loading and attaching takes well under a second; give it that before measuring.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Live { child })
    }

    /// CPU time so far, summed over its threads' /proc/PID/task/TID/schedstat (ns on a CPU).
    fn cpu(&self) -> Result<Duration> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut ns = 0u64;
        for task in std::fs::read_dir(&tasks).context("wakuprof live is not running")? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .context("unexpected schedstat")?;
        }
        Ok(Duration::from_nanos(ns))
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("wakuprof live failed ({status})");
        }
        Ok(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
