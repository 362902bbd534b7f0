//! One node of a scenario run on its own, as on a host of a multi-machine deployment (see
//! `wakusim export`): it listens on a fixed port, dials its peers by name once their names
//! resolve, publishes its share of the scenario's schedule and prints its per-topic counts.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use k256::ecdsa::SigningKey;
use libp2p::{Multiaddr, multiaddr::Protocol};
use prost::Message as _;
use traffic::{
    node::{self, Command, NodeSpec, Relay, Report, TopicCounts},
    transport::{Muxer, Registry, Security, TransportSpec},
};

use crate::{
    community,
    run::{self, Reports, Rng, STEP_TIMEOUT},
    scenario::{Scenario, Transport},
};

/// The port nodes listen on when none is given.
pub const DEFAULT_PORT: u16 = 60000;
/// How long a node waits for its peers' names to resolve (they resolve once the peers listen),
/// and for the peers that dial it.
const PEERS_TIMEOUT: Duration = Duration::from_secs(300);
/// Time after the last message for it and the gossip about it to spread.
const LINGER: Duration = Duration::from_secs(5);

/// How one node of a scenario runs.
pub struct NodeOptions {
    /// The node's index in the scenario.
    pub index: usize,
    /// The port to listen on (all addresses).
    pub port: u16,
    /// The peers to dial, as `host:port`.
    pub dial: Vec<String>,
    /// A directory with one file per protected community, named for it, holding its signing
    /// key in hex (else keys derived from the seed, as in a single-host run).
    pub keys: Option<PathBuf>,
    /// A file created once the node listens (for a readiness probe).
    pub ready_file: Option<PathBuf>,
    /// Time between listening and dialling, for peers started at the same moment to listen.
    pub dial_delay: Duration,
}

/// Runs node `o.index` of `s` until its share of the publishing is done (or `stop` is set),
/// and returns its per-topic counts.
pub fn run_node(
    s: &mut Scenario,
    o: &NodeOptions,
    stop: &AtomicBool,
) -> anyhow::Result<BTreeMap<String, TopicCounts>> {
    ensure!(
        o.index < s.network.nodes,
        "--index: node {} does not exist (network.nodes = {})",
        o.index,
        s.network.nodes
    );
    if let Some(dir) = &o.keys {
        load_keys(s, dir)?;
    }
    let keys: HashMap<String, SigningKey> = s
        .communities
        .iter()
        .filter(|c| c.protected)
        .map(|c| (s.pubsub_topic(c.shard()), c.signing_key(s.seed)))
        .collect();
    let valid = run::validator(
        keys.iter()
            .map(|(t, k)| (t.clone(), *k.verifying_key()))
            .collect(),
    );
    let (tx, rx) = mpsc::channel();
    let mut reports = Reports::new(rx);
    let handle = node::spawn(
        NodeSpec {
            index: o.index,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port: o.port,
            netns: None,
            transport: TransportSpec {
                security: match s.transport {
                    Transport::Plaintext => Security::Plaintext,
                    Transport::Noise => Security::Noise,
                },
                muxer: Muxer::Yamux,
                source: None,
            },
            relay: Relay::Tuned(s.gossipsub.mesh()),
            mesh_peers: 1,
            topics: s.pubsub_topics(),
            validator: Some(valid),
        },
        Registry::default(),
        tx,
    )?;
    reports.wait("the node to listen", STEP_TIMEOUT, stop, |r| {
        matches!(r, Report::Listening { .. })
    })?;
    if let Some(file) = &o.ready_file {
        std::fs::write(file, b"listening\n")
            .with_context(|| format!("--ready-file {}", file.display()))?;
    }
    if reports.pause(o.dial_delay, stop)? {
        bail!("stopped by a signal before dialling");
    }
    let targets = o
        .dial
        .iter()
        .map(|peer| resolve(peer, stop))
        .collect::<anyhow::Result<Vec<_>>>()?;
    handle.commands.send(Command::Dial(targets))?;
    reports.wait("the meshes to form", PEERS_TIMEOUT, stop, |r| {
        matches!(r, Report::MeshReady(_))
    })?;
    thread::sleep(2 * s.gossipsub.mesh().heartbeat);

    let mut rng = Rng::of(s);
    run::topology(s.network.nodes, s.network.degree, &mut rng);
    let events = run::schedule(s, &keys, &mut rng);
    let start = Instant::now();
    for e in events.iter().filter(|e| e.publisher == o.index) {
        let due = start + Duration::from_secs_f64(e.at);
        if reports.pause(due.saturating_duration_since(Instant::now()), stop)? {
            break;
        }
        let data = e.message(&mut rng).encode_to_vec();
        handle.commands.send(Command::Publish {
            pubsub_topic: e.topic.clone(),
            data,
        })?;
    }
    let rest = Duration::from_secs_f64(s.duration_secs).saturating_sub(start.elapsed());
    reports.pause(rest + LINGER, stop)?;
    let never = AtomicBool::new(false);
    handle.commands.send(Command::CountMesh)?;
    reports.wait("the mesh to be counted", STEP_TIMEOUT, &never, |r| {
        matches!(r, Report::MeshCounted(_))
    })?;
    handle.commands.send(Command::Close)?;
    reports.wait("the connections to close", STEP_TIMEOUT, &never, |r| {
        matches!(r, Report::Closed(_))
    })?;
    handle.join()
}

/// Gives each protected community the key in `dir/<name>`.
fn load_keys(s: &mut Scenario, dir: &Path) -> anyhow::Result<()> {
    for c in s.communities.iter_mut().filter(|c| c.protected) {
        let path = dir.join(&c.name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--keys: read the key of {}", c.name))?;
        c.key = Some(community::signing_key(&c.name, text.trim())?);
    }
    Ok(())
}

/// The TCP address of `peer` (`host:port`), waiting until the name resolves.
fn resolve(peer: &str, stop: &AtomicBool) -> anyhow::Result<Multiaddr> {
    ensure!(
        peer.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        "--dial {peer}: not host:port"
    );
    let deadline = Instant::now() + PEERS_TIMEOUT;
    loop {
        // IPv4 first: the node listens on IPv4.
        let found: Option<SocketAddr> = peer
            .to_socket_addrs()
            .ok()
            .and_then(|addrs| addrs.min_by_key(SocketAddr::is_ipv6));
        if let Some(addr) = found {
            return Ok(Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port())));
        }
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            bail!(
                "--dial {peer}: the name did not resolve within {} s",
                PEERS_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_secs(1));
    }
}
