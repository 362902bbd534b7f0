//! One simulation run: the network, the nodes, the publishing schedule, a capture per node,
//! wakuprof's probe measuring every node while they run (where it loads), and at the end each
//! node's truth and what wakuprof measured of it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use k256::ecdsa::{SigningKey, VerifyingKey};
use libp2p::PeerId;
use prost::Message as _;
use sha2::{Digest, Sha256};
use traffic::{
    capture::{self, CaptureSpec},
    node::{Command, Relay, Report, TopicCounts, Validator},
    relay_truth::{self, RelayTruth},
    scenario::node_name,
    transport::{Registry, Security},
    waku::WakuMessage,
};

use crate::{
    community::hex,
    fleet::Fleet,
    measure::{Measure, Probed, Session},
    net::Net,
    process::NodeConfig,
    scenario::{AttackMode, ChurnAction, Scenario, Transport},
    signed,
};

/// How long setting up (listening, connecting, meshes forming) and closing may take.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time after the last message for it and the gossip about it to spread.
const LINGER: Duration = Duration::from_secs(2);
/// Time for the last packets to reach libpcap (and the probe) after the nodes stopped.
const SETTLE: Duration = Duration::from_millis(300);

/// A message the run published.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub publisher: usize,
    pub pubsub_topic: String,
    pub content_topic: String,
    pub waku_message_bytes: usize,
    /// Gossipsub message id (sha256 of the WakuMessage), hex.
    pub id: String,
    /// Whether the attacker published it.
    pub attack: bool,
}

/// What a run leaves for the report.
pub struct Outcome {
    /// Connections as (dialer, listener) node indexes.
    pub edges: Vec<(usize, usize)>,
    pub published: Vec<Published>,
    /// Per node: per pubsub topic, gossipsub's message counts.
    pub counts: Vec<BTreeMap<String, TopicCounts>>,
    /// Per node: the ids of the processes it ran as (more than one if it restarted).
    pub pids: Vec<Vec<u32>>,
    /// (node, message id hex) of every accepted delivery.
    pub received: Vec<(usize, String)>,
    /// (node, message id hex, index of the sending node) of every rejection.
    pub rejected: Vec<(usize, String, Option<usize>)>,
    /// Every relay RPC part and delivery the nodes wrote, decoded from their own streams.
    pub truth: RelayTruth,
    /// Per node: TCP payload bytes it wrote and read, as its sockets counted.
    pub tcp_written_read: Vec<(u64, u64)>,
    /// Per node: its address and capture file.
    pub captures: Vec<(IpAddr, PathBuf)>,
    /// Per node: packets libpcap wrote and dropped.
    pub capture_stats: Vec<(u64, u32)>,
    /// Seconds from the first capture's start to the last's stop.
    pub elapsed_secs: f64,
    /// Wall-clock microseconds (the captures' clock) when publishing began and when it ended
    /// (just past a whole second), the nodes then counting their meshes and closing.
    pub publishing_us: (i64, i64),
    /// Each protected community's public key (SEC1 compressed, hex), by name.
    pub public_keys: BTreeMap<String, String>,
    /// Whether a signal cut the publishing short.
    pub stopped: bool,
    /// Which source measured the run, and why.
    pub measured_by: MeasuredBy,
    /// What the probe measured, when it measured the run (else the captures are analysed).
    pub probed: Option<Probed>,
}

/// The source that measured a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MeasuredBy {
    /// `ebpf` (wakuprof's probe, live) or `pcap` (each node's capture, after the run).
    pub source: &'static str,
    /// Why this source: the scenario's choice, or the probe's error when `auto` fell back.
    pub reason: String,
}

/// Starts the probe's session when `measure` asks for it; `auto` falls back to the captures
/// with the probe's error as the reason.
fn open_probe(
    measure: Measure,
    addrs: &[IpAddr],
    d_low: usize,
) -> anyhow::Result<(Option<Session>, MeasuredBy)> {
    let by = |source, reason: String| MeasuredBy { source, reason };
    Ok(match measure {
        Measure::Pcap => (None, by("pcap", "measure = pcap".into())),
        Measure::Probe => {
            let session = Session::start(addrs, d_low)
                .context("measure = probe: wakuprof's eBPF probe did not load")?;
            (Some(session), by("ebpf", "measure = probe".into()))
        }
        Measure::Auto => match Session::start(addrs, d_low) {
            Ok(session) => (
                Some(session),
                by("ebpf", "measure = auto: the probe loaded".into()),
            ),
            Err(e) => {
                let reason = format!("measure = auto: the probe did not load ({e})");
                tracing::warn!("{reason}; measuring each node's capture instead");
                (None, by("pcap", reason))
            }
        },
    })
}

