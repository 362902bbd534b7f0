//! `traffic`: runs real rust-libp2p nodes the way Waku relays do, captures their packets with
//! libpcap and writes the ground truth the nodes themselves report (bytes per socket and
//! direction, negotiated protocols, gossipsub message counts). Needs root for capture and
//! network namespaces; `cargo xtask samples` drives it.

mod bittorrent;
mod capture;
mod host_tcp;
mod netns;
mod node;
mod relay_truth;
mod rpc;
mod scenario;
mod tap;
mod transport;
mod waku;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::List => {
            let names = scenario::SAMPLES.iter().map(|s| s.name);
            for name in names.chain(bittorrent::SAMPLES.iter().map(|s| s.name)) {
                println!("{name}");
            }
        }
        Cmd::Make { out_dir, names } => {
            for name in &names {
                let known = scenario::SAMPLES.iter().any(|s| s.name == name)
                    || bittorrent::SAMPLES.iter().any(|s| s.name == name);
                if !known {
                    bail!("unknown sample {name} (see `traffic list`)");
                }
            }
            for sample in scenario::SAMPLES {
                if names.is_empty() || names.iter().any(|n| n == sample.name) {
                    eprintln!("traffic: making {}", sample.name);
                    scenario::make(sample, &out_dir)
                        .with_context(|| format!("sample {}", sample.name))?;
                }
            }
            for sample in bittorrent::SAMPLES {
                if names.is_empty() || names.iter().any(|n| n == sample.name) {
                    eprintln!("traffic: making {}", sample.name);
                    bittorrent::make(sample, &out_dir)
                        .with_context(|| format!("sample {}", sample.name))?;
                }
            }
        }
    }
    Ok(())
}
