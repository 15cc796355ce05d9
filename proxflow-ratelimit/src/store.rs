//! Per-key state with a bound on the number of keys.
//!
//! Keys are 64-bit hashes of the client's key under a per-process random seed (a client cannot
//! aim at a collision it cannot compute), so a key costs the same 8 bytes whatever it was: an
//! address, a user id, a 200-byte API key. A full shard first drops its idle keys (whose state
//! is the same as a new key's, so dropping them changes no decision), then, if the clients are
//! all active, the ones closest to idle.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use crate::algorithm::Nanos;

/// The state of one key, and when it becomes indistinguishable from no state at all.
pub(crate) trait KeyState: Default + Send + 'static {
    fn idle_at(&self) -> Nanos;
}

/// Shards keep lock contention low when both cores check keys at once.
const SHARDS: usize = 64;

/// A full shard frees at least this fraction of its room at once, so that eviction (a scan)
/// happens once per many inserts.
const EVICT_FRACTION: usize = 16;

type Shard<S> = HashMap<u64, S, BuildHasherDefault<PrehashedKey>>;

pub(crate) struct KeyStore<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    /// Room per shard; they add up to exactly `max_keys`.
    shard_capacities: Box<[usize]>,
}

impl<S: KeyState> KeyStore<S> {
    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let count = SHARDS.min(max_keys);
        let shards = (0..count).map(|_| Mutex::new(HashMap::default())).collect();
        let shard_capacities = (0..count)
            .map(|i| max_keys / count + usize::from(i < max_keys % count))
            .collect();
        KeyStore {
            shards,
            shard_capacities,
        }
    }

    /// Runs `f` on the key's state (`None` for a new key) and stores what it leaves there.
    /// `now` is read only if a full shard has to evict.
    pub(crate) fn update<R>(
        &self,
        key: u64,
        now: impl FnOnce() -> Nanos,
        f: impl FnOnce(&mut Option<S>) -> R,
    ) -> R {
        let index = self.shard_of(key);
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = shard.get_mut(&key) {
            // Updated in place: removing and inserting would leave tombstones that make the
            // table grow.
            let mut state = Some(std::mem::take(existing));
            let result = f(&mut state);
            match state {
                Some(state) => *existing = state,
                None => {
                    shard.remove(&key);
                }
            }
            return result;
        }
        let mut state = None;
        let result = f(&mut state);
        if let Some(state) = state {
            let capacity = self.shard_capacities[index];
            if shard.len() >= capacity {
                evict(&mut shard, now(), capacity);
            }
            shard.insert(key, state);
        }
        result
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// Bytes the tables hold: buckets times the size of a key, a state and hashbrown's control
    /// byte. Heap memory a state owns (a sliding log's timestamps) is not included.
    pub(crate) fn table_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(u64, S)>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .map_or(0, |s| bucket_count(s.capacity()) * per_bucket)
            })
            .sum()
    }

    /// The most keys this store keeps.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shard_capacities.iter().sum()
    }

    fn shard_of(&self, key: u64) -> usize {
        // The low bits pick the bucket inside a shard's table; the high bits pick the shard.
        (key >> 58) as usize % self.shards.len()
    }
}

/// hashbrown's table size for a capacity: buckets are a power of two at most 7/8 full.
fn bucket_count(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else if capacity < 8 {
        if capacity < 4 {
            4
        } else {
            8
        }
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}

fn evict<S: KeyState>(shard: &mut Shard<S>, now: Nanos, capacity: usize) {
    let before = shard.len();
    shard.retain(|_, state| state.idle_at() > now);
    let wanted = (capacity / EVICT_FRACTION).max(1);
    let freed = before - shard.len();
    if freed >= wanted {
        return;
    }
    // Every key is busy: drop the ones that would be idle soonest. Those clients get a fresh
    // state, which is the only way to keep memory bounded under a flood of distinct keys.
    let mut idle_times: Vec<Nanos> = shard.values().map(KeyState::idle_at).collect();
    let cut = (wanted - freed).min(idle_times.len());
    if cut == 0 {
        return;
    }
    let (_, &mut threshold, _) = idle_times.select_nth_unstable(cut - 1);
    let mut dropped = 0;
    shard.retain(|_, state| {
        let drop = dropped < cut && state.idle_at() <= threshold;
        dropped += usize::from(drop);
        !drop
    });
    tracing::debug!(
        dropped,
        "rate limit keys evicted while still active: the key table is full"
    );
}

/// The keys are already hashes; hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl KeyState for u64 {
    fn idle_at(&self) -> Nanos {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_state_per_key() {
        let store: KeyStore<u64> = KeyStore::new(1000);
        store.update(1, || 0, |state| *state = Some(10));
        store.update(2, || 0, |state| *state = Some(20));
        assert_eq!(store.update(1, || 0, |state| *state), Some(10));
        assert_eq!(store.update(3, || 0, |state| *state), None);
        assert_eq!(store.len(), 2, "a key left without state is not stored");
    }

    #[test]
    fn idle_keys_go_first_and_the_bound_holds() {
        let store: KeyStore<u64> = KeyStore::new(64 * 16);
        // Fill one shard (same high bits) with keys idle at 5, then add busy keys at now = 10.
        let key = |i: u64| i;
        for i in 0..16 {
            store.update(key(i), || 0, |state| *state = Some(5));
        }
        for i in 16..40 {
            store.update(key(i), || 10, |state| *state = Some(100 + i));
        }
        assert!(store.len() <= store.capacity());
        assert_eq!(
            store.update(key(0), || 10, |state| *state),
            None,
            "an idle key was dropped"
        );
        assert_eq!(
            store.update(key(39), || 10, |state| *state),
            Some(139),
            "the newest busy key stays"
        );
    }

    #[test]
    fn the_bound_is_exact_for_any_max_keys() {
        for max_keys in [1, 5, 63, 64, 100, 1000] {
            let store: KeyStore<u64> = KeyStore::new(max_keys);
            assert_eq!(store.capacity(), max_keys);
            let mut key = 1u64;
            for i in 0..10 * max_keys as u64 {
                key = key
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                store.update(key, || i, |state| *state = Some(u64::MAX));
                assert!(
                    store.len() <= max_keys,
                    "{} keys for max_keys {max_keys}",
                    store.len()
                );
            }
        }
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let store: KeyStore<u64> = KeyStore::new(10_000);
        let mut key = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..200_000u64 {
            key = key
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            store.update(key, || i, |state| *state = Some(i + 1_000_000));
        }
        assert!(store.len() <= store.capacity(), "{} keys", store.len());
        let per_key = store.table_bytes() as f64 / store.capacity() as f64;
        // nginx's limit_req keeps 128 bytes per key.
        assert!(per_key <= 64.0, "{per_key} bytes per key");
    }
}
