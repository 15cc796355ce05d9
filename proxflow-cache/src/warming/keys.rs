//! The table of tracked keys: what is known of each, bounded, with eviction of the least
//! requested.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::links::{Links, NO_LINKS};

/// Mixes a `u64` so that keys or clients given as small integers still spread over a table.
pub(super) fn mix(x: u64) -> u64 {
    // The finaliser of SplitMix64.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hasher for `u64` keys that are hashes already (or small integers): one mix, no SipHash.
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(n);
    }
}

/// Why an entry was fetched, or a fetch is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum Fetch {
    /// Not warming's: a miss, or nothing.
    #[default]
    Demand,
    /// A refresh ahead of expiry (or ahead of a periodic key's next request).
    Refresh,
    /// A prefetch after a request for a key this one follows.
    Prefetch,
}

/// The least count of a follower link that is trusted: two observations (a little decayed).
/// A client's next request after another is a link seen once; most never repeat.
pub(super) const MIN_LINK: f32 = 1.5;

/// `due_at` when nothing is due.
pub(super) const NO_DUE: u64 = u64::MAX;

/// What is known of one key. Times are nanoseconds since the caller's origin; `expires_at`
/// is `0` when nothing is stored.
#[derive(Clone, Debug)]
pub(super) struct KeyState {
    pub(super) key: u64,
    /// When the observation started: the first request, or the first store.
    pub(super) first_seen: u64,
    /// The latest request (`first_seen` until there is one).
    pub(super) last_seen: u64,
    /// Requests counted towards the rate (not the one that started the observation),
    /// decayed with the rate window, as of `last_seen`.
    pub(super) count: f32,
    /// Mean gap between requests, in seconds (weighted moving average).
    pub(super) gap_mean: f32,
    /// Mean absolute deviation of the gaps from `gap_mean`, in seconds.
    pub(super) gap_dev: f32,
    /// Gaps observed (saturating).
    pub(super) gaps: u16,
    /// Whether a request was seen (a key can be known from a store alone).
    pub(super) requested: bool,
    /// Whether the fetch in flight was asked for by a request that waits for it.
    pub(super) pending_used: bool,
    /// Refreshed lifetimes in a row that ended without a request.
    pub(super) unused_streak: u8,
    /// Whether the stored entry was requested while fresh (or while it was being fetched).
    pub(super) used: bool,
    /// Why the stored entry was fetched.
    pub(super) stored_by: Fetch,
    /// Why the fetch in flight was asked for.
    pub(super) pending: Fetch,
    /// Whether `due_at` is a periodic key's predicted refresh rather than the expiry's.
    pub(super) due_predicted: bool,
    /// Occurrences of this key as a leading key, decayed at each occurrence.
    pub(super) occurrences: f32,
    pub(super) stored_at: u64,
    pub(super) expires_at: u64,
    pub(super) due_at: u64,
    pub(super) pending_since: u64,
    /// The block of this key's follower links in the arena ([`NO_LINKS`] until the first).
    pub(super) links: u32,
    /// The number of follower links.
    pub(super) link_len: u8,
}

impl KeyState {
    /// A key first seen at `now`.
    fn new(key: u64, now: u64) -> Self {
        Self {
            key,
            first_seen: now,
            last_seen: now,
            count: 0.0,
            gap_mean: 0.0,
            gap_dev: 0.0,
            gaps: 0,
            requested: false,
            pending_used: false,
            unused_streak: 0,
            used: false,
            stored_by: Fetch::Demand,
            pending: Fetch::Demand,
            due_predicted: false,
            occurrences: 0.0,
            stored_at: 0,
            expires_at: 0,
            due_at: NO_DUE,
            pending_since: 0,
            links: NO_LINKS,
            link_len: 0,
        }
    }

    /// A fetch warming asked for, for `why`, starts at `now`.
    pub(super) fn fetching(&mut self, why: Fetch, now: u64) {
        self.pending = why;
        self.pending_since = now;
        self.pending_used = false;
    }

    /// Whether a fresh entry is stored at `now`.
    pub(super) fn is_stored(&self, now: u64) -> bool {
        self.expires_at > now
    }

    /// The decayed request count at `now`, with time constant `tau` seconds.
    pub(super) fn count_at(&self, now: u64, tau: f64) -> f64 {
        f64::from(self.count) * (-secs(now.saturating_sub(self.last_seen)) / tau).exp()
    }

    /// The estimated request rate at `now`, per second: the decayed count over the decayed
    /// time observed, that time taken as at least `floor` seconds (a key seen twice in a
    /// second is not requested every second until more time says so).
    pub(super) fn rate(&self, now: u64, tau: f64, floor: f64) -> f64 {
        let age = secs(now.saturating_sub(self.first_seen)).max(floor);
        let observed = -tau * (-age / tau).exp_m1();
        if observed <= 0.0 {
            return 0.0;
        }
        self.count_at(now, tau) / observed
    }

