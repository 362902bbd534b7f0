//! The `wakuprof` command line: subcommands over the library's pipeline.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use wakuprof::analyze::{self, Config};
use wakuprof::flow::LocalSpec;
use wakuprof::forward::records::Include;
use wakuprof::forward::{self, ForwardConfig, ForwardReport, Forwarder, Mode, replay, state};
use wakuprof::live::{self, Filter, LiveConfig, LiveSource};
use wakuprof::memory::{self, Shares};
use wakuprof::node::{self, reconcile::Reconciliation};
use wakuprof::rules::{self, Rules};
use wakuprof::sink::Sink;
use wakuprof::sink::background::Background;
use wakuprof::sink::frames::{FRAME_COLUMNS, FrameSink};
use wakuprof::sink::mesh::{MESH_COLUMNS, MeshSink};
use wakuprof::sink::messages::{MESSAGE_COLUMNS, MessageSink};
use wakuprof::sink::metrics::{self, Health, MetricsSink};
use wakuprof::sink::parquet::{COLUMNS, Column, ParquetSink, ParquetWriter, Table};
use wakuprof::sink::summary::Summary;
use wakuprof::source::caps;
use wakuprof::source::live_pcap::LiveCapture;
use wakuprof::source::probe::{Probe, ProbeSizes};

mod report_cmd;

/// Exit status when the run completed but some input was corrupt, truncated or unreadable.
const EXIT_INPUT_ERRORS: u8 = 3;
/// Exit status when some output could not be written (a full disk): the files already written
/// are complete, the summary covers all the input.
const EXIT_OUTPUT_ERRORS: u8 = 4;
/// Exit status of a run stopped by a signal: 128 + its number, as a shell reports it.
const EXIT_SIGNAL_BASE: u8 = 128;

