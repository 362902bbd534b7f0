//! The samples: which nodes run where, what is captured, and the ground truth written beside
//! each capture.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use pcap::{Linktype, Precision};
use prost::Message as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    capture::{self, CaptureSpec, CaptureStats},
    netns::{TunPair, VlanPair},
    node::{
        self, Command as NodeCommand, NodeHandle, NodeSpec, RELAY_PROTOCOL, Relay, Report,
        TopicCounts,
    },
    relay_truth::{self, Delivery, RelayPart},
    transport::{ConnSide, Muxer, Registry, Security, TransportSpec},
    truth::{CaptureTruth, Head},
    waku::{self, Planned},
};

/// Where the nodes run and which interface is captured.
#[derive(Clone, Copy)]
pub enum Net {
    /// `nodes` nodes on 127.0.0.1, captured on `device` (`lo` or `any`).
    Loopback {
        /// Number of nodes (full mesh).
        nodes: usize,
        /// Capture device.
        device: &'static str,
    },
    /// `nodes` nodes on 127.0.0.1, 127.0.0.2, …, each dialing from its own address, captured
    /// on `lo`: every node is a host of its own.
    Hosts {
        /// Number of nodes.
        nodes: usize,
    },
    /// Two nodes in two namespaces joined by a veth pair whose frames carry VLAN tag 100;
    /// captured on one veth end.
    Vlan,
    /// Two nodes in two namespaces joined by TUN devices; captured on one TUN device.
    Tun,
}

/// How the captured file becomes the sample file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The libpcap capture as is.
    Pcap,
    /// Captured with nanosecond timestamps, then converted to pcapng by Wireshark's editcap.
    Pcapng,
    /// Captured on `lo` (Ethernet), then rewrapped as BSD loopback (DLT_NULL).
    Null,
}

/// One sample capture and how to make it.
pub struct Sample {
    /// Base name of the files in samples/.
    pub name: &'static str,
    /// Security protocol of every node.
    pub security: Security,
    /// Stream muxer of every node.
    pub muxer: Muxer,
    /// How the nodes run gossipsub.
    pub relay: Relay,
    /// Whether the last node connects only after every message was published (it then gets
    /// them through IHAVE gossip and IWANT).
    pub late_joiner: bool,
    /// A topic the first node leaves after the messages (gossipsub PRUNEs its mesh peers).
    pub leave: Option<&'static str>,
    /// Relay kinds the scenario must produce (checked against the truth when it is made).
    pub must_show: &'static [&'static str],
    /// Messages to publish.
    pub plan: &'static [Planned],
    /// Where the nodes run.
    pub net: Net,
    /// Link-layer type to select on the capture device, if not its default.
    pub linktype: Option<Linktype>,
    /// What becomes of the capture.
    pub output: Output,
}

/// The set-up most samples share: Waku Relay over yamux on 3 nodes of 127.0.0.1, captured on
/// `lo`, everyone connected from the start.
const WAKU_YAMUX: Sample = Sample {
    name: "",
    security: Security::Plaintext,
    muxer: Muxer::Yamux,
    relay: Relay::Waku,
    plan: waku::SMALL,
    net: Net::Loopback {
        nodes: 3,
        device: "lo",
    },
    linktype: None,
    output: Output::Pcap,
    late_joiner: false,
    leave: None,
    must_show: &["message", "subscribe", "framing"],
};

/// Meshsub gossip on 5 hosts with a late joiner and a topic left, over plaintext; the Noise
/// variant differs only in its security.
const MESHSUB_GOSSIP: Sample = Sample {
    name: "relay-meshsub-gossip",
    relay: Relay::Meshsub,
    plan: waku::MAIN,
    net: Net::Hosts { nodes: 5 },
    late_joiner: true,
    leave: Some(waku::SHARD_64),
    must_show: GOSSIP_KINDS,
    ..WAKU_YAMUX
};

/// The relay kinds a gossip scenario (meshsub, late joiner, a topic left) must produce.
const GOSSIP_KINDS: &[&str] = &[
    "message",
    "subscribe",
    "ihave",
    "iwant",
    "graft",
    "prune",
    "idontwant",
    "framing",
];