    /// Records a request at `now`: the rate count and the gap statistics. The request that
    /// starts the observation (`counted` false) is not counted in the rate: the observation
    /// starts at a request, and counting it would see a rate where there may be none.
    pub(super) fn request(&mut self, now: u64, tau: f64, counted: bool) {
        self.unused_streak = 0;
        if counted {
            self.count = (self.count_at(now, tau) + 1.0) as f32;
        }
        if !self.requested {
            self.requested = true;
            self.last_seen = now;
            return;
        }
        let gap = secs(now.saturating_sub(self.last_seen));
        // Gaps are weighted 1/4: about the last four shape the estimate, so a periodic key
        // is recognised after a few periods, and loses the label as soon as it stops.
        let gap = gap as f32;
        if self.gaps == 0 {
            self.gap_mean = gap;
            // Not periodic until shown: the deviation starts at half the gap.
            self.gap_dev = gap / 2.0;
        } else {
            self.gap_mean += (gap - self.gap_mean) / 4.0;
            self.gap_dev += ((gap - self.gap_mean).abs() - self.gap_dev) / 4.0;
        }
        self.gaps = self.gaps.saturating_add(1);
        self.last_seen = now;
    }
}

/// Seconds in `nanos` nanoseconds.
pub(super) fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Tracked keys: a dense vector (so that eviction can sample it) indexed by a map.
pub(super) struct Keys {
    states: Vec<KeyState>,
    index: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    links: Links,
    max: usize,
    rng: u64,
}

/// Keys sampled to choose one to evict.
const EVICTION_SAMPLE: usize = 8;

impl Keys {
    /// An empty table of at most `max` keys with at most `followers` links each (at most
    /// 255); `seed` drives the eviction sampling.
    pub(super) fn new(max: usize, followers: usize, seed: u64) -> Self {
        Self {
            states: Vec::new(),
            index: HashMap::default(),
            links: Links::new(followers.min(255)),
            max: max.max(1),
            rng: seed,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    pub(super) fn get(&self, key: u64) -> Option<&KeyState> {
        self.index.get(&key).map(|&i| &self.states[i as usize])
    }

    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut KeyState> {
        self.index.get(&key).map(|&i| &mut self.states[i as usize])
    }

    /// The position of the key's state, and whether it was created at `now` because it was
    /// not tracked; when the table is full, the least valuable of a few sampled keys makes
    /// room (its followers go with it). The position holds until the next insertion or
    /// removal.
    pub(super) fn get_or_insert(&mut self, key: u64, now: u64, tau: f64) -> (usize, bool) {
        if let Some(&i) = self.index.get(&key) {
            return (i as usize, false);
        }
        if self.states.len() >= self.max {
            self.evict(now, tau);
        }
        let i = self.states.len();
        self.states.push(KeyState::new(key, now));
        self.index.insert(key, i as u32);
        (i, true)
    }

    /// The state at position `i`.
    pub(super) fn at(&self, i: usize) -> &KeyState {
        &self.states[i]
    }

    /// The state at position `i`, to change it.
    pub(super) fn at_mut(&mut self, i: usize) -> &mut KeyState {
        &mut self.states[i]
    }

    /// Forgets `key`.
    pub(super) fn remove(&mut self, key: u64) {
        let Some(i) = self.index.remove(&key) else {
            return;
        };
        let i = i as usize;
        let removed = self.states.swap_remove(i);
        self.links.release(removed.links);
        if let Some(moved) = self.states.get(i) {
            self.index.insert(moved.key, i as u32);
        }
    }

    fn evict(&mut self, now: u64, tau: f64) {
        let n = self.states.len();
        let mut victim = None;
        let mut lowest = f64::INFINITY;
        for j in 0..EVICTION_SAMPLE.min(n) {
            // A small table is scanned whole.
            let i = if n <= EVICTION_SAMPLE {
                j
            } else {
                (self.next_random() % n as u64) as usize
            };
            let value = self.value(&self.states[i], now, tau);
            if value < lowest {
                lowest = value;
                victim = Some(self.states[i].key);
            }
        }
        if let Some(key) = victim {
            self.remove(key);
        }
    }

    /// What keeping a key's state is worth, to choose one to forget: its decayed request
    /// count, times one plus its trusted follower links (among keys as rarely requested, one
    /// that leads others pays for its prefetches, and its links take a few occurrences to
    /// learn again).
    fn value(&self, state: &KeyState, now: u64, tau: f64) -> f64 {
        let (_, counts) = self.links.get(state.links, state.link_len);
        let trusted = counts.iter().filter(|&&c| c >= MIN_LINK).count();
        state.count_at(now, tau) * (1 + trusted) as f64
    }

    /// The follower links of a key: their keys and counts.
    pub(super) fn followers(&self, state: &KeyState) -> (&[u64], &[f32]) {
        self.links.get(state.links, state.link_len)
    }

    /// Credits the link from `leader` to `follower` with one observation. A new link takes a
    /// free place, or the place of the weakest link if that one weighs less than one
    /// observation (so that noise does not push out established links).
    pub(super) fn credit(&mut self, leader: u64, follower: u64) {
        let stride = self.links.stride();
        let Some(&i) = self.index.get(&leader) else {
            return;
        };
        let state = &mut self.states[i as usize];
        if stride == 0 {
            return;
        }
        if state.links == NO_LINKS {
            state.links = self.links.alloc();
            state.link_len = 0;
        }
        let len = usize::from(state.link_len);
        let (keys, counts) = self.links.block_mut(state.links);
        if let Some(j) = keys[..len].iter().position(|&k| k == follower) {
            counts[j] += 1.0;
        } else if len < stride {
            keys[len] = follower;
            counts[len] = 1.0;
            state.link_len += 1;
        } else if let Some((j, _)) = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c < 1.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
        {
            keys[j] = follower;
            counts[j] = 1.0;
        }
    }

    /// An occurrence of the key at position `i` as a leader: calls `trusted` with the strength (count over
    /// occurrences) of each trusted link, then decays the occurrences and the links.
    pub(super) fn occurrence(&mut self, i: usize, decay: f32, mut trusted: impl FnMut(f64)) {
        let state = &mut self.states[i];
        let len = usize::from(state.link_len);
        if state.links != NO_LINKS {
            let (_, counts) = self.links.block_mut(state.links);
            for count in &mut counts[..len] {
                if *count >= MIN_LINK && state.occurrences > 0.0 {
                    trusted(f64::from(*count / state.occurrences).min(1.0));
                }
                *count *= decay;
            }
        }
        state.occurrences = state.occurrences * decay + 1.0;
    }

    /// The bytes the table holds: states, index, links (the index estimated from its
    /// capacity: a key, a position and a control byte per bucket).
    pub(super) fn bytes(&self) -> usize {
        self.states.capacity() * std::mem::size_of::<KeyState>()
            + self.index.capacity() * (8 + 4 + 1)
            + self.links.bytes()
    }

    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.rng)
    }

