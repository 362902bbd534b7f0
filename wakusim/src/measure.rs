//! How a run is measured: by wakuprof's eBPF probe while the nodes run (one live session over
//! every node at once, its rows split by node), or by a capture per node analysed afterwards;
//! either way each node ends with the same [`NodeMeasure`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};
use wakuprof::{
    account::{
        mesh::MeshRow,
        messages::MessageRow,
        record::{Direction, Row},
    },
    analyze::{Analyzer, Config},
    flow::LocalSpec,
    live::{self, Filter, LiveConfig, LiveSource},
    sink::Sink,
    source::{
        pcap_file::CaptureSet,
        probe::{Probe, ProbeSizes, ProbeStats},
    },
};

/// The probe's ring buffer of samples: every packet of every node is sampled, and a sample
/// dropped when the ring is full leaves its stream undecodable from there on.
const RING_BYTES: u32 = 256 << 20;

/// Which source measures a run (`measure` in the scenario, `--measure` on the command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The probe where it loads, else the captures (the report says why).
    #[default]
    Auto,
    /// wakuprof's eBPF probe, live: a run whose probe does not load fails.
    Probe,
    /// Each node's capture, analysed when the run ends.
    Pcap,
}

impl<'de> Deserialize<'de> for Measure {
    /// As its name; anything else is an error naming the field (TOML and JSON alike).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Measure, D::Error> {
        let name = String::deserialize(d)?;
        <Measure as clap::ValueEnum>::from_str(&name, false).map_err(|_| {
            serde::de::Error::custom(format!(
                "measure: {name:?} is not one of \"auto\", \"probe\", \"pcap\""
            ))
        })
    }
}

/// What wakuprof measured of one node.
#[derive(Default)]
pub struct NodeMeasure {
    /// Usage rows of 1-second windows.
    pub rows: Vec<Row>,
    /// Mesh rows of 1-second windows, the node as the local end.
    pub mesh: Vec<MeshRow>,
    /// Per pubsub topic: relay messages sent to the node that it had been sent before.
    pub duplicates_in: BTreeMap<String, u64>,
    /// Ids of the messages sent to the node so far.
    seen_in: HashSet<[u8; 32]>,
}

impl NodeMeasure {
    /// Counts a relay message sent to the node.
    fn message_in(&mut self, m: &MessageRow) {
        let Some(topic) = &m.pubsub_topic else {
            return;
        };
        let d = self.duplicates_in.entry(topic.to_string()).or_default();
        if !self.seen_in.insert(m.message_id) {
            *d += 1;
        }
    }
}

/// wakuprof's configuration for a run: 1-second windows, mesh health against `d_low`, and the
/// relay messages (their ids give each node's duplicates).
fn config(locals: Vec<LocalSpec>, d_low: usize) -> Config {
    Config {
        window_secs: 1,
        locals,
        mesh: Some(u32::try_from(d_low).unwrap_or(u32::MAX)),
        messages: true,
        ..Config::default()
    }
}

