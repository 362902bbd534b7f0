//! The `wakusim` command line: check a scenario, or run it and print the per-node report.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use wakusim::{
    community::{self, Community, NewCommunity, NewMessage, Store},
    export,
    measure::Measure,
    runs::{self, Runs},
    scenario::Scenario,
    serve::Service,
    standalone::{self, NodeOptions},
    sweep::{self, Param},
};

/// Community bandwidth simulations: Waku relay networks of real rust-libp2p nodes, each in its
/// own network namespace, with communities on dedicated or shared shards (protected ones
/// signed and validated as nwaku does), measured per node by wakuprof (live, by its eBPF probe
/// where it loads) against the nodes' truth.
#[derive(Parser)]
#[command(name = "wakusim", version)]
struct Cli {
    /// Where communities are kept [default: $XDG_STATE_HOME/wakusim, else ~/.local/state/wakusim].
    #[arg(long, global = true, value_name = "DIR")]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario (needs root: it creates network namespaces and captures in them).
    #[command(
        after_help = "Writes node<i>.pcap (one capture per node, taken on its veth at the bridge) and report.json into --out, and prints the per-node report. wakuprof's eBPF probe measures every node while the run goes, where it loads (else wakuprof analyses each capture after the run; the report's first lines say which and why).\n\nExamples:\n  wakusim run wakusim/scenarios/demo.toml\n  wakusim run my.toml --out runs/1 --format json\n  wakusim run my.toml --measure pcap   # measure from the captures only"
    )]
    Run {
        /// The scenario file (TOML; see wakusim/scenarios/demo.toml).
        scenario: PathBuf,
        /// Directory for the captures and report.json (a temporary one when absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// What measures the nodes, overriding the scenario's `measure`: auto (wakuprof's
        /// eBPF probe, live, where it loads; else each node's capture after the run), probe
        /// (fail if it does not load) or pcap.
        #[arg(long, value_enum)]
        measure: Option<Measure>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run a scenario once per value of one parameter and tabulate per-node bandwidth by kind
    /// (needs root, as `run`).
    #[command(
        after_help = "Each run goes to <out>/<param>-<value>/ (captures and report.json, as `run` writes them). The table, one row per value, goes to <out>/sweep.csv and sweep.parquet (per-node bytes/s in + out per kind: message, ihave, iwant, idontwant, graft, prune, subscribe, other relay, non-relay; totals, the busiest node, the control share, and wakuprof's relay bytes beside the nodes' truth), the chart to sweep.svg, and everything to sweep.json.\n\nExamples:\n  wakusim sweep wakusim/scenarios/demo.toml --param nodes --values 4,8,16,32 --out sweeps/nodes\n  wakusim sweep wakusim/scenarios/mesh.toml --param d --values 4,6,8\n  wakusim sweep my.toml --param rate --values 0.5,2,10 --format json"
    )]
    Sweep {
        /// The scenario file (TOML), the base every run changes one parameter of.
        scenario: PathBuf,
        /// The parameter to vary.
        #[arg(long, value_enum)]
        param: Param,
        /// Its values, comma-separated (whole numbers except for rate).
        #[arg(long, value_name = "V1,V2,...")]
        values: String,
        /// Directory for the runs and the table (a temporary one when absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// What measures the nodes, overriding the scenario's `measure`: auto (wakuprof's
        /// eBPF probe, live, where it loads; else each node's capture after the run), probe
        /// (fail if it does not load) or pcap.
        #[arg(long, value_enum)]
        measure: Option<Measure>,
        /// How to print the table.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write a scenario out for another engine: Kubernetes manifests, or a Shadow configuration.
    #[command(
        after_help = "Writes <out>/wakusim.yaml: a ConfigMap with the scenario, a Secret with the protected communities' keys, a headless Service `wakusim` (node<i>.wakusim is node i's DNS name) and one Pod per node running `wakusim run-node` with wakuprof as a sidecar (libpcap on the pod's eth0, Parquet under /var/lib/wakusim/profiles/<pod> on its host). The image is built by wakusim/Dockerfile.\n\nWith --to shadow: <out>/shadow.yaml and a copy of the scenario; a host node<i> per node on a 1 Gbit switch runs this wakusim binary's `run-node` and Shadow writes its capture to shadow.data/hosts/node<i>/eth0.pcap, for `wakuprof analyze`.\n\nExamples:\n  wakusim export wakusim/scenarios/demo.toml --to kubernetes --out k8s/\n  kubectl apply -f k8s/wakusim.yaml\n  wakusim export wakusim/scenarios/demo.toml --to shadow --out sim/ && cd sim && shadow shadow.yaml"
    )]
    Export {
        /// The scenario file.
        scenario: PathBuf,
        /// The engine to write for.
        #[arg(long, value_enum, default_value_t = Engine::Kubernetes)]
        to: Engine,
        /// Directory for the manifests.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The container image with wakusim and wakuprof (Kubernetes).
        #[arg(long, default_value = export::IMAGE)]
        image: String,
    },
    /// Run one node of a scenario on this host (as `export`'s Pods do): listen on --port, dial
    /// the peers given, publish the node's share of the schedule, print its counts as JSON.
    #[command(
        after_help = "Every node computes the same schedule from the scenario's seed and publishes its own messages; the peers' names are retried until they resolve (a peer's name resolves once it listens).\n\nExample:\n  wakusim run-node --scenario demo.toml --index 1 --dial node0.wakusim:60000"
    )]
    RunNode {
        /// The scenario file.
        #[arg(long)]
        scenario: PathBuf,
        /// Which node of the scenario this is.
        #[arg(long)]
        index: usize,
        /// The TCP port to listen on.
        #[arg(long, default_value_t = standalone::DEFAULT_PORT)]
        port: u16,
        /// A peer to dial, host:port (repeat).
        #[arg(long, value_name = "HOST:PORT")]
        dial: Vec<String>,
        /// A directory holding each protected community's signing key (hex) in a file named
        /// for it [default: keys derived from the seed].
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
        /// A file to create once the node listens (for a readiness probe).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// Seconds between listening and dialling (for peers started at the same moment).
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        dial_delay: f64,
    },
    /// Check a scenario file and print what it describes, without running it.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Create, list and show communities (kept in the state directory).
    #[command(subcommand)]
    Community(CommunityCmd),
    /// Build a WakuMessage for a community, signed with its key when it is protected, and
    /// print it: as JSON (with the body nwaku's REST relay endpoint takes), or as protobuf hex.
    #[command(
        after_help = "Examples:\n  wakusim publish alpha --payload hello\n  wakusim publish alpha --size 2000 --format hex\n\nA signed message's timestamp is now: protected shards accept it for 5 minutes."
    )]
    Publish {
        /// The community.
        community: String,
        /// The payload as text.
        #[arg(long, group = "data")]
        payload: Option<String>,
        /// The payload as hex.
        #[arg(long, group = "data")]
        payload_hex: Option<String>,
        /// A payload of this many random bytes.
        #[arg(long, group = "data")]
        size: Option<usize>,
        /// The content topic [default: the community's first].
        #[arg(long)]
        content_topic: Option<String>,
        /// Mark the message ephemeral (stores may skip it).
        #[arg(long)]
        ephemeral: bool,
        #[arg(long, value_enum, default_value_t = MessageFormat::Json)]
        format: MessageFormat,
    },
    /// Serve the same operations over HTTP/JSON (OpenAPI document at /openapi.json).
    #[command(
        after_help = "Runs need root (network namespaces and captures); one runs at a time. Ctrl-C stops the runs, cleans up and exits.\n\nExamples:\n  wakusim serve\n  curl -s localhost:8618/communities -d '{\"name\":\"alpha\",\"shard\":128,\"protected\":true}'\n  curl -s localhost:8618/runs --data-binary @wakusim/scenarios/demo.toml"
    )]
    Serve {
        /// Address to listen on (port 0: any free port, printed on the first line).
        #[arg(long, default_value = "127.0.0.1:8618")]
        listen: SocketAddr,
        /// Where runs write their captures and report.json [default: <state>/runs].
        #[arg(long)]
        runs_dir: Option<PathBuf>,
    },
    /// Run one node of a run (started by `run`, in the node's network namespace; speaks JSON
    /// lines on stdin and stdout).
    #[command(hide = true)]
    Node,
    /// Wait until stdin ends (wakusim ended or was killed), then kill what runs in these
    /// network namespaces and delete them (started by `run` before it creates them).
    #[command(hide = true)]
    Janitor {
        /// The run's namespaces.
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CommunityCmd {
    /// Create a community: on its own shard (--shard) or the shared shard 32; a protected one
    /// gets a fresh secp256k1 key pair.
    #[command(
        after_help = "Examples:\n  wakusim community create alpha --shard 128 --protected\n  for i in $(seq 100); do wakusim community create qa$i; done   # all on shard 32"
    )]
    Create(CreateArgs),
    /// List the communities.
    List,
    /// Show a community (its public key; the private key only with --private-key).
    Show {
        name: String,
        /// Also print the signing key.
        #[arg(long)]
        private_key: bool,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// Letters, digits, '-' and '_'.
    name: String,
    /// Its own shard [default: the shared shard 32].
    #[arg(long)]
    shard: Option<u16>,
    /// Waku cluster [default: 16, Status'].
    #[arg(long)]
    cluster: Option<u16>,
    /// Protect the shard: members sign with the community's key, relays validate.
    #[arg(long)]
    protected: bool,
    /// Content topics (repeat) [default: /<name>/1/chat/proto].
    #[arg(long = "content-topic")]
    content_topics: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MessageFormat {
    /// The message, its id and nwaku's REST body, as JSON.
    Json,
    /// The WakuMessage protobuf, hex.
    Hex,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// Kubernetes manifests (a Pod per node, wakuprof as a sidecar).
    Kubernetes,
    /// A Shadow simulator configuration (a host per node, a capture per host).
    Shadow,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table per node.
    Table,
    /// The whole report as JSON (as report.json, or sweep.json for a sweep).
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

/// A fresh directory under the system's temporary one, for runs without `--out`.
fn temp_out() -> PathBuf {
    std::env::temp_dir().join(format!("wakusim-{}", std::process::id()))
}

fn print_community(c: &Community) {
    println!("name:           {}", c.name);
    println!("pubsub topic:   {}", c.pubsub_topic);
    println!("protected:      {}", c.protected);
    println!("content topics: {}", c.content_topics.join(", "));
    if let Some(key) = &c.public_key {
        println!("public key:     {key}");
    }
    if let Some(key) = &c.private_key {
        println!("private key:    {key}");
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let state = cli.state.unwrap_or_else(community::default_state_dir);
    let store = Store::new(&state);
    match cli.command {
        Cmd::Check { scenario } => {
            let mut s = Scenario::load(&scenario)?;
            store.resolve(&mut s)?;
            println!(
                "{}: {} nodes, {} communities on {}, {:?} transport, measure {:?}, {} s, {} churn events",
                scenario.display(),
                s.network.nodes,
                s.communities.len(),
                s.pubsub_topics().join(", "),
                s.transport,
                s.measure,
                s.duration_secs,
                s.churn.len()
            );
        }
        Cmd::Export {
            scenario,
            to,
            out,
            image,
        } => {
            let s = Scenario::load(&scenario)?;
            let text = std::fs::read_to_string(&scenario)?;
            match to {
                Engine::Kubernetes => {
                    let objects = export::kubernetes(&s, &text, &image)?;
                    let path = export::write(&objects, &out)?;
                    println!(
                        "{} objects ({} pods) in {}; apply with: kubectl apply -f {}",
                        objects.len(),
                        s.network.nodes,
                        path.display(),
                        path.display()
                    );
                }
                Engine::Shadow => {
                    let binary = std::env::current_exe()?;
                    let path = export::write_shadow(&s, &text, &binary, &out)?;
                    println!(
                        "{} hosts in {}; run with: shadow {}",
                        s.network.nodes,
                        path.display(),
                        path.display()
                    );
                }
            }
        }
        Cmd::RunNode {
            scenario,
            index,
            port,
            dial,
            keys,
            ready_file,
            dial_delay,
        } => {
            let mut s = Scenario::load(&scenario)?;
            store.resolve(&mut s)?;
            catch_signals();
            let options = NodeOptions {
                index,
                port,
                dial,
                keys,
                ready_file,
                dial_delay: Duration::try_from_secs_f64(dial_delay)
                    .map_err(|e| anyhow::anyhow!("--dial-delay {dial_delay}: {e}"))?,
            };
            let counts = standalone::run_node(&mut s, &options, &STOP)?;
            println!("{}", serde_json::to_string_pretty(&counts)?);
        }
        Cmd::Run {
            scenario,
            out,
            measure,
            format,
        } => {
            let mut s = Scenario::load(&scenario)?;
            store.resolve(&mut s)?;
            s.measure = measure.unwrap_or(s.measure);
            let out = out.unwrap_or_else(temp_out);
            catch_signals();
            let report = runs::execute(&s, &out, &STOP)?;
            match format {
                Format::Table => {
                    print!("{}", report.table());
                    println!("\ncaptures and report.json in {}", out.display());
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
        }
        Cmd::Sweep {
            scenario,
            param,
            values,
            out,
            measure,
            format,
        } => {
            let values = sweep::parse_values(param, &values)?;
            let mut s = Scenario::load(&scenario)?;
            store.resolve(&mut s)?;
            s.measure = measure.unwrap_or(s.measure);
            let out = out.unwrap_or_else(temp_out);
            catch_signals();
            let report = sweep::execute(&s, param, &values, &out, &STOP)?;
            match format {
                Format::Table => {
                    print!("{}", report.text());
                    println!(
                        "\ntable in {} and {}, chart in {}, runs in {}",
                        report.csv.display(),
                        report.parquet.display(),
                        report.svg.display(),
                        out.display()
                    );
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
        }
        Cmd::Community(CommunityCmd::Create(a)) => {
            let c = store.create(NewCommunity {
                name: a.name,
                shard: a.shard,
                cluster: a.cluster,
                protected: a.protected,
                content_topics: (!a.content_topics.is_empty()).then_some(a.content_topics),
            })?;
            print_community(&c);
        }
        Cmd::Community(CommunityCmd::List) => {
            for c in store.list()? {
                let guard = if c.protected { "protected" } else { "open" };
                println!("{}\t{}\t{guard}", c.name, c.pubsub_topic);
            }
        }
        Cmd::Community(CommunityCmd::Show { name, private_key }) => {
            print_community(&store.get(&name, private_key)?);
        }
        Cmd::Publish {
            community,
            payload,
            payload_hex,
            size,
            content_topic,
            ephemeral,
            format,
        } => {
            let built = store.publish(
                &community,
                NewMessage {
                    content_topic,
                    payload,
                    payload_hex,
                    size,
                    ephemeral,
                },
            )?;
            match format {
                MessageFormat::Json => println!("{}", serde_json::to_string_pretty(&built)?),
                MessageFormat::Hex => println!("{}", built.waku_message_hex),
            }
        }
        Cmd::Serve { listen, runs_dir } => {
            catch_signals();
            let service = Service {
                store,
                runs: Runs::default(),
                runs_dir: runs_dir.unwrap_or_else(|| state.join("runs")),
            };
            service.serve(listen, &STOP)?;
        }
        Cmd::Node => wakusim::process::child()?,
        Cmd::Janitor { names } => wakusim::janitor::child(&names)?,
    }
    Ok(())
}
