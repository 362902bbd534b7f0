//! The samples of the JavaScript stacks: js-libp2p nodes set up as js-waku sets up its relay
//! (`xtask/js/relay.mjs`, pinned npm packages installed with `npm ci`), run by Node in a network
//! namespace of their own whose loopback libpcap captures. The nodes report what they wrote into
//! and read from each socket, the plaintext their Noise or TLS layer carried, and every muxed
//! stream's bytes; the relay parts are decoded from those as for the rust-libp2p samples.

use std::{
    collections::HashMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use pcap::Precision;
use serde::{Deserialize, Serialize};

use crate::{
    capture::{self, CaptureSpec},
    netns::Namespaces,
    node::{RELAY_PROTOCOL, TopicCounts},
    relay_truth,
    scenario::{
        self, ConnTruth, MESSAGE_ID, MessageTruth, NodeTruth, RelayTruth, TopicTruth, Truth,
        VALIDATION_MODE, node_name,
    },
    tap::StreamRecord,
    transport::{Muxer, Registry, ReportedSide},
    truth::{CaptureTruth, Head},
    waku::{self, Planned, RLN_PROOF_LEN},
};

/// The namespace the JS nodes run and are captured in.
const NETNS: &str = "wkp-js";

/// How the nodes reach each other.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsTransport {
    /// `@libp2p/tcp`.
    Tcp,
    /// `@libp2p/websockets` (`/ws`), as js-waku; nwaku listens for it on port 8000.
    Ws,
    /// `@libp2p/websockets` over TLS (`/tls/ws`, wss), as js-waku in browsers; a throwaway
    /// self-signed certificate made by openssl for the run.
    Wss,
}

/// The connection encrypter.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsSecurity {
    /// `@chainsafe/libp2p-noise` (`/noise`).
    Noise,
    /// `@libp2p/tls` (`/tls/1.0.0`), the muxer chosen by ALPN.
    Tls,
}

/// Gossipsub's mesh degree, its low and high water marks.
#[derive(Clone, Copy, Serialize)]
pub struct Mesh {
    pub d: u32,
    pub d_low: u32,
    pub d_high: u32,
}

/// What a sample is for when the inference is fitted on some samples and measured on others.
#[derive(Clone, Copy)]
pub enum Role {
    /// Used to fit (or tune) a model.
    Fit,
    /// Held out: a model is measured on it, never fitted.
    Measure,
}

/// One capture of the JS stacks and how to make it.
pub struct JsSample {
    /// Base name of the files in samples/js/.
    pub name: &'static str,
    /// Who runs the stack, for the description (js-waku's stack or plain js-libp2p).
    pub stack: &'static str,
    pub transport: JsTransport,
    pub security: JsSecurity,
    pub muxer: Muxer,
    /// Nodes, node `i` on 127.0.0.`i+1`.
    pub nodes: usize,
    /// Who dials whom (dialer, listener); a late joiner's links are dialed last.
    pub links: &'static [(usize, usize)],
    /// Whether the last node connects only after every message was published.
    pub late_joiner: bool,
    /// A topic node0 leaves after the messages.
    pub leave: Option<&'static str>,
    pub mesh: Mesh,
    pub heartbeat_ms: u32,
    pub flood_publish: bool,
    /// Pause after each message.
    pub gap_ms: u32,
    /// Idle time after the messages (heartbeats, gossip, pings).
    pub linger_ms: u32,
    pub plan: &'static [Planned],
    pub role: Role,
    /// Relay kinds the scenario must produce.
    pub must_show: &'static [&'static str],
}

/// Every pair of nodes 0..4 (node 4, the late joiner, dials the others).
const FULL_5: &[(usize, usize)] = &[
    (0, 1),
    (0, 2),
    (0, 3),
    (1, 2),
    (1, 3),
    (2, 3),
    (4, 0),
    (4, 1),
    (4, 2),
    (4, 3),
];

/// A ring of four, and a late joiner dialing two of them.
const RING_4_LATE: &[(usize, usize)] = &[(0, 1), (1, 2), (2, 3), (3, 0), (4, 1), (4, 3)];

/// A ring of three, and a late joiner dialing two of them.
const RING_3_LATE: &[(usize, usize)] = &[(0, 1), (1, 2), (2, 0), (3, 0), (3, 2)];