/// Packet-level bandwidth profiler for Waku nodes: attributes every byte to a protocol, a
/// message kind and (where knowable) a shard.
#[derive(Parser)]
#[command(name = "wakuprof", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attribute the bytes of pcap/pcapng captures; write Parquet and/or print a summary.
    ///
    /// Several files are merged in time order. A corrupt or truncated file is reported with the
    /// packet number where it broke, a file that cannot be opened is skipped; everything counted
    /// is kept and written, and the exit status is 3. Output that cannot be written (a full
    /// disk) is reported; files already written stay valid, the summary is still printed, and
    /// the exit status is 4. SIGINT/SIGTERM stop reading: what was read is written and summed
    /// up, exit status 130/143. Exit status 1 means nothing could be done (no capture opens, the
    /// output directory is not writable).
    #[command(
        after_help = "Examples:\n  wakuprof analyze capture.pcap --out results/\n  wakuprof analyze a.pcap b.pcapng --format json\n  wakuprof analyze capture.pcap --local 10.0.0.5 --window 60 --out results/\n  wakuprof analyze capture.pcap --messages messages/   # one row per relay message"
    )]
    Analyze(AnalyzeArgs),
    /// Attribute this host's traffic as it happens, to processes and containers; write Parquet.
    ///
    /// With the eBPF probe (the default source), every packet is counted in the kernel per
    /// socket and credited to the process that owns the socket, ingress and ACKs included; the
    /// first 64 KiB of each TCP connection direction (and every UDP datagram) are sampled for
    /// the decoders, the rest keeps its connection's label (method `unsampled`). When the probe
    /// cannot load, wakuprof warns in one line and captures with libpcap instead, owners then
    /// read from /proc (approximate). Runs until SIGINT/SIGTERM or --duration, then writes
    /// everything. Needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (CAP_NET_RAW for pcap).
    #[command(
        after_help = "Examples:\n  sudo wakuprof live --out /var/lib/wakuprof\n  sudo wakuprof live --comm wakunode2 --window 60 --out results/\n  sudo wakuprof live --duration 300 --cgroup /system.slice/nwaku.service --out results/\n  sudo wakuprof live --source pcap --interface eth0 --out results/"
    )]
    Live(LiveArgs),
    /// Send the usage Parquet under DIR to the Status telemetry service, one window at a time
    /// (backfills, or a host that forwards later).
    ///
    /// Each window becomes a `POST /protocol-stats` (the five protocols the service knows) and a
    /// `BandwidthUsage` item of `POST /record-metrics` (the fine breakdown); see README
    /// "Telemetry". Records go through the same on-disk spool as `live --telemetry`: a replay cut
    /// short (Ctrl-C, a crash, an outage past --wait) goes on where it stopped when run again.
    /// Exit status 0: everything delivered; 2: records left in the spool; 3: the service
    /// refused some.
    #[command(
        after_help = "Examples:\n  wakuprof forward results/ --telemetry http://127.0.0.1:8080\n  wakuprof forward results/ --telemetry https://telemetry.status.im --telemetry-include processes --wait 600"
    )]
    Forward(ForwardArgs),
    /// The triage report of Parquet or captures: the headline ("relay control on shard 32 is 61 %
    /// of this node's 1.9 GB/day"), totals per day and hour, top processes, categories → kinds
    /// → shards, top peers, duplicates per shard, mesh health, what was inferred, findings.
    ///
    /// Text on stdout (or JSON); --html writes one self-contained page with charts to attach
    /// to a ticket. Exit status 3: some capture was corrupt (what was read is reported).
    #[command(
        after_help = "Examples:\n  wakuprof report results/ --html report.html\n  wakuprof report results/ mesh/ --since 2026-12-06 --until 2026-12-07 --shard 32\n  wakuprof report /var/lib/wakuprof --host node1 --comm wakunode2 --format json\n  wakuprof report capture.pcap --html report.html   # analyzed on the fly"
    )]
    Report(report_cmd::ReportArgs),
    /// Print the rule lists (discv5 ports, tree domains, RPC providers, DoH resolvers, …) as the
    /// TOML that --config takes, filled with the built-in defaults.
    #[command(
        after_help = "Example:\n  wakuprof config > wakuprof.toml   # edit, then: wakuprof analyze capture.pcap --config wakuprof.toml"
    )]
    Config,
    /// Print the columns of a Parquet table (usage, messages, frames or mesh), with their types and meaning.
    Schema {
        /// Which table.
        #[arg(long, value_enum, default_value_t = TableName::Usage)]
        table: TableName,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files (pcap or pcapng; Ethernet, Linux SLL/SLL2, BSD loopback or raw IP).
    #[arg(required = true, value_name = "CAPTURE")]
    files: Vec<PathBuf>,
    /// Write the usage table as Parquet under DIR (Hive partitions date=YYYY-MM-DD/hour=HH).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also write one row per published relay message seen (topic, content topic, sizes, ids,
    /// duplicate flag; never payloads) as Parquet under DIR, partitioned like --out.
    #[arg(long, value_name = "DIR")]
    messages: Option<PathBuf>,
    /// Also write one row per Noise transport frame and TLS record of libp2p connections (time,
    /// size, what the inference took it for) as Parquet under DIR, partitioned like --out.
    #[arg(long, value_name = "DIR")]
    frames: Option<PathBuf>,
    #[command(flatten)]
    mesh: MeshArgs,
    /// Our side of the capture: an address, or address:port ([v6]:port). Repeatable. Without it,
    /// the side that opened each flow counts as local.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_local)]
    local: Vec<LocalSpec>,
    /// Aggregation window in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    window: u32,
    /// Most flows tracked at once; past it the least recently seen tenth is retired (counted
    /// in the summary, bytes are kept).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    max_flows: u64,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Decoding threads [default: the cores available less one, for the thread that reads].
    /// Packets are shared out by host pair and the output is the same as with one. A capture
    /// whose flows share decoder state (Waku relay, discv5, DNS tree domains) or that comes near
    /// a limit is decoded again on one thread, and so is a run writing --messages, --frames or
    /// --mesh. The capture files are read on a thread of their own whenever the host has two
    /// cores or more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    #[command(flatten)]
    rules: RuleArgs,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// The mesh health table (`--mesh`).
#[derive(clap::Args)]
struct MeshArgs {
    /// Also write mesh health per window, local node and shard (peers subscribed, mesh peers,
    /// time below D_low, …; see `wakuprof schema --table mesh`) as Parquet under DIR.
    #[arg(long = "mesh", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The mesh degree below which a subscribed shard counts as unhealthy (nwaku's D_low).
    #[arg(long, value_name = "N", default_value_t = wakuprof::account::mesh::D_LOW)]
    d_low: u32,
}

impl MeshArgs {
    /// The D_low to track against, when the table is written.
    fn tracked(&self) -> Option<u32> {
        self.dir.is_some().then_some(self.d_low)
    }

    fn sink(&self) -> anyhow::Result<Option<MeshSink>> {
        Ok(match &self.dir {
            Some(dir) => Some(MeshSink::new(dir)?),
            None => None,
        })
    }
}

/// The memory bound every analysing command takes.
#[derive(clap::Args)]
struct MemoryArgs {
    /// Approximate memory the analysis may hold (K, M, G suffixes; at least 16M): flows,
    /// reassembly buffers, decoder state and rows waiting to be written, together. Past it the
    /// least recently used flows are retired early (their bytes stay counted; the summary and
    /// the metrics count them as evicted for memory). Peak RSS stays within it plus a fixed
    /// overhead (see README "Limits").
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_budget)]
    memory_budget: u64,
}