/// A deterministic generator (splitmix64) for the topology, schedule and payloads.
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator of scenario `s`: every run of it draws the same topology and schedule.
    pub(crate) fn of(s: &Scenario) -> Rng {
        Rng(s.seed ^ 0x5741_4b55_5349_4d00)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// Each node dials the previous one (a connected chain) and `degree - 1` random others.
pub(crate) fn topology(nodes: usize, degree: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    let mut edges = Vec::new();
    for i in 1..nodes {
        pairs.insert((i - 1, i));
        edges.push((i, i - 1));
    }
    for i in 0..nodes {
        let mut tries = 0;
        let mut extra = 0;
        while extra + 1 < degree && tries < 20 * nodes {
            tries += 1;
            let j = rng.below(nodes);
            if j == i || !pairs.insert((i.min(j), i.max(j))) {
                continue;
            }
            edges.push((i, j));
            extra += 1;
        }
    }
    edges
}

/// One publish at a time offset from the start of publishing.
pub(crate) struct Event {
    pub(crate) at: f64,
    pub(crate) publisher: usize,
    pub(crate) topic: String,
    pub(crate) content_topic: String,
    size: usize,
    ephemeral: bool,
    /// How the message is signed.
    signing: Signing,
}

impl Event {
    /// The WakuMessage of this publish, stamped now, its payload drawn from `rng`, signed when
    /// its shard is protected.
    pub(crate) fn message(&self, rng: &mut Rng) -> WakuMessage {
        let mut msg = WakuMessage {
            payload: rng.bytes(self.size),
            content_topic: self.content_topic.clone(),
            version: Some(0),
            timestamp: Some(now_ns()),
            meta: None,
            rate_limit_proof: None,
            ephemeral: self.ephemeral.then_some(true),
        };
        if let Signing::Key(key) = &self.signing {
            signed::sign(key, &self.topic, &mut msg);
        }
        msg
    }
}

enum Signing {
    None,
    Key(SigningKey),
}

pub(crate) fn schedule(
    s: &Scenario,
    keys: &HashMap<String, SigningKey>,
    rng: &mut Rng,
) -> Vec<Event> {
    let mut events = Vec::new();
    for c in &s.communities {
        let topic = s.pubsub_topic(c.shard());
        for class in &c.messages {
            let per_member = (class.rate_per_min * s.duration_secs / 60.0).round() as usize;
            for member in &c.members {
                for _ in 0..per_member {
                    let spread = class.size_max.unwrap_or(class.size) - class.size;
                    events.push(Event {
                        at: rng.unit() * s.duration_secs,
                        publisher: *member,
                        topic: topic.clone(),
                        content_topic: class.content_topic.clone(),
                        size: class.size + rng.below(spread + 1),
                        ephemeral: class.ephemeral,
                        signing: keys
                            .get(&topic)
                            .map_or(Signing::None, |k| Signing::Key(k.clone())),
                    });
                }
            }
        }
    }
    if let Some(a) = &s.attacker {
        let target = s
            .communities
            .iter()
            .find(|c| c.name == a.community)
            .map(|c| c.shard())
            .unwrap_or_default();
        for _ in 0..a.messages {
            events.push(Event {
                at: rng.unit() * s.duration_secs,
                publisher: a.node,
                topic: s.pubsub_topic(target),
                content_topic: format!("/{}/1/chat/proto", a.community),
                size: a.size,
                ephemeral: false,
                signing: match a.mode {
                    AttackMode::Unsigned => Signing::None,
                    AttackMode::WrongKey => Signing::Key(signed::key_from_seed(
                        format!("{} attacker", s.seed).as_bytes(),
                    )),
                },
            });
        }
    }
    events.sort_by(|a, b| a.at.total_cmp(&b.at));
    events
}

/// What happens at a point of the publishing.
enum Step<'a> {
    Publish(&'a Event),
    /// A node that was absent dials its peers.
    Join(usize),
    /// A node closes its connections and stops (leaving, or restarting).
    Leave(usize),
    /// A restarting node starts again.
    Rejoin(usize),
}

/// The publishes and churn steps of `s` by time (seconds from the start of publishing); at the
/// same time churn goes first.
fn timeline<'a>(s: &Scenario, events: &'a [Event]) -> Vec<(f64, Step<'a>)> {
    let mut steps = Vec::new();
    for c in &s.churn {
        match c.action {
            ChurnAction::Join => steps.push((c.at_secs, Step::Join(c.node))),
            ChurnAction::Leave => steps.push((c.at_secs, Step::Leave(c.node))),
            ChurnAction::Restart => {
                steps.push((c.at_secs, Step::Leave(c.node)));
                steps.push((c.at_secs + c.down_secs, Step::Rejoin(c.node)));
            }
        }
    }
    steps.extend(events.iter().map(|e| (e.at, Step::Publish(e))));
    steps.sort_by(|a, b| {
        let publish = |s: &Step| matches!(s, Step::Publish(_));
        a.0.total_cmp(&b.0).then(publish(&a.1).cmp(&publish(&b.1)))
    });
    steps
}