/// Every sample `cargo xtask samples` makes.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "libp2p-noise-yamux",
        security: Security::Noise,
        plan: waku::MAIN,
        net: Net::Loopback {
            nodes: 3,
            device: "lo",
        },
        linktype: None,
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-plaintext-yamux",
        security: Security::Plaintext,
        plan: waku::MAIN,
        net: Net::Loopback {
            nodes: 3,
            device: "lo",
        },
        linktype: None,
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-noise-sll",
        security: Security::Noise,
        plan: waku::SMALL,
        net: Net::Loopback {
            nodes: 3,
            device: "any",
        },
        linktype: Some(Linktype::LINUX_SLL),
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-plaintext-sll2",
        security: Security::Plaintext,
        plan: waku::SMALL,
        net: Net::Loopback {
            nodes: 3,
            device: "any",
        },
        linktype: Some(Linktype::LINUX_SLL2),
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-plaintext-vlan",
        security: Security::Plaintext,
        plan: waku::SMALL,
        net: Net::Vlan,
        linktype: None,
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-noise-raw",
        security: Security::Noise,
        plan: waku::SMALL,
        net: Net::Tun,
        linktype: None,
        output: Output::Pcap,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-plaintext-null",
        security: Security::Plaintext,
        plan: waku::SMALL,
        net: Net::Loopback {
            nodes: 3,
            device: "lo",
        },
        linktype: None,
        output: Output::Null,
        ..WAKU_YAMUX
    },
    Sample {
        name: "libp2p-noise-pcapng",
        security: Security::Noise,
        plan: waku::SMALL,
        net: Net::Loopback {
            nodes: 3,
            device: "lo",
        },
        linktype: None,
        output: Output::Pcapng,
        ..WAKU_YAMUX
    },
    Sample {
        name: "relay-plaintext-mplex",
        security: Security::Plaintext,
        muxer: Muxer::Mplex,
        plan: waku::SMALL,
        net: Net::Hosts { nodes: 3 },
        must_show: &["message", "subscribe", "graft", "framing"],
        ..WAKU_YAMUX
    },
    MESHSUB_GOSSIP,
    Sample {
        name: "relay-noise-mix",
        security: Security::Noise,
        plan: waku::MIX,
        ..WAKU_YAMUX
    },
    Sample {
        name: "relay-noise-gossip",
        security: Security::Noise,
        ..MESHSUB_GOSSIP
    },
];

/// How long one step of a scenario (listen, mesh, one message, close) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle time after the last message, so heartbeats and pings show in the capture.
const LINGER: Duration = Duration::from_millis(1500);
/// Time for the last packets to reach libpcap after the nodes stopped.
const SETTLE: Duration = Duration::from_millis(300);
/// VLAN id on the veth wire.
const VLAN_ID: u16 = 100;

/// The ground truth written as `<name>.truth.json` (the js-libp2p samples write it too).
#[derive(Serialize)]
pub struct Truth<C> {
    #[serde(flatten)]
    pub head: Head,
    pub relay: RelayTruth,
    pub relay_parts: Vec<RelayPart>,
    pub deliveries: Vec<Delivery>,
    pub nodes: Vec<NodeTruth>,
    pub connections: Vec<C>,
    pub topics: Vec<TopicTruth>,
    pub messages: Vec<MessageTruth>,
}

/// How the nodes ran gossipsub.
#[derive(Serialize)]
pub struct RelayTruth {
    pub protocol_id: &'static str,
    pub gossipsub: String,
    pub late_joiner: Option<String>,
    pub left: Option<String>,
    pub validation_mode: &'static str,
    pub message_id: &'static str,
}

/// What every truth says of the gossipsub validation mode and message id.
pub const VALIDATION_MODE: &str = "Anonymous (StrictNoSign: no from, seqno, signature, key)";
/// How every node makes gossipsub message ids, as nwaku.
pub const MESSAGE_ID: &str = "sha256(WakuMessage bytes)";

/// A node: name, peer id, listen address and namespace.
#[derive(Serialize)]
pub struct NodeTruth {
    pub name: String,
    pub peer_id: String,
    pub listen: SocketAddr,
    pub netns: Option<String>,
}

/// One TCP connection: both ends, the protocols they agreed on and the bytes each wrote and read.
#[derive(Serialize)]
pub struct ConnTruth {
    pub dialer: SocketAddr,
    pub listener: SocketAddr,
    pub dialer_node: String,
    pub listener_node: String,
    pub security: String,
    pub muxer: String,
    pub bytes_dialer_to_listener: u64,
    pub bytes_listener_to_dialer: u64,
    pub bytes_read_by_listener: u64,
    pub bytes_read_by_dialer: u64,
}

