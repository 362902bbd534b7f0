//! `cargo xtask bench`: wakuprof against ndpiReader, tshark and tcpdump on the same captures.
//!
//! Two captures are timed. The day-long one is FILE repeated `--copies` times, each copy with its
//! own addresses so that it adds flows of its own, with its timestamps spread evenly over one day
//! (packets in their order): what a day of capture looks like, 24 hours of Parquet partitions.
//! The many-flows one holds [`MANY_FLOWS`] connections that open like libp2p and go silent, all at
//! once. Both are written once under `<target dir>/bench/` and reused.

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    io::{self, BufReader, BufWriter, Read, Seek, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::setup::{self, Package};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Capture to repeat and benchmark: classic pcap, Ethernet [default: captures/ndpi-mix.pcap
    /// in $WAKUPROF_SHARED, else in the shared/ folder beside the workspace]
    file: Option<PathBuf>,
    /// Copies of FILE, each with its own addresses, that make up the day-long capture.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..))]
    copies: u16,
    /// Runs of each tool; the table shows the median wall time and the highest peak RSS.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Where to write the environment and every run's numbers as JSON, for comparison across
    /// commits [default: <target dir>/bench/bench-<commit>.json]
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Benchmark this wakuprof binary instead of building one with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    wakuprof: Option<PathBuf>,
    /// Decoding threads of wakuprof (`analyze --threads`) [default: wakuprof's, the cores
    /// available].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
}

/// Connections of the many-flows capture, all open at once.
pub const MANY_FLOWS: u32 = 100_000;

/// Runs every tool `--runs` times on both captures and prints how wakuprof compares.
pub fn run(args: &BenchArgs) -> Result<()> {
    setup::ensure_packages(PACKAGES)?;
    let workspace = Workspace::locate()?;
    let base = match &args.file {
        Some(file) => file.clone(),
        None => env::var_os("WAKUPROF_SHARED")
            .map_or_else(|| workspace.root.join("../shared"), PathBuf::from)
            .join("captures/ndpi-mix.pcap"),
    };
    let base = fs::canonicalize(&base).with_context(|| format!("{}", base.display()))?;
    let bench_dir = workspace.target.join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("{}", bench_dir.display()))?;
    let (day, day_packets) = prepare_input(&base, args.copies, &bench_dir)?;
    let many = bench_dir.join(format!("flood-libp2p-{MANY_FLOWS}.pcap"));
    let many_packets = flood::write(&many, flood::Flood::Libp2p, MANY_FLOWS)
        .with_context(|| format!("{}", many.display()))?
        .packets;
    let wakuprof = match &args.wakuprof {
        Some(path) => fs::canonicalize(path).with_context(|| format!("{}", path.display()))?,
        None => workspace.build_wakuprof()?,
    };
    let captures = [
        Capture::time(
            &day,
            day_packets,
            (&wakuprof, args.threads),
            args.runs,
            &bench_dir,
        )?,
        Capture::time(
            &many,
            many_packets,
            (&wakuprof, args.threads),
            args.runs,
            &bench_dir,
        )?,
    ];
    let idle = IdleFootprint::measure(&wakuprof, &bench_dir);
    let writer = workspace.writer_bench();

    let (cpu, cores) = environment();
    let commit = workspace.commit();
    let threads = args
        .threads
        .map_or_else(|| "default".to_string(), |n| n.to_string());
    println!(
        "{cpu}, {cores} cores; wakuprof {commit}, threads: {threads}; median of {} runs",
        args.runs
    );
    for capture in &captures {
        println!();
        capture.print();
    }
    match &writer {
        Ok(w) => println!(
            "\nParquet usage writer alone, {} rows of a day: {:.0} rows/s (through the writer thread {:.0} rows/s)",
            w.rows,
            w.rows as f64 / w.direct_secs,
            w.rows as f64 / w.threaded_secs
        ),
        Err(_) => println!("\nParquet usage writer alone: failed, see below"),
    }
    match &idle {
        Ok(f) => println!(
            "wakuprof memory per idle flow (libp2p-like, opened and silent): ({:.1} - {:.1} MiB) / ({} - {} flows) = {:.0} bytes",
            mib(f.rss_n),
            mib(f.rss_1),
            IDLE_FLOWS[1],
            IDLE_FLOWS[0],
            f.bytes_per_flow()
        ),
        Err(_) => println!("wakuprof memory per idle flow: failed, see below"),
    }
    let report = json!({
        "commit": commit,
        "cpu": cpu,
        "cores": cores,
        "copies": args.copies,
        "threads": args.threads,
        "captures": captures.iter().map(Capture::json).collect::<Vec<_>>(),
        "writer": writer.as_ref().ok().map(|w| json!({
            "rows": w.rows,
            "direct_secs": w.direct_secs,
            "threaded_secs": w.threaded_secs,
        })),
        "memory_per_idle_flow": idle.as_ref().ok().map(|f| json!({
            "flows": IDLE_FLOWS,
            "peak_rss_bytes": [f.rss_1, f.rss_n],
            "bytes_per_flow": f.bytes_per_flow(),
        })),
    });
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| bench_dir.join(format!("bench-{commit}.json")));
    fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("{}", path.display()))?;
    println!("numbers written to {}", path.display());
    writer?;
    idle.map(drop)
}

