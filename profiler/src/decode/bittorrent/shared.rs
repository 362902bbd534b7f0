//! BitTorrent peers shared by the shards of a run on several threads ([`crate::shards`]): a
//! peer learned on one host pair is looked up on others, so a shard's lookup waits until every
//! other shard has read the packets before it, and then sees exactly the peers the one-thread
//! run would have learned by then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::Endpoint;

/// A moment of the run: `(n, 0)` while reading packet n (counted from 1), `(n, 1)` at the idle
/// sweep after it, [`Moment::END`] while finishing the flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(pub u64, pub u8);

impl Moment {
    pub const END: Moment = Moment(u64::MAX, 2);

    /// The packets every other shard must have read before a lookup at this moment.
    fn needs(self) -> u64 {
        match self.1 {
            0 => self.0.saturating_sub(1),
            _ => self.0,
        }
    }
}

/// What the shards learned, and how far each has read.
pub struct SharedPeers {
    /// Each peer with the packet it was first learned in.
    learned: Mutex<FxHashMap<Endpoint, u64>>,
    /// Per shard: the number up to which all its packets are read.
    read: Vec<AtomicU64>,
}

impl SharedPeers {
    /// The state of a run on `shards` threads.
    pub fn new(shards: usize) -> Arc<SharedPeers> {
        Arc::new(SharedPeers {
            learned: Mutex::new(FxHashMap::default()),
            read: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

/// One shard's view of the [`SharedPeers`].
pub struct ShardPeers {
    shared: Arc<SharedPeers>,
    me: usize,
    now: Moment,
    /// A peer was learned outside of reading a packet (flows finish in another order than in
    /// the one-thread run).
    pub learned_late: bool,
}

impl ShardPeers {
    /// Shard `me` of `shared`.
    pub fn new(shared: &Arc<SharedPeers>, me: usize) -> ShardPeers {
        ShardPeers {
            shared: Arc::clone(shared),
            me,
            now: Moment::default(),
            learned_late: false,
        }
    }

    /// The moment of what the shard does next; all its packets up to `read` are read.
    pub fn at(&mut self, now: Moment, read: u64) {
        self.now = now;
        self.shared.read[self.me].store(read, Ordering::Release);
    }

    pub(super) fn learn(&mut self, peer: Endpoint) {
        if self.now.1 != 0 {
            self.learned_late = true;
            return;
        }
        let mut learned = self
            .shared
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let first = learned.entry(peer).or_insert(self.now.0);
        *first = (*first).min(self.now.0);
    }

    /// Whether another shard learned `peer` before now.
    pub(super) fn knows(&self, peer: &Endpoint) -> bool {
        let needs = self.now.needs();
        for (i, read) in self.shared.read.iter().enumerate() {
            while i != self.me && read.load(Ordering::Acquire) < needs {
                std::thread::yield_now();
            }
        }
        let learned = self
            .shared
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        learned.get(peer).is_some_and(|&n| Moment(n, 0) < self.now)
    }
}

impl Drop for ShardPeers {
    /// A shard that ends has read everything: no other waits for it.
    fn drop(&mut self) {
        self.shared.read[self.me].store(u64::MAX, Ordering::Release);
    }
}
