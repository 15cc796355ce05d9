//! Per-key state with a bound on the number of keys.
//!
//! Keys are 64-bit hashes of the client's key under a per-process random seed (a client cannot
//! aim at a collision it cannot compute), so a key costs the same 8 bytes whatever it was: an
//! address, a user id, a 200-byte API key. They are split among up to 64 shards (one below
//! 2048 keys; above, at least 1024 keys to a shard), and a store-wide count keeps them to
//! `max_keys` exactly. When the store or a key's shard is full, the shard first drops its idle
//! keys (whose state is the same as a new key's, so dropping them changes no decision), then, if
//! the clients are all active, the ones closest to idle; a shard with nothing to drop takes the
//! room from another, so that a full table leaves no new client unlimited.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

use crate::algorithm::Nanos;

/// The state of one key, and when it becomes indistinguishable from no state at all.
pub(crate) trait KeyState: Default + Send + 'static {
    fn idle_at(&self) -> Nanos;
}

/// Shards keep lock contention low when both cores check keys at once.
const SHARDS: usize = 64;

/// The smallest even share of a shard, when there is more than one: hashes spread evenly only
/// over many keys, and a shard of a few keys fills (and evicts live keys) while the store as a
/// whole has room.
const MIN_SHARE: usize = 1024;

/// A full shard frees at least this fraction of its room at once, so that eviction (a scan)
/// happens once per many inserts.
const EVICT_FRACTION: usize = 16;

pub(crate) struct KeyStore<S> {
    shards: Box<[Mutex<Table<S>>]>,
    /// Room per shard: a quarter more than an even share. Hashes never spread exactly evenly:
    /// shards of exactly `max_keys / 64` would evict live keys while the store as a whole has
    /// room for them.
    shard_capacity: usize,
    max_keys: usize,
    /// Keys held by all shards together, never more than `max_keys`.
    len: AtomicUsize,
}

impl<S: KeyState> KeyStore<S> {
    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let count = (max_keys / MIN_SHARE).clamp(1, SHARDS);
        let share = max_keys.div_ceil(count);
        KeyStore {
            shards: (0..count).map(|_| Mutex::new(Table::default())).collect(),
            shard_capacity: share + share / 4,
            max_keys,
            len: AtomicUsize::new(0),
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
        let key = key.max(FIRST_KEY);
        let index = self.shard_of(key);
        let mut table = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match table.find(key) {
            Some(slot) => {
                let mut state = Some(std::mem::take(&mut table.slots[slot].state));
                let result = f(&mut state);
                match state {
                    Some(state) => table.slots[slot].state = state,
                    None => {
                        table.remove(slot);
                        self.len.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                result
            }
            None => {
                let mut state = None;
                let result = f(&mut state);
                if let Some(state) = state {
                    let capacity = self.shard_capacity;
                    if table.len >= capacity || self.len.load(Ordering::Relaxed) >= self.max_keys {
                        let now = now();
                        let mut freed = table.evict(now, capacity);
                        if freed == 0 {
                            // The store is full, but not with this shard's keys: room comes
                            // from another shard, or this key would never be limited.
                            freed = self.evict_elsewhere(index, now);
                        }
                        self.len.fetch_sub(freed, Ordering::Relaxed);
                    }
                    // The place is taken before the key is stored, so that shards inserting at
                    // once cannot pass the bound together. Without a place (other shards took
                    // the room just freed) the key keeps no state: it counts as new next time.
                    if table.len < capacity && self.take_place() {
                        table.insert(key, state, capacity);
                    }
                }
                result
            }
        }
    }

    /// Frees room in the first other shard that has keys to give. Only tries each lock, since
    /// the caller holds its own shard's: waiting could deadlock with a caller doing the same
    /// the other way round. Returns how many keys went.
    fn evict_elsewhere(&self, own: usize, now: Nanos) -> usize {
        let count = self.shards.len();
        for other in (1..count).map(|step| (own + step) % count) {
            let mut table = match self.shards[other].try_lock() {
                Ok(table) => table,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            if table.len > 0 {
                return table.evict(now, self.shard_capacity);
            }
        }
        0
    }

    fn take_place(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                (len < self.max_keys).then_some(len + 1)
            })
            .is_ok()
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes the tables hold (their slots). Heap memory a state owns (a sliding log's
    /// timestamps) is not included.
    pub(crate) fn table_bytes(&self) -> usize {
        let per_slot = std::mem::size_of::<Slot<S>>();
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |table| table.slots.len() * per_slot))
            .sum()
    }

    /// The most keys this store keeps.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.max_keys
    }

    fn shard_of(&self, key: u64) -> usize {
        // The low bits pick the slot inside a shard's table; the high bits pick the shard, each
        // shard an equal range of them whatever the count (the top bits modulo a count that
        // does not divide their range would give some shards twice the keys of others).
        ((u128::from(key) * self.shards.len() as u128) >> 64) as usize
    }
}

/// Marks a free slot. Keys are hashes; the one key that hashes to it shares a slot with
/// [`FIRST_KEY`] (a 1 in 2^64 collision, like any other).
const FREE: u64 = 0;
const FIRST_KEY: u64 = 1;