impl MemoryArgs {
    fn bytes(&self) -> usize {
        usize::try_from(self.memory_budget).unwrap_or(usize::MAX)
    }
}

/// What the Waku node says of itself: its peers' shards and its byte counters.
#[derive(clap::Args)]
struct NodeArgs {
    /// The node's peers: nwaku's admin REST API, e.g. http://127.0.0.1:8645/admin/v1/peers, or
    /// a saved answer of it. Encrypted relay bytes to a peer on one shard get that shard
    /// (method inferred); `live` re-reads it every minute.
    #[arg(long, value_name = "URL|FILE")]
    node_api: Option<String>,
    /// The node's Prometheus endpoint, e.g. http://127.0.0.1:8008/metrics, or a saved scrape:
    /// the summary sets the node's byte counters against the wire. `analyze` takes two scrapes
    /// (capture start, then end) and counts the difference, or one taken as is; `live` scrapes
    /// at its start and end.
    #[arg(long, value_name = "URL|FILE")]
    node_metrics: Vec<String>,
    /// The cluster of the peers --node-api lists (the API names their shards only).
    #[arg(long, value_name = "ID", default_value_t = 16)]
    cluster_id: u16,
}

impl NodeArgs {
    fn peers(&self) -> anyhow::Result<node::peers::PeerBook> {
        match &self.node_api {
            Some(src) => Ok(node::read_peers(src, self.cluster_id)?),
            None => Ok(node::peers::PeerBook::default()),
        }
    }

    /// The counters over the run from the scrapes given (`analyze`).
    fn counters(&self) -> anyhow::Result<Option<node::metrics::NodeCounters>> {
        match self.node_metrics.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(node::read_counters(one)?)),
            [first, last] => Ok(Some(
                node::read_counters(last)?.since(&node::read_counters(first)?),
            )),
            _ => anyhow::bail!("--node-metrics: give one scrape, or two (capture start, then end)"),
        }
    }

    /// The reconciliation sink, when the node was asked about.
    fn reconciliation(
        &self,
        counters: Option<node::metrics::NodeCounters>,
        peers: &node::peers::PeerBook,
    ) -> Option<Reconciliation> {
        (!self.node_metrics.is_empty() || self.node_api.is_some())
            .then(|| Reconciliation::new(counters, peers.clone()))
    }
}

/// The rule-list options every analysing command takes.
#[derive(clap::Args)]
struct RuleArgs {
    /// Rule lists as TOML (see `wakuprof config`); lists the file names replace the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A discv5 node id (64 hex digits, keccak256 of the node's public key): packets to it are
    /// unmasked, and the peers they name are learned. Repeatable; adds to the config's node_ids.
    #[arg(long = "node-id", value_name = "HEX", value_parser = parse_node_id)]
    node_ids: Vec<String>,
}