/// A line of four, and a late joiner dialing both ends.
const LINE_4_LATE: &[(usize, usize)] = &[(0, 1), (1, 2), (2, 3), (4, 0), (4, 3)];

/// The wss sample's size mix: small chat, a few KiB, one over the 16 KiB TLS record limit.
const WSS_PLAN: &[Planned] = &[
    waku::planned(0, waku::SHARD_32, 150),
    waku::with(waku::planned(1, waku::SHARD_64, 2500), true, true),
    waku::planned(2, waku::SHARD_32, 20 * 1024),
    waku::planned(0, waku::SHARD_64, 600),
    waku::with(waku::planned(1, waku::SHARD_32, 4000), false, true),
    waku::planned(2, waku::SHARD_64, 90),
];

/// The held-out wss size mix: tiny chat, messages just under and over the 16 KiB TLS record and
/// over the 125-byte and 64 KiB WebSocket length forms, meta and RLN proofs.
const WSS_MEASURE_PLAN: &[Planned] = &[
    waku::planned(3, waku::SHARD_64, 40),
    waku::with(
        waku::planned(0, waku::SHARD_32, 16 * 1024 - 150),
        false,
        true,
    ),
    waku::planned(1, waku::SHARD_32, 600),
    waku::planned(2, waku::SHARD_64, 66 * 1024),
    waku::with(waku::planned(3, waku::SHARD_32, 200), true, false),
    waku::planned(0, waku::SHARD_64, 9000),
    waku::with(waku::planned(1, waku::SHARD_64, 3000), true, true),
];

/// The size mix the fit samples publish: small chat, a few KiB, tens of KiB; meta, RLN proofs.
const FIT_PLAN: &[Planned] = &[
    waku::planned(0, waku::SHARD_32, 100),
    waku::planned(0, waku::SHARD_32, 1024),
    waku::planned(1, waku::SHARD_64, 10 * 1024),
    waku::with(waku::planned(1, waku::SHARD_32, 300), true, false),
    waku::planned(2, waku::SHARD_32, 30 * 1024),
    waku::with(waku::planned(2, waku::SHARD_64, 2000), false, true),
    waku::planned(3, waku::SHARD_64, 100),
    waku::with(waku::planned(3, waku::SHARD_32, 5000), true, true),
    waku::planned(0, waku::SHARD_64, 700),
    waku::planned(1, waku::SHARD_32, 1024),
];

/// The held-out size mix: messages near and over the 16 KiB and 64 KiB boundaries of the
/// framing layers, and tiny ones.
const MEASURE_PLAN: &[Planned] = &[
    waku::planned(0, waku::SHARD_64, 64),
    waku::with(waku::planned(1, waku::SHARD_32, 16 * 1024 - 60), true, true),
    waku::planned(2, waku::SHARD_32, 16 * 1024),
    waku::planned(3, waku::SHARD_64, 70 * 1024),
    waku::with(waku::planned(0, waku::SHARD_32, 500), false, true),
    waku::planned(1, waku::SHARD_64, 3000),
    waku::with(waku::planned(2, waku::SHARD_64, 120), true, false),
    waku::planned(3, waku::SHARD_32, 8000),
];

/// The scenario the fit samples share: 5 nodes, a mesh of 2, a late joiner and a topic left.
const FIT: JsSample = JsSample {
    name: "",
    stack: "js-libp2p",
    transport: JsTransport::Tcp,
    security: JsSecurity::Noise,
    muxer: Muxer::Yamux,
    nodes: 5,
    links: FULL_5,
    late_joiner: true,
    leave: Some(waku::SHARD_64),
    mesh: Mesh {
        d: 2,
        d_low: 1,
        d_high: 3,
    },
    heartbeat_ms: 700,
    flood_publish: true,
    gap_ms: 0,
    linger_ms: 1500,
    plan: FIT_PLAN,
    role: Role::Fit,
    must_show: &[
        "message",
        "subscribe",
        "ihave",
        "iwant",
        "graft",
        "prune",
        "framing",
    ],
};