    /// Every tracked key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &KeyState> {
        self.states.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_rate_of_a_steady_key_is_its_request_rate() {
        let tau = 600.0;
        let mut k = KeyState::new(1, 0);
        k.request(0, tau, false);
        // One request every 2 s for an hour, after the one that started the observation.
        for i in 1..=1800 {
            k.request(i * 2 * S, tau, true);
        }
        let rate = k.rate(3600 * S, tau, 0.0);
        assert!((rate - 0.5).abs() < 0.01, "{rate}");
        // Right after the start, the few requests seen give the rate too.
        let mut k = KeyState::new(1, 0);
        k.request(0, tau, false);
        for i in 1..=10 {
            k.request(i * 2 * S, tau, true);
        }
        let rate = k.rate(20 * S, tau, 0.0);
        assert!((rate - 0.5).abs() < 0.02, "{rate}");
        // Silence lowers it.
        assert!(k.rate(620 * S, tau, 0.0) < 0.02);
        // Seen twice in a second, over a floor of a minute: once a minute.
        let mut k = KeyState::new(1, 0);
        k.request(0, tau, false);
        k.request(S, tau, true);
        assert!((k.rate(S, tau, 60.0) - 1.0 / 60.0).abs() < 0.001);
    }

    #[test]
    fn gap_statistics_tell_periodic_from_irregular() {
        let mut k = KeyState::new(1, 0);
        for i in 0..=6 {
            k.request(i * 90 * S, 600.0, i > 0);
        }
        assert!((k.gap_mean - 90.0).abs() < 0.01);
        assert!(k.gap_dev < 0.25 * k.gap_mean);
        let mut k = KeyState::new(1, 0);
        k.request(0, 600.0, false);
        let mut t = 0;
        for gap in [10, 170, 40, 120, 5, 200] {
            t += gap * S;
            k.request(t, 600.0, true);
        }
        assert!(k.gap_dev > 0.25 * k.gap_mean);
    }

    #[test]
    fn a_full_table_evicts_a_rarely_requested_key() {
        let mut keys = Keys::new(4, 4, 7);
        for key in 0..4 {
            keys.get_or_insert(key, 0, 600.0);
        }
        // Keys 0, 1 and 3 are requested; 2 is not.
        for key in [0, 1, 3] {
            for t in 1..=5 {
                let (i, _) = keys.get_or_insert(key, 0, 600.0);
                keys.at_mut(i).request(t * S, 600.0, true);
            }
        }
        keys.get_or_insert(9, 6 * S, 600.0);
        assert_eq!(keys.len(), 4);
        assert!(keys.get(2).is_none());
        for key in [0, 1, 3, 9] {
            assert_eq!(keys.get(key).map(|k| k.key), Some(key));
        }
    }
}