/// The last line of `cargo bench -p wakuprof --bench writer`: seconds to write a day of usage
/// rows directly and through the writer thread.
#[derive(Deserialize)]
pub struct WriterTimes {
    rows: u64,
    direct_secs: f64,
    threaded_secs: f64,
}

/// One benchmarked capture and every run of every tool on it.
struct Capture {
    path: PathBuf,
    packets: u64,
    bytes: u64,
    samples: Vec<Sample>,
}

impl Capture {
    /// Runs every tool `runs` times on `path`, the tools taking turns; `wakuprof` is the binary
    /// and its decoding threads.
    fn time(
        path: &Path,
        packets: u64,
        wakuprof: (&Path, Option<u32>),
        runs: u32,
        scratch: &Path,
    ) -> Result<Self> {
        let bytes = fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        let mut samples = Vec::new();
        for run in 1..=runs {
            for tool in TOOLS {
                eprint!("bench: run {run}/{runs} {:<14} ", tool.name());
                let out = tempfile::tempdir_in(scratch)?;
                let measured = measure(&mut tool.command(wakuprof, path, out.path()));
                match &measured {
                    Ok((wall, rss)) => {
                        eprintln!("{:.2} s, {:.1} MiB", wall.as_secs_f64(), mib(*rss))
                    }
                    Err(_) => eprintln!("failed"),
                }
                let (wall, peak_rss) = measured?;
                samples.push(Sample {
                    tool,
                    run,
                    wall,
                    peak_rss,
                });
            }
        }
        Ok(Self {
            path: path.to_owned(),
            packets,
            bytes,
            samples,
        })
    }

    /// The median wall time of `tool`'s runs, seconds, and its highest peak RSS.
    fn summary(&self, tool: Tool) -> (f64, u64) {
        let runs = self.samples.iter().filter(|s| s.tool == tool);
        let mut walls: Vec<_> = runs.clone().map(|s| s.wall).collect();
        walls.sort();
        let wall = walls.get(walls.len() / 2).copied().unwrap_or_default();
        let rss = runs.map(|s| s.peak_rss).max().unwrap_or_default();
        (wall.as_secs_f64(), rss)
    }

