//! One rust-libp2p node set up as a Waku relay node: gossipsub on `/vac/waku/relay/2.0.0`
//! (or on `/meshsub/1.3.0` with a small mesh, for gossip and IDONTWANT), anonymous unsigned
//! messages (StrictNoSign), message id = sha256(data), plus identify and ping. Each node runs on its own thread (optionally inside a
//! network namespace) and is driven by the scenario through commands and reports.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, gossipsub, identify,
    identity::Keypair,
    multiaddr::Protocol,
    ping,
    swarm::{NetworkBehaviour, Swarm, SwarmEvent},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::{
    netns,
    transport::{self, Registry, TransportSpec},
};

/// Waku Relay's gossipsub protocol id.
pub const RELAY_PROTOCOL: &str = "/vac/waku/relay/2.0.0";

/// How long a connection may take to open (TCP, security, muxer).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the scenario asks a node to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// Dial these addresses (each ends in `/p2p/<peer id>`).
    Dial(Vec<Multiaddr>),
    /// Publish a serialized WakuMessage on a pubsub topic.
    Publish {
        /// Pubsub topic (shard).
        pubsub_topic: String,
        /// WakuMessage bytes.
        data: Vec<u8>,
    },
    /// Unsubscribe from a pubsub topic (gossipsub sends PRUNE to the mesh peers).
    Leave(String),
    /// Note each topic's mesh size in the counts (before closing: a peer that closes first
    /// would shrink it) and report [`Report::MeshCounted`].
    CountMesh,
    /// Close every connection gracefully and stop once none is left.
    Close,
}

/// What a node tells the scenario.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    /// The node listens on `addr` with identity `peer`.
    Listening {
        /// Node index.
        node: usize,
        /// The node's peer id.
        peer: PeerId,
        /// TCP listen address.
        addr: SocketAddr,
    },
    /// The node's mesh holds every other node on every topic.
    MeshReady(usize),
    /// The node received (and delivered) a message with this gossipsub id.
    Received {
        /// Node index.
        node: usize,
        /// Gossipsub message id.
        id: Vec<u8>,
    },
    /// The node's validator rejected a message (it is not delivered nor forwarded).
    Rejected {
        /// Node index.
        node: usize,
        /// Gossipsub message id.
        id: Vec<u8>,
        /// The peer that sent it.
        from: PeerId,
    },
    /// The node noted its mesh sizes ([`Command::CountMesh`]).
    MeshCounted(usize),
    /// The node has no connection left and stopped.
    Closed(usize),
    /// The node failed; the scenario stops.
    Failed {
        /// Node index.
        node: usize,
        /// The error chain.
        error: String,
    },
}

/// Per-topic message counts of one node, from gossipsub's own events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TopicCounts {
    /// Messages this node published.
    pub published: u64,
    /// Sum of the WakuMessage sizes it published.
    pub published_bytes: u64,
    /// Distinct messages gossipsub delivered to it.
    pub received: u64,
    /// Sum of the WakuMessage sizes delivered to it.
    pub received_bytes: u64,
    /// Peers in its gossipsub mesh when it was told to count them (after the publishing; left
    /// out when not counted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mesh_peers: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where and how a node runs.
pub struct NodeSpec {
    /// Node index (also its name suffix).
    pub index: usize,
    /// Address to listen on.
    pub listen_ip: IpAddr,
    /// Port to listen on (0: any free one).
    pub listen_port: u16,
    /// Network namespace to run in, if not the current one.
    pub netns: Option<String>,
    /// Security, muxer and dial source of the node's transport.
    pub transport: TransportSpec,
    /// How the node runs gossipsub.
    pub relay: Relay,
    /// How many peers each topic mesh must hold before the node reports ready.
    pub mesh_peers: usize,
    /// Pubsub topics the node subscribes to.
    pub topics: Vec<String>,
    /// Checks every received message before it is delivered and forwarded (none: all pass).
    pub validator: Option<Validator>,
}

