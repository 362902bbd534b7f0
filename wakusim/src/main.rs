//! The `wakusim` command line: check a scenario, or run it and print the per-node report.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use wakusim::{report::Report, run, scenario::Scenario};

/// Community bandwidth simulations: Waku relay networks of real rust-libp2p nodes, each in its
/// own network namespace, with communities on dedicated or shared shards (protected ones
/// signed and validated as nwaku does), measured per node by wakuprof against the nodes' truth.
#[derive(Parser)]
#[command(name = "wakusim", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario (needs root: it creates network namespaces and captures in them).
    #[command(
        after_help = "Writes node<i>.pcap (one capture per node, taken on its veth at the bridge) and report.json into --out, and prints the per-node report.\n\nExamples:\n  wakusim run wakusim/scenarios/demo.toml\n  wakusim run my.toml --out runs/1 --format json"
    )]
    Run {
        /// The scenario file (TOML; see wakusim/scenarios/demo.toml).
        scenario: PathBuf,
        /// Directory for the captures and report.json (a temporary one when absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check a scenario file and print what it describes, without running it.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table per node.
    Table,
    /// The whole report as JSON (as report.json).
    Json,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end the publishing early; the run still closes, cleans up and reports.
fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Check { scenario } => {
            let s = Scenario::load(&scenario)?;
            println!(
                "{}: {} nodes, {} communities on {}, {:?} transport, {} s",
                scenario.display(),
                s.network.nodes,
                s.communities.len(),
                s.pubsub_topics().join(", "),
                s.transport,
                s.duration_secs
            );
        }
        Cmd::Run {
            scenario,
            out,
            format,
        } => {
            let s = Scenario::load(&scenario)?;
            let out = out.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("wakusim-{}", std::process::id()))
            });
            std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
            catch_signals();
            let outcome = run::run(&s, &out, &STOP)?;
            let report = Report::build(&s, &outcome)?;
            let json = serde_json::to_string_pretty(&report)?;
            let path = out.join("report.json");
            std::fs::write(&path, &json).with_context(|| format!("write {}", path.display()))?;
            match format {
                Format::Table => {
                    print!("{}", report.table());
                    println!("\ncaptures and report.json in {}", out.display());
                }
                Format::Json => println!("{json}"),
            }
        }
    }
    Ok(())
}
