//! Project chores, run as `cargo xtask <command>`: set-up, the demo on a bundled sample, the test
//! suite, sample captures and benchmarks.

mod bench;
mod samples;

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
    /// Re-make the captures in samples/ from real implementations on loopback (needs root).
    Samples(samples::SamplesArgs),
    /// Compare `wakuprof analyze` with ndpiReader, tshark and tcpdump on one capture.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Samples(args) => samples::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