    /// Prints one row per tool, with each tool's wall time over wakuprof's with and without
    /// Parquet output.
    fn print(&self) {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name}: {} packets, {:.1} MB",
            self.packets,
            self.bytes as f64 / 1e6
        );
        let (out_wall, _) = self.summary(Tool::WakuprofParquet);
        let (plain_wall, _) = self.summary(Tool::Wakuprof);
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>13} {:>9} {:>9}",
            "tool", "wall s", "M pkt/s", "MB/s", "peak RSS MiB", "x --out", "x no out"
        );
        for tool in TOOLS {
            let (wall, rss) = self.summary(tool);
            println!(
                "{:<14} {wall:>8.3} {:>8.3} {:>8.1} {:>13.1} {:>9.2} {:>9.2}",
                tool.name(),
                self.packets as f64 / wall / 1e6,
                self.bytes as f64 / wall / 1e6,
                mib(rss),
                wall / out_wall,
                wall / plain_wall,
            );
        }
    }

    /// The capture, every run and each tool's median, as JSON.
    fn json(&self) -> Value {
        json!({
            "input": self.path,
            "packets": self.packets,
            "bytes": self.bytes,
            "median": TOOLS.iter().map(|&tool| {
                let (wall, rss) = self.summary(tool);
                json!({ "tool": tool.name(), "wall_secs": wall, "peak_rss_bytes": rss })
            }).collect::<Vec<_>>(),
            "runs": self.samples.iter().map(|s| json!({
                "tool": s.tool.name(),
                "run": s.run,
                "wall_secs": s.wall.as_secs_f64(),
                "peak_rss_bytes": s.peak_rss,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Flood sizes whose peak RSS difference gives the memory of an idle flow.
const IDLE_FLOWS: [u32; 2] = [50_000, MANY_FLOWS];

/// What wakuprof's memory grows by per idle flow: connections that open like libp2p and go
/// silent (`cargo xtask flood libp2p`), with a budget large enough that none is retired.
struct IdleFootprint {
    rss_1: u64,
    rss_n: u64,
}

impl IdleFootprint {
    fn measure(wakuprof: &Path, scratch: &Path) -> Result<Self> {
        let mut rss = [0; 2];
        for (n, rss) in IDLE_FLOWS.iter().zip(&mut rss) {
            let capture = scratch.join(format!("flood-libp2p-{n}.pcap"));
            flood::write(&capture, flood::Flood::Libp2p, *n)
                .with_context(|| format!("{}", capture.display()))?;
            let (flows, peak) =
                analyze_flows(wakuprof, &capture, scratch, &["--memory-budget", "8G"])?;
            ensure!(
                flows == u64::from(*n),
                "wakuprof counted {flows} flows in a flood of {n}"
            );
            *rss = peak;
        }
        Ok(Self {
            rss_1: rss[0],
            rss_n: rss[1],
        })
    }

    fn bytes_per_flow(&self) -> f64 {
        (self.rss_n as f64 - self.rss_1 as f64) / f64::from(IDLE_FLOWS[1] - IDLE_FLOWS[0])
    }
}

/// The Debian packages of the programs wakuprof is compared with.
const PACKAGES: &[Package] = &[
    Package {
        name: "libndpi-bin",
        marker: "/usr/bin/ndpiReader",
    },
    Package {
        name: "tshark",
        marker: "/usr/bin/tshark",
    },
    Package {
        name: "tcpdump",
        marker: "/usr/bin/tcpdump",
    },
];

/// The programs compared, in the order they run and appear in the table.
const TOOLS: [Tool; 5] = [
    Tool::Wakuprof,
    Tool::WakuprofParquet,
    Tool::NdpiReader,
    Tool::Tshark,
    Tool::Tcpdump,
];

/// One program under test, with the job it is timed on.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    /// Attribution with the summary printed as JSON: the analysis compared with the others.
    Wakuprof,
    /// The same, also writing the Parquet usage table (one file per hour the capture spans).
    WakuprofParquet,
    /// nDPI's flow table and protocol detection.
    NdpiReader,
    /// Wireshark's dissectors plus TCP and UDP conversation tables.
    Tshark,
    /// Reading and discarding every packet: the floor for libpcap.
    Tcpdump,
}

impl Tool {
    /// Name of the program, as the table shows it and as PATH finds it.
    fn name(self) -> &'static str {
        match self {
            Tool::Wakuprof => "wakuprof",
            Tool::WakuprofParquet => "wakuprof --out",
            Tool::NdpiReader => "ndpiReader",
            Tool::Tshark => "tshark",
            Tool::Tcpdump => "tcpdump",
        }
    }

    /// The timed command on `input`; `out` is an empty directory for whatever it writes.
    fn command(
        self,
        (wakuprof, threads): (&Path, Option<u32>),
        input: &Path,
        out: &Path,
    ) -> Command {
        let mut cmd = Command::new(match self {
            Tool::Wakuprof | Tool::WakuprofParquet => wakuprof.as_os_str(),
            _ => OsStr::new(self.name()),
        });
        cmd.current_dir(out).stdout(Stdio::null());
        match self {
            Tool::Wakuprof => cmd.arg("analyze").arg(input).args(["--format", "json"]),
            Tool::WakuprofParquet => cmd
                .arg("analyze")
                .arg(input)
                .arg("--out")
                .arg(out)
                .arg("--quiet"),
            Tool::NdpiReader => cmd.arg("-i").arg(input).arg("-q"),
            Tool::Tshark => cmd
                .args(["-n", "-q", "-r"])
                .arg(input)
                .args(["-z", "conv,tcp", "-z", "conv,udp"]),
            Tool::Tcpdump => cmd.arg("-r").arg(input).args(["-w", "/dev/null"]),
        };
        if let (Tool::Wakuprof | Tool::WakuprofParquet, Some(n)) = (self, threads) {
            cmd.arg("--threads").arg(n.to_string());
        }
        cmd
    }
}

/// The workspace's root and build output directory, as `cargo metadata` reports them (so
/// CARGO_TARGET_DIR and `build.target-dir` count).
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Workspace {
    /// Asks cargo where the workspace that holds xtask lives.
    pub fn locate() -> Result<Self> {
        #[derive(Deserialize)]
        struct Metadata {
            workspace_root: PathBuf,
            target_directory: PathBuf,
        }
        let output = setup::cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run cargo metadata")?;
        ensure!(
            output.status.success(),
            "cargo metadata failed ({})",
            output.status
        );
        let metadata: Metadata =
            serde_json::from_slice(&output.stdout).context("unexpected cargo metadata output")?;
        Ok(Self {
            root: metadata.workspace_root,
            target: metadata.target_directory,
        })
    }

    /// The checked-out commit's short hash, with `-dirty` when files differ from it; `unknown`
    /// outside a git checkout.
    pub fn commit(&self) -> String {
        let git = |args: &[&str]| {
            Command::new("git")
                .current_dir(&self.root)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        match git(&["rev-parse", "--short", "HEAD"]) {
            Some(hash)
                if git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty()) =>
            {
                format!("{hash}-dirty")
            }
            Some(hash) => hash,
            None => "unknown".to_owned(),
        }
    }

    /// Runs the Parquet writer's own benchmark and reads its numbers.
    pub fn writer_bench(&self) -> Result<WriterTimes> {
        eprintln!("bench: cargo bench -p wakuprof --bench writer");
        let output = setup::cargo()
            .current_dir(&self.root)
            .args(["bench", "-p", "wakuprof", "--bench", "writer"])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run cargo bench")?;
        ensure!(
            output.status.success(),
            "cargo bench -p wakuprof --bench writer failed ({})",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .with_context(|| format!("unexpected writer bench output {last:?}"))
    }

    /// Builds wakuprof in release mode and returns the binary's path.
    pub fn build_wakuprof(&self) -> Result<PathBuf> {
        eprintln!("bench: cargo build --release -p wakuprof");
        let status = setup::cargo()
            .current_dir(&self.root)
            .args(["build", "--release", "-p", "wakuprof"])
            .status()
            .context("cannot run cargo build")?;
        ensure!(
            status.success(),
            "cargo build --release -p wakuprof failed ({status})"
        );
        Ok(self.target.join("release/wakuprof"))
    }
}

/// One timed run of one tool.
struct Sample {
    tool: Tool,
    run: u32,
    wall: Duration,
    peak_rss: u64,
}

/// Runs `cmd` to completion and returns its wall time and its peak RSS in bytes, taken from
/// wait4's rusage so that it is the child's own.
fn measure(cmd: &mut Command) -> Result<(Duration, u64)> {
    let mut stderr = tempfile::tempfile()?;
    cmd.stdin(Stdio::null()).stderr(stderr.try_clone()?);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage holds only integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not reaped yet; status and usage are live and writable.
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let wall = start.elapsed();
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let mut text = Vec::new();
        stderr.rewind()?;
        stderr.read_to_end(&mut text)?;
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<_> = text.lines().rev().take(20).collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        bail!("{cmd:?} failed ({status}):\n{}", tail.join("\n"));
    }
    // ru_maxrss is in KiB on Linux.
    Ok((wall, u64::try_from(usage.ru_maxrss)? * 1024))
}

/// Bytes as MiB, for display.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// CPU model and the number of cores this process may use.
pub fn environment() -> (String, usize) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpu, cores)
}

/// Runs `wakuprof analyze CAPTURE --format json EXTRA…` and returns the flows it counted and its
/// peak RSS.
fn analyze_flows(
    wakuprof: &Path,
    capture: &Path,
    scratch: &Path,
    extra: &[&str],
) -> Result<(u64, u64)> {
    #[derive(Deserialize)]
    struct Output {
        stats: Stats,
    }
    #[derive(Deserialize)]
    struct Stats {
        flow: FlowStats,
    }
    #[derive(Deserialize)]
    struct FlowStats {
        flows: u64,
    }
    eprint!("bench: wakuprof --format json on {} ", capture.display());
    let out = tempfile::tempdir_in(scratch)?;
    let json = out.path().join("analyze.json");
    let measured = measure(
        Command::new(wakuprof)
            .arg("analyze")
            .arg(capture)
            .args(["--format", "json"])
            .args(extra)
            .current_dir(out.path())
            .stdout(File::create(&json)?),
    );
    match &measured {
        Ok((wall, rss)) => eprintln!("{:.2} s, {:.1} MiB", wall.as_secs_f64(), mib(*rss)),
        Err(_) => eprintln!("failed"),
    }
    let (_, rss) = measured?;
    let output: Output = serde_json::from_reader(BufReader::new(File::open(&json)?))
        .context("wakuprof's JSON output has no stats.flow.flows")?;
    Ok((output.stats.flow.flows, rss))
}

/// Returns the day-long capture and its packet count: `copies` of `base`, written to `dir` unless
/// a complete one newer than `base` is there already.
fn prepare_input(base: &Path, copies: u16, dir: &Path) -> Result<(PathBuf, u64)> {
    let packets = count_records(base)? * u64::from(copies);
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let input = dir.join(format!("{stem}-x{copies}-day.pcap"));
    let base_meta = fs::metadata(base)?;
    let expected_len =
        HEADER_LEN as u64 + u64::from(copies) * (base_meta.len() - HEADER_LEN as u64);
    let cached = fs::metadata(&input).is_ok_and(|meta| {
        meta.len() == expected_len
            && matches!((meta.modified(), base_meta.modified()), (Ok(cache), Ok(source)) if cache >= source)
    });
    if cached {
        eprintln!("bench: using {}", input.display());
    } else {
        eprintln!(
            "bench: writing {copies} copies of {} over one day to {}",
            base.display(),
            input.display()
        );
        multiply(base, packets, copies, &input)?;
    }
    Ok((input, packets))
}

/// Length of the classic pcap file header.
const HEADER_LEN: usize = 24;

/// Length of a classic pcap record header: seconds, fraction, captured length, original length.
const RECORD_HEADER_LEN: usize = 16;

/// Largest record accepted; libpcap itself stops at 256 KiB, so more means a corrupt file.
const MAX_RECORD_LEN: usize = 16 << 20;

/// Link type of Ethernet, the only one whose addresses `multiply` knows how to find.
const LINKTYPE_ETHERNET: u32 = 1;

/// Byte order and timestamp unit of a classic pcap file, given by its magic number.
#[derive(Clone, Copy)]
struct Format {
    big_endian: bool,
    units_per_sec: u64,
}

impl Format {
    /// Recognises the microsecond (a1b2c3d4) and nanosecond (a1b23c4d) magics in either order.
    fn from_magic(magic: [u8; 4]) -> Option<Self> {
        let (big_endian, units_per_sec) = match magic {
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, 1_000_000),
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, 1_000_000),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, 1_000_000_000),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, 1_000_000_000),
            _ => return None,
        };
        Some(Self {
            big_endian,
            units_per_sec,
        })
    }

    /// The 32-bit field at `at` in `bytes`, which must hold it.
    fn get(self, bytes: &[u8], at: usize) -> u32 {
        let field = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(field)
        } else {
            u32::from_le_bytes(field)
        }
    }

    /// `value` as a 32-bit field in this byte order.
    fn put(self, value: u32) -> [u8; 4] {
        if self.big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        }
    }
}

