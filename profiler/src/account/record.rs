//! The usage record: one row per (window, owner, flow side, label, direction), as design.md defines it.

use std::net::IpAddr;
use std::sync::Arc;

/// Top-level traffic class of a row; the column `category`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    RelayControl,
    RelayChat,
    WakuService,
    Libp2p,
    Discovery,
    Rpc,
    Bittorrent,
    Other,
}

impl Category {
    /// Every category, in the order summaries list them.
    pub const ALL: [Category; 8] = [
        Category::RelayControl,
        Category::RelayChat,
        Category::WakuService,
        Category::Libp2p,
        Category::Discovery,
        Category::Rpc,
        Category::Bittorrent,
        Category::Other,
    ];

    /// The name written to Parquet and shown in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::RelayControl => "relay_control",
            Category::RelayChat => "relay_chat",
            Category::WakuService => "waku_service",
            Category::Libp2p => "libp2p",
            Category::Discovery => "discovery",
            Category::Rpc => "rpc",
            Category::Bittorrent => "bittorrent",
            Category::Other => "other",
        }
    }

    /// The category written as `name` (the inverse of [`Category::as_str`]).
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Which way the bytes went, seen from the local side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    /// The name written to Parquet (`in` / `out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    /// The direction written as `name`.
    pub fn from_name(name: &str) -> Option<Direction> {
        [Direction::In, Direction::Out]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// How a label was obtained; the column `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Read from the bytes by a decoder.
    Decoded,
    /// Estimated from sizes and timing of encrypted frames.
    Inferred,
    /// A documented rule of thumb (e.g. correlation of ports).
    Heuristic,
    /// Only the port number said so.
    Port,
    /// Counted by the kernel probe but not sampled: the connection's label, payload unseen.
    Unsampled,
}

impl Method {
    /// The name written to Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Decoded => "decoded",
            Method::Inferred => "inferred",
            Method::Heuristic => "heuristic",
            Method::Port => "port",
            Method::Unsampled => "unsampled",
        }
    }

    /// The method written as `name`.
    pub fn from_name(name: &str) -> Option<Method> {
        [
            Method::Decoded,
            Method::Inferred,
            Method::Heuristic,
            Method::Port,
            Method::Unsampled,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// What a run of bytes is: everything of a row's key that a decoder decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    pub category: Category,
    /// Protocol id, e.g. `/noise`, `/vac/waku/relay/2.0.0`, `tcp`.
    pub protocol: Arc<str>,
    /// Message kind, e.g. `handshake`, `framing`, `message`, `transport`.
    pub kind: Arc<str>,
    pub cluster_id: Option<u16>,
    pub shard: Option<u16>,
    pub pubsub_topic: Option<Arc<str>>,
    pub content_topic: Option<Arc<str>>,
    pub method: Method,
    /// Confidence in per-mille (1000 = decoded), kept integral so labels hash.
    pub confidence_permille: u16,
}

impl Label {
    /// A decoded label with no shard or topic.
    pub fn decoded(category: Category, protocol: &Arc<str>, kind: &Arc<str>) -> Label {
        Label {
            category,
            protocol: Arc::clone(protocol),
            kind: Arc::clone(kind),
            cluster_id: None,
            shard: None,
            pubsub_topic: None,
            content_topic: None,
            method: Method::Decoded,
            confidence_permille: 1000,
        }
    }

    /// Confidence as the 0..1 float the record carries.
    pub fn confidence(&self) -> f32 {
        f32::from(self.confidence_permille) / 1000.0
    }
}

/// The process that owns a socket, when the source knows it (live eBPF / procfs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    pub host: Option<Arc<str>>,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    pub exe: Option<Arc<str>>,
    pub cgroup: Option<Arc<str>>,
    /// Container or pod the cgroup belongs to (see [`crate::source::procfs::container_of`]).
    pub container: Option<Arc<str>>,
}

/// Counters summed into one row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Wire bytes: IP total length (frame length for non-IP frames).
    pub bytes: u64,
    /// Application bytes of the units counted (rule 4 for gossipsub).
    pub payload_bytes: u64,
    pub packets: u64,
    pub messages: u64,
    pub duplicates: u64,
    /// Wire bytes of TCP segments that repeated stream bytes already seen.
    pub retrans_bytes: u64,
}

impl Counters {
    /// Adds another set of counters to this one.
    pub fn add(&mut self, other: &Counters) {
        self.bytes += other.bytes;
        self.payload_bytes += other.payload_bytes;
        self.packets += other.packets;
        self.messages += other.messages;
        self.duplicates += other.duplicates;
        self.retrans_bytes += other.retrans_bytes;
    }
}

/// One endpoint pair of a flow, oriented local → remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// `tcp`, `udp`, `icmp`, `ip` (other IP protocols) or `non-ip`.
    pub transport: &'static str,
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_addr: Option<IpAddr>,
    pub remote_port: Option<u16>,
}

/// One output row of the usage table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Window start, microseconds since the Unix epoch (UTC).
    pub window_start_us: i64,
    pub window_secs: u32,
    pub owner: Arc<Owner>,
    pub endpoints: Endpoints,
    pub label: Label,
    pub direction: Direction,
    pub counters: Counters,
}
