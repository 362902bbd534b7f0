//! `cargo xtask fuzz`: seeds a corpus for every fuzz target from samples/ (TCP streams and UDP
//! datagrams as tshark reassembles them, frames and capture files as they are), builds the
//! targets with `cargo fuzz` and runs each for a fixed time. Crashes fail the run; their inputs
//! are left in fuzz/artifacts/ for a regression test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::setup;

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs (after its seeds).
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Only these targets (default: all of them).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Parallel fuzzing jobs per target (libFuzzer's -jobs; 1 leaves the other cores free; with
    /// more, libFuzzer logs to fuzz/fuzz-N.log and the numbers below are not collected).
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
}

/// The stream targets and how a seed stream is routed to one of them: by the first bytes of
/// either side or by a port.
const STREAM_TARGETS: [&str; 5] = [
    "stream_libp2p",
    "stream_dns",
    "stream_http",
    "stream_tls",
    "stream_bittorrent",
];
/// Targets reading UDP datagrams of one flow.
const DATAGRAM_TARGETS: [&str; 5] = [
    "datagram_dns",
    "datagram_udp_tracker",
    "datagram_dht",
    "datagram_discv5",
    "datagram_utp",
];
/// Every target, the order they run in.
const TARGETS: [&str; 14] = [
    "stream_libp2p",
    "stream_dns",
    "stream_http",
    "stream_tls",
    "stream_bittorrent",
    "datagram_dns",
    "datagram_udp_tracker",
    "datagram_dht",
    "datagram_discv5",
    "datagram_utp",
    "link",
    "capture",
    "pipeline",
    "nested",
];
/// Largest seed and input (libFuzzer's -max_len).
const MAX_LEN: usize = 64 * 1024;

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST)?;
    ensure_cargo_fuzz()?;
    let root = crate::workspace_root();
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("corpus");
    seed(&root.join("samples"), &corpus)?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    let started = std::time::Instant::now();
    setup::run(cargo_fuzz(&fuzz).args(["build"]).args(FLAGS))?;
    eprintln!("xtask: fuzz targets built in {:.0?}", started.elapsed());
    let mut failed = Vec::new();
    for t in &targets {
        let dir = corpus.join(t);
        std::fs::create_dir_all(&dir)?;
        let mut cmd = cargo_fuzz(&fuzz);
        cmd.args(["run"])
            .args(FLAGS)
            .arg(t)
            .arg(&dir)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-max_len={MAX_LEN}"))
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        if args.jobs > 1 {
            // Several jobs write their logs to fuzz-N.log instead of stderr.
            cmd.arg(format!("-jobs={}", args.jobs))
                .arg(format!("-workers={}", args.jobs));
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run cargo fuzz for {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| {
            log.lines()
                .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        };
        let cov = log
            .lines()
            .rev()
            .find_map(|l| l.split_once(" cov: ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        eprintln!(
            "xtask: fuzz {t}: {} executions, coverage {cov} edges, {}",
            stat("number_of_executed_units"),
            if out.status.success() {
                "no crash"
            } else {
                "FAILED"
            }
        );
        if !out.status.success() {
            eprintln!("{log}");
            failed.push(*t);
        }
    }
    eprintln!("xtask: fuzzing took {:.0?} in all", started.elapsed());
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Release build with overflow checks and debug assertions (fuzz/Cargo.toml), no sanitizer: the code is safe Rust, a
/// panic is what is looked for, and without ASan the build and the runs are much faster.
const FLAGS: [&str; 2] = ["--sanitizer=none", "--release"];

/// `cargo +nightly fuzz` in `fuzz/`, without the eBPF probe (not needed to fuzz).
fn cargo_fuzz(fuzz: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz)
        .args(["+nightly", "fuzz"])
        .env("WAKUPROF_NO_PROBE", "1");
    cmd
}

/// Installs cargo-fuzz when it is missing, and the nightly toolchain it builds with.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        setup::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz");
        setup::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Writes the seed corpus of every target from the samples (replacing earlier seeds, keeping
/// what fuzzing added).
pub fn seed(samples: &Path, corpus: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples)
        .with_context(|| format!("cannot list {}", samples.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    let mut n = 0;
    for f in &files {
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let head = &bytes[..bytes.len().min(MAX_LEN)];
        for t in ["capture", "pipeline"] {
            n += write_seed(corpus, t, &stem, head)?;
        }
        for (i, frame) in frames(&bytes).into_iter().take(64).enumerate() {
            n += write_seed(corpus, "link", &format!("{stem}-{i}"), &frame)?;
        }
        for (key, s) in streams(f)? {
            n += write_seed(corpus, s.target(), &format!("{stem}-{key}"), &s.seed())?;
        }
        for (key, d) in datagrams(f)? {
            let seed = d.seed();
            let targets: &[&str] = if d.ports.contains(&53) {
                &DATAGRAM_TARGETS[..1]
            } else {
                &DATAGRAM_TARGETS[1..]
            };
            for t in targets {
                n += write_seed(corpus, t, &format!("{stem}-{key}"), &seed)?;
            }
        }
    }
    eprintln!(
        "xtask: {n} fuzz seeds from {} samples in {}",
        files.len(),
        corpus.display()
    );
    Ok(())
}

fn write_seed(corpus: &Path, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<usize> {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, &bytes[..bytes.len().min(MAX_LEN)])
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(1)
}

/// The link target's input for each frame of a classic pcap file: link selector, no wire
/// extra, the frame. Other formats give none.
fn frames(file: &[u8]) -> Vec<Vec<u8>> {
    let Some(magic) = file.get(..4) else {
        return Vec::new();
    };
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Vec::new(),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = file.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    // The harness's selector order: Ethernet, SLL, SLL2, NULL, LOOP, raw IP.
    let selector = match u32_at(20).unwrap_or(u32::MAX) & 0x0fff_ffff {
        1 => 0,
        113 => 1,
        276 => 2,
        0 => 3,
        108 => 4,
        _ => 5,
    };
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(caplen) = u32_at(at + 8) {
        let start = at + 16;
        let Some(data) = file.get(start..start + caplen as usize) else {
            break;
        };
        out.push([&[selector, 0], data].concat());
        at = start + caplen as usize;
    }
    out
}

/// tshark's fields of `filter`ed packets of `file`, one line each, comma-separated.
fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run tshark on {}", file.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One TCP connection's payloads in capture order, from the initiator's view.
#[derive(Default)]
struct StreamSeed {
    initiator_port: u16,
    responder_port: u16,
    loopback: bool,
    pieces: Vec<(bool, Vec<u8>)>,
}

impl StreamSeed {
    /// The stream target whose decoder the first bytes (or the port) point to.
    fn target(&self) -> &'static str {
        let first = |responder: bool| {
            self.pieces
                .iter()
                .find(|(r, _)| *r == responder)
                .map(|(_, b)| b.as_slice())
                .unwrap_or_default()
        };
        let (a, b) = (first(false), first(true));
        let any = |p: &[u8]| a.starts_with(p) || b.starts_with(p);
        if any(b"\x13/multistream") {
            STREAM_TARGETS[0]
        } else if self.responder_port == 53 {
            STREAM_TARGETS[1]
        } else if a.first().is_some_and(u8::is_ascii_uppercase) {
            STREAM_TARGETS[2]
        } else if any(&[0x16, 0x03]) {
            STREAM_TARGETS[3]
        } else {
            STREAM_TARGETS[4]
        }
    }

    /// The harness's layout: flags, responder port, then `side len bytes` pieces.
    fn seed(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.loopback)];
        out.extend_from_slice(&self.responder_port.to_be_bytes());
        for (responder, bytes) in &self.pieces {
            for chunk in bytes.chunks(usize::from(u16::MAX)) {
                out.push(u8::from(*responder));
                out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                out.extend_from_slice(chunk);
            }
        }
        out
    }
}

fn streams(file: &Path) -> anyhow::Result<BTreeMap<u64, StreamSeed>> {
    let text = tshark_fields(
        file,
        "tcp.len > 0",
        &[
            "tcp.stream",
            "tcp.srcport",
            "tcp.dstport",
            "ip.src",
            "tcp.payload",
        ],
    )?;
    let mut out: BTreeMap<u64, StreamSeed> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let [stream, sport, dport, src, payload] = f[..] else {
            continue;
        };
        let (Ok(stream), Ok(sport), Ok(dport)) =
            (stream.parse(), sport.parse::<u16>(), dport.parse::<u16>())
        else {
            continue;
        };
        let s = out.entry(stream).or_insert_with(|| StreamSeed {
            initiator_port: sport,
            responder_port: dport,
            loopback: src.starts_with("127.") || src.is_empty(),
            pieces: Vec::new(),
        });
        s.pieces.push((sport != s.initiator_port, hex(payload)));
    }
    Ok(out)
}