impl RuleArgs {
    fn rules(&self) -> anyhow::Result<Rules> {
        let mut rules = match &self.config {
            Some(path) => Rules::load(path)?,
            None => Rules::default(),
        };
        rules
            .discovery
            .node_ids
            .extend(self.node_ids.iter().cloned());
        Ok(rules)
    }
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("filter").multiple(false))]
struct LiveArgs {
    /// Write the usage table as Parquet under DIR (Hive partitions date=YYYY-MM-DD/hour=HH).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where packets come from: the eBPF probe (exact owners), libpcap (owners from /proc,
    /// approximate), or the probe with libpcap as fallback.
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    source: SourceArg,
    /// Sockets the probe counts one by one (eBPF source); packets of further sockets are
    /// counted per process, without their connection's category.
    #[arg(long, value_name = "N", default_value_t = ProbeSizes::default().sockets, value_parser = clap::value_parser!(u32).range(1..=1 << 30))]
    probe_sockets: u32,
    /// Size of the probe's ring buffer of packet samples (eBPF source; a power of two, K and M
    /// suffixes). Samples it has no room for are counted with method `unsampled`.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    probe_ring: u64,
    /// Interfaces libpcap captures on (pcap source). Repeatable.
    #[arg(long, value_name = "IFACE", default_values_t = ["any".to_string()])]
    interface: Vec<String>,
    /// Stop after SECS seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,
    /// Keep only rows of this process id.
    #[arg(long, value_name = "N", group = "filter")]
    pid: Option<u32>,
    /// Keep only rows of processes with this command name (as in /proc/PID/comm).
    #[arg(long, value_name = "NAME", group = "filter")]
    comm: Option<String>,
    /// Keep only rows of processes in this cgroup v2 (path under the hierarchy, or the full
    /// /sys/fs/cgroup/… path) and the cgroups below it.
    #[arg(long, value_name = "PATH", group = "filter")]
    cgroup: Option<String>,
    /// Aggregation window in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    window: u32,
    /// Threads of the analysis: 1 decodes on the thread that reads the probe or libpcap, leaving
    /// the host's other cores to the node; 2 decodes on a thread of its own, for a host whose
    /// traffic keeps one thread busy (the rows are the same). A live host's flows share relay
    /// state, so decoding is not shared out further.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    threads: u64,
    /// Serve Prometheus metrics on ADDR (GET /metrics); `none` turns the exporter off.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9610", value_parser = parse_metrics_addr)]
    metrics: MetricsAddr,
    /// Close the current Parquet files every SECS seconds, so they can be read while running.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    roll: u64,
    #[command(flatten)]
    mesh: MeshArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    rules: RuleArgs,
    /// Forward each window to the Status telemetry service at URL (opt-in), e.g.
    /// https://telemetry.status.im; see README "Telemetry" for what is sent.
    #[arg(long, value_name = "URL")]
    telemetry: Option<String>,
    /// At the end of the run, how long to keep sending what is spooled before leaving it for
    /// the next run.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    telemetry_drain: u64,
    #[command(flatten)]
    telemetry_opts: TelemetryOpts,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct ForwardArgs {
    /// The --out directory of `analyze` or `live` (usage Parquet, any depth).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The telemetry service's base URL, e.g. https://telemetry.status.im.
    #[arg(long, value_name = "URL")]
    telemetry: String,
    /// Stop waiting for delivery after SECS (what is unsent stays spooled for the next run).
    /// Default: wait until everything is delivered.
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
    #[command(flatten)]
    telemetry_opts: TelemetryOpts,
    #[command(flatten)]
    output: OutputArgs,
}

/// How a command reports on stdout.
#[derive(clap::Args)]
struct OutputArgs {
    /// How to print the summary (or report) on stdout at the end.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print no summary and no progress (errors still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

/// The forwarding options `live` and `forward` share.
#[derive(clap::Args)]
struct TelemetryOpts {
    /// Private fields forwarded rows may carry, comma-separated: addresses, ports,
    /// pubsub-topics, content-topics, processes. By default none leaves the host.
    #[arg(long, value_name = "LIST", default_value = "", value_parser = parse_include)]
    telemetry_include: Include,
    /// Where the random host id and the telemetry spool are kept [default: $STATE_DIRECTORY,
    /// else $XDG_STATE_HOME/wakuprof, else ~/.local/state/wakuprof].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Bound of the spool on disk (K, M, G suffixes). Live runs drop the oldest records past
    /// it, with a warning; a replay waits for room.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    telemetry_spool_max: u64,
}

impl TelemetryOpts {
    fn config(&self, url: &str) -> anyhow::Result<ForwardConfig> {
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => state::default_state_dir().context(
                "no state directory: set --state-dir (or $STATE_DIRECTORY / $XDG_STATE_HOME / $HOME)",
            )?,
        };
        Ok(ForwardConfig {
            url: url.to_string(),
            state_dir,
            include: self.telemetry_include,
            spool_bytes: self.telemetry_spool_max,
            client: forward::client::ClientConfig::default(),
        })
    }
}

fn parse_include(s: &str) -> Result<Include, String> {
    Include::parse(s)
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n >= 4096)
        .ok_or_else(|| format!("'{s}' is not a size of at least 4096 bytes (e.g. 64M, 512K, 1G)"))
}