/// The relay validator of every node: protected shards need their key's signature.
pub(crate) fn validator(keys: HashMap<String, VerifyingKey>) -> Validator {
    Arc::new(move |topic: &str, data: &[u8]| match keys.get(topic) {
        None => true,
        Some(key) => WakuMessage::decode(data)
            .is_ok_and(|m| signed::verify(key, topic, &m, SystemTime::now()).is_ok()),
    })
}

/// Collects the nodes' reports while the run waits for something.
pub(crate) struct Reports {
    rx: mpsc::Receiver<Report>,
    received: Vec<(usize, String)>,
    rejected: Vec<(usize, String, Option<usize>)>,
    /// Every node process's identity, with its node.
    pub(crate) peers: HashMap<PeerId, usize>,
}

impl Reports {
    /// Reports of the nodes that send into `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<Report>) -> Reports {
        Reports {
            rx,
            received: Vec::new(),
            rejected: Vec::new(),
            peers: HashMap::new(),
        }
    }

    /// Handles reports until `done` says so; fails after `timeout` or once `stop` is set.
    pub(crate) fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        stop: &AtomicBool,
        mut done: impl FnMut(&Report) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::SeqCst) {
                bail!("stopped by a signal while waiting for {what}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out waiting for {what}");
            }
            if let Some(r) = self.next(left)?
                && done(&r)
            {
                return Ok(());
            }
        }
    }

    /// Handles reports for `pause`; returns whether `stop` was set meanwhile.
    pub(crate) fn pause(&mut self, pause: Duration, stop: &AtomicBool) -> anyhow::Result<bool> {
        let deadline = Instant::now() + pause;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.next(left)?;
        }
    }

    /// The next report within `left` (at most 100 ms, so that signals are seen), noted.
    fn next(&mut self, left: Duration) -> anyhow::Result<Option<Report>> {
        match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(r) => {
                self.note(&r)?;
                Ok(Some(r))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => bail!("every node stopped"),
        }
    }

    /// Records deliveries and rejections; fails on a node's failure.
    fn note(&mut self, r: &Report) -> anyhow::Result<()> {
        match r {
            Report::Received { node, id } => self.received.push((*node, hex(id))),
            Report::Rejected { node, id, from } => {
                let sender = self.peers.get(from).copied();
                self.rejected.push((*node, hex(id), sender));
            }
            Report::Failed { node, error } => bail!("{} failed: {error}", node_name(*node)),
            _ => {}
        }
        Ok(())
    }
}

