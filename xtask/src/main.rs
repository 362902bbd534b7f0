//! Project chores, run as `cargo xtask <command>`: the demo on a bundled sample, the test suite,
//! sample captures and benchmarks. Each installs what it needs first.

mod bench;
mod bench_live;
mod fuzz;
mod samples;
mod setup;

use clap::{Parser, Subcommand};

/// wakuprof's project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", about = "wakuprof project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build needs (libpcap, and for the eBPF probe the nightly rust-src and
    /// bpf-linker), build wakuprof and analyze the bundled libp2p sample.
    Demo,
    /// Install what the build needs, the eBPF probe's toolchain included; nothing else.
    Setup,
    /// Install what the tests need (libpcap, the probe's toolchain, tshark, DuckDB, cargo-fuzz)
    /// and run the whole test suite (as root: the live tests attach the probe and make network
    /// namespaces), then every fuzz target for 5 seconds.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Re-make the captures in samples/ from real implementations on loopback (needs root).
    Samples(samples::SamplesArgs),
    /// Compare `wakuprof analyze` with ndpiReader, tshark and tcpdump on one capture.
    Bench(bench::BenchArgs),
    /// Measure what `wakuprof live` costs: iperf3 throughput with and without it, and its CPU at
    /// fixed packet rates (as root).
    BenchLive(bench_live::BenchLiveArgs),
    /// Seed every fuzz target from samples/, build them with cargo fuzz (nightly) and run each
    /// for a fixed time; a crash fails with its input in fuzz/artifacts/.
    Fuzz(fuzz::FuzzArgs),
    /// Write a synthetic flood capture (SYN flood, connections that open like libp2p, yamux
    /// streams in one connection) to measure `wakuprof analyze --memory-budget` on.
    Flood(FloodArgs),
}

/// Options of `cargo xtask flood`.
#[derive(clap::Args)]
struct FloodArgs {
    /// What the flood sends.
    #[arg(value_enum)]
    kind: FloodKind,
    /// Sources (syn), connections (libp2p) or streams (streams).
    #[arg(value_name = "N")]
    n: u32,
    /// The pcap file to write.
    #[arg(value_name = "OUT")]
    out: std::path::PathBuf,
}

/// The floods `cargo xtask flood` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FloodKind {
    /// One SYN from each of N sources.
    Syn,
    /// N connections that open like libp2p (multistream, a yamux proposal and header) and stop.
    Libp2p,
    /// N yamux streams in one plaintext libp2p connection.
    Streams,
}

/// The sample the demo analyzes.
const DEMO_SAMPLE: &str = "samples/libp2p-plaintext-yamux.pcap";
/// Where `cargo xtask demo` writes the HTML report of the demo capture.
const DEMO_REPORT: &str = "target/demo-report.html";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => demo(),
        Command::Setup => setup(),
        Command::Test { args } => test(&args),
        Command::Samples(args) => samples::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::BenchLive(args) => bench_live::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Flood(args) => flood_cmd(&args),
    }
}

fn flood_cmd(args: &FloodArgs) -> anyhow::Result<()> {
    let kind = match args.kind {
        FloodKind::Syn => flood::Flood::Syn,
        FloodKind::Libp2p => flood::Flood::Libp2p,
        FloodKind::Streams => flood::Flood::Streams,
    };
    let w = flood::write(&args.out, kind, args.n)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    println!(
        "{}: {} packets, {} IP bytes",
        args.out.display(),
        w.packets,
        w.ip_bytes
    );
    Ok(())
}

fn setup() -> anyhow::Result<()> {
    setup::ensure_packages(setup::BUILD)?;
    setup::ensure_probe_toolchain();
    Ok(())
}

fn demo() -> anyhow::Result<()> {
    setup()?;
    let root = workspace_root();
    setup::run(
        setup::cargo()
            .current_dir(&root)
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "wakuprof",
                "--",
                "analyze",
                DEMO_SAMPLE,
            ])
            .args(["--out", "target/demo-results"]),
    )?;
    setup::run(
        setup::cargo()
            .current_dir(&root)
            .args(["run", "--release", "--quiet", "-p", "wakuprof", "--"])
            .args(["report", DEMO_SAMPLE, "--html", DEMO_REPORT]),
    )?;
    eprintln!(
        "\nxtask: Parquet written under target/demo-results/; the HTML report is {}; try `cargo run --release -p wakuprof -- report --help`",
        root.join(DEMO_REPORT).display()
    );
    Ok(())
}

fn test(args: &[String]) -> anyhow::Result<()> {
    setup()?;
    setup::ensure_packages(setup::TEST)?;
    setup::ensure_duckdb()?;
    setup::run(
        setup::cargo()
            .current_dir(workspace_root())
            .args(["test", "--workspace"])
            .args(args),
    )?;
    // Every fuzz target for a few seconds: a crash on the seeds or near them fails the run.
    fuzz::run(&fuzz::FuzzArgs {
        seconds: 5,
        targets: Vec::new(),
        jobs: 1,
    })
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