/// Every JS sample `cargo xtask samples` makes.
pub const SAMPLES: &[JsSample] = &[
    JsSample {
        name: "js-waku-ws-noise-mplex",
        stack: "js-waku's stack (the libp2p, Noise, mplex, WebSocket, identify and ping versions \
                @waku/sdk 0.0.36 pins)",
        transport: JsTransport::Ws,
        muxer: Muxer::Mplex,
        ..FIT
    },
    JsSample {
        name: "js-waku-wss-noise-mplex",
        stack: "js-waku's stack (the libp2p, Noise, mplex, WebSocket, identify and ping versions \
                @waku/sdk 0.0.36 pins)",
        transport: JsTransport::Wss,
        muxer: Muxer::Mplex,
        nodes: 4,
        links: RING_3_LATE,
        leave: None,
        plan: WSS_PLAN,
        must_show: &["message", "subscribe", "ihave", "iwant", "graft", "framing"],
        ..FIT
    },
    JsSample {
        name: "js-waku-wss-noise-mplex-measure",
        stack: "js-waku's stack (the libp2p, Noise, mplex, WebSocket, identify and ping versions \
                @waku/sdk 0.0.36 pins)",
        transport: JsTransport::Wss,
        muxer: Muxer::Mplex,
        links: LINE_4_LATE,
        leave: None,
        mesh: Mesh {
            d: 1,
            d_low: 1,
            d_high: 2,
        },
        heartbeat_ms: 1000,
        flood_publish: false,
        gap_ms: 150,
        linger_ms: 3000,
        plan: WSS_MEASURE_PLAN,
        role: Role::Measure,
        must_show: &["message", "subscribe", "ihave", "iwant", "graft", "framing"],
        ..FIT
    },
    JsSample {
        name: "js-libp2p-noise-yamux",
        ..FIT
    },
    JsSample {
        name: "js-libp2p-tls-yamux",
        security: JsSecurity::Tls,
        ..FIT
    },
    JsSample {
        name: "js-libp2p-noise-yamux-measure",
        links: RING_4_LATE,
        leave: None,
        mesh: Mesh {
            d: 1,
            d_low: 1,
            d_high: 2,
        },
        heartbeat_ms: 1000,
        flood_publish: false,
        gap_ms: 100,
        linger_ms: 4000,
        plan: MEASURE_PLAN,
        role: Role::Measure,
        must_show: &["message", "subscribe", "ihave", "iwant", "graft", "framing"],
        ..FIT
    },
];

/// What relay.mjs reads.
#[derive(Serialize)]
struct Config<'a> {
    transport: JsTransport,
    security: JsSecurity,
    muxer: &'static str,
    hosts: Vec<String>,
    links: &'a [(usize, usize)],
    late_joiner: bool,
    leave: Option<&'a str>,
    topics: [&'static str; 2],
    mesh: Mesh,
    heartbeat_ms: u32,
    flood_publish: bool,
    gap_ms: u32,
    linger_ms: u32,
    plan: Vec<PlanEntry<'a>>,
}

#[derive(Serialize)]
struct PlanEntry<'a> {
    publisher: usize,
    pubsub_topic: &'a str,
    content_topic: &'a str,
    payload_len: usize,
    meta: bool,
    ephemeral: bool,
    rln_proof_len: usize,
}

/// What relay.mjs reports.
#[derive(Deserialize)]
struct Report {
    versions: HashMap<String, String>,
    nodes: Vec<ReportNode>,
    sides: Vec<Side>,
    topics: Vec<ReportTopic>,
    messages: Vec<ReportMessage>,
}

#[derive(Deserialize)]
struct ReportNode {
    name: String,
    peer_id: String,
    listen: SocketAddr,
}

#[derive(Deserialize)]
struct Side {
    node: usize,
    dialer: bool,
    local: SocketAddr,
    remote: SocketAddr,
    security: String,
    muxer: String,
    bytes_written: u64,
    bytes_read: u64,
    plaintext_written: u64,
    plaintext_read: u64,
    streams: Vec<ReportStream>,
}

#[derive(Deserialize)]
struct ReportStream {
    outbound: bool,
    id: String,
    written: String,
    read: String,
}

#[derive(Deserialize)]
struct ReportTopic {
    node: String,
    pubsub_topic: String,
    #[serde(flatten)]
    counts: TopicCounts,
}

