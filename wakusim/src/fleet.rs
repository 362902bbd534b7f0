//! The nodes of a run: spawning them, dialling the topology, churn (joining late, leaving,
//! restarting) and, at the end, closing the ones still up and collecting their counts.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{atomic::AtomicBool, mpsc},
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use traffic::{
    node::{Command, Report, TopicCounts},
    transport::Registry,
};

use crate::{
    process::{NodeConfig, NodeProcess},
    run::{Reports, STEP_TIMEOUT},
};

/// How node `i` starts: its configuration and its network namespace.
pub type SpecFn = Box<dyn Fn(usize) -> (NodeConfig, String)>;

/// The running nodes and how to start one again.
pub struct Fleet {
    spec: SpecFn,
    registry: Registry,
    tx: mpsc::Sender<Report>,
    /// The node's current process, while it runs.
    current: Vec<Option<NodeProcess>>,
    /// Processes that stopped (left or restarted), by node.
    retired: Vec<(usize, NodeProcess)>,
    /// Every process id each node ran as, in order.
    pids: Vec<Vec<u32>>,
    /// Whether the node is connected to the network.
    pub up: Vec<bool>,
    /// The current process's identity and address.
    listening: Vec<Option<(PeerId, SocketAddr)>>,
    /// Connections as (dialer, listener) node indexes.
    edges: Vec<(usize, usize)>,
}