/// Runs wakuprof's pipeline over one node's capture, the node's address as the local end.
pub fn capture(file: &Path, addr: IpAddr, d_low: usize) -> anyhow::Result<NodeMeasure> {
    let mut set = CaptureSet::open(&[file.to_path_buf()])
        .with_context(|| format!("open {}", file.display()))?;
    let mut analyzer = Analyzer::new(config(vec![LocalSpec { addr, port: None }], d_low));
    let mut node = NodeMeasure::default();
    let take = |a: &mut Analyzer, node: &mut NodeMeasure| {
        node.rows.extend(a.take_rows());
        node.mesh.extend(a.take_mesh());
        for m in a.take_messages() {
            if m.direction == Direction::In {
                node.message_in(&m);
            }
        }
    };
    set.for_each(|p, _| {
        analyzer.packet(p);
        take(&mut analyzer, &mut node);
    });
    let errors = set.take_errors();
    ensure!(
        errors.is_empty(),
        "{}: {}",
        file.display(),
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    analyzer.finish();
    node.rows.extend(analyzer.drain(usize::MAX));
    take(&mut analyzer, &mut node);
    Ok(node)
}

/// The probe's rows split by node: by the local address of the row's connection (each node
/// has its own in its namespace), else by the owning process (bytes the probe counted per
/// process, without a connection), assigned once the run knows each node's processes.
struct Split {
    nodes: Vec<NodeMeasure>,
    by_addr: HashMap<IpAddr, usize>,
    /// Rows without a local address, by owning process.
    by_pid: HashMap<u32, Vec<Row>>,
    /// The probe's drop counters at the end.
    stats: ProbeStats,
}

impl Split {
    fn node_of(&self, addr: Option<IpAddr>) -> Option<usize> {
        addr.and_then(|a| self.by_addr.get(&a).copied())
    }
}

impl Sink for Split {
    fn write(&mut self, rows: &[Row]) -> Result<(), wakuprof::Error> {
        for r in rows {
            if let Some(i) = self.node_of(r.endpoints.local_addr) {
                self.nodes[i].rows.push(r.clone());
            } else if let (None, Some(pid)) = (r.endpoints.local_addr, r.owner.pid) {
                self.by_pid.entry(pid).or_default().push(r.clone());
            }
        }
        Ok(())
    }

    fn messages(&mut self, rows: &[MessageRow]) -> Result<(), wakuprof::Error> {
        for m in rows.iter().filter(|m| m.direction == Direction::In) {
            if let Some(i) = self.node_of(m.endpoints.local_addr) {
                self.nodes[i].message_in(m);
            }
        }
        Ok(())
    }

    fn mesh(&mut self, rows: &[MeshRow]) -> Result<(), wakuprof::Error> {
        for m in rows {
            if let Some(i) = self.node_of(m.local_addr) {
                self.nodes[i].mesh.push(m.clone());
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), wakuprof::Error> {
        Ok(())
    }
}

/// What the probe measured of a run.
pub struct Probed {
    /// Per node, in node order.
    pub nodes: Vec<NodeMeasure>,
    /// The probe's drop counters (samples the ring had no room for, sockets past its map).
    pub stats: ProbeStats,
}

/// A live session of the probe on a thread of its own, measuring every node at once. Dropping
/// it stops the session, which detaches the probe.
pub struct Session {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Split, wakuprof::Error>>>,
}

impl Session {
    /// Loads and attaches the probe and starts measuring the nodes at `addrs` (node order).
    /// Fails when the probe does not load: not built in, missing capabilities, or another
    /// program already attached where it attaches.
    pub fn start(addrs: &[IpAddr], d_low: usize) -> Result<Session, wakuprof::Error> {
        // Every byte sampled: the relay streams decoded whole, not only their first 64 KiB.
        let probe = Probe::load(ProbeSizes {
            head_bytes: u32::MAX,
            ring_bytes: RING_BYTES,
            ..ProbeSizes::default()
        })?;
        let mut split = Split {
            nodes: addrs.iter().map(|_| NodeMeasure::default()).collect(),
            by_addr: addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect(),
            by_pid: HashMap::new(),
            stats: ProbeStats::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // One analysis for every node: the memory each node's analysis of its capture has.
        let analysis = Config {
            memory_budget: wakuprof::memory::DEFAULT_BUDGET.saturating_mul(addrs.len()),
            ..config(Vec::new(), d_low)
        };
        let cfg = LiveConfig {
            analysis,
            duration: None,
            filter: Filter::All,
            roll_secs: u64::MAX,
            peer_updates: None,
        };
        let thread = thread::Builder::new()
            .name("wakuprof-probe".into())
            .spawn(move || {
                let source = LiveSource::Ebpf(Box::new(probe));
                let report = live::run(source, cfg, &mut [&mut split], &flag, |_| {})?;
                split.stats = report.probe.unwrap_or_default();
                Ok(split)
            })
            .map_err(|e| wakuprof::Error::Probe(format!("start the probe's thread: {e}")))?;
        Ok(Session {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the session (the probe reads its counters a last time and detaches) and hands out
    /// each node's measure; `pids[i]` are node i's processes, for bytes counted per process.
    pub fn finish(mut self, pids: &[Vec<u32>]) -> anyhow::Result<Probed> {
        let mut split = self.stop_thread().context("the probe's live session")?;
        for (i, pids) in pids.iter().enumerate() {
            for pid in pids {
                if let (Some(rows), Some(node)) = (split.by_pid.remove(pid), split.nodes.get_mut(i))
                {
                    node.rows.extend(rows);
                }
            }
        }
        Ok(Probed {
            nodes: split.nodes,
            stats: split.stats,
        })
    }

    fn stop_thread(&mut self) -> anyhow::Result<Split> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().context("stopped already")?;
        match thread.join() {
            Ok(r) => Ok(r?),
            Err(_) => anyhow::bail!("the probe's thread panicked"),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}