#[derive(Deserialize)]
struct ReportMessage {
    publisher: String,
    pubsub_topic: String,
    content_topic: String,
    payload_bytes: usize,
    waku_message_bytes: usize,
    message_id: String,
    received_by: usize,
}

/// A connection of the truth with what the security layers carried: the plaintext each side's
/// Noise or TLS layer took from its muxer, and what the other side's layer decrypted.
#[derive(Serialize)]
struct JsConnTruth {
    #[serde(flatten)]
    conn: ConnTruth,
    transport: &'static str,
    plaintext_dialer_to_listener: u64,
    plaintext_listener_to_dialer: u64,
    plaintext_read_by_listener: u64,
    plaintext_read_by_dialer: u64,
}

/// The directory of the JS project (package.json, package-lock.json, relay.mjs).
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../js")
}

/// Installs the pinned npm packages (`npm ci`) unless node_modules matches the lockfile.
fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = match (
        fs::metadata(&installed),
        fs::metadata(dir.join("package-lock.json")),
    ) {
        (Ok(i), Ok(l)) => i.modified()? >= l.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .context("run npm (Debian packages nodejs and npm)")?;
    ensure!(status.success(), "npm ci failed: {status}");
    Ok(())
}

fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2), "odd-length hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("hex digit"))
        .collect()
}