/// Gossipsub's message counts of one node on one pubsub topic.
#[derive(Serialize)]
pub struct TopicTruth {
    pub node: String,
    pub pubsub_topic: String,
    #[serde(flatten)]
    pub counts: TopicCounts,
}

/// One published message.
#[derive(Serialize)]
pub struct MessageTruth {
    pub publisher: String,
    pub pubsub_topic: String,
    pub content_topic: String,
    pub payload_bytes: usize,
    pub waku_message_bytes: usize,
    pub message_id: String,
    pub received_by: usize,
}

/// The namespaces a scenario runs in, if any; dropping this removes them.
#[derive(Default)]
struct Network {
    _vlan: Option<VlanPair>,
    tun: Option<TunPair>,
}

struct Layout {
    nodes: Vec<NodeSpec>,
    device: String,
    netns: Option<String>,
    /// Where the nodes run, for the description.
    how: String,
}

/// The name of node `index`.
pub fn node_name(index: usize) -> String {
    format!("node{index}")
}

/// How the raw-IP variant is wired.
const TUN_HOW: &str = "2 nodes in two network namespaces joined by two TUN devices, a thread \
                       copying packets between them";

/// Two nodes, one in each namespace, listening on `addrs`.
fn pair_layout(
    spec: impl Fn(usize, IpAddr, Option<&str>, usize) -> NodeSpec,
    ns: [&str; 2],
    addrs: [Ipv4Addr; 2],
    device: &str,
    how: &str,
) -> Layout {
    Layout {
        nodes: vec![
            spec(0, addrs[0].into(), Some(ns[0]), 1),
            spec(1, addrs[1].into(), Some(ns[1]), 1),
        ],
        device: device.into(),
        netns: Some(ns[0].into()),
        how: how.into(),
    }
}

fn setup(sample: &Sample) -> anyhow::Result<(Network, Layout)> {
    let transport = |source| TransportSpec {
        security: sample.security,
        muxer: sample.muxer,
        source,
    };
    let spec = |index, listen_ip, netns: Option<&str>, mesh_peers| NodeSpec {
        index,
        listen_ip,
        listen_port: 0,
        netns: netns.map(str::to_owned),
        transport: transport(None),
        relay: sample.relay,
        mesh_peers,
        topics: waku::TOPICS.map(str::to_owned).to_vec(),
        validator: None,
    };
    Ok(match sample.net {
        Net::Loopback { nodes, device } => {
            let layout = Layout {
                nodes: (0..nodes)
                    .map(|i| spec(i, IpAddr::V4(Ipv4Addr::LOCALHOST), None, nodes - 1))
                    .collect(),
                device: device.to_owned(),
                netns: None,
                how: format!("{nodes} nodes on 127.0.0.1"),
            };
            (Network::default(), layout)
        }
        Net::Hosts { nodes } => {
            let mesh_peers = match sample.relay {
                Relay::Waku | Relay::Tuned(_) => nodes - 1,
                Relay::Meshsub => 1,
            };
            let layout = Layout {
                nodes: (0..nodes)
                    .map(|i| {
                        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host_octet(i)));
                        NodeSpec {
                            transport: transport(Some(ip)),
                            ..spec(i, ip, None, mesh_peers)
                        }
                    })
                    .collect(),
                device: "lo".into(),
                netns: None,
                how: format!(
                    "{nodes} nodes on 127.0.0.1 to 127.0.0.{nodes}, each dialing from its own address"
                ),
            };
            (Network::default(), layout)
        }
        Net::Vlan => {
            let ns = ["wkp-vlan-a", "wkp-vlan-b"];
            let ifnames = ["wkp-veth-a", "wkp-veth-b"];
            let addrs = [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];
            let cidrs = addrs.map(|a| a.to_string());
            let pair =
                VlanPair::create(ns, ifnames, cidrs.each_ref().map(String::as_str), VLAN_ID)?;
            let network = Network {
                _vlan: Some(pair),
                tun: None,
            };
            let how = format!(
                "2 nodes in two network namespaces joined by a veth pair; tc (tcx) eBPF programs \
                 push 802.1Q tag {VLAN_ID} on egress and pop it on ingress at both ends, because \
                 this kernel has no 8021q module"
            );
            (network, pair_layout(spec, ns, addrs, ifnames[0], &how))
        }
        Net::Tun => {
            let ns = ["wkp-tun-a", "wkp-tun-b"];
            let ifnames = ["wkp-tun-a", "wkp-tun-b"];
            let addrs = [Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2)];
            let peers = addrs.map(|a| a.to_string());
            let pair = TunPair::create(ns, ifnames, peers.each_ref().map(String::as_str))?;
            let network = Network {
                _vlan: None,
                tun: Some(pair),
            };
            (network, pair_layout(spec, ns, addrs, ifnames[0], TUN_HOW))
        }
    })
}

