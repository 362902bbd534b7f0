//! IP fragments: only the first fragment carries the transport header, so the flow it names is
//! remembered by (source, destination, protocol, identification) and later fragments count to
//! it. Fragments whose first fragment was never seen count to an address-only flow.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::FlowKey;

/// Most fragment trains remembered at once; the oldest half is forgotten past it.
pub const FRAGMENT_LIMIT: usize = 65_536;

/// Identity of one fragmented datagram.
type TrainKey = (IpAddr, IpAddr, u8, u32);

/// Flows of the datagrams being fragmented.
#[derive(Default)]
pub struct Fragments {
    trains: FxHashMap<TrainKey, (FlowKey, bool, i64)>,
}

impl Fragments {
    /// Remembers that the datagram `id` from `src` to `dst` belongs to `flow` (`src_is_lo`).
    pub fn first(&mut self, train: TrainKey, flow: FlowKey, src_is_lo: bool, ts: i64) {
        if self.trains.len() >= FRAGMENT_LIMIT {
            let mut ages: Vec<i64> = self.trains.values().map(|v| v.2).collect();
            let mid = ages.len() / 2;
            let (_, &mut cutoff, _) = ages.select_nth_unstable(mid);
            self.trains.retain(|_, v| v.2 > cutoff);
        }
        self.trains.insert(train, (flow, src_is_lo, ts));
    }

    /// The flow of a later fragment, if its first fragment was seen.
    /// First fragments held.
    pub fn len(&self) -> usize {
        self.trains.len()
    }

    /// Whether no first fragment is held.
    pub fn is_empty(&self) -> bool {
        self.trains.is_empty()
    }

    pub fn lookup(&self, train: &TrainKey) -> Option<(FlowKey, bool)> {
        self.trains.get(train).map(|&(k, lo, _)| (k, lo))
    }
}