/// Runs the sample's nodes and writes `<name>.pcap` and `<name>.truth.json` into `out_dir`.
pub fn make(sample: &JsSample, out_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out_dir)?;
    let js = js_dir();
    npm_ci(&js)?;
    let hosts: Vec<String> = (1..=sample.nodes).map(|i| format!("127.0.0.{i}")).collect();
    let config = Config {
        transport: sample.transport,
        security: sample.security,
        muxer: match sample.muxer {
            Muxer::Yamux => "yamux",
            Muxer::Mplex => "mplex",
        },
        hosts,
        links: sample.links,
        late_joiner: sample.late_joiner,
        leave: sample.leave,
        topics: waku::TOPICS,
        mesh: sample.mesh,
        heartbeat_ms: sample.heartbeat_ms,
        flood_publish: sample.flood_publish,
        gap_ms: sample.gap_ms,
        linger_ms: sample.linger_ms,
        plan: sample
            .plan
            .iter()
            .map(|p| PlanEntry {
                publisher: p.publisher,
                pubsub_topic: p.pubsub_topic,
                content_topic: p.content_topic,
                payload_len: p.payload_len,
                meta: p.meta,
                ephemeral: p.ephemeral,
                rln_proof_len: if p.rln { RLN_PROOF_LEN } else { 0 },
            })
            .collect(),
    };
    let work = tempfile_dir(out_dir, sample.name)?;
    let config_path = work.join("config.json");
    let report_path = work.join("report.json");
    fs::write(&config_path, serde_json::to_vec(&config)?)?;

    let _ns = Namespaces::create(&[NETNS])?;
    let filter = "tcp";
    let pcap = out_dir.join(format!("{}.pcap", sample.name));
    let running = capture::start(CaptureSpec::loopback(NETNS, filter, pcap))?;
    let status = Command::new("ip")
        .args(["netns", "exec", NETNS, "node"])
        .arg(js.join("relay.mjs"))
        .arg(&config_path)
        .arg(&report_path)
        .status()
        .context("run node (Debian package nodejs)")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stats = running.stop()?;
    ensure!(status.success(), "relay.mjs failed: {status}");
    ensure!(
        stats.dropped == 0 && stats.if_dropped == 0,
        "libpcap dropped packets ({} + {} on the interface)",
        stats.dropped,
        stats.if_dropped
    );
    let report: Report = serde_json::from_slice(&fs::read(&report_path)?)
        .with_context(|| format!("read {}", report_path.display()))?;
    fs::remove_dir_all(&work)?;

    check_streams(&report.sides)?;
    let registry = Registry::default();
    for side in &report.sides {
        let streams = side
            .streams
            .iter()
            .map(|s| {
                Ok(StreamRecord::recorded(
                    s.outbound,
                    STANDARD.decode(&s.written)?,
                    STANDARD.decode(&s.read)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        registry.add_reported(ReportedSide {
            node: side.node,
            dialer: side.dialer,
            local: side.local,
            remote: side.remote,
            written: side.bytes_written,
            read: side.bytes_read,
            security: side.security.clone(),
            muxer: side.muxer.clone(),
            streams,
        });
    }
    let sides = registry.sides();
    let mut topic_of = HashMap::new();
    for m in &report.messages {
        topic_of.insert(decode_hex(&m.message_id)?, m.pubsub_topic.clone());
    }
    let relay = relay_truth::decode(&sides, node_name, &topic_of)?;
    let shown = relay.entries_by_kind();
    for kind in sample.must_show {
        ensure!(
            shown.get(kind).copied().unwrap_or(0) > 0,
            "the nodes sent no {kind} (relay entries by kind: {shown:?})"
        );
    }
    let connections = scenario::connections(&sides)?
        .into_iter()
        .map(|conn| with_plaintext(conn, &report.sides, sample.transport))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let v = |pkg: &str| report.versions.get(pkg).cloned().unwrap_or_default();
    let transport = match sample.transport {
        JsTransport::Tcp => format!("@libp2p/tcp {}", v("@libp2p/tcp")),
        JsTransport::Ws => format!("@libp2p/websockets {} (/ws)", v("@libp2p/websockets")),
        JsTransport::Wss => format!(
            "@libp2p/websockets {} (/tls/ws, Node's TLS with a self-signed certificate)",
            v("@libp2p/websockets")
        ),
    };
    let security = match sample.security {
        JsSecurity::Noise => format!(
            "@chainsafe/libp2p-noise {} (/noise)",
            v("@chainsafe/libp2p-noise")
        ),
        JsSecurity::Tls => format!(
            "@libp2p/tls {} (/tls/1.0.0, muxer by ALPN)",
            v("@libp2p/tls")
        ),
    };
    let muxer = match sample.muxer {
        Muxer::Yamux => format!("@chainsafe/libp2p-yamux {}", v("@chainsafe/libp2p-yamux")),
        Muxer::Mplex => format!("@libp2p/mplex {}", v("@libp2p/mplex")),
    };
    let gossipsub = format!(
        "@chainsafe/libp2p-gossipsub {} on {RELAY_PROTOCOL} only (as js-waku), mesh D = {} (low {}, \
         high {}), heartbeat {} ms, {}",
        v("@chainsafe/libp2p-gossipsub"),
        sample.mesh.d,
        sample.mesh.d_low,
        sample.mesh.d_high,
        sample.heartbeat_ms,
        if sample.flood_publish {
            "flood publishing"
        } else {
            "no flood publishing"
        }
    );
    let count = sample.nodes;
    let payload: usize = sample.plan.iter().map(|p| p.payload_len).sum();
    let late = if sample.late_joiner {
        format!(
            "; {} connects after the messages and gets them through IHAVE/IWANT",
            node_name(count - 1)
        )
    } else {
        String::new()
    };
    let left = sample
        .leave
        .map(|t| format!("; then {} leaves {t}", node_name(0)))
        .unwrap_or_default();
    let role = match sample.role {
        Role::Fit => "fit",
        Role::Measure => "measure (held out: never fit a model on it)",
    };
    let description = format!(
        "[{role}] {} on Node {}: {count} nodes on 127.0.0.1 to 127.0.0.{count} of a namespace, \
         each dialing from its own address ({} links); {transport} + {security} + {muxer}; \
         {gossipsub}{late}{left}; {} WakuMessages by @waku/proto {} ({payload} payload bytes) \
         on {} and {}; captured live on `lo` by libpcap as EN10MB",
        sample.stack,
        v("node"),
        sample.links.len(),
        sample.plan.len(),
        v("@waku/proto"),
        waku::SHARD_32,
        waku::SHARD_64,
    );
    let truth = Truth {
        head: Head {
            sample: sample.name.to_owned(),
            file: format!("{}.pcap", sample.name),
            link_type: stats.linktype.get_name()?,
            made_by: format!(
                "js-libp2p {} on Node {}: {count} nodes in one process, {transport} + {security} + \
                 {muxer}, {gossipsub}, @libp2p/identify {}, @libp2p/ping {}",
                v("libp2p"),
                v("node"),
                v("@libp2p/identify"),
                v("@libp2p/ping"),
            ),
            description,
            capture: CaptureTruth::new("lo", Some(NETNS), filter, Precision::Micro, &stats),
        },
        relay: RelayTruth {
            protocol_id: RELAY_PROTOCOL,
            gossipsub,
            late_joiner: sample.late_joiner.then(|| node_name(count - 1)),
            left: sample.leave.map(|t| format!("{} left {t}", node_name(0))),
            validation_mode: VALIDATION_MODE,
            message_id: MESSAGE_ID,
        },
        relay_parts: relay.parts,
        deliveries: relay.deliveries,
        nodes: report
            .nodes
            .into_iter()
            .map(|n| NodeTruth {
                name: n.name,
                peer_id: n.peer_id,
                listen: n.listen,
                netns: Some(NETNS.into()),
            })
            .collect(),
        connections,
        topics: report
            .topics
            .into_iter()
            .map(|t| TopicTruth {
                node: t.node,
                pubsub_topic: t.pubsub_topic,
                counts: t.counts,
            })
            .collect(),
        messages: report
            .messages
            .into_iter()
            .map(|m| MessageTruth {
                publisher: m.publisher,
                pubsub_topic: m.pubsub_topic,
                content_topic: m.content_topic,
                payload_bytes: m.payload_bytes,
                waku_message_bytes: m.waku_message_bytes,
                message_id: m.message_id,
                received_by: m.received_by,
            })
            .collect(),
    };
    let truth_path = out_dir.join(format!("{}.truth.json", sample.name));
    fs::write(&truth_path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("write {}", truth_path.display()))?;
    Ok(())
}

/// A fresh working directory for the config and the report.
fn tempfile_dir(out_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = out_dir.join(format!(".{name}.work"));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Adds what the security layers carried to a connection, checking that each side's layer
/// decrypted no more than the other side's layer encrypted.
fn with_plaintext(
    conn: ConnTruth,
    sides: &[Side],
    transport: JsTransport,
) -> anyhow::Result<JsConnTruth> {
    let find = |local: SocketAddr, remote: SocketAddr| {
        sides
            .iter()
            .find(|s| s.local == local && s.remote == remote)
            .with_context(|| format!("no side {local} -> {remote}"))
    };
    let dialer = find(conn.dialer, conn.listener)?;
    let listener = find(conn.listener, conn.dialer)?;
    for (from, to) in [(dialer, listener), (listener, dialer)] {
        ensure!(
            to.plaintext_read <= from.plaintext_written,
            "{} -> {}: {} plaintext bytes decrypted, {} encrypted",
            from.local,
            from.remote,
            to.plaintext_read,
            from.plaintext_written
        );
    }
    Ok(JsConnTruth {
        conn,
        transport: match transport {
            JsTransport::Tcp => "tcp",
            JsTransport::Ws => "ws",
            JsTransport::Wss => "wss",
        },
        plaintext_dialer_to_listener: dialer.plaintext_written,
        plaintext_listener_to_dialer: listener.plaintext_written,
        plaintext_read_by_listener: listener.plaintext_read,
        plaintext_read_by_dialer: dialer.plaintext_read,
    })
}

/// Checks every muxed stream against its other end: what one node wrote on a stream is what
/// the other node's muxer delivered on it, byte for byte (a stream cut by the close may have
/// delivered only a prefix).
fn check_streams(sides: &[Side]) -> anyhow::Result<()> {
    let number = |id: &str| {
        id.trim_start_matches(|c: char| !c.is_ascii_digit())
            .to_owned()
    };
    for a in sides {
        let b = sides
            .iter()
            .find(|b| b.local == a.remote && b.remote == a.local)
            .with_context(|| format!("no other side of {} -> {}", a.local, a.remote))?;
        for sa in &a.streams {
            let Some(sb) = b
                .streams
                .iter()
                .find(|sb| sb.outbound != sa.outbound && number(&sb.id) == number(&sa.id))
            else {
                bail!(
                    "{} -> {}: stream {} has no other end",
                    a.local,
                    a.remote,
                    sa.id
                );
            };
            let written = STANDARD.decode(&sa.written)?;
            let read = STANDARD.decode(&sb.read)?;
            ensure!(
                written.starts_with(&read),
                "{} -> {} stream {}: {} bytes written, {} read, and they differ",
                a.local,
                a.remote,
                sa.id,
                written.len(),
                read.len()
            );
        }
    }
    Ok(())
}