/// Whether a message (pubsub topic, WakuMessage bytes) may be delivered and forwarded.
pub type Validator = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// Gossipsub mesh parameters: degree D, its bounds, gossip degree and heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mesh {
    /// Target mesh degree (D).
    pub d: usize,
    /// Fewest mesh peers before grafting more (D_low).
    pub d_low: usize,
    /// Most mesh peers before pruning (D_high).
    pub d_high: usize,
    /// Peers that get IHAVE gossip each heartbeat (D_lazy).
    pub d_lazy: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
}

impl Mesh {
    /// nwaku's parameters: D = 6, D_low = 4, D_high = 8, D_lazy = 6, 1 s heartbeat.
    pub const WAKU: Mesh = Mesh {
        d: 6,
        d_low: 4,
        d_high: 8,
        d_lazy: 6,
        heartbeat: Duration::from_secs(1),
    };
}

/// A running node thread.
pub struct NodeHandle {
    /// Sends commands to the node.
    pub commands: UnboundedSender<Command>,
    thread: thread::JoinHandle<anyhow::Result<BTreeMap<String, TopicCounts>>>,
}

impl NodeHandle {
    /// Waits for the node to stop and returns its per-topic counts.
    pub fn join(self) -> anyhow::Result<BTreeMap<String, TopicCounts>> {
        self.thread
            .join()
            .map_err(|_| anyhow!("node thread panicked"))?
    }
}

/// How a node runs gossipsub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relay {
    /// Waku Relay: `/vac/waku/relay/2.0.0` as gossipsub v1.1, Waku's mesh parameters, flood
    /// publishing.
    Waku,
    /// Gossipsub's own ids, of which rust-libp2p 0.57 offers `/meshsub/1.3.0` first (v1.2 with
    /// extensions; it has no setting to stop at 1.2.0): IDONTWANT is sent for messages over 1000
    /// bytes. A mesh of 2 and no flood publishing, so that messages also travel as IHAVE gossip
    /// and IWANT requests.
    Meshsub,
    /// Waku Relay with other mesh parameters.
    Tuned(Mesh),
}

impl Relay {
    /// What the ground truth says of the relay set-up.
    pub fn describe(self) -> &'static str {
        match self {
            Relay::Waku => {
                "gossipsub v1.1 on /vac/waku/relay/2.0.0 (no IDONTWANT), Waku's mesh (D = 6), flood publishing"
            }
            Relay::Tuned(_) => {
                "gossipsub v1.1 on /vac/waku/relay/2.0.0 (no IDONTWANT), mesh as configured, flood publishing"
            }
            Relay::Meshsub => {
                "gossipsub on /meshsub/1.3.0 (v1.2 with extensions: IDONTWANT for messages over 1000 bytes), mesh D = 2 (low 1, high 3), no flood publishing"
            }
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Starts a node on its own thread with a single-threaded tokio runtime.
pub fn spawn(
    spec: NodeSpec,
    registry: Registry,
    reports: mpsc::Sender<Report>,
) -> anyhow::Result<NodeHandle> {
    let (commands, receiver) = unbounded_channel();
    let thread = thread::Builder::new()
        .name(format!("node{}", spec.index))
        .spawn(move || {
            let index = spec.index;
            let result = run_thread(spec, registry, receiver, reports.clone());
            if let Err(error) = &result {
                let error = format!("{error:#}");
                let _ = reports.send(Report::Failed { node: index, error });
            }
            result
        })?;
    Ok(NodeHandle { commands, thread })
}

fn run_thread(
    spec: NodeSpec,
    registry: Registry,
    commands: UnboundedReceiver<Command>,
    reports: mpsc::Sender<Report>,
) -> anyhow::Result<BTreeMap<String, TopicCounts>> {
    if let Some(ns) = &spec.netns {
        netns::enter(ns)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(spec, registry, commands, reports))
}

fn relay_config(relay: Relay, validate: bool) -> anyhow::Result<gossipsub::Config> {
    let mut builder = gossipsub::ConfigBuilder::default();
    let mesh = match relay {
        Relay::Waku | Relay::Tuned(_) => {
            let mesh = if let Relay::Tuned(mesh) = relay {
                mesh
            } else {
                Mesh::WAKU
            };
            builder
                .protocol_id(RELAY_PROTOCOL, gossipsub::Version::V1_1)
                .mesh_n(mesh.d)
                .mesh_n_low(mesh.d_low)
                .mesh_n_high(mesh.d_high)
                // gossipsub needs it below D_low and at most D / 2; nwaku's 3 for its mesh.
                .mesh_outbound_min((mesh.d / 2).min(3).min(mesh.d_low.saturating_sub(1)))
                .flood_publish(true);
            mesh
        }
        Relay::Meshsub => {
            builder
                .mesh_n(2)
                .mesh_n_low(1)
                .mesh_n_high(3)
                .mesh_outbound_min(1)
                .flood_publish(false);
            Mesh::WAKU
        }
    };
    if validate {
        builder.validate_messages();
    }
    builder
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|m| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
        .gossip_lazy(mesh.d_lazy)
        .gossip_factor(0.25)
        .history_length(6)
        .history_gossip(3)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .heartbeat_interval(mesh.heartbeat)
        .duplicate_cache_time(Duration::from_secs(120))
        .prune_backoff(Duration::from_secs(60))
        .max_transmit_size(150 * 1024)
        .build()
        .context("gossipsub config")
}

fn behaviour(key: &Keypair, relay: Relay, validate: bool) -> anyhow::Result<Behaviour> {
    let relay = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Anonymous,
        relay_config(relay, validate)?,
    )
    .map_err(|e| anyhow!("gossipsub: {e}"))?;
    let identify = identify::Behaviour::new(
        identify::Config::new("ipfs/0.1.0".into(), key.public())
            .with_agent_version("wakuprof-traffic (rust-libp2p 0.57)".into()),
    );
    let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(1)));
    Ok(Behaviour {
        relay,
        identify,
        ping,
    })
}