impl Fleet {
    /// Spawns a process for each of `n` nodes (`spec(i)` says how) and waits until all listen.
    pub fn spawn(
        n: usize,
        spec: SpecFn,
        registry: Registry,
        tx: mpsc::Sender<Report>,
        reports: &mut Reports,
        stop: &AtomicBool,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            spec,
            registry,
            tx,
            current: Vec::new(),
            retired: Vec::new(),
            pids: vec![Vec::new(); n],
            up: vec![false; n],
            listening: vec![None; n],
            edges: Vec::new(),
        };
        for i in 0..n {
            let process = fleet.start(i)?;
            fleet.current.push(Some(process));
        }
        let listening = &mut fleet.listening;
        reports.wait("every node to listen", STEP_TIMEOUT, stop, |r| {
            if let Report::Listening { node, peer, addr } = r {
                listening[*node] = Some((*peer, *addr));
            }
            listening.iter().all(Option::is_some)
        })?;
        for (i, l) in fleet.listening.iter().enumerate() {
            if let Some((peer, _)) = l {
                reports.peers.insert(*peer, i);
            }
        }
        Ok(fleet)
    }

    /// Connects the nodes of `edges` that are not in `absent`; those join later. Returns the
    /// nodes with a connection now, which must report their meshes ready.
    pub fn connect(
        &mut self,
        edges: Vec<(usize, usize)>,
        absent: &[usize],
    ) -> anyhow::Result<Vec<usize>> {
        self.edges = edges;
        let n = self.up.len();
        let mut dials: Vec<Vec<Multiaddr>> = vec![Vec::new(); n];
        for (from, to) in &self.edges {
            if !absent.contains(from) && !absent.contains(to) {
                dials[*from].push(self.addr(*to)?);
            }
        }
        for (i, targets) in dials.into_iter().enumerate() {
            self.command(i, Command::Dial(targets))?;
            self.up[i] = !absent.contains(&i);
        }
        let linked = |i: &usize| {
            self.edges
                .iter()
                .any(|(a, b)| (a == i && !absent.contains(b)) || (b == i && !absent.contains(a)))
        };
        Ok((0..n)
            .filter(|i| !absent.contains(i) && linked(i))
            .collect())
    }

    /// Node `i` dials every peer of the topology that is up.
    pub fn join(&mut self, i: usize) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        for (a, b) in &self.edges {
            let other = match (*a == i, *b == i) {
                (true, _) => *b,
                (_, true) => *a,
                _ => continue,
            };
            if self.up[other] {
                targets.push(self.addr(other)?);
            }
        }
        self.command(i, Command::Dial(targets))?;
        self.up[i] = true;
        Ok(())
    }

    /// Node `i` closes its connections and stops.
    pub fn leave(&mut self, i: usize) -> anyhow::Result<()> {
        self.command(i, Command::Close)?;
        if let Some(handle) = self.current[i].take() {
            self.retired.push((i, handle));
        }
        self.up[i] = false;
        Ok(())
    }

    /// Starts a new process for node `i` (a new identity and port), waits for it to listen and
    /// has it dial its peers.
    pub fn restart(
        &mut self,
        i: usize,
        reports: &mut Reports,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        self.current[i] = Some(self.start(i)?);
        let mut listening = None;
        reports.wait("a restarted node to listen", STEP_TIMEOUT, stop, |r| {
            if let Report::Listening { node, peer, addr } = r
                && *node == i
            {
                listening = Some((*peer, *addr));
            }
            listening.is_some()
        })?;
        if let Some((peer, _)) = listening {
            reports.peers.insert(peer, i);
        }
        self.listening[i] = listening;
        self.join(i)
    }

    /// Starts a process for node `i` and notes its id.
    fn start(&mut self, i: usize) -> anyhow::Result<NodeProcess> {
        let (config, netns) = (self.spec)(i);
        let process = NodeProcess::spawn(&config, &netns, self.registry.clone(), self.tx.clone())?;
        self.pids[i].push(process.pid());
        Ok(process)
    }

    /// Sends `command` to node `i`'s current process.
    pub fn command(&self, i: usize, command: Command) -> anyhow::Result<()> {
        let process = self.current[i]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {i} is not running"))?;
        process.send(&command)
    }

    fn addr(&self, i: usize) -> anyhow::Result<Multiaddr> {
        let (peer, addr) =
            self.listening[i].ok_or_else(|| anyhow::anyhow!("node {i} does not listen"))?;
        Ok(Multiaddr::from(addr.ip())
            .with(Protocol::Tcp(addr.port()))
            .with(Protocol::P2p(peer)))
    }

    /// Has every process still running count its mesh, then closes them all (nodes that never
    /// joined included), waits until each has no connection left, and returns each node's
    /// counts summed over its processes (the mesh is that of the process up at the end, none
    /// for a node that left) and the ids of its processes.
    pub fn close(self, reports: &mut Reports) -> anyhow::Result<Closed> {
        let n = self.up.len();
        let never = AtomicBool::new(false);
        for counting in [true, false] {
            let mut pending = vec![false; n];
            for (i, handle) in self.current.iter().enumerate() {
                if let Some(h) = handle {
                    let command = if counting {
                        Command::CountMesh
                    } else {
                        Command::Close
                    };
                    h.send(&command)?;
                    pending[i] = true;
                }
            }
            let what = if counting {
                "the meshes to be counted"
            } else {
                "the connections to close"
            };
            reports.wait(what, STEP_TIMEOUT, &never, |r| {
                match r {
                    Report::MeshCounted(i) if counting => pending[*i] = false,
                    Report::Closed(i) if !counting => pending[*i] = false,
                    _ => {}
                }
                pending.iter().all(|p| !p)
            })?;
        }
        let mut counts: Vec<BTreeMap<String, TopicCounts>> = vec![BTreeMap::new(); n];
        for (i, h) in self.retired {
            add(&mut counts[i], h.join()?, false);
        }
        for (i, h) in self.current.into_iter().enumerate() {
            if let Some(h) = h {
                add(&mut counts[i], h.join()?, true);
            }
        }
        Ok(Closed {
            counts,
            pids: self.pids,
        })
    }
}

/// What the nodes leave when closed.
pub struct Closed {
    /// Per node: per pubsub topic, gossipsub's message counts.
    pub counts: Vec<BTreeMap<String, TopicCounts>>,
    /// Per node: the ids of the processes it ran as.
    pub pids: Vec<Vec<u32>>,
}

/// Adds a process's counts to its node's; `last` takes its mesh.
fn add(into: &mut BTreeMap<String, TopicCounts>, from: BTreeMap<String, TopicCounts>, last: bool) {
    for (topic, c) in from {
        let e = into.entry(topic).or_default();
        e.published += c.published;
        e.published_bytes += c.published_bytes;
        e.received += c.received;
        e.received_bytes += c.received_bytes;
        e.mesh_peers = if last { c.mesh_peers } else { 0 };
    }
}
