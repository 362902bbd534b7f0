//! Owners (host, process, cgroup) interned once: rows and flows carry a 4-byte id, rows handed to
//! sinks get the shared [`Owner`].

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::record::Owner;

/// Index of an owner in the [`OwnerTable`]; [`OwnerId::UNKNOWN`] is the owner with every field
/// null (offline captures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u32);

impl OwnerId {
    /// No owner known.
    pub const UNKNOWN: OwnerId = OwnerId(0);
}

/// Most distinct owners kept; past it, further owners count as [`OwnerId::UNKNOWN`].
pub const MAX_OWNERS: usize = 1 << 16;

/// Every owner seen in a run, each stored once.
pub struct OwnerTable {
    owners: Vec<Arc<Owner>>,
    index: FxHashMap<Arc<Owner>, OwnerId>,
    /// Owners that could not be added because the table was full.
    pub overflowed: u64,
}

impl Default for OwnerTable {
    fn default() -> OwnerTable {
        let unknown = Arc::new(Owner::default());
        let mut index = FxHashMap::default();
        index.insert(Arc::clone(&unknown), OwnerId::UNKNOWN);
        OwnerTable {
            owners: vec![unknown],
            index,
            overflowed: 0,
        }
    }
}

impl OwnerTable {
    /// The id of `owner`, adding it if new.
    pub fn intern(&mut self, owner: Owner) -> OwnerId {
        if let Some(&id) = self.index.get(&owner) {
            return id;
        }
        if self.owners.len() >= MAX_OWNERS {
            self.overflowed += 1;
            return OwnerId::UNKNOWN;
        }
        let id = OwnerId(self.owners.len() as u32);
        let owner = Arc::new(owner);
        self.owners.push(Arc::clone(&owner));
        self.index.insert(owner, id);
        id
    }

    /// Number of owners, the unknown one included.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether only the unknown owner is held (never: it is always there).
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The owner behind an id.
    pub fn get(&self, id: OwnerId) -> &Arc<Owner> {
        self.owners.get(id.0 as usize).unwrap_or(&self.owners[0])
    }
}