fn tcp_socket_addr(addr: &Multiaddr) -> anyhow::Result<SocketAddr> {
    let mut ip = None;
    for protocol in addr {
        match protocol {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(port) => {
                return ip
                    .map(|ip| SocketAddr::new(ip, port))
                    .context("no IP before /tcp");
            }
            _ => {}
        }
    }
    bail!("{addr} is not a TCP address")
}

/// A node's state while it runs.
struct Node {
    index: usize,
    swarm: Swarm<Behaviour>,
    topics: Vec<gossipsub::IdentTopic>,
    counts: BTreeMap<String, TopicCounts>,
    validator: Option<Validator>,
    reports: mpsc::Sender<Report>,
    mesh_peers: usize,
    mesh_ready: bool,
    closing: bool,
}

/// Whether the node goes on after an event or a command.
enum Next {
    Continue,
    Stop,
}

impl Node {
    fn report(&self, report: Report) {
        // The scenario may have given up already; it then reports its own error.
        let _ = self.reports.send(report);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<Next> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let addr = tcp_socket_addr(&address)?;
                let peer = *self.swarm.local_peer_id();
                self.report(Report::Listening {
                    node: self.index,
                    peer,
                    addr,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(gossipsub::Event::Message {
                message_id,
                message,
                propagation_source,
            })) => {
                let topic = message.topic.as_str();
                ensure!(
                    self.counts.contains_key(topic),
                    "message on unexpected topic {topic}"
                );
                if let Some(valid) = &self.validator {
                    let accepted = valid(topic, &message.data);
                    let verdict = if accepted {
                        gossipsub::MessageAcceptance::Accept
                    } else {
                        gossipsub::MessageAcceptance::Reject
                    };
                    self.swarm
                        .behaviour_mut()
                        .relay
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            verdict,
                        );
                    if !accepted {
                        self.report(Report::Rejected {
                            node: self.index,
                            id: message_id.0,
                            from: propagation_source,
                        });
                        return Ok(Next::Continue);
                    }
                }
                let entry = self.counts.entry(topic.to_owned()).or_default();
                entry.received += 1;
                entry.received_bytes += message.data.len() as u64;
                self.report(Report::Received {
                    node: self.index,
                    id: message_id.0,
                });
            }
            SwarmEvent::ConnectionClosed { .. }
                if self.closing && self.swarm.connected_peers().next().is_none() =>
            {
                self.report(Report::Closed(self.index));
                return Ok(Next::Stop);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial failed: {error}"),
            SwarmEvent::IncomingConnectionError { error, .. } => {
                bail!("incoming connection failed: {error}")
            }
            _ => {}
        }
        Ok(Next::Continue)
    }

