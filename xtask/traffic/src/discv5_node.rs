//! One discv5 node of the `discv5` crate, run as its own process so that the crate's
//! process-wide metrics (UDP bytes sent and received) are this node's alone. It prints its ENR
//! on the first line of stdout, waits for a line on stdin, runs lookups for random targets,
//! prints `done`, and when its stdin gives another line (or ends) prints a JSON report and exits.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, anyhow};
use clap::Args;
use discv5::{
    ConfigBuilder, Discv5, Enr, Event, ListenConfig, ProtocolIdentity,
    enr::{CombinedKey, NodeId},
};
use serde::{Deserialize, Serialize};

use crate::scenario::hex;

/// Options of `traffic discv5-node`.
#[derive(Args)]
pub struct NodeArgs {
    /// UDP address to listen on and announce in the ENR.
    #[arg(long)]
    pub addr: SocketAddrV4,
    /// Protocol id of the static header: `discv5` (Ethereum) or `d5waku` (Waku).
    #[arg(long)]
    pub protocol: String,
    /// ENR of a node to start from (added when stdin says go, so nothing is sent before).
    #[arg(long)]
    pub boot: Option<String>,
    /// Lookups to run, one every 400 ms once stdin says go.
    #[arg(long, default_value_t = 6)]
    pub lookups: u32,
}

/// What a node reports at the end: the crate's own counters.
#[derive(Serialize, Deserialize)]
pub struct NodeReport {
    pub addr: SocketAddrV4,
    pub protocol_id: String,
    pub node_id: String,
    pub enr: String,
    /// UDP payload bytes the crate sent and received (`Discv5::metrics()`).
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    /// `Event::SessionEstablished` events: one per session, on each of its two ends.
    pub sessions_established: u32,
    /// ENRs the lookups returned, summed over lookups.
    pub nodes_found: u32,
}

/// Runs the node and prints its ENR, then its report.
pub fn run(args: &NodeArgs) -> anyhow::Result<()> {
    let id: [u8; 6] = args
        .protocol
        .as_bytes()
        .try_into()
        .map_err(|_| anyhow!("protocol id must be 6 bytes"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(node(args, id))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn node(args: &NodeArgs, protocol_id: [u8; 6]) -> anyhow::Result<NodeReport> {
    let key = CombinedKey::generate_secp256k1();
    let enr = Enr::builder()
        .ip4(*args.addr.ip())
        .udp4(args.addr.port())
        .build(&key)
        .map_err(|e| anyhow!("build ENR: {e}"))?;
    let mut config = ConfigBuilder::new(ListenConfig::from_ip(
        (*args.addr.ip()).into(),
        args.addr.port(),
    ));
    config.protocol_identity(ProtocolIdentity {
        protocol_id,
        protocol_version: [0, 1],
    });
    let mut discv5 =
        Discv5::new(enr.clone(), key, config.build()).map_err(|e| anyhow!("create discv5: {e}"))?;
    discv5
        .start()
        .await
        .map_err(|e| anyhow!("start discv5: {e:?}"))?;
    println!("{}", enr.to_base64());
    let mut events = discv5
        .event_stream()
        .await
        .map_err(|e| anyhow!("event stream: {e:?}"))?;
    let mut sessions = 0;
    let mut found = 0;
    let mut count = |events: &mut tokio::sync::mpsc::Receiver<Event>| {
        while let Ok(e) = events.try_recv() {
            sessions += u32::from(matches!(e, Event::SessionEstablished(..)));
        }
    };
    wait_for_line().await?;
    if let Some(boot) = &args.boot {
        let boot: Enr = boot.parse().map_err(|e| anyhow!("boot ENR: {e}"))?;
        discv5
            .add_enr(boot)
            .map_err(|e| anyhow!("add boot ENR: {e}"))?;
    }
    for _ in 0..args.lookups {
        found += discv5
            .find_node(NodeId::random())
            .await
            .map(|v| v.len() as u32)
            .unwrap_or(0);
        count(&mut events);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    println!("done");
    wait_for_line().await?;
    count(&mut events);
    let metrics = Discv5::metrics();
    discv5.shutdown();
    Ok(NodeReport {
        addr: args.addr,
        protocol_id: args.protocol.clone(),
        node_id: hex(&enr.node_id().raw()),
        enr: enr.to_base64(),
        bytes_sent: metrics.bytes_sent as u64,
        bytes_recv: metrics.bytes_recv as u64,
        sessions_established: sessions,
        nodes_found: found,
    })
}

/// Waits for a line on stdin (or its end): the harness's signal to go on.
async fn wait_for_line() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await?
        .context("wait for a line on stdin")?;
    Ok(())
}