/// A memory budget: a size of at least [`memory::MIN_BUDGET`].
fn parse_budget(s: &str) -> Result<u64, String> {
    let min = memory::MIN_BUDGET as u64;
    parse_size(s)
        .ok()
        .filter(|&n| n >= min)
        .ok_or_else(|| format!("'{s}' is not a size of at least 16M (e.g. 64M, 1G)"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    /// The eBPF probe, else libpcap with a warning.
    Auto,
    /// The eBPF probe only.
    Ebpf,
    /// libpcap only.
    Pcap,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TableName {
    /// The usage table (--out).
    Usage,
    /// The message table (--messages).
    Messages,
    /// The frames table (--frames).
    Frames,
    /// The mesh health table (--mesh).
    Mesh,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

fn parse_node_id(s: &str) -> Result<String, String> {
    rules::parse_node_id(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Where the exporter listens, if anywhere.
#[derive(Clone, Copy)]
struct MetricsAddr(Option<SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "none" {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|_| format!("'{s}' is not address:port (e.g. 127.0.0.1:9610) or none"))
}

fn parse_local(s: &str) -> Result<LocalSpec, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(LocalSpec { addr, port: None });
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(LocalSpec {
            addr: sa.ip(),
            port: Some(sa.port()),
        });
    }
    Err(format!(
        "'{s}' is not an address or address:port (examples: 10.0.0.5, 10.0.0.5:60000, ::1, [::1]:60000)"
    ))
}

fn main() -> ExitCode {
    one_heap();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAKUPROF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze_cmd(&args),
        Command::Live(args) => live_cmd(&args),
        Command::Forward(args) => forward_cmd(&args),
        Command::Report(args) => report_cmd::run(&args),
        Command::Config => {
            print!("{}", Rules::default().to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { table, format } => {
            let columns = match table {
                TableName::Usage => COLUMNS,
                TableName::Messages => MESSAGE_COLUMNS,
                TableName::Frames => FRAME_COLUMNS,
                TableName::Mesh => MESH_COLUMNS,
            };
            schema_cmd(columns, format).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wakuprof: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Decoding threads without `--threads`: one per core beside the reading thread.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Keeps every thread's allocations in one malloc arena: the Parquet writer's thread would
/// otherwise grow a heap of its own beside the main one, outside what `--memory-budget` bounds
/// (about 2 MiB more at the peak, measured on a flood of flows at a 16 MiB budget).
fn one_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn analyze_cmd(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config {
        rules: args.rules.rules()?,
        window_secs: args.window,
        locals: args.local.clone(),
        max_flows: usize::try_from(args.max_flows).unwrap_or(usize::MAX),
        memory_budget: args.memory.bytes(),
        messages: args.messages.is_some(),
        frames: args.frames.is_some(),
        mesh: args.mesh.tracked(),
        peers: args.node.peers()?,
        threads: args
            .threads
            .map_or_else(default_threads, |n| usize::try_from(n).unwrap_or(1)),
        ..Config::default()
    };
    let mut reconciliation = args.node.reconciliation(args.node.counters()?, &cfg.peers);
    let mut summary = Summary::default();
    let rows = Shares::of(cfg.memory_budget).pending_rows;
    let mut parquet = args.out.as_deref().map(ParquetSink::new).transpose()?;
    let mut messages = args.messages.as_deref().map(MessageSink::new).transpose()?;
    let mut frames = args.frames.as_deref().map(FrameSink::new).transpose()?;
    parquet.iter_mut().for_each(|w| w.limit_rows(rows));
    messages.iter_mut().for_each(|w| w.limit_rows(rows));
    frames.iter_mut().for_each(|w| w.limit_rows(rows));
    let mut parquet = in_background(parquet, rows)?;
    let mut messages = in_background(messages, rows)?;
    let mut frames = in_background(frames, rows)?;
    let (stop, signal) = stop_signal()?;
    let mut mesh = in_background(args.mesh.sink()?, rows)?;
    let bar = progress_bar(args);
    let report = {
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut summary];
        if let Some(p) = parquet.as_mut() {
            sinks.push(p);
        }
        if let Some(m) = messages.as_mut() {
            sinks.push(m);
        }
        if let Some(r) = reconciliation.as_mut() {
            sinks.push(r);
        }
        if let Some(f) = frames.as_mut() {
            sinks.push(f);
        }
        if let Some(m) = mesh.as_mut() {
            sinks.push(m);
        }
        analyze::run(&args.files, cfg, &mut sinks, &stop, |read| {
            if let Some(b) = &bar {
                b.set_position(read);
            }
        })?
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for e in &report.input_errors {
        eprintln!("wakuprof: {e}");
    }
    for e in &report.output_errors {
        eprintln!(
            "wakuprof: output incomplete: {e}; the files written before it are complete, the summary covers all the input"
        );
    }
    let signal = signal.load(std::sync::atomic::Ordering::Relaxed);
    if report.stopped {
        eprintln!(
            "wakuprof: stopped by signal {signal} after {} packets; what was read is counted and written",
            report.stats.packets
        );
    }
    if !args.output.quiet {
        let mut out = std::io::stdout().lock();
        let node = reconciliation.as_ref().map(Reconciliation::report);
        let extra = node.as_ref().map(|r| serde_json::json!({ "node": r }));
        print_summary(&mut out, &summary, &report.stats, args.output.format, extra)?;
        if let (Some(r), Format::Table) = (&node, args.output.format) {
            write!(out, "{}", r.table())?;
        }
        if args.output.format == Format::Table {
            // (line start, table name, files written, directory) of each Parquet output.
            let written = [
                ("\n", "", written_files(&parquet), &args.out),
                ("", "message ", written_files(&messages), &args.messages),
                ("", "frame ", written_files(&frames), &args.frames),
                ("", "mesh ", written_files(&mesh), &args.mesh.dir),
            ];
            for (lead, table, files, dir) in written {
                if let (Some(n), Some(dir)) = (files, dir) {
                    writeln!(
                        out,
                        "{lead}{n} {table}Parquet file(s) under {}",
                        dir.display()
                    )?;
                }
            }
        }
        out.flush()?;
    }
    Ok(if !report.output_errors.is_empty() {
        ExitCode::from(EXIT_OUTPUT_ERRORS)
    } else if report.stopped {
        ExitCode::from(EXIT_SIGNAL_BASE.saturating_add(u8::try_from(signal).unwrap_or(0)))
    } else if !report.input_errors.is_empty() {
        ExitCode::from(EXIT_INPUT_ERRORS)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs a Parquet writer on a thread of its own, `rows` being the budget's rows in flight.
fn in_background<S: Sink + Send + 'static>(
    sink: Option<S>,
    rows: usize,
) -> anyhow::Result<Option<Background<S>>> {
    Ok(sink.map(|s| Background::spawn(s, rows)).transpose()?)
}

/// The files a finished Parquet writer wrote.
fn written_files<T: Table>(writer: &Option<Background<ParquetWriter<T>>>) -> Option<usize>
where
    ParquetWriter<T>: Sink + Send,
{
    writer
        .as_ref()
        .map(|w| w.finished().map_or(0, |f| f.files.len()))
}

/// Prints the summary as a table or as JSON (with `extra` merged into the JSON document).
fn print_summary(
    out: &mut impl Write,
    summary: &Summary,
    stats: &analyze::Stats,
    format: Format,
    extra: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    match format {
        Format::Table => out.write_all(summary.table(stats).as_bytes())?,
        Format::Json => {
            let mut doc = summary.json(stats);
            if let (Some(serde_json::Value::Object(m)), serde_json::Value::Object(d)) =
                (extra, &mut doc)
            {
                d.extend(m);
            }
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// A flag set by SIGINT and SIGTERM, and the number of the signal that set it.
fn stop_signal() -> anyhow::Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    let stop = stop_flag()?;
    let which = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(signal, Arc::clone(&which), signal as usize)
            .context("cannot install the signal handlers")?;
    }
    Ok((stop, which))
}

/// A flag set by SIGINT and SIGTERM.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

fn live_cmd(args: &LiveArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag()?;
    // Every option is read before anything starts: a bad --config leaves no forwarder behind
    // (its spool opened, records sent) and no capture open.
    let rules = args.rules.rules()?;
    let filter = live_filter(args)?;
    let mut forwarder = match &args.telemetry {
        Some(url) => {
            let mut f = Forwarder::start(&args.telemetry_opts.config(url)?, Mode::Live)?;
            f.drain = Duration::from_secs(args.telemetry_drain);
            if !args.output.quiet {
                eprintln!("wakuprof: forwarding to {url} as host {}", f.host_id());
            }
            Some(f)
        }
        None => None,
    };
    let source = open_live_source(args)?;
    let name = match source {
        LiveSource::Ebpf(_) => "eBPF probe",
        LiveSource::Pcap(_) => "libpcap",
    };
    if !args.output.quiet {
        eprintln!(
            "wakuprof: live from the {name}; writing under {} (stop with Ctrl-C)",
            args.out.display()
        );
    }
    let peers = args.node.peers()?;
    let scrape = match args.node.node_metrics.as_slice() {
        [] => None,
        [url] => Some((url, node::read_counters(url)?)),
        _ => anyhow::bail!("--node-metrics: live scrapes one endpoint, at its start and end"),
    };
    let mut reconciliation = args.node.reconciliation(None, &peers);
    let cfg = LiveConfig {
        analysis: Config {
            rules,
            window_secs: args.window,
            mesh: args.mesh.tracked(),
            memory_budget: args.memory.bytes(),
            peers,
            threads: usize::try_from(args.threads).unwrap_or(1),
            ..Config::default()
        },
        duration: args.duration.map(Duration::from_secs),
        filter,
        roll_secs: args.roll,
        peer_updates: args
            .node
            .node_api
            .clone()
            .map(|src| poll_peers(src, args.node.cluster_id)),
    };
    let mut summary = Summary::default();
    let mut parquet = ParquetSink::new(&args.out)?;
    let mut mesh = args.mesh.sink()?;
    parquet.limit_rows(Shares::of(args.memory.bytes()).pending_rows);
    let registry = metrics::Shared::default();
    let mut exporter = MetricsSink {
        registry: Arc::clone(&registry),
    };
    if let MetricsAddr(Some(addr)) = args.metrics {
        let bound = metrics::serve(addr, Arc::clone(&registry))?;
        if !args.output.quiet {
            eprintln!("wakuprof: metrics on http://{bound}/metrics");
        }
    }
    let quiet = args.output.quiet;
    let mut last_status = Duration::ZERO;
    let report = {
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut summary, &mut parquet, &mut exporter];
        if let Some(f) = forwarder.as_mut() {
            sinks.push(f);
        }
        if let Some(r) = reconciliation.as_mut() {
            sinks.push(r);
        }
        if let Some(m) = mesh.as_mut() {
            sinks.push(m);
        }
        live::run(source, cfg, &mut sinks, &stop, |s| {
            registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .set_health(Health {
                    ring_drops: s.probe.ring_drops,
                    map_full: s.probe.map_full,
                    flows_evicted_idle: s.evicted_idle,
                    flows_evicted_limit: s.evicted_limit,
                    flows_evicted_memory: s.evicted_memory,
                    pcap_dropped: s.pcap_dropped,
                    processes: s.owners.saturating_sub(1) as u64,
                });
            if !quiet && s.elapsed >= last_status + LIVE_STATUS_EVERY {
                last_status = s.elapsed;
                eprintln!(
                    "wakuprof: {:>5} s  {} packets  {} bytes  {} processes",
                    s.elapsed.as_secs(),
                    s.packets,
                    s.bytes,
                    s.owners.saturating_sub(1)
                );
            }
        })?
    };
    if let Some(p) = &report.probe
        && p.ring_drops > 0
    {
        eprintln!(
            "wakuprof: {} packet samples dropped (ring buffer full); their bytes are counted with method `unsampled`",
            p.ring_drops
        );
    }
    if let Some(p) = &report.probe
        && p.map_full > 0
    {
        let unowned: u64 = p.overflow.iter().map(|o| o.1).sum();
        eprintln!(
            "wakuprof: {} packets of sockets past the probe's {} counted per process as other/unsampled ({unowned} of them with no owner known)",
            p.map_full, args.probe_sockets
        );
    }
    if report.pcap_dropped > 0 {
        eprintln!(
            "wakuprof: the kernel dropped {} packets before libpcap read them; they are not counted",
            report.pcap_dropped
        );
    }
    if !args.output.quiet {
        let mut out = std::io::stdout().lock();
        let telemetry = forwarder.as_ref().map(Forwarder::report);
        if let (Some(r), Some((url, start))) = (reconciliation.as_mut(), &scrape) {
            match node::read_counters(url) {
                Ok(end) => r.set_node(end.since(start)),
                Err(e) => eprintln!("wakuprof: the node's counters at the end: {e}"),
            }
        }
        let node = reconciliation.as_ref().map(Reconciliation::report);
        let extra = serde_json::json!({ "live": &report, "telemetry": telemetry, "node": node });
        print_summary(
            &mut out,
            &summary,
            &report.stats,
            args.output.format,
            Some(extra),
        )?;
        if args.output.format == Format::Table {
            writeln!(
                out,
                "\n{} Parquet file(s) under {}",
                parquet.files.len(),
                args.out.display()
            )?;
            if let Some(t) = telemetry {
                print_forward_report(&mut out, t)?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn forward_cmd(args: &ForwardArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag()?;
    let cfg = args.telemetry_opts.config(&args.telemetry)?;
    let mut fwd = Forwarder::start(&cfg, Mode::Replay)?;
    fwd.stop_on(Arc::clone(&stop));
    if !args.output.quiet {
        eprintln!(
            "wakuprof: forwarding {} to {} as host {} (stop with Ctrl-C; a later run goes on)",
            args.dir.display(),
            args.telemetry,
            fwd.host_id()
        );
    }
    let replay = replay::forward_dir(&args.dir, &cfg.state_dir, &mut fwd)?;
    let quiet = args.output.quiet;
    let mut last = std::time::Instant::now();
    let report = fwd.close(args.wait.map(Duration::from_secs), |f| {
        if quiet || last.elapsed() < FORWARD_STATUS_EVERY {
            return;
        }
        last = std::time::Instant::now();
        let d = f.delivery();
        let failing = d
            .failing
            .map(|r| format!(" (failing: {r})"))
            .unwrap_or_default();
        eprintln!(
            "wakuprof: {} records delivered, {} waiting{failing}",
            d.delivered,
            f.pending()
        );
    });
    if !args.output.quiet {
        let mut out = std::io::stdout().lock();
        match args.output.format {
            Format::Json => {
                let doc = serde_json::json!({ "replay": replay, "telemetry": report });
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            }
            Format::Table => {
                writeln!(
                    out,
                    "{} Parquet file(s), {} rows ({} already forwarded before)",
                    replay.files, replay.rows, replay.rows_skipped
                )?;
                print_forward_report(&mut out, &report)?;
            }
        }
        out.flush()?;
    }
    if report.left_in_spool > 0 || !replay.complete {
        eprintln!(
            "wakuprof: {} records not delivered yet stay in {}; run the same command again to send them",
            report.left_in_spool,
            cfg.state_dir.join("spool").display()
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    if report.delivery.rejected > 0 {
        return Ok(ExitCode::from(EXIT_INPUT_ERRORS));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `forward` when records are left in the spool.
const EXIT_INCOMPLETE: u8 = 2;

/// Time between two status lines of a replay.
const FORWARD_STATUS_EVERY: Duration = Duration::from_secs(5);

/// The forwarder's report as text.
fn print_forward_report(out: &mut impl Write, r: &ForwardReport) -> std::io::Result<()> {
    let d = &r.delivery;
    writeln!(
        out,
        "telemetry: {} windows ({} bytes) spooled; {} records delivered, {} refused, {} item errors; {} requests, {} retries ({} rate-limited); {} dropped at the spool bound; {} left in the spool",
        r.windows,
        r.bytes,
        d.delivered,
        d.rejected,
        d.item_errors,
        d.requests,
        d.retries,
        d.rate_limited,
        r.dropped,
        r.left_in_spool
    )
}

/// Time between two status lines of a live run.
const LIVE_STATUS_EVERY: Duration = Duration::from_secs(10);

/// The probe, libpcap, or the probe falling back to libpcap with a one-line warning.
fn open_live_source(args: &LiveArgs) -> anyhow::Result<LiveSource> {
    let pcap = || -> anyhow::Result<LiveSource> {
        caps::require(caps::PCAP)?;
        Ok(LiveSource::Pcap(LiveCapture::open(&args.interface)?))
    };
    let sizes = ProbeSizes {
        sockets: args.probe_sockets,
        ring_bytes: u32::try_from(args.probe_ring)
            .map_err(|_| anyhow::anyhow!("--probe-ring {} is over 2 GiB", args.probe_ring))?,
        ..ProbeSizes::default()
    };
    sizes.check()?;
    match args.source {
        SourceArg::Pcap => pcap(),
        SourceArg::Ebpf => Ok(LiveSource::Ebpf(Box::new(Probe::load(sizes)?))),
        SourceArg::Auto => match Probe::load(sizes) {
            Ok(p) => Ok(LiveSource::Ebpf(Box::new(p))),
            Err(e) => {
                eprintln!(
                    "wakuprof: warning: {e}; capturing with libpcap instead (process attribution from /proc, approximate)"
                );
                pcap()
            }
        },
    }
}

/// Re-reads the admin API at `source` every minute, sending each answer; a failed read is
/// logged and the last book kept.
fn poll_peers(source: String, cluster: u16) -> std::sync::mpsc::Receiver<node::peers::PeerBook> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(60));
            match node::read_peers(&source, cluster) {
                Ok(book) => {
                    if tx.send(book).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    });
    rx
}

fn live_filter(args: &LiveArgs) -> anyhow::Result<Filter> {
    if let Some(p) = args.pid {
        return Ok(Filter::Pid(p));
    }
    if let Some(c) = &args.comm {
        return Ok(Filter::Comm(c.clone()));
    }
    let Some(path) = &args.cgroup else {
        return Ok(Filter::All);
    };
    let root = wakuprof::source::probe::cgroup2_root()?;
    let rel = std::path::Path::new(path)
        .strip_prefix(&root)
        .map(|r| format!("/{}", r.display()))
        .unwrap_or_else(|_| path.clone());
    if !root.join(rel.trim_start_matches('/')).is_dir() {
        anyhow::bail!(
            "--cgroup {path}: no such cgroup under {} (see /proc/PID/cgroup for a process's)",
            root.display()
        );
    }
    Ok(Filter::Cgroup(rel))
}

/// A progress bar over the input bytes, only when stderr is a terminal and the input is large.
fn progress_bar(args: &AnalyzeArgs) -> Option<indicatif::ProgressBar> {
    const MIN_BYTES: u64 = 64 << 20;
    if args.output.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total < MIN_BYTES {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn schema_cmd(columns: &[Column], format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            writeln!(out, "{:<18} {:<20} {:<8} meaning", "column", "type", "null")?;
            for c in columns {
                let null = if c.nullable { "nullable" } else { "" };
                writeln!(
                    out,
                    "{:<18} {:<20} {:<8} {}",
                    c.name,
                    c.ty.name(),
                    null,
                    c.doc
                )?;
            }
            writeln!(
                out,
                "\nPartition columns from the directory names: date (YYYY-MM-DD), hour (00-23), UTC."
            )?;
        }
        Format::Json => {
            let cols: Vec<serde_json::Value> = columns
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "type": c.ty.name(), "nullable": c.nullable, "doc": c.doc}))
                .collect();
            serde_json::to_writer_pretty(&mut out, &cols).context("writing the schema")?;
            writeln!(out)?;
        }
    }
    Ok(())
}