/// The last octet of node `index`'s loopback address (127.0.0.1 for node 0).
fn host_octet(index: usize) -> u8 {
    u8::try_from(index + 1).unwrap_or(u8::MAX)
}

fn wait_for(
    reports: &mpsc::Receiver<Report>,
    what: &str,
    mut done: impl FnMut(Report) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok(Report::Failed { node, error }) => bail!("{}: {error}", node_name(node)),
            Ok(report) => {
                if done(report)? {
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Timeout) => bail!("timed out waiting for {what}"),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("all nodes stopped while waiting for {what}")
            }
        }
    }
}

/// Runs the sample's scenario and writes `<name>.<ext>` and `<name>.truth.json` into `out_dir`.
pub fn make(sample: &Sample, out_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out_dir)?;
    let (network, layout) = setup(sample)?;
    let count = layout.nodes.len();
    let netns_of: Vec<Option<String>> = layout.nodes.iter().map(|n| n.netns.clone()).collect();
    let registry = Registry::default();
    let (report_to, reports) = mpsc::channel();
    let handles = layout
        .nodes
        .into_iter()
        .map(|spec| node::spawn(spec, registry.clone(), report_to.clone()))
        .collect::<anyhow::Result<Vec<NodeHandle>>>()?;
    drop(report_to);

    let mut listening: Vec<Option<(PeerId, SocketAddr)>> = vec![None; count];
    wait_for(&reports, "the nodes to listen", |r| {
        if let Report::Listening { node, peer, addr } = r {
            listening[node] = Some((peer, addr));
        }
        Ok(listening.iter().all(Option::is_some))
    })?;
    let listening: Vec<(PeerId, SocketAddr)> = listening.into_iter().flatten().collect();

    let ports: Vec<String> = listening
        .iter()
        .map(|(_, a)| format!("port {}", a.port()))
        .collect();
    let filter = format!("tcp and ({})", ports.join(" or "));
    let (capture_path, precision) = match sample.output {
        Output::Pcap => (
            out_dir.join(format!("{}.pcap", sample.name)),
            Precision::Micro,
        ),
        Output::Pcapng => (
            out_dir.join(format!("{}.nano.tmp", sample.name)),
            Precision::Nano,
        ),
        Output::Null => (
            out_dir.join(format!("{}.eth.tmp", sample.name)),
            Precision::Micro,
        ),
    };
    let running = capture::start(CaptureSpec {
        device: layout.device.clone(),
        netns: layout.netns.clone(),
        linktype: sample.linktype,
        precision,
        filter: filter.clone(),
        out: capture_path.clone(),
    })?;

    let early = if sample.late_joiner { count - 1 } else { count };
    let dial_addr = |(peer, addr): &(PeerId, SocketAddr)| {
        Multiaddr::from(addr.ip())
            .with(Protocol::Tcp(addr.port()))
            .with(Protocol::P2p(*peer))
    };
    for (i, handle) in handles.iter().enumerate().take(early) {
        let targets = listening[i + 1..early].iter().map(dial_addr).collect();
        handle.commands.send(NodeCommand::Dial(targets))?;
    }
    let mut ready = vec![false; early];
    wait_for(&reports, "the gossipsub meshes", |r| {
        if let Report::MeshReady(node) = r
            && node < early
        {
            ready[node] = true;
        }
        Ok(ready.iter().all(|r| *r))
    })?;

    let mut messages = Vec::new();
    let mut topic_of = HashMap::new();
    for (index, planned) in sample.plan.iter().enumerate() {
        let publisher = planned.publisher % early;
        let data = planned.message(index).encode_to_vec();
        let id = Sha256::digest(&data).to_vec();
        topic_of.insert(id.clone(), planned.pubsub_topic.to_owned());
        let waku_message_bytes = data.len();
        handles[publisher].commands.send(NodeCommand::Publish {
            pubsub_topic: planned.pubsub_topic.to_owned(),
            data,
        })?;
        let mut received = vec![false; early];
        received[publisher] = true;
        wait_for(&reports, "a message to reach every node", |r| {
            if let Report::Received { node, id: got } = r
                && node < early
            {
                ensure!(
                    got == id,
                    "{} received an unexpected message",
                    node_name(node)
                );
                received[node] = true;
            }
            Ok(received.iter().all(|r| *r))
        })?;
        messages.push(MessageTruth {
            publisher: node_name(publisher),
            pubsub_topic: planned.pubsub_topic.to_owned(),
            content_topic: planned.content_topic.to_owned(),
            payload_bytes: planned.payload_len,
            waku_message_bytes,
            message_id: hex(&id),
            received_by: count - 1,
        });
    }
    if sample.late_joiner {
        let late = count - 1;
        let targets = listening[..late].iter().map(dial_addr).collect();
        handles[late].commands.send(NodeCommand::Dial(targets))?;
        let mut missing: Vec<Vec<u8>> = topic_of.keys().cloned().collect();
        wait_for(&reports, "the late joiner to get every message", |r| {
            if let Report::Received { node, id } = r
                && node == late
            {
                missing.retain(|m| *m != id);
            }
            Ok(missing.is_empty())
        })?;
    }
    if let Some(topic) = sample.leave {
        handles[0]
            .commands
            .send(NodeCommand::Leave(topic.to_owned()))?;
    }
    thread::sleep(LINGER);

    for (i, handle) in handles.iter().enumerate() {
        handle.commands.send(NodeCommand::Close)?;
        wait_for(&reports, "the connections to close", |r| {
            Ok(matches!(r, Report::Closed(n) if n == i))
        })?;
    }
    let mut topics = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        for (pubsub_topic, counts) in handle.join()? {
            topics.push(TopicTruth {
                node: node_name(i),
                pubsub_topic,
                counts,
            });
        }
    }
    thread::sleep(SETTLE);
    let stats = running.stop()?;
    if let Some(pair) = network.tun {
        pair.close()?;
    }
    ensure!(
        stats.dropped == 0 && stats.if_dropped == 0,
        "libpcap dropped packets ({} + {} on the interface)",
        stats.dropped,
        stats.if_dropped
    );

    let sides = registry.sides();
    let relay = relay_truth::decode(&sides, node_name, &topic_of)?;
    let shown = relay.entries_by_kind();
    for kind in sample.must_show {
        ensure!(
            shown.get(kind).copied().unwrap_or(0) > 0,
            "the nodes sent no {kind} (relay entries by kind: {shown:?})"
        );
    }
    let (file, link_type, converted) = finish(sample, &capture_path, out_dir, &stats)?;
    let payload: usize = sample.plan.iter().map(|p| p.payload_len).sum();
    let captured_type = stats.linktype.get_name()?;
    let selected = if sample.linktype.is_some() {
        ", selected with pcap_set_datalink"
    } else {
        ""
    };
    let nano = if precision == Precision::Nano {
        " with nanosecond timestamps"
    } else {
        ""
    };
    let description = format!(
        "{}; {} + {}; {}; {} WakuMessages ({payload} payload bytes) on {} and {}; \
         captured live on `{}` by libpcap as {captured_type}{selected}{nano}{}",
        layout.how,
        security_id(sample.security),
        sample.muxer.id(),
        scenario_steps(sample, count),
        sample.plan.len(),
        waku::SHARD_32,
        waku::SHARD_64,
        layout.device,
        converted
            .as_ref()
            .map(|c| format!("; then {c}"))
            .unwrap_or_default(),
    );
    let nodes = listening
        .iter()
        .enumerate()
        .map(|(i, (peer, addr))| NodeTruth {
            name: node_name(i),
            peer_id: peer.to_string(),
            listen: *addr,
            netns: netns_of[i].clone(),
        })
        .collect();
    let mut capture = CaptureTruth::new(
        &layout.device,
        layout.netns.as_deref(),
        &filter,
        precision,
        &stats,
    );
    capture.converted = converted;
    let truth = Truth {
        head: Head {
            sample: sample.name.to_owned(),
            file,
            link_type,
            made_by: format!(
                "rust-libp2p 0.57 on tokio: {count} nodes, TCP + {} + {}, {}, identify, ping",
                security_id(sample.security),
                sample.muxer.id(),
                sample.relay.describe(),
            ),
            description,
            capture,
        },
        relay: RelayTruth {
            protocol_id: match sample.relay {
                Relay::Waku | Relay::Tuned(_) => RELAY_PROTOCOL,
                Relay::Meshsub => "/meshsub/1.3.0",
            },
            gossipsub: sample.relay.describe().to_owned(),
            late_joiner: sample.late_joiner.then(|| node_name(count - 1)),
            left: sample.leave.map(|t| format!("{} left {t}", node_name(0))),
            validation_mode: VALIDATION_MODE,
            message_id: MESSAGE_ID,
        },
        relay_parts: relay.parts,
        deliveries: relay.deliveries,
        nodes,
        connections: connections(&sides)?,
        topics,
        messages,
    };
    let truth_path = out_dir.join(format!("{}.truth.json", sample.name));
    fs::write(&truth_path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("write {}", truth_path.display()))?;
    Ok(())
}

