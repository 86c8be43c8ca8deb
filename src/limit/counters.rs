//! The counters: a sharded map from counter key to window, bounded by evicting idle counters
//! first and the least recently used when every one is live.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use super::table::CounterKey;
use super::window::Window;

/// Shards: enough that two cores rarely wait on each other.
const SHARDS: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Slot {
    window: Window,
    /// When the counter was last asked about, for the least-recently-used eviction.
    last_ms: u64,
    /// Counted since the last snapshot.
    dirty: bool,
}

/// A counter's state as the snapshot writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub key: CounterKey,
    /// Start of the counted window, in milliseconds since the epoch.
    pub window_start_ms: u64,
    /// Requests counted in that window.
    pub count: u32,
}

/// Every counter of one replica.
#[derive(Debug)]
pub struct Counters {
    /// Counters by key, split over independently locked shards.
    shards: Box<[Mutex<HashMap<CounterKey, Slot>>]>,
    hasher: RandomState,
    /// The most counters a shard holds before it evicts.
    per_shard: usize,
}

impl Counters {
    /// Counters that never hold more than about `capacity` entries.
    pub fn new(capacity: usize) -> Counters {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &CounterKey) -> MutexGuard<'_, HashMap<CounterKey, Slot>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding a shard leaves plain counts behind, still usable.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the counter of `key` (a fresh one if none), making room first if needed.
    pub fn with<R>(&self, key: CounterKey, now_ms: u64, f: impl FnOnce(&mut Window) -> (R, bool)) -> R {
        let mut shard = self.shard(&key);
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            evict(&mut shard, now_ms, self.per_shard);
        }
        let slot = shard.entry(key).or_insert(Slot {
            window: Window::default(),
            last_ms: now_ms,
            dirty: false,
        });
        slot.last_ms = now_ms;
        let (result, counted) = f(&mut slot.window);
        slot.dirty |= counted;
        result
    }

    /// Runs `f` on the counter of `key` if it exists.
    pub fn existing<R>(&self, key: &CounterKey, f: impl FnOnce(&mut Window) -> R) -> Option<R> {
        self.shard(key).get_mut(key).map(|slot| f(&mut slot.window))
    }

    /// Forgets counters that no longer carry weight.
    pub fn sweep(&self, now_ms: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|k, s| s.dirty || s.window.is_live(k.window_ms, now_ms));
        }
    }

    /// The counters counted since the last call, marked clean.
    pub fn take_dirty(&self) -> Vec<Reading> {
        let mut readings = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (key, slot) in shard.iter_mut().filter(|(_, s)| s.dirty) {
                slot.dirty = false;
                let (window_start_ms, count) = slot.window.current();
                readings.push(Reading {
                    key: *key,
                    window_start_ms,
                    count,
                });
            }
        }
        readings
    }

    /// How many counters are held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room in a full shard: idle counters go first (no decision changes); if every counter
/// is live, the least recently used quarter goes (those subjects start afresh).
fn evict(shard: &mut HashMap<CounterKey, Slot>, now_ms: u64, capacity: usize) {
    shard.retain(|k, s| s.window.is_live(k.window_ms, now_ms));
    if shard.len() < capacity {
        return;
    }
    let mut ages: Vec<u64> = shard.values().map(|s| s.last_ms).collect();
    let cut = ages.len() / 4;
    let (_, threshold, _) = ages.select_nth_unstable(cut);
    let threshold = *threshold;
    let mut dropped = 0;
    shard.retain(|_, s| {
        let drop = s.last_ms <= threshold && dropped <= cut;
        dropped += usize::from(drop);
        !drop
    });
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::limit::window::Quota;

    const Q: Quota = Quota {
        window_ms: 60_000,
        max: 10,
    };

    fn key(n: u32) -> CounterKey {
        CounterKey {
            rule: 1,
            window_ms: 60_000,
            addr: Some(IpAddr::V4(Ipv4Addr::from(n))),
        }
    }

    #[test]
    fn memory_stays_bounded_however_many_subjects_arrive() {
        let counters = Counters::new(1_000);
        // A flood of distinct live addresses, all within one window.
        for n in 0..100_000 {
            counters.with(key(n), 1_000 + u64::from(n) / 100, |w| {
                let o = w.acquire(Q, 1_000);
                (o, true)
            });
        }
        let held = counters.len();
        assert!(held <= 1_000 + SHARDS, "held {held} counters");
        // The most recent subjects are still counted.
        let mut recent = 0;
        counters.existing(&key(99_999), |w| recent = w.current().1);
        assert_eq!(recent, 1);
    }

    #[test]
    fn idle_counters_are_swept_and_dirty_ones_reported_once() {
        let counters = Counters::new(100);
        let q = Q;
        counters.with(key(1), 0, |w| (w.acquire(q, 0), true));
        counters.with(key(2), 0, |w| (w.peek(q, 0), false));
        let dirty = counters.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!((dirty[0].key, dirty[0].count), (key(1), 1));
        assert!(counters.take_dirty().is_empty());
        counters.sweep(60_000);
        assert_eq!(counters.len(), 2, "both still weigh on the next window");
        counters.sweep(120_000);
        assert!(counters.is_empty());
    }
}
