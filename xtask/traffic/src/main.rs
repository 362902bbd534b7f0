//! `traffic`: runs real rust-libp2p nodes (and js-libp2p ones, under Node) the way Waku relays do, captures their packets with
//! libpcap and writes the ground truth the nodes themselves report (bytes per socket and
//! direction, negotiated protocols, gossipsub message counts). Needs root for capture and
//! network namespaces; `cargo xtask samples` drives it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use traffic::{bittorrent, discovery, discv5_node, js_relay, scenario, services};

/// Real Waku-like traffic with ground truth, for wakuprof's sample captures.
#[derive(Parser)]
#[command(name = "traffic")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the name of every sample, one per line.
    List,
    /// Make samples: `<name>.pcap` (or `.pcapng`) and `<name>.truth.json` for each.
    Make {
        /// Directory to write into.
        #[arg(long)]
        out_dir: PathBuf,
        /// Samples to make (all when none is given).
        names: Vec<String>,
    },
    /// Run one discv5 node (used by the discovery sample; prints its ENR, `done`, a report).
    Discv5Node(discv5_node::NodeArgs),
}

/// Makes one sample into a directory.
type Maker = Box<dyn Fn(&Path) -> anyhow::Result<()>>;

/// Every sample, in the order they are made: its name and its maker.
fn samples() -> Vec<(&'static str, Maker)> {
    let mut all: Vec<(&'static str, Maker)> = Vec::new();
    for s in scenario::SAMPLES {
        all.push((s.name, Box::new(move |dir: &Path| scenario::make(s, dir))));
    }
    for s in bittorrent::SAMPLES {
        all.push((s.name, Box::new(move |dir: &Path| bittorrent::make(s, dir))));
    }
    for s in js_relay::SAMPLES {
        all.push((s.name, Box::new(move |dir: &Path| js_relay::make(s, dir))));
    }
    all.push((discovery::SAMPLE, Box::new(discovery::make)));
    all.push((services::SAMPLE, Box::new(services::make)));
    all
}

fn main() -> anyhow::Result<()> {
    let samples = samples();
    match Cli::parse().command {
        Cmd::List => {
            for (name, _) in &samples {
                println!("{name}");
            }
        }
        Cmd::Discv5Node(args) => discv5_node::run(&args)?,
        Cmd::Make { out_dir, names } => {
            for name in &names {
                if !samples.iter().any(|(n, _)| n == name) {
                    bail!("unknown sample {name} (see `traffic list`)");
                }
            }
            for (name, make) in &samples {
                if names.is_empty() || names.iter().any(|n| n == name) {
                    eprintln!("traffic: making {name}");
                    make(&out_dir).with_context(|| format!("sample {name}"))?;
                }
            }
        }
    }
    Ok(())
}