/// Turns the capture into the sample file; returns its name, link type and conversion note.
fn finish(
    sample: &Sample,
    captured: &Path,
    out_dir: &Path,
    stats: &CaptureStats,
) -> anyhow::Result<(String, String, Option<String>)> {
    let captured_type = stats.linktype.get_name()?;
    Ok(match sample.output {
        Output::Pcap => (format!("{}.pcap", sample.name), captured_type, None),
        Output::Pcapng => {
            let file = format!("{}.pcapng", sample.name);
            let status = Command::new("editcap")
                .args(["-F", "pcapng"])
                .arg(captured)
                .arg(out_dir.join(&file))
                .status()
                .context("run editcap (Debian package wireshark-common)")?;
            ensure!(status.success(), "editcap failed: {status}");
            fs::remove_file(captured)?;
            let note = "converted to pcapng by `editcap -F pcapng` (Wireshark), which keeps every \
                        packet and nanosecond timestamp";
            (file, captured_type, Some(note.into()))
        }
        Output::Null => {
            let file = format!("{}.pcap", sample.name);
            let packets = capture::rewrap_null(captured, &out_dir.join(&file))?;
            ensure!(
                packets == stats.packets,
                "rewrap kept {packets} of {} packets",
                stats.packets
            );
            fs::remove_file(captured)?;
            let note = "rewrapped as DLT_NULL through a libpcap dead capture: each frame's 14-byte \
                        Ethernet header replaced by the 4-byte BSD loopback header (AF_INET = 2, \
                        host byte order), timestamps and IP packets unchanged";
            (file, Linktype::NULL.get_name()?, Some(note.into()))
        }
    })
}

