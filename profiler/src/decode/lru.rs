//! A map bounded in entries that forgets the least recently used one first: message-id maps
//! must not grow with the length of a capture.

use std::collections::VecDeque;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// At most `capacity` entries; inserting past it evicts the least recently used.
pub struct Lru<K, V> {
    map: FxHashMap<K, (V, u64)>,
    /// Keys in order of use, with the stamp of that use; stale stamps are skipped.
    order: VecDeque<(K, u64)>,
    stamp: u64,
    capacity: usize,
    /// Entries evicted so far.
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` (≥ 1) entries.
    pub fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            map: FxHashMap::default(),
            order: VecDeque::new(),
            stamp: 0,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    /// Inserts or replaces `key`, marking it most recently used.
    pub fn insert(&mut self, key: K, value: V) {
        let stamp = self.touch(&key);
        self.map.insert(key, (value, stamp));
        while self.map.len() > self.capacity {
            self.evict_one();
        }
        self.compact();
    }

    /// The value of `key`, marking it most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.get_mut(key).map(|v| &*v)
    }

    /// The value of `key` for changing, marking it most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.map.contains_key(key) {
            return None;
        }
        let stamp = self.touch(key);
        self.compact();
        let entry = self.map.get_mut(key)?;
        entry.1 = stamp;
        Some(&mut entry.0)
    }

    /// Whether `key` is held, without marking it used.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Approximate heap bytes: the map's slots and the use order (not what keys and values own).
    pub fn heap_bytes(&self) -> usize {
        crate::memory::table_bytes::<(K, (V, u64))>(self.map.capacity())
            + crate::memory::deque_bytes(&self.order)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether anything was ever inserted (state learned, even if forgotten since).
    pub fn used(&self) -> bool {
        self.stamp > 0
    }

    fn touch(&mut self, key: &K) -> u64 {
        self.stamp += 1;
        self.order.push_back((key.clone(), self.stamp));
        self.stamp
    }

    fn evict_one(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.1 == stamp) {
                self.map.remove(&key);
                self.evicted += 1;
                return;
            }
        }
    }

    /// Drops stale entries of the use order once it is much longer than the map.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, stamp)| map.get(k).is_some_and(|e| e.1 == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_least_recently_used() {
        let mut m = Lru::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        assert_eq!(m.get(&1), Some(&"a"));
        m.insert(3, "c");
        assert_eq!(m.get(&2), None, "2 was used least recently");
        assert_eq!(m.get(&1), Some(&"a"));
        assert_eq!(m.get(&3), Some(&"c"));
        assert_eq!((m.len(), m.evicted), (2, 1));
    }

    #[test]
    fn stays_bounded_under_repeated_use() {
        let mut m = Lru::new(8);
        for i in 0..10_000u32 {
            m.insert(i % 16, i);
            let _ = m.get(&(i % 3));
        }
        assert!(m.len() <= 8);
        assert!(m.order.len() <= 2 * 8 + 17);
    }
}