/// An open-addressing table with the key beside its state, probed linearly: a lookup of a key
/// that is not in the caches costs one cache miss, where hashbrown costs two at a million keys
/// (its control bytes, then the bucket), and those misses are most of a keyed decision.
struct Table<S> {
    /// A power of two in length (or empty), at most 3/4 full.
    slots: Vec<Slot<S>>,
    len: usize,
}

#[derive(Default)]
struct Slot<S> {
    key: u64,
    state: S,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<S: KeyState> Table<S> {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, key: u64) -> usize {
        key as usize & self.mask()
    }

    /// The slot holding `key`, if it is here.
    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut slot = self.home(key);
        loop {
            match self.slots[slot].key {
                found if found == key => return Some(slot),
                FREE => return None,
                _ => slot = (slot + 1) & self.mask(),
            }
        }
    }

    /// Inserts a key known to be absent. Grows to fit `capacity` keys at most 3/4 full, and
    /// not beyond, so a full shard costs the same memory whatever traffic filled it.
    fn insert(&mut self, key: u64, state: S, capacity: usize) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let wanted = (self.slots.len() * 2).max(8);
            let most = (capacity * 4).div_ceil(3).next_power_of_two().max(8);
            self.rebuild(wanted.min(most), |_| true);
        }
        self.put(Slot { key, state });
    }

    /// Empties a slot, shifting later entries of the same run back so that no lookup stops
    /// early (no tombstones, which would fill the table under churn).
    fn remove(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        while self.slots[next].key != FREE {
            let home = self.home(self.slots[next].key);
            // The entry may move back to the hole if the hole lies between its home and it.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    /// Moves the entries `keep` accepts into a new array of `slots` slots.
    fn rebuild(&mut self, slots: usize, mut keep: impl FnMut(&S) -> bool) {
        let old = std::mem::replace(&mut self.slots, new_slots(slots));
        self.len = 0;
        for entry in old.into_iter().filter(|entry| entry.key != FREE) {
            if keep(&entry.state) {
                self.put(entry);
            }
        }
    }

    /// Puts an entry into a table with room for it.
    fn put(&mut self, entry: Slot<S>) {
        let mut slot = self.home(entry.key);
        while self.slots[slot].key != FREE {
            slot = (slot + 1) & self.mask();
        }
        self.slots[slot] = entry;
        self.len += 1;
    }

    /// Frees room in a full table: idle keys first (their state is the same as a new key's, so
    /// dropping them changes no decision), then, if every client is active, the keys that would
    /// be idle soonest. Returns how many keys went.
    fn evict(&mut self, now: Nanos, capacity: usize) -> usize {
        let wanted = (capacity / EVICT_FRACTION).max(1);
        let mut busy: Vec<Nanos> = self
            .slots
            .iter()
            .filter(|entry| entry.key != FREE && entry.state.idle_at() > now)
            .map(|entry| entry.state.idle_at())
            .collect();
        let idle = self.len - busy.len();
        let mut busy_to_drop = wanted.saturating_sub(idle).min(busy.len());
        let threshold = match busy_to_drop {
            0 => now,
            cut => *busy.select_nth_unstable(cut - 1).1,
        };
        if busy_to_drop > 0 {
            tracing::debug!(
                dropped = busy_to_drop,
                "rate limit keys evicted while still active: the key table is full"
            );
        }
        let before = self.len;
        self.rebuild(self.slots.len(), |state| {
            let idle_at = state.idle_at();
            let drop_busy = busy_to_drop > 0 && idle_at <= threshold;
            busy_to_drop -= usize::from(drop_busy);
            idle_at > now && !drop_busy
        });
        before - self.len
    }
}

fn new_slots<S: Default>(count: usize) -> Vec<Slot<S>> {
    std::iter::repeat_with(Slot::default).take(count).collect()
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
    fn removals_keep_every_other_key_findable_across_the_tables_end() {
        // Tables small enough that runs wrap past the end; keys whose low bits crowd a few
        // homes (the last slots among them), removed in an order that moves entries back
        // across the wrap. A set is the model.
        for capacity in [6, 7, 13, 48, 100] {
            let mut table: Table<u64> = Table::default();
            let mut model = std::collections::BTreeSet::new();
            let mut rng = 0x5eed_u64 + capacity as u64;
            let mut step = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            // Low bits that put homes in the first slot (of tables up to 64 long), the second,
            // the last and a few between: runs start on both sides of the end and cross it.
            const LOW: [u64; 5] = [0x40, 0x01, 0x0E, 0x3E, 0xFF];
            for _ in 0..2000 {
                let low = LOW[(step() % 5) as usize];
                // Forty keys in all, so that they come back and are removed.
                let key = ((step() % 8) << 32) | low;
                match table.find(key) {
                    Some(slot) => {
                        table.remove(slot);
                        model.remove(&key);
                    }
                    None if table.len < capacity => {
                        table.insert(key, 1, capacity);
                        model.insert(key);
                    }
                    None => {}
                }
                assert_eq!(table.len, model.len());
                for &kept in &model {
                    assert!(
                        table.find(kept).is_some(),
                        "capacity {capacity}: lost {kept:x}"
                    );
                }
            }
            assert!(table.slots.len() <= (capacity * 4).div_ceil(3).next_power_of_two().max(8));
        }
    }

    #[test]
    fn idle_keys_go_first_and_the_bound_holds() {
        let store: KeyStore<u64> = KeyStore::new(16);
        // Fill the store with keys idle at 5, then add busy keys at now = 10.
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

    /// Distinct keys spread as hashes are (splitmix64's finalizer of 1, 2, 3...: the same keys
    /// each run).
    fn hashes() -> impl Iterator<Item = u64> {
        (1..u64::MAX).map(|mut z| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn live_keys_stay_while_the_store_has_room() {
        // Small bounds (one shard, or a few of about a thousand keys each), some not a multiple
        // of their shard count (5 and 50 shards): nine tenths full, no shard may have evicted.
        for max_keys in [64, 100, 1000, 5000, 5421, 51_300] {
            let store: KeyStore<u64> = KeyStore::new(max_keys);
            let keys: Vec<u64> = hashes().take(max_keys * 9 / 10).collect();
            for &key in &keys {
                store.update(key, || 0, |state| *state = Some(u64::MAX));
            }
            let lost = keys
                .iter()
                .filter(|&&key| store.update(key, || 0, |state| state.is_none()))
                .count();
            assert_eq!(
                lost,
                0,
                "max_keys {max_keys}: live keys evicted with {} keys held",
                store.len()
            );
        }
    }

    #[test]
    fn a_new_key_is_stored_when_the_store_is_full() {
        for max_keys in [1, 5, 64, 100, 1000, 5421] {
            let store: KeyStore<u64> = KeyStore::new(max_keys);
            let mut keys = hashes();
            for key in keys.by_ref().take(max_keys) {
                store.update(key, || 0, |state| *state = Some(u64::MAX));
            }
            for key in keys.take(100) {
                store.update(key, || 0, |state| *state = Some(u64::MAX));
                assert!(
                    store.update(key, || 0, |state| state.is_some()),
                    "max_keys {max_keys}: a new key was not stored, so it is never limited"
                );
                assert!(store.len() <= max_keys);
            }
        }
    }

    #[test]
    fn a_new_key_is_stored_when_the_store_is_full_but_its_shard_is_empty() {
        // Five shards (not a divisor of max_keys), the store full with keys of the first four.
        let max_keys = 5 * MIN_SHARE + 301;
        let store: KeyStore<u64> = KeyStore::new(max_keys);
        let last = store.shards.len() - 1;
        let in_shard = |shard| {
            let store = &store;
            hashes().filter(move |&key| store.shard_of(key) == shard)
        };
        for shard in 0..last {
            for key in in_shard(shard).take(store.shard_capacity) {
                if store.len() < max_keys {
                    store.update(key, || 0, |state| *state = Some(u64::MAX));
                }
            }
        }
        assert_eq!(store.len(), max_keys);
        let newcomer = in_shard(last).next().unwrap();
        store.update(newcomer, || 0, |state| *state = Some(u64::MAX));
        assert!(
            store.update(newcomer, || 0, |state| state.is_some()),
            "a new key in an empty shard was not stored, so it is never limited"
        );
        assert!(store.len() <= max_keys);
    }

    #[test]
    fn a_full_store_keeps_every_live_key() {
        let max_keys = 100_000;
        let store: KeyStore<u64> = KeyStore::new(max_keys);
        let keys: Vec<u64> = (1..=max_keys as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for &key in &keys {
            store.update(key, || 0, |state| *state = Some(u64::MAX));
        }
        assert_eq!(store.len(), max_keys);
        let kept = keys
            .iter()
            .filter(|&&key| store.update(key, || 0, |state| state.is_some()))
            .count();
        assert_eq!(
            kept, max_keys,
            "no live key evicted while the store had room"
        );
        // One more: a batch of the busy keys goes to make room.
        store.update(1, || 0, |state| *state = Some(u64::MAX));
        assert!(store.len() < max_keys);
        assert!(store.update(1, || 0, |state| state.is_some()));
    }

    #[test]
    fn inserts_updates_and_removals_agree_with_a_map() {
        // Small keys all land in one shard, and many share a home slot: long probe runs whose
        // middle entries get removed, the case backward shifting has to get right.
        let store: KeyStore<u64> = KeyStore::new(1 << 20);
        let mut model = std::collections::HashMap::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = 1 + (seed % 300) * 64 + (seed >> 40) % 3;
            let remove = (seed >> 20).is_multiple_of(4);
            let seen = store.update(
                key,
                || 0,
                |state| {
                    let seen = *state;
                    *state = if remove { None } else { Some(seed | 1) };
                    seen
                },
            );
            let expected = if remove {
                model.remove(&key)
            } else {
                model.insert(key, seed | 1)
            };
            assert_eq!(seen, expected, "key {key}");
        }
        assert_eq!(store.len(), model.len());
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
