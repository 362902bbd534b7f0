//! `wakuprof report`: the command line of the triage report (the report itself is the
//! library's `report` module).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use wakuprof::analyze::{self, Config};
use wakuprof::flow::LocalSpec;
use wakuprof::report::input::{self, Inputs};
use wakuprof::report::{Collector, Filter, html, text, time};
use wakuprof::sink::Sink;

/// What `report` prints on stdout.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// The text report for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Parquet directories or files written by `analyze`/`live` (--out, and --mesh for mesh
    /// health; any number of runs, hosts and days), or captures, analyzed on the fly.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Also write the report as one self-contained HTML page (charts, sortable tables).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Keep windows starting at or after this UTC time (2026-12-06, 2026-12-06T15:30).
    #[arg(long, value_name = "TIME", value_parser = time::parse_utc)]
    since: Option<i64>,
    /// Keep windows starting before this UTC time.
    #[arg(long, value_name = "TIME", value_parser = time::parse_utc)]
    until: Option<i64>,
    /// Keep rows of this host only (live runs record it).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Keep rows of processes with this command name only (live runs record it).
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Keep rows of this Waku shard only.
    #[arg(long, value_name = "N")]
    shard: Option<u16>,
    /// Mesh degree below which a subscribed shard counts as unhealthy (nwaku's D_low).
    #[arg(long, value_name = "N", default_value_t = wakuprof::account::mesh::D_LOW)]
    d_low: u32,
    /// Captures: our side (address or address:port), as for `analyze`. Repeatable.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = super::parse_local)]
    local: Vec<LocalSpec>,
    /// Captures: aggregation window in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    window: u32,
    #[command(flatten)]
    rules: super::RuleArgs,
    #[command(flatten)]
    node: super::NodeArgs,
    /// Print nothing on stdout (with --html).
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `wakuprof report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        since_us: args.since,
        until_us: args.until,
        host: args.host.clone(),
        comm: args.comm.clone(),
        shard: args.shard,
    };
    let inputs = Inputs::sort(&args.inputs)?;
    let mut collector = Collector::new(filter);
    input::read_parquet(&inputs.parquet, &mut collector)?;
    let mut node = None;
    let mut exit = ExitCode::SUCCESS;
    if !inputs.captures.is_empty() {
        let cfg = Config {
            rules: args.rules.rules()?,
            window_secs: args.window,
            locals: args.local.clone(),
            mesh: Some(args.d_low),
            peers: args.node.peers()?,
            ..Config::default()
        };
        let mut reconciliation = args.node.reconciliation(args.node.counters()?, &cfg.peers);
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut collector];
        if let Some(r) = reconciliation.as_mut() {
            sinks.push(r);
        }
        let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = analyze::run(&inputs.captures, cfg, &mut sinks, &never, |_| {})?;
        for e in &run.input_errors {
            eprintln!("wakuprof: {e}");
            exit = ExitCode::from(super::EXIT_INPUT_ERRORS);
        }
        node = reconciliation.as_ref().map(|r| r.report());
    }
    if collector.rows() == 0 {
        eprintln!("wakuprof: no usage rows in the input pass the filters; the report is empty");
    }
    let report = collector.report(node, args.d_low);
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&report, args.d_low))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !args.quiet {
        let mut out = std::io::stdout().lock();
        match args.format {
            ReportFormat::Text => out.write_all(text::render(&report, args.d_low).as_bytes())?,
            ReportFormat::Json => {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            }
        }
        if let Some(path) = &args.html {
            writeln!(out, "\nHTML report: {}", path.display())?;
        }
        out.flush()?;
    }
    Ok(exit)
}