/// Runs `s`, writing one capture per node into `out`. `stop` (set by a signal) ends the
/// publishing early; what ran is still closed, captured and measured.
pub fn run(s: &Scenario, out: &Path, stop: &AtomicBool) -> anyhow::Result<Outcome> {
    let n = s.network.nodes;
    let mesh = s.gossipsub.mesh();
    let mut rng = Rng::of(s);
    let tag = std::process::id() % 100_000;
    let net = Net::create(tag, n).context("create the network namespaces")?;
    let topics = s.pubsub_topics();
    let places = net.places.clone();
    let mut keys = HashMap::new();
    let mut public_keys = BTreeMap::new();
    for c in s.communities.iter().filter(|c| c.protected) {
        let key = c.signing_key(s.seed);
        public_keys.insert(c.name.clone(), hex(&key.verifying_key().to_sec1_bytes()));
        keys.insert(s.pubsub_topic(c.shard()), key);
    }
    let verifying: BTreeMap<String, Vec<u8>> = keys
        .iter()
        .map(|(t, k)| (t.clone(), k.verifying_key().to_sec1_bytes().to_vec()))
        .collect();

    let started = Instant::now();
    let mut captures = Vec::new();
    let mut running = Vec::new();
    for (i, p) in net.places.iter().enumerate() {
        let file = out.join(format!("{}.pcap", node_name(i)));
        running.push(capture::start(CaptureSpec {
            device: p.hub_veth.clone(),
            netns: Some(net.hub.clone()),
            linktype: None,
            precision: pcap::Precision::Micro,
            filter: "tcp".into(),
            out: file.clone(),
        })?);
        captures.push((IpAddr::V4(p.addr), file));
    }
    let addrs: Vec<IpAddr> = captures.iter().map(|c| c.0).collect();
    let (session, measured_by) = open_probe(s.measure, &addrs, s.gossipsub.d_low)?;

    let registry = Registry::default();
    let (tx, rx) = mpsc::channel();
    let security = match s.transport {
        Transport::Plaintext => Security::Plaintext,
        Transport::Noise => Security::Noise,
    };
    let spec = move |i: usize| {
        let config = NodeConfig {
            index: i,
            listen_ip: IpAddr::V4(places[i].addr),
            security,
            relay: Relay::Tuned(mesh),
            topics: topics.clone(),
            keys: verifying.clone(),
        };
        (config, places[i].netns.clone())
    };
    let mut reports = Reports::new(rx);
    let mut fleet = Fleet::spawn(n, Box::new(spec), registry.clone(), tx, &mut reports, stop)?;
    let edges = topology(n, s.network.degree, &mut rng);
    let joiners: Vec<usize> = s
        .churn
        .iter()
        .filter(|c| c.action == ChurnAction::Join)
        .map(|c| c.node)
        .collect();
    let mut ready: BTreeSet<usize> = fleet
        .connect(edges.clone(), &joiners)?
        .into_iter()
        .collect();
    reports.wait("the meshes to form", STEP_TIMEOUT, stop, |r| {
        if let Report::MeshReady(i) = r {
            ready.remove(i);
        }
        ready.is_empty()
    })?;
    // Two heartbeats for the meshes to fill up towards D.
    thread::sleep(2 * s.gossipsub.mesh().heartbeat);

    let events = schedule(s, &keys, &mut rng);
    let mut topic_of = HashMap::new();
    let mut published = Vec::new();
    let publishing = Instant::now();
    let publishing_from = now_ns() / 1000;
    let mut stopped = false;
    for (at, step) in timeline(s, &events) {
        let due = publishing + Duration::from_secs_f64(at);
        if reports.pause(due.saturating_duration_since(Instant::now()), stop)? {
            stopped = true;
            break;
        }
        let e = match step {
            Step::Publish(e) if fleet.up[e.publisher] => e,
            Step::Publish(_) => continue,
            Step::Join(i) => {
                fleet.join(i)?;
                continue;
            }
            Step::Leave(i) => {
                fleet.leave(i)?;
                continue;
            }
            Step::Rejoin(i) => {
                fleet.restart(i, &mut reports, stop)?;
                continue;
            }
        };
        let data = e.message(&mut rng).encode_to_vec();
        let id = Sha256::digest(&data).to_vec();
        topic_of.insert(id.clone(), e.topic.clone());
        let attack = s.attacker.as_ref().is_some_and(|a| a.node == e.publisher)
            && keys.contains_key(&e.topic)
            && !matches!(&e.signing, Signing::Key(k) if keys.get(&e.topic) == Some(k));
        published.push(Published {
            publisher: e.publisher,
            pubsub_topic: e.topic.clone(),
            content_topic: e.content_topic.clone(),
            waku_message_bytes: data.len(),
            id: hex(&id),
            attack,
        });
        fleet.command(
            e.publisher,
            Command::Publish {
                pubsub_topic: e.topic.clone(),
                data,
            },
        )?;
    }
    let rest = Duration::from_secs_f64(s.duration_secs).saturating_sub(publishing.elapsed());
    if !stopped {
        stopped = reports.pause(rest + LINGER + to_next_second(), stop)?;
    }

    let publishing_us = (publishing_from, now_ns() / 1000);
    let closed = fleet.close(&mut reports)?;
    thread::sleep(SETTLE);
    let mut capture_stats = Vec::new();
    for r in running {
        let st = r.stop()?;
        capture_stats.push((st.packets, st.dropped));
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    let probed = session.map(|p| p.finish(&closed.pids)).transpose()?;
    drop(net);

    let sides = registry.sides();
    let truth = relay_truth::decode(&sides, node_name, &topic_of)?;
    let mut tcp_written_read = vec![(0, 0); n];
    for side in &sides {
        tcp_written_read[side.node].0 += side.written();
        tcp_written_read[side.node].1 += side.read();
    }
    Ok(Outcome {
        edges,
        published,
        counts: closed.counts,
        pids: closed.pids,
        received: reports.received,
        rejected: reports.rejected,
        truth,
        tcp_written_read,
        captures,
        capture_stats,
        elapsed_secs,
        publishing_us,
        public_keys,
        stopped,
        measured_by,
        probed,
    })
}

/// Time to just past the next whole second of the wall clock: the nodes then give their meshes
/// at the end of the profiler's last 1-second window, not up to a second later.
fn to_next_second() -> Duration {
    let into = now_ns().rem_euclid(1_000_000_000);
    Duration::from_nanos(u64::try_from(1_000_000_000 - into).unwrap_or(0))
        + Duration::from_millis(5)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
