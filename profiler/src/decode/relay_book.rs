//! What relay decoding remembers across connections (protocols.md §3.4): which pubsub topic a
//! message id belongs to, learned from published messages and IHAVE gossip, so that IWANT and
//! IDONTWANT, which carry only ids, get a shard; and the messages published on relay streams,
//! handed to the analyzer, which counts duplicates per receiving host and fills `--messages`.

use std::collections::VecDeque;
use std::sync::Arc;

use super::lru::Lru;
use super::waku_message::WakuInfo;
use super::{LabelId, Side};
use crate::node::peers::PeerBook;

/// Message ids remembered with their topic. Waku's seen-TTL is 2 min; at 100 messages/s, both
/// ids of each message stay known for about five minutes.
pub const MESSAGE_IDS: usize = 1 << 16;
/// Gossip announces messages of the last heartbeats: an IHAVE or IWANT of k ids is believed
/// only if at least k messages went by in this window.
pub const GOSSIP_WINDOW_NS: i64 = 3_500_000_000;
/// Recent message timestamps kept, at most.
pub const RECENT_MAX: usize = 1 << 16;

/// One `RPC.publish` entry read completely on a relay stream.
#[derive(Clone, Debug)]
pub struct Published {
    /// The side of the connection that sent it.
    pub side: Side,
    /// Its label (relay_chat / message, with its topic and shard).
    pub label: LabelId,
    /// SHA-256 of `Message.data`: the id nwaku and go-waku use, and the duplicate key.
    pub id: [u8; 32],
    /// Bytes of the entry (tag + length + body), as counted in payload_bytes.
    pub entry_bytes: u64,
    /// Bytes of `Message.data` (the serialized WakuMessage).
    pub data_bytes: u64,
    /// The WakuMessage's fields, when `data` is one.
    pub waku: Option<WakuInfo>,
}

/// What a relay entry says of the mesh: subscriptions, GRAFT and PRUNE, publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshKind {
    Subscribe,
    Unsubscribe,
    Graft,
    Prune,
    Publish,
}

/// One relay entry that matters to mesh health, with its topic's label.
#[derive(Clone, Copy, Debug)]
pub struct MeshEvent {
    /// The side of the connection that sent it.
    pub side: Side,
    pub kind: MeshKind,
    /// Its label, carrying the topic and shard (none when the topic is missing).
    pub label: LabelId,
}

/// Counters of id attribution, for the summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RelayStats {
    /// Ids learned (each published message gives two, each IHAVE id one).
    pub ids_learned: u64,
    /// Ids in IWANT / IDONTWANT entries, and how many of them had a known topic.
    pub ids_looked_up: u64,
    pub ids_resolved: u64,
    /// Ids forgotten because the map was full.
    pub ids_evicted: u64,
    /// Relay entries too large to be read whole (labelled without topic).
    pub entries_too_large: u64,
    /// Relay entries whose protobuf did not decode (labelled without topic).
    pub entries_malformed: u64,
}

/// The shared state of relay decoding.
pub struct RelayBook {
    topics: Lru<Box<[u8]>, Arc<str>>,
    /// Published messages read since the analyzer last took them.
    pub published: Vec<Published>,
    /// Mesh events read since the analyzer last took them (only with `mesh_on`).
    pub mesh: Vec<MeshEvent>,
    /// Keep mesh events (`--mesh`).
    pub mesh_on: bool,
    pub stats: RelayStats,
    /// When messages were inferred on encrypted connections, oldest first: gossip of k ids
    /// is believed only when k messages went by recently.
    recent: VecDeque<i64>,
    /// The node's peers and their shards, for relay bytes of encrypted connections.
    pub peers: PeerBook,
}

impl Default for RelayBook {
    fn default() -> RelayBook {
        RelayBook::new(MESSAGE_IDS)
    }
}

impl RelayBook {
    /// A book remembering at most `ids` message ids.
    pub fn new(ids: usize) -> RelayBook {
        RelayBook {
            topics: Lru::new(ids),
            published: Vec::new(),
            mesh: Vec::new(),
            mesh_on: false,
            stats: RelayStats::default(),
            recent: VecDeque::new(),
            peers: PeerBook::default(),
        }
    }

    /// A default book that knows `peers`.
    pub fn with_peers(peers: PeerBook) -> RelayBook {
        RelayBook {
            peers,
            ..RelayBook::default()
        }
    }

    /// Approximate heap bytes: the message-id map (ids are 32 bytes), published messages not
    /// taken yet, recent message times.
    pub fn heap_bytes(&self) -> usize {
        self.topics.heap_bytes()
            + self.topics.len() * 32
            + crate::memory::vec_bytes(&self.published)
            + crate::memory::deque_bytes(&self.recent)
    }

    /// Notes a message inferred on an encrypted connection at `now` (ns).
    pub fn saw_message(&mut self, now: i64) {
        if self.recent.len() >= RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }

    /// Messages inferred within [`GOSSIP_WINDOW_NS`] before `now`.
    pub fn recent_messages(&mut self, now: i64) -> usize {
        let since = now.saturating_sub(GOSSIP_WINDOW_NS);
        while self.recent.front().is_some_and(|&t| t < since) {
            self.recent.pop_front();
        }
        self.recent.len()
    }

    /// Notes a mesh event, when mesh health is tracked.
    pub fn mesh_event(&mut self, side: Side, kind: MeshKind, label: LabelId) {
        if self.mesh_on {
            self.mesh.push(MeshEvent { side, kind, label });
        }
    }

    /// Remembers that message `id` belongs to `topic`.
    pub fn learn(&mut self, id: &[u8], topic: &Arc<str>) {
        self.stats.ids_learned += 1;
        self.topics.insert(id.into(), Arc::clone(topic));
        self.stats.ids_evicted = self.topics.evicted;
    }

    /// The topic of message `id`, if it was learned.
    pub fn topic_of(&mut self, id: &[u8]) -> Option<Arc<str>> {
        self.stats.ids_looked_up += 1;
        let topic = self.topics.get(&Box::from(id)).cloned();
        self.stats.ids_resolved += u64::from(topic.is_some());
        topic
    }
}