/// Pairs the dialer's and the listener's view of every connection.
pub fn connections(sides: &[std::sync::Arc<ConnSide>]) -> anyhow::Result<Vec<ConnTruth>> {
    let mut out = Vec::new();
    for dialer in sides.iter().filter(|s| s.dialer) {
        let listener = sides
            .iter()
            .find(|s| !s.dialer && s.local == dialer.remote && s.remote == dialer.local)
            .with_context(|| {
                format!("no listener side for {} -> {}", dialer.local, dialer.remote)
            })?;
        let security = dialer.security().context("security not negotiated")?;
        let muxer = dialer.muxer().context("muxer not negotiated")?;
        ensure!(
            listener.security().as_ref() == Some(&security)
                && listener.muxer().as_ref() == Some(&muxer),
            "the two sides of {} -> {} disagree on the protocols",
            dialer.local,
            dialer.remote
        );
        out.push(ConnTruth {
            dialer: dialer.local,
            listener: dialer.remote,
            dialer_node: node_name(dialer.node),
            listener_node: node_name(listener.node),
            security,
            muxer,
            bytes_dialer_to_listener: dialer.written(),
            bytes_listener_to_dialer: listener.written(),
            bytes_read_by_listener: listener.read(),
            bytes_read_by_dialer: dialer.read(),
        });
    }
    ensure!(
        out.len() * 2 == sides.len(),
        "{} connection sides without a dialer",
        sides.len() - out.len() * 2
    );
    out.sort_by(|a, b| (&a.dialer_node, &a.listener_node).cmp(&(&b.dialer_node, &b.listener_node)));
    Ok(out)
}

fn security_id(security: Security) -> &'static str {
    match security {
        Security::Noise => "/noise",
        Security::Plaintext => "/plaintext/2.0.0",
    }
}

/// The scenario's steps beyond publishing, for the description.
fn scenario_steps(sample: &Sample, count: usize) -> String {
    let mut steps = vec![sample.relay.describe().to_owned()];
    if sample.late_joiner {
        steps.push(format!(
            "{} connects after the messages and gets them through IHAVE/IWANT",
            node_name(count - 1)
        ));
    }
    if let Some(topic) = sample.leave {
        steps.push(format!("then {} leaves {topic}", node_name(0)));
    }
    steps.join("; ")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
