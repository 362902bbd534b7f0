//! What relay decoding remembers across connections (protocols.md §3.4): which pubsub topic a
//! message id belongs to, learned from published messages and IHAVE gossip, so that IWANT and
//! IDONTWANT, which carry only ids, get a shard; and the messages published on relay streams,
//! handed to the analyzer, which counts duplicates per receiving host and fills `--messages`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::decode::lru::Lru;
use crate::decode::relay::waku_message::WakuInfo;
use crate::decode::{LabelId, Side};
use crate::node::peers::PeerBook;

/// Message ids remembered with their topic. Waku's seen-TTL is 2 min; at 100 messages/s, both
/// ids of each message stay known for about five minutes.
pub const MESSAGE_IDS: usize = 1 << 16;
/// Gossip announces messages of the last heartbeats: an IHAVE or IWANT of k ids is believed
/// only if at least k messages crossed one connection in this window.
pub const GOSSIP_WINDOW_NS: i64 = 3_500_000_000;
/// Gossipsub answers an IWANT from its message cache, five heartbeats (of a second in nwaku,
/// go-waku and rust-libp2p, 0.7 s in js-libp2p) long.
pub const CACHE_WINDOW_NS: i64 = 6_000_000_000;
/// Gossipsub's heartbeats: 1 s in nwaku, go-waku and rust-libp2p, 0.7 s in js-libp2p. IHAVE is
/// written only in a heartbeat, so one host's gossip keeps one phase.
pub const HEARTBEATS_NS: [i64; 2] = [1_000_000_000, 700_000_000];
/// How far from a host's earlier gossip, in phase, its next gossip may be written.
const PHASE_TOLERANCE_NS: i64 = 30_000_000;
/// How long a host's gossip-shaped writes are kept as possible heartbeats.
const PHASE_WINDOW_NS: i64 = 10_000_000_000;
/// Gossip-shaped writes kept per host, and hosts kept, at most.
const PHASE_TIMES: usize = 32;
const PHASE_HOSTS: usize = 4096;
/// An empty length-delimited field: tag and a zero length.
const EMPTY_FIELD: u64 = 2;
/// Recent message timestamps kept, at most.
pub const RECENT_MAX: usize = 1 << 16;
/// Steps the search for messages adding up to an IWANT answer may take.
pub const SUM_SEARCH: u32 = 20_000;

/// The number of items (at most `most`) of `sizes` (size, times it may be used; largest first)
/// adding up to `total`, searching depth first within `steps`. `room[i]` is what the items from
/// `i` on add up to at most.
fn sum_of(
    sizes: &[(u64, u32)],
    room: &[u64],
    total: u64,
    most: u32,
    steps: &mut u32,
) -> Option<u32> {
    if total == 0 {
        return Some(0);
    }
    let ((size, times), rest) = sizes.split_first()?;
    if most == 0 || *steps == 0 || room.first().is_some_and(|&r| total > r) {
        return None;
    }
    *steps -= 1;
    let fit = u32::try_from(total / size).unwrap_or(u32::MAX);
    for n in (0..=(*times).min(fit).min(most)).rev() {
        let left = total - u64::from(n) * size;
        if let Some(m) = sum_of(rest, room.get(1..).unwrap_or(&[]), left, most - n, steps) {
            return Some(n + m);
        }
    }
    None
}

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