    fn on_command(&mut self, command: Command) -> anyhow::Result<Next> {
        match command {
            Command::Dial(addrs) => {
                for addr in addrs {
                    self.swarm.dial(addr)?;
                }
            }
            Command::Publish { pubsub_topic, data } => {
                let len = data.len() as u64;
                self.swarm
                    .behaviour_mut()
                    .relay
                    .publish(gossipsub::IdentTopic::new(&pubsub_topic), data)
                    .with_context(|| format!("publish on {pubsub_topic}"))?;
                let entry = self.counts.entry(pubsub_topic).or_default();
                entry.published += 1;
                entry.published_bytes += len;
            }
            Command::Leave(pubsub_topic) => {
                self.swarm
                    .behaviour_mut()
                    .relay
                    .unsubscribe(&gossipsub::IdentTopic::new(&pubsub_topic));
            }
            Command::CountMesh => {
                let relay = &self.swarm.behaviour().relay;
                for (topic, counts) in &mut self.counts {
                    let hash = gossipsub::IdentTopic::new(topic).hash();
                    counts.mesh_peers = relay.mesh_peers(&hash).count() as u64;
                }
                self.report(Report::MeshCounted(self.index));
            }
            Command::Close => {
                self.closing = true;
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                if peers.is_empty() {
                    self.report(Report::Closed(self.index));
                    return Ok(Next::Stop);
                }
                for peer in peers {
                    // Fails only for a peer that is already gone.
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
        }
        Ok(Next::Continue)
    }

    fn check_mesh(&mut self) {
        let relay = &self.swarm.behaviour().relay;
        let full =
            |t: &gossipsub::IdentTopic| relay.mesh_peers(&t.hash()).count() >= self.mesh_peers;
        if !self.mesh_ready && self.topics.iter().all(full) {
            self.mesh_ready = true;
            self.report(Report::MeshReady(self.index));
        }
    }
}

async fn run(
    spec: NodeSpec,
    registry: Registry,
    mut commands: UnboundedReceiver<Command>,
    reports: mpsc::Sender<Report>,
) -> anyhow::Result<BTreeMap<String, TopicCounts>> {
    let index = spec.index;
    let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_secp256k1())
        .with_tokio()
        .with_other_transport(|key| transport::build(key, spec.transport, index, registry))?
        .with_behaviour(|key| {
            behaviour(key, spec.relay, spec.validator.is_some()).map_err(Into::into)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        // Hundreds of connections opening at once on a few cores (100 nodes dialling 6 peers
        // each) take longer than libp2p's 10 s default to finish their handshakes.
        .with_connection_timeout(CONNECTION_TIMEOUT)
        .build();
    let topics: Vec<_> = spec.topics.iter().map(gossipsub::IdentTopic::new).collect();
    for topic in &topics {
        swarm.behaviour_mut().relay.subscribe(topic)?;
    }
    swarm.listen_on(Multiaddr::from(spec.listen_ip).with(Protocol::Tcp(spec.listen_port)))?;
    let mut node = Node {
        index,
        swarm,
        topics,
        counts: spec
            .topics
            .iter()
            .map(|t| (t.clone(), TopicCounts::default()))
            .collect(),
        validator: spec.validator,
        reports,
        mesh_peers: spec.mesh_peers,
        mesh_ready: false,
        closing: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let next = tokio::select! {
            event = node.swarm.select_next_some() => node.on_event(event)?,
            command = commands.recv() => {
                node.on_command(command.context("the scenario went away")?)?
            }
            _ = tick.tick() => {
                node.check_mesh();
                Next::Continue
            }
        };
        if let Next::Stop = next {
            return Ok(node.counts);
        }
    }
}