/// Reads a classic pcap file one record at a time.
struct PcapReader {
    path: PathBuf,
    inner: BufReader<File>,
    header: [u8; HEADER_LEN],
    format: Format,
    offset: u64,
}

/// What a record says besides its bytes: the packet's original length.
struct Record {
    orig_len: u32,
}

impl PcapReader {
    /// Opens `path` and reads its file header.
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}", path.display()))?;
        let mut inner = BufReader::with_capacity(1 << 20, file);
        let mut header = [0; HEADER_LEN];
        inner
            .read_exact(&mut header)
            .with_context(|| format!("{}: shorter than a pcap header", path.display()))?;
        let magic = [header[0], header[1], header[2], header[3]];
        let format = Format::from_magic(magic).with_context(|| {
            format!(
                "{}: not a classic pcap file (magic {magic:02x?})",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
            inner,
            header,
            format,
            offset: HEADER_LEN as u64,
        })
    }

    /// Link type from the file header (its low 16 bits; the high ones carry FCS information).
    fn link_type(&self) -> u32 {
        self.format.get(&self.header, 20) & 0xffff
    }

    /// Reads the next record's bytes into `data`; `None` at the end of the file.
    fn next(&mut self, data: &mut Vec<u8>) -> Result<Option<Record>> {
        let mut header = [0; RECORD_HEADER_LEN];
        let mut got = 0;
        while got < header.len() {
            match self.inner.read(&mut header[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err).context(format!("{}", self.path.display())),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        let at = self.offset;
        ensure!(
            got == header.len(),
            "{}: record header cut short at byte {at}",
            self.path.display()
        );
        let format = self.format;
        let len = format.get(&header, 8) as usize;
        ensure!(
            len <= MAX_RECORD_LEN,
            "{}: record at byte {at} claims {len} bytes; the file is corrupt",
            self.path.display()
        );
        data.resize(len, 0);
        self.inner
            .read_exact(data)
            .with_context(|| format!("{}: record at byte {at} cut short", self.path.display()))?;
        self.offset += (RECORD_HEADER_LEN + len) as u64;
        Ok(Some(Record {
            orig_len: format.get(&header, 12),
        }))
    }
}

/// The number of records in `path` (each one read, so a corrupt file fails here).
fn count_records(path: &Path) -> Result<u64> {
    let mut reader = PcapReader::open(path)?;
    let mut data = Vec::new();
    let mut packets = 0;
    while reader.next(&mut data)?.is_some() {
        packets += 1;
    }
    Ok(packets)
}

/// Start of the day-long capture: 2024-01-01 00:00:00 UTC, seconds since the epoch.
const DAY_START_SECS: u64 = 1_704_067_200;

/// Seconds in the day the capture spans.
const DAY_SECS: u64 = 86_400;

/// Writes `copies` copies of the Ethernet capture `src` (`packets` records in all) to `dst`, one
/// after the other. Copy k has its IP addresses remapped by k; record j of the whole is stamped
/// `DAY_START_SECS + j × DAY_SECS / packets`, so that the records keep their order and span the day.
fn multiply(src: &Path, packets: u64, copies: u16, dst: &Path) -> Result<()> {
    let mut reader = PcapReader::open(src)?;
    let link_type = reader.link_type();
    ensure!(
        link_type == LINKTYPE_ETHERNET,
        "{}: link type {link_type}; only Ethernet captures can be copied",
        src.display()
    );
    let format = reader.format;
    let units = u128::from(format.units_per_sec);
    let partial = dst.with_extension("pcap.partial");
    let file = File::create(&partial).with_context(|| format!("{}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&reader.header)?;
    let mut data = Vec::new();
    let mut j: u64 = 0;
    for k in 0..copies {
        if k > 0 {
            reader = PcapReader::open(src)?;
        }
        while let Some(record) = reader.next(&mut data)? {
            remap_ethernet(&mut data, k);
            let offset = u128::from(j) * u128::from(DAY_SECS) * units / u128::from(packets.max(1));
            let ts = u128::from(DAY_START_SECS) * units + offset;
            j += 1;
            let secs = u32::try_from(ts / units)?;
            let frac = u32::try_from(ts % units)?;
            let len = u32::try_from(data.len())?;
            for field in [secs, frac, len, record.orig_len] {
                out.write_all(&format.put(field))?;
            }
            out.write_all(&data)?;
        }
    }
    ensure!(
        j == packets,
        "{} changed while it was copied ({j} records, {packets} before)",
        src.display()
    );
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    fs::rename(&partial, dst).with_context(|| format!("{}", dst.display()))
}

/// EtherTypes of the 802.1Q, 802.1ad and pre-standard QinQ tags; each tag is 4 bytes, the last 2
/// of which are the next EtherType.
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;

/// EtherType of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Remaps the source and destination of the IPv4 or IPv6 packet in an Ethernet frame by `k`; other
/// and truncated frames are left as they are.
fn remap_ethernet(frame: &mut [u8], k: u16) {
    if k == 0 {
        return;
    }
    let be16 = |frame: &[u8], at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut at = 12;
    let mut ether_type = be16(frame, at);
    while ether_type.is_some_and(|t| VLAN_TAGS.contains(&t)) {
        at += 4;
        ether_type = be16(frame, at);
    }
    let ip = frame.get_mut(at + 2..).unwrap_or_default();
    let version = ip.first().map(|b| b >> 4);
    let (src, dst) = match (ether_type, version) {
        (Some(ETHERTYPE_IPV4), Some(4)) if ip.len() >= 20 => (12..16, 16..20),
        (Some(ETHERTYPE_IPV6), Some(6)) if ip.len() >= 40 => (8..24, 24..40),
        _ => return,
    };
    remap_address(&mut ip[src], k);
    remap_address(&mut ip[dst], k);
}

/// Adds `k` to the second-to-last 16-bit word of an address and takes it from the last one, in
/// ones' complement. Every address maps the same way, so both directions of a flow stay one flow,
/// and the ones' complement sum is unchanged, so the IPv4 header checksum and the TCP, UDP and
/// ICMPv6 checksums (whose pseudo-header covers the addresses) stay valid.
fn remap_address(addr: &mut [u8], k: u16) {
    let at = addr.len() - 4;
    let high = u16::from_be_bytes([addr[at], addr[at + 1]]);
    let low = u16::from_be_bytes([addr[at + 2], addr[at + 3]]);
    addr[at..at + 2].copy_from_slice(&ones_add(high, k).to_be_bytes());
    addr[at + 2..].copy_from_slice(&ones_add(low, !k).to_be_bytes());
}

/// Ones' complement 16-bit addition, as in Internet checksums.
fn ones_add(a: u16, b: u16) -> u16 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u16::from(carry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP, 192.168.1.10:5353 -> 10.0.0.1:53 with a 4-byte payload; both
    /// checksums are valid.
    fn udp4_frame() -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = vec![
            0x45, 0, 0, 32, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 192, 168, 1, 10, 10, 0, 0, 1,
        ];
        let ip_sum = !checksum(&ip, 0);
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let mut udp = vec![0x14, 0xe9, 0, 53, 0, 12, 0, 0, b'w', b'a', b'k', b'u'];
        let pseudo = pseudo_header(&ip[12..20], 17, 12);
        let udp_sum = !checksum(&udp, pseudo);
        udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
        frame.extend(ip);
        frame.extend(udp);
        frame
    }

    /// Ones' complement sum of `bytes` as 16-bit words, starting from `start`.
    fn checksum(bytes: &[u8], start: u16) -> u16 {
        bytes
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))
            .fold(start, ones_add)
    }

    /// Sum of the IPv4 pseudo-header: both addresses, protocol and transport length.
    fn pseudo_header(addresses: &[u8], protocol: u16, len: u16) -> u16 {
        ones_add(checksum(addresses, protocol), len)
    }

    #[test]
    fn remapped_ipv4_keeps_checksums_valid() {
        let original = udp4_frame();
        let mut frame = original.clone();
        remap_ethernet(&mut frame, 3);
        let ip = &frame[14..34];
        assert_eq!(&ip[12..16], &[192, 171, 1, 7]);
        assert_eq!(&ip[16..20], &[10, 3, 255, 253]);
        assert_eq!(checksum(ip, 0), 0xffff);
        assert_eq!(
            checksum(&frame[34..], pseudo_header(&ip[12..20], 17, 12)),
            0xffff
        );
        assert_eq!(frame[..14], original[..14]);
        assert_eq!(frame[34..], original[34..]);
    }

    #[test]
    fn both_directions_map_alike() {
        let mut forward = udp4_frame();
        let mut reverse = forward.clone();
        let (src, dst) = (14 + 12..14 + 16, 14 + 16..14 + 20);
        let source = forward[src.clone()].to_vec();
        reverse.copy_within(dst.clone(), src.start);
        reverse[dst.clone()].copy_from_slice(&source);
        remap_ethernet(&mut forward, 5);
        remap_ethernet(&mut reverse, 5);
        assert_eq!(forward[src.clone()], reverse[dst.clone()]);
        assert_eq!(forward[dst], reverse[src]);
    }

    #[test]
    fn copies_get_distinct_addresses() {
        let mut seen = std::collections::HashSet::new();
        for k in 0..300 {
            let mut frame = udp4_frame();
            remap_ethernet(&mut frame, k);
            assert!(seen.insert(frame[26..34].to_vec()));
        }
    }

    #[test]
    fn finds_ip_behind_vlan_tags_and_ipv6() {
        let mut frame = vec![0; 12];
        frame.extend([0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x86, 0xdd]);
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        ip.extend(
            [0x20, 0x01, 0x0d, 0xb8]
                .iter()
                .chain(&[0; 10])
                .chain(&[0, 1]),
        );
        ip.extend(
            [0x20, 0x01, 0x0d, 0xb8]
                .iter()
                .chain(&[0; 10])
                .chain(&[0, 2]),
        );
        frame.extend(&ip);
        remap_ethernet(&mut frame, 1);
        let ip = &frame[22..];
        assert_eq!(
            &ip[8..24],
            &[
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff
            ]
        );
        assert_eq!(
            &ip[24..40],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
        );
    }

    #[test]
    fn leaves_other_and_truncated_frames_alone() {
        let mut arp = udp4_frame();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let frame = udp4_frame();
        for original in [arp, frame] {
            for len in 0..34 {
                let mut cut = original[..len].to_vec();
                remap_ethernet(&mut cut, 1);
                assert_eq!(cut, original[..len]);
            }
        }
    }

    /// A two-record pcap in the given byte order and unit: timestamps 100.5 s and 90 s.
    fn pcap(format: Format, magic: [u8; 4]) -> Vec<u8> {
        let mut file = magic.to_vec();
        let version = if format.big_endian {
            [0, 2, 0, 4]
        } else {
            [2, 0, 4, 0]
        };
        file.extend(version);
        for field in [0, 0, 65535, LINKTYPE_ETHERNET] {
            file.extend(format.put(field));
        }
        let frame = udp4_frame();
        for (secs, frac) in [(100, format.units_per_sec as u32 / 2), (90, 0)] {
            for field in [secs, frac, frame.len() as u32, frame.len() as u32] {
                file.extend(format.put(field));
            }
            file.extend(&frame);
        }
        file
    }

    #[test]
    fn multiplies_over_a_day_in_both_byte_orders_and_units() {
        let dir = tempfile::tempdir().unwrap();
        for magic in [
            [0xa1, 0xb2, 0xc3, 0xd4],
            [0xd4, 0xc3, 0xb2, 0xa1],
            [0xa1, 0xb2, 0x3c, 0x4d],
            [0x4d, 0x3c, 0xb2, 0xa1],
        ] {
            let format = Format::from_magic(magic).unwrap();
            let src = dir.path().join("in.pcap");
            let dst = dir.path().join("out.pcap");
            fs::write(&src, pcap(format, magic)).unwrap();
            assert_eq!(count_records(&src).unwrap(), 2);
            multiply(&src, 6, 3, &dst).unwrap();

            let mut reader = PcapReader::open(&dst).unwrap();
            assert_eq!(reader.header[..], fs::read(&src).unwrap()[..HEADER_LEN]);
            let unit = format.units_per_sec;
            let mut data = Vec::new();
            let mut seen = Vec::new();
            let mut at = HEADER_LEN;
            let file = fs::read(&dst).unwrap();
            while let Some(record) = reader.next(&mut data).unwrap() {
                let secs = u64::from(format.get(&file, at));
                let ts = secs * unit + u64::from(format.get(&file, at + 4));
                seen.push((ts, data[26..34].to_vec()));
                assert_eq!(record.orig_len as usize, data.len());
                at += RECORD_HEADER_LEN + data.len();
            }
            let expected: Vec<_> = (0..3u16)
                .flat_map(|k| {
                    let mut frame = udp4_frame();
                    remap_ethernet(&mut frame, k);
                    let addresses = frame[26..34].to_vec();
                    (0..2).map(move |i| {
                        let j = u64::from(k) * 2 + i;
                        let ts = DAY_START_SECS * unit + j * DAY_SECS * unit / 6;
                        (ts, addresses.clone())
                    })
                })
                .collect();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        let magic = [0xd4, 0xc3, 0xb2, 0xa1];
        let whole = pcap(Format::from_magic(magic).unwrap(), magic);
        let one_record = HEADER_LEN + RECORD_HEADER_LEN + udp4_frame().len();
        for len in 0..whole.len() {
            fs::write(&path, &whole[..len]).unwrap();
            let complete = len == HEADER_LEN || len == one_record;
            assert_eq!(count_records(&path).is_ok(), complete, "length {len}");
        }
        fs::write(&path, b"\x0a\x0d\x0d\x0a pcapng, not classic pcap").unwrap();
        assert!(PcapReader::open(&path).is_err());
    }
}