/// One UDP flow's datagrams in capture order.
struct DatagramSeed {
    ports: [u16; 2],
    datagrams: Vec<(bool, Vec<u8>)>,
}

impl DatagramSeed {
    /// The harness's layout: `direction port_a port_b len payload` per datagram.
    fn seed(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (reply, payload) in &self.datagrams {
            out.push(u8::from(*reply));
            out.extend_from_slice(&self.ports[0].to_be_bytes());
            out.extend_from_slice(&self.ports[1].to_be_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }
}

fn datagrams(file: &Path) -> anyhow::Result<BTreeMap<u64, DatagramSeed>> {
    let text = tshark_fields(
        file,
        "udp",
        &["udp.stream", "udp.srcport", "udp.dstport", "udp.payload"],
    )?;
    let mut out: BTreeMap<u64, DatagramSeed> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let [stream, sport, dport, payload] = f[..] else {
            continue;
        };
        let (Ok(stream), Ok(sport), Ok(dport)) =
            (stream.parse(), sport.parse::<u16>(), dport.parse::<u16>())
        else {
            continue;
        };
        let d = out.entry(stream).or_insert_with(|| DatagramSeed {
            ports: [sport, dport],
            datagrams: Vec::new(),
        });
        d.datagrams.push((sport != d.ports[0], hex(payload)));
    }
    Ok(out)
}