impl RelayStats {
    /// Adds the counts of another shard of the same run.
    pub fn merge(&mut self, o: &RelayStats) {
        self.ids_learned += o.ids_learned;
        self.ids_looked_up += o.ids_looked_up;
        self.ids_resolved += o.ids_resolved;
        self.ids_evicted += o.ids_evicted;
        self.entries_too_large += o.entries_too_large;
        self.entries_malformed += o.entries_malformed;
    }
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
    /// When messages were inferred on encrypted connections, and on which, oldest first, with
    /// how many of them each connection carried: gossip of k ids is believed only when k
    /// messages crossed one connection recently.
    recent: VecDeque<(i64, u64)>,
    per_link: HashMap<u64, u32>,
    /// Connections handed a number by [`RelayBook::link`].
    links: u64,
    /// The publish entry bytes of messages inferred whole, with when, oldest first: what an
    /// answer to an IWANT may be made of.
    sizes: VecDeque<(i64, u64)>,
    /// When each host wrote gossip-shaped RPCs on encrypted connections lately, oldest first.
    heartbeats: HashMap<IpAddr, VecDeque<i64>>,

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
            per_link: HashMap::new(),
            links: 0,
            sizes: VecDeque::new(),
            heartbeats: HashMap::new(),
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
            + self.per_link.capacity() * 16
            + crate::memory::deque_bytes(&self.sizes)
    }

    /// Whether any connection has told the book anything (ids, messages, sizes, events): from
    /// then on what one connection decodes may depend on another. Numbering connections
    /// ([`RelayBook::link`]) tells it nothing.
    pub fn written(&self) -> bool {
        self.topics.used()
            || !self.recent.is_empty()
            || !self.sizes.is_empty()
            || !self.published.is_empty()
            || !self.mesh.is_empty()
    }

    /// A number for a connection whose messages [`RelayBook::saw_message`] is told of.
    pub fn link(&mut self) -> u64 {
        self.links += 1;
        self.links
    }

    /// Notes a message inferred on encrypted connection `link` at `now` (ns).
    pub fn saw_message(&mut self, now: i64, link: u64) {
        if self.recent.len() >= RECENT_MAX {
            self.forget_message();
        }
        self.recent.push_back((now, link));
        *self.per_link.entry(link).or_default() += 1;
    }

    fn forget_message(&mut self) {
        let Some((_, link)) = self.recent.pop_front() else {
            return;
        };
        if let Some(n) = self.per_link.get_mut(&link) {
            *n -= 1;
            if *n == 0 {
                self.per_link.remove(&link);
            }
        }
    }

    /// The most messages one connection carried within [`GOSSIP_WINDOW_NS`] before `now`:
    /// gossipsub sends a message over a link once (both ways only when both ends forward it at
    /// once), so a mesh link carries about every message of the topics its ends share, and
    /// copies of one message on other links are not counted again.
    pub fn recent_messages(&mut self, now: i64) -> usize {
        let since = now.saturating_sub(GOSSIP_WINDOW_NS);
        while self.recent.front().is_some_and(|&(t, _)| t < since) {
            self.forget_message();
        }
        self.per_link.values().max().map_or(0, |&n| n as usize)
    }

    /// Whether gossip `host` wrote at `now` (ns) is in phase with one of its earlier gossip-shaped
    /// writes (or is its first in [`PHASE_WINDOW_NS`]), and notes it: gossipsub writes IHAVE only
    /// in its heartbeat, to every peer it gossips to at once, while messages go out whenever they
    /// arrive.
    pub fn in_phase(&mut self, host: IpAddr, now: i64) -> bool {
        if self.heartbeats.len() >= PHASE_HOSTS && !self.heartbeats.contains_key(&host) {
            self.heartbeats.clear();
        }
        let times = self.heartbeats.entry(host).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > PHASE_WINDOW_NS)
        {
            times.pop_front();
        }
        let phase = |t: i64| {
            let gap = now.saturating_sub(t);
            HEARTBEATS_NS.iter().any(|&beat| {
                let beats = gap.saturating_add(beat / 2) / beat;
                (gap - beats * beat).abs() <= PHASE_TOLERANCE_NS
            })
        };
        let believed = times.is_empty() || times.iter().any(|&t| phase(t));
        if times.len() >= PHASE_TIMES {
            times.pop_front();
        }
        times.push_back(now);
        believed
    }

    /// Notes the publish entry bytes of a message inferred at `now` (ns).
    pub fn message_size(&mut self, now: i64, entry: u64) {
        if self.sizes.len() >= RECENT_MAX {
            self.sizes.pop_front();
        }
        self.sizes.push_back((now, entry));
    }

    /// Whether a message of `entry` publish entry bytes was inferred within
    /// [`CACHE_WINDOW_NS`] before `now`: an RPC of that size is a message (a copy of it, or one
    /// of the same size), not gossip.
    pub fn seen_size(&mut self, now: i64, entry: u64) -> bool {
        self.forget_sizes(now);
        self.sizes.iter().any(|&(_, e)| e == entry)
    }

    /// Forgets message sizes older than [`CACHE_WINDOW_NS`] before `now`.
    fn forget_sizes(&mut self, now: i64) {
        let since = now.saturating_sub(CACHE_WINDOW_NS);
        while self.sizes.front().is_some_and(|&(t, _)| t < since) {
            self.sizes.pop_front();
        }
    }

    /// How many (from 2 to `most`) of the messages inferred within [`CACHE_WINDOW_NS`] before
    /// `now` have entries adding up to `total` bytes, or to `total` less an empty control field
    /// (js-libp2p-gossipsub sends one): an RPC answering an IWANT carries messages that went
    /// by. `None` when no such set is found within [`SUM_SEARCH`] steps.
    pub fn messages_summing(&mut self, total: u64, most: u32, now: i64) -> Option<u32> {
        self.forget_sizes(now);
        // Distinct sizes, largest first, each usable as often as it went by (at most `most`).
        let mut sizes: Vec<(u64, u32)> = Vec::new();
        let mut all: Vec<u64> = self
            .sizes
            .iter()
            .map(|&(_, e)| e)
            .filter(|&e| e > 0)
            .collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        for e in all {
            match sizes.last_mut() {
                Some((s, n)) if *s == e => *n = (*n + 1).min(most),
                _ => sizes.push((e, 1)),
            }
        }
        let mut room: Vec<u64> = sizes
            .iter()
            .rev()
            .scan(0, |r, &(s, n)| {
                *r += s * u64::from(n);
                Some(*r)
            })
            .collect();
        room.reverse();
        [total, total.saturating_sub(EMPTY_FIELD)]
            .into_iter()
            .find_map(|t| {
                let mut steps = SUM_SEARCH;
                sum_of(&sizes, &room, t, most, &mut steps)
            })
            .filter(|&n| n >= 2)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Recent messages are the most one connection carried in the gossip window; a message's
    /// copies on other connections are not counted again, and old ones are forgotten.
    #[test]
    fn gossip_keeps_its_hosts_heartbeat() {
        let mut book = RelayBook::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s = 1_000_000_000;
        assert!(book.in_phase(a, 5 * s));
        assert!(book.in_phase(a, 5 * s + 3_000));
        assert!(!book.in_phase(a, 5 * s + s / 2));
        assert!(book.in_phase(a, 7 * s + 20_000_000));
        assert!(book.in_phase(a, 5 * s + 1_400_000_000), "js-libp2p's 0.7 s");
        assert!(book.in_phase(b, 5 * s + s / 2), "another host's first");
        assert!(
            book.in_phase(a, 30 * s + s / 2),
            "the first after a quiet while"
        );
    }

    #[test]
    fn recent_messages_are_one_connections() {
        let mut book = RelayBook::default();
        let (a, b) = (book.link(), book.link());
        for t in 0..3 {
            book.saw_message(t, a);
            book.saw_message(t, b);
        }
        book.saw_message(3, b);
        assert_eq!(book.recent_messages(4), 4);
        assert_eq!(book.recent_messages(GOSSIP_WINDOW_NS + 2), 2);
        assert_eq!(book.recent_messages(GOSSIP_WINDOW_NS + 4), 0);
    }

    /// A size inferred as a message within the cache window is known; older ones are not.
    #[test]
    fn message_sizes_seen() {
        let mut book = RelayBook::default();
        book.message_size(0, 434);
        assert!(book.seen_size(1, 434));
        assert!(!book.seen_size(1, 435));
        assert!(!book.seen_size(CACHE_WINDOW_NS + 1, 434));
    }
}
