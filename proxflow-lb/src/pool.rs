//! The upstreams of one balancer, the policies' picks over them, and the adaptive updates.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::adaptive::{self, Interval, Sample};
use crate::clock::Moment;
use crate::config::{AdaptiveConfig, LbConfig, Policy};
use crate::error::ConfigError;
use crate::upstream::{fnv1a, lower_ewma_cost, nanos, Health, Nanos, Shared, Upstream};

pub(crate) struct Pool {
    shared: Arc<Shared>,
    upstreams: RwLock<Arc<[Arc<Upstream>]>>,
    /// Tells this pool's list apart from other pools' in the thread-local cache of [`LAST`].
    id: u64,
    pub(crate) config: LbConfig,
    /// Smooth weighted round robin changes all running weights at once.
    wrr: Mutex<()>,
    /// SplitMix64 over an atomic counter: seeded, lock-free (a mutex around a generator was
    /// a tenth of a pick).
    rng: AtomicU64,
    /// Adaptive: when the next sample is due.
    next_update: AtomicU64,
    /// Active health checks run (they start with the first request).
    pub(crate) health_started: AtomicBool,
}

impl Pool {
    pub(crate) fn new(config: LbConfig) -> Result<Pool, ConfigError> {
        config.validate()?;
        let decay = match &config.lb_policy {
            Policy::PeakEwma { decay } => *decay,
            _ => Duration::from_secs(10),
        };
        let shared = Arc::new(Shared::new(
            Moment::now(),
            decay,
            config.passive_health.clone(),
        ));
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(Arc::clone(&shared), &u.url, u.weight, 0, false).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let rng = config.seed.unwrap_or_else(|| fastrand::u64(..));
        static POOLS: AtomicU64 = AtomicU64::new(0);
        let pool = Pool {
            shared,
            upstreams: RwLock::new(upstreams.into()),
            id: POOLS.fetch_add(1, Ordering::Relaxed),
            wrr: Mutex::new(()),
            rng: AtomicU64::new(rng),
            next_update: AtomicU64::new(0),
            health_started: AtomicBool::new(false),
            config,
        };
        if let Some(adaptive) = pool.adaptive() {
            pool.next_update
                .store(nanos(adaptive.update_interval), Ordering::Relaxed);
        }
        Ok(pool)
    }

    pub(crate) fn nanos_since_origin(&self, at: Moment) -> Nanos {
        self.shared.nanos_since_origin(at)
    }

    pub(crate) fn list(&self) -> Arc<[Arc<Upstream>]> {
        Arc::clone(&self.upstreams.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` over the list and its weights now, from this thread's cache while nothing
    /// changed and no ejection or slow start moved on: the lock's two atomic
    /// read-modify-writes and the weights read afresh were most of a pick besides the clock.
    fn with_weighed<R>(&self, now: Nanos, f: impl FnOnce(&Weighed) -> R) -> R {
        let version = self.shared.version.load(Ordering::Acquire);
        let cached = LAST.try_with(Cell::take).ok().flatten();
        let weighed = match cached {
            Some(last) if last.pool == self.id && last.version == version && now < last.until => {
                last
            }
            stale => self.weigh(stale, version, now),
        };
        let result = f(&weighed);
        // Fails only while the thread exits; the cache is dropped then.
        let _ = LAST.try_with(|last| last.set(Some(weighed)));
        result
    }

    /// The list and its weights at `version` (read before them) and `now`, in the buffers of
    /// `stale` if there is one.
    fn weigh(&self, stale: Option<Box<Weighed>>, version: u64, now: Nanos) -> Box<Weighed> {
        let mut weighed = stale.unwrap_or_default();
        let fresh = &mut *weighed;
        fresh.list = self.list();
        (fresh.total, fresh.until) = self.weights(&fresh.list, now, &[], &mut fresh.weights);
        turns(&fresh.weights, &mut fresh.turns);
        fresh.pool = self.id;
        fresh.version = version;
        weighed
    }

    /// The weights of `list` now into `weights`; their sum, and until when they hold.
    fn weights(
        &self,
        list: &[Arc<Upstream>],
        now: Nanos,
        exclude: &[Arc<str>],
        weights: &mut Vec<f64>,
    ) -> (f64, Nanos) {
        let slow_start = self.config.slow_start;
        weights.clear();
        let mut until = Nanos::MAX;
        for upstream in list {
            let excluded = exclude.iter().any(|name| **name == *upstream.name);
            weights.push(if excluded {
                0.0
            } else {
                upstream.weight(now, slow_start)
            });
            until = until.min(upstream.weight_holds_until(now, slow_start));
        }
        (weights.iter().sum(), until)
    }

    fn adaptive(&self) -> Option<&AdaptiveConfig> {
        match &self.config.lb_policy {
            Policy::Adaptive(adaptive) => Some(adaptive),
            _ => None,
        }
    }

    /// Chooses an upstream for a request, or `None` when none is available (and panic mode
    /// is off). `key` is the hash policies' key; `exclude` the upstreams already tried.
    pub(crate) fn pick(
        &self,
        now: Moment,
        key: Option<&[u8]>,
        exclude: &[Arc<str>],
    ) -> Option<Arc<Upstream>> {
        let now = self.nanos_since_origin(now);
        self.maybe_update(now);
        self.with_weighed(now, |weighed| {
            let list = &weighed.list;
            let index = if exclude.is_empty() && weighed.total > 0.0 {
                let weights = (&weighed.weights[..], &weighed.turns[..]);
                self.choose(list, weights, weighed.total, now, key)
            } else {
                // A retry, or nothing available: weights of its own.
                let mut weights = Vec::with_capacity(list.len());
                let (mut total, _) = self.weights(list, now, exclude, &mut weights);
                if total <= 0.0 {
                    if !self.config.panic_mode {
                        return None;
                    }
                    // Panic mode: every upstream not tried yet, by its weight as if healthy.
                    for (slot, upstream) in weights.iter_mut().zip(list.iter()) {
                        if !exclude.iter().any(|name| **name == *upstream.name) {
                            *slot = upstream.base_weight(now, self.config.slow_start);
                        }
                    }
                    total = weights.iter().sum();
                    if total <= 0.0 {
                        return None;
                    }
                }
                let mut integers = Vec::with_capacity(list.len());
                turns(&weights, &mut integers);
                self.choose(list, (&weights, &integers), total, now, key)
            };
            Some(Arc::clone(&list[index]))
        })
    }

    fn choose(
        &self,
        list: &[Arc<Upstream>],
        (weights, turns): (&[f64], &[i64]),
        total: f64,
        now: Nanos,
        key: Option<&[u8]>,
    ) -> usize {
        match &self.config.lb_policy {
            // In turn, as smooth weighted round robin over the weights now: an unavailable
            // upstream's turns spread over all the others (not onto the next in line), and a
            // slow-starting one gets its ramped share.
            Policy::RoundRobin | Policy::WeightedRoundRobin => {
                self.weighted_round_robin(list, turns)
            }
            Policy::Random => weighted_random(weights, total, None, unit(self.draw(1))),
            Policy::LeastRequest => self.two_choices(weights, total, |second, first| {
                let cost = |i: usize| {
                    (f64::from(list[i].in_flight.load(Ordering::Relaxed)) + 1.0) / weights[i]
                };
                cost(second) < cost(first)
            }),
            // Between updates, the live signals: requests in flight and the peak-EWMA latency
            // of each answer, so a backend that slows down mid-interval loses traffic at once.
            Policy::Adaptive(_) | Policy::PeakEwma { .. } => {
                self.two_choices(weights, total, |second, first| {
                    lower_ewma_cost(
                        (&list[second], weights[second]),
                        (&list[first], weights[first]),
                        now,
                        self.shared.decay,
                    )
                })
            }
            Policy::IpHash | Policy::HeaderHash { .. } => match key {
                Some(key) => rendezvous(list, weights, fnv1a(key)),
                None => weighted_random(weights, total, None, unit(self.draw(1))),
            },
        }
    }

    /// nginx's smooth weighted round robin: each pick, every upstream gains its weight; the
    /// richest is picked and pays the total.
    fn weighted_round_robin(&self, list: &[Arc<Upstream>], turns: &[i64]) -> usize {
        // Under the lock, plain loads and stores: an atomic add per upstream was a third of
        // a pick.
        let _turn = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
        let mut best = 0;
        let mut best_current = i64::MIN;
        let mut total = 0i64;
        for (i, upstream) in list.iter().enumerate() {
            let weight = turns[i];
            if weight == 0 {
                continue;
            }
            total += weight;
            let current = upstream.wrr_current.load(Ordering::Relaxed) + weight;
            upstream.wrr_current.store(current, Ordering::Relaxed);
            if current > best_current {
                best = i;
                best_current = current;
            }
        }
        let current = &list[best].wrr_current;
        current.store(current.load(Ordering::Relaxed) - total, Ordering::Relaxed);
        best
    }

    /// Takes `draws` states of the generator at once and returns the first; the others
    /// follow by [`GOLDEN`] steps, as if drawn one by one.
    fn draw(&self, draws: u64) -> u64 {
        self.rng
            .fetch_add(GOLDEN.wrapping_mul(draws), Ordering::Relaxed)
            .wrapping_add(GOLDEN)
    }

    /// Power of two choices: two distinct upstreams drawn by weight; the second wins if
    /// `cheaper(second, first)`.
    fn two_choices(
        &self,
        weights: &[f64],
        total: f64,
        cheaper: impl Fn(usize, usize) -> bool,
    ) -> usize {
        // Both draws in one atomic add when there is a choice.
        let choice = weights.iter().filter(|&&w| w > 0.0).nth(1).is_some();
        let state = self.draw(if choice { 2 } else { 1 });
        let first = weighted_random(weights, total, None, unit(state));
        if !choice {
            return first;
        }
        let second = weighted_random(
            weights,
            total,
            Some(first),
            unit(state.wrapping_add(GOLDEN)),
        );
        if cheaper(second, first) {
            second
        } else {
            first
        }
    }

    /// Adaptive: takes each upstream's sample and recomputes the weights when an interval
    /// has passed. One caller does it; the others go on with the old weights.
    fn maybe_update(&self, now: Nanos) {
        let Some(adaptive) = self.adaptive() else {
            return;
        };
        let due = self.next_update.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let interval = nanos(adaptive.update_interval);
        let next = now.max(due.saturating_add(interval));
        if self
            .next_update
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        // The last interval may have been longer than one period if no request came.
        let length = Duration::from_nanos(now - due + interval);
        self.update(adaptive, length, now);
    }

    fn update(&self, adaptive: &AdaptiveConfig, length: Duration, now: Nanos) {
        let list = self.list();
        let intervals: Vec<Interval> = list
            .iter()
            .map(|u| std::mem::take(&mut u.stats().interval))
            .collect();
        let samples: Vec<Sample> = intervals
            .iter()
            .map(|interval| adaptive::sample(adaptive, interval, length))
            .collect();
        let observed: Vec<f64> = samples
            .iter()
            .filter_map(|sample| match sample {
                Sample::Load(load) => Some(*load),
                _ => None,
            })
            .collect();
        let mean =
            (!observed.is_empty()).then(|| observed.iter().sum::<f64>() / observed.len() as f64);
        let samples: Vec<Option<f64>> = samples
            .iter()
            .zip(list.iter())
            .map(|(sample, upstream)| match (sample, mean) {
                (Sample::Load(load), _) => Some(*load),
                // Every answer failed: as slow as the pool's mean, fully penalised.
                (Sample::AllFailed, Some(mean)) => Some(mean * (1.0 + adaptive.failure_penalty)),
                // No answers: an unobserved upstream drifts to the mean of the observed ones,
                // so that it is tried again instead of being judged forever by its past.
                (Sample::Unobserved, Some(mean)) if upstream.health(now) == Health::Healthy => {
                    Some(mean)
                }
                _ => None,
            })
            .collect();
        let predicted: Vec<Option<f64>> = list
            .iter()
            .zip(&samples)
            .map(|(upstream, sample)| {
                let mut stats = upstream.stats();
                if let Some(sample) = sample {
                    stats.history.push(*sample, adaptive.history_length);
                }
                stats.predicted = stats.history.predict(adaptive.alpha);
                stats.predicted
            })
            .collect();
        let weights = adaptive::weights(&predicted);
        for (upstream, weight) in list.iter().zip(weights) {
            upstream.stats().adaptive_weight = weight;
            upstream.set_adaptive_weight(weight);
        }
        tracing::debug!(
            weights = ?list.iter().map(|u| (u.name.to_string(), u.effective_adaptive())).collect::<Vec<_>>(),
            "adaptive weights updated"
        );
        #[cfg(feature = "metrics")]
        for upstream in list.iter() {
            metrics::gauge!("proxflow_lb_weight", "upstream" => Arc::clone(&upstream.name))
                .set(upstream.effective_adaptive());
        }
    }

    /// Adds an upstream at run time (slow start applies); false if it is there already.
    pub(crate) fn add(&self, url: &str, weight: u32) -> Result<bool, ConfigError> {
        let now = self.nanos_since_origin(Moment::now());
        let shared = Arc::clone(&self.shared);
        Ok(self.insert(Arc::new(Upstream::new(shared, url, weight, now, true)?)))
    }

    /// Adds a generic-form endpoint (slow start applies); false if the name is taken.
    pub(crate) fn add_endpoint(&self, name: Arc<str>) -> bool {
        let now = self.nanos_since_origin(Moment::now());
        let shared = Arc::clone(&self.shared);
        self.insert(Arc::new(Upstream::endpoint(shared, name, now, true)))
    }

    fn insert(&self, upstream: Arc<Upstream>) -> bool {
        let mut guard = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        if guard.iter().any(|u| u.name == upstream.name) {
            return false;
        }
        let mut list = guard.to_vec();
        list.push(upstream);
        *guard = list.into();
        self.shared.changed();
        true
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Upstream>> {
        self.list().iter().find(|u| *u.name == *name).cloned()
    }

    /// Removes an upstream; requests in flight to it finish.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut guard = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        let before = guard.len();
        let list: Vec<_> = guard.iter().filter(|u| *u.name != *name).cloned().collect();
        let removed = list.len() < before;
        *guard = list.into();
        self.shared.changed();
        removed
    }

    /// Stops sending new requests to an upstream; it stays listed until removed.
    pub(crate) fn drain(&self, name: &str) -> bool {
        let list = self.list();
        let found = list.iter().find(|u| *u.name == *name);
        if let Some(upstream) = found {
            upstream.drain();
        }
        found.is_some()
    }

    pub(crate) fn snapshot(&self, at: Moment) -> Vec<UpstreamSnapshot> {
        let now = self.nanos_since_origin(at);
        self.list()
            .iter()
            .map(|u| {
                let stats = u.stats();
                let health = u.health(now);
                UpstreamSnapshot {
                    upstream: u.name.to_string(),
                    static_weight: u.static_weight,
                    weight: u.weight(now, self.config.slow_start),
                    adaptive_weight: stats.adaptive_weight,
                    predicted_load: stats.predicted,
                    history: stats.history.samples().collect(),
                    in_flight: u.in_flight.load(Ordering::Relaxed),
                    requests: stats.requests,
                    failures: stats.failures,
                    latency_ewma_ms: u.latency_estimate(now, self.shared.decay) / 1e6,
                    health,
                    ejected_for_ms: (health == Health::Ejected)
                        .then(|| (u.ejected_until() - now) / 1_000_000),
                }
            })
            .collect()
    }
}

/// A pool's upstreams and their weights as a thread picked from them last (see
/// [`Pool::with_weighed`]). Boxed in the thread-local: moving it in and out by value cost
/// 10-20 ns a pick.
#[derive(Default)]
struct Weighed {
    pool: u64,
    version: u64,
    until: Nanos,
    list: Arc<[Arc<Upstream>]>,
    weights: Vec<f64>,
    total: f64,
    /// The weights as smooth weighted round robin counts them.
    turns: Vec<i64>,
}

/// Smooth weighted round robin's integer weights: thousandths, at least 1, 0 when
/// unavailable. Kept with the weights: a `round` call per upstream was a third of a pick.
fn turns(weights: &[f64], turns: &mut Vec<i64>) {
    turns.clear();
    turns.extend(weights.iter().map(|&weight| {
        if weight <= 0.0 {
            0
        } else {
            (weight * 1000.0).round().max(1.0) as i64
        }
    }));
}

thread_local! {
    static LAST: Cell<Option<Box<Weighed>>> = const { Cell::new(None) };
}

/// SplitMix64's increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A uniform number in [0, 1) from a generator state.
fn unit(state: u64) -> f64 {
    (mix(state) >> 11) as f64 / (1u64 << 53) as f64
}

fn weighted_random(weights: &[f64], total: f64, skip: Option<usize>, unit: f64) -> usize {
    let total = total - skip.map_or(0.0, |i| weights[i]);
    let mut target = unit * total;
    let mut last = 0;
    for (i, &weight) in weights.iter().enumerate() {
        if Some(i) == skip || weight <= 0.0 {
            continue;
        }
        last = i;
        if target < weight {
            return i;
        }
        target -= weight;
    }
    last
}

/// Weighted rendezvous hashing: the upstream with the highest `-weight / ln(h)` for the key.
/// A key moves only when its upstream leaves (or a new one outscores it).
fn rendezvous(list: &[Arc<Upstream>], weights: &[f64], key: u64) -> usize {
    // Equal weights rank by the uniform number alone (the score grows with it): ten
    // logarithms were a quarter of a pick.
    let equal = list
        .windows(2)
        .all(|pair| pair[0].static_weight == pair[1].static_weight);
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, upstream) in list.iter().enumerate() {
        if weights[i] <= 0.0 {
            continue;
        }
        let hash = mix(key ^ upstream.name_hash);
        // A uniform number in (0, 1): never 0, whose log is minus infinity.
        let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = if equal {
            unit
        } else {
            -f64::from(upstream.static_weight) / unit.ln()
        };
        if score > best_score {
            best = i;
            best_score = score;
        }
    }
    best
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One upstream's figures, as a snapshot lists them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamSnapshot {
    /// `scheme://authority`.
    pub upstream: String,
    /// The configured weight.
    pub static_weight: u32,
    /// The weight picks use now (0 when unavailable; ramped during slow start).
    pub weight: f64,
    /// Adaptive: the weight from the predicted load (mean 1), if it has a history.
    pub adaptive_weight: Option<f64>,
    /// Adaptive: the smoothed prediction of the next sample.
    pub predicted_load: Option<f64>,
    /// Adaptive: the samples, oldest first.
    pub history: Vec<f64>,
    /// Requests sent and not answered.
    pub in_flight: u32,
    /// Answers received.
    pub requests: u64,
    /// Of which failures.
    pub failures: u64,
    /// Peak-EWMA latency estimate, milliseconds.
    pub latency_ewma_ms: f64,
    /// Whether it takes traffic, and if not why.
    pub health: Health,
    /// Ejected: milliseconds left.
    pub ejected_for_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn pool(policy: Policy, upstreams: &[(&str, u32)]) -> Pool {
        Pool::new(LbConfig {
            upstreams: upstreams
                .iter()
                .map(|(url, weight)| UpstreamConfig {
                    url: url.to_string(),
                    weight: *weight,
                })
                .collect(),
            lb_policy: policy,
            seed: Some(7),
            ..LbConfig::default()
        })
        .unwrap()
    }

    fn counts(pool: &Pool, picks: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> Vec<usize> {
        let list = pool.list();
        let mut counts = vec![0; list.len()];
        let t = Moment::now();
        for i in 0..picks {
            let key = key(i);
            let picked = pool.pick(t, key.as_deref(), &[]).unwrap();
            counts[list.iter().position(|u| Arc::ptr_eq(u, &picked)).unwrap()] += 1;
        }
        counts
    }

    const THREE: [(&str, u32); 3] = [("http://a:1", 1), ("http://b:1", 1), ("http://c:1", 1)];

    #[tokio::test(start_paused = true)]
    async fn round_robin_takes_turns() {
        let pool = pool(Policy::RoundRobin, &THREE);
        assert_eq!(counts(&pool, 300, |_| None), [100, 100, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn smooth_weighted_round_robin_spreads_the_heavy_one() {
        let pool = pool(
            Policy::WeightedRoundRobin,
            &[("http://a:1", 5), ("http://b:1", 1), ("http://c:1", 1)],
        );
        let list = pool.list();
        let t = Moment::now();
        let order: String = (0..7)
            .map(|_| {
                let picked = pool.pick(t, None, &[]).unwrap();
                (b'a' + list.iter().position(|u| Arc::ptr_eq(u, &picked)).unwrap() as u8) as char
            })
            .collect();
        // nginx's sequence for weights 5, 1, 1.
        assert_eq!(order, "aabacaa");
    }

    #[tokio::test(start_paused = true)]
    async fn least_request_avoids_the_busy_one() {
        let pool = pool(Policy::LeastRequest, &THREE);
        pool.list()[0].in_flight.store(100, Ordering::Relaxed);
        let counts = counts(&pool, 3000, |_| None);
        assert_eq!(
            counts[0], 0,
            "{counts:?}: the busy one loses every comparison"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn random_follows_static_weights() {
        let pool = pool(Policy::Random, &[("http://a:1", 3), ("http://b:1", 1)]);
        let counts = counts(&pool, 40_000, |_| None);
        let share = counts[0] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[tokio::test(start_paused = true)]
    async fn hashing_keeps_keys_in_place_until_their_upstream_leaves() {
        let pool = pool(Policy::IpHash, &THREE);
        let t = Moment::now();
        let key = |i: usize| format!("10.0.0.{i}").into_bytes();
        let before: Vec<Arc<str>> = (0..200)
            .map(|i| Arc::clone(&pool.pick(t, Some(&key(i)), &[]).unwrap().name))
            .collect();
        let spread = THREE
            .iter()
            .map(|(url, _)| before.iter().filter(|n| ***n == **url).count())
            .collect::<Vec<_>>();
        assert!(spread.iter().all(|&n| n > 40), "{spread:?}");
        assert!(pool.remove("http://b:1"));
        for (i, old) in before.iter().enumerate() {
            let now_on = pool.pick(t, Some(&key(i)), &[]).unwrap();
            if **old != *"http://b:1" {
                assert_eq!(
                    now_on.name, *old,
                    "key {i} moved though its upstream stayed"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn both_draws_of_two_choices_follow_the_one_by_one_sequence() {
        let pool = pool(Policy::Random, &THREE);
        let other = self::pool(Policy::Random, &THREE);
        let first = pool.draw(2);
        assert_eq!(first, other.draw(1));
        assert_eq!(first.wrapping_add(GOLDEN), other.draw(1));
        assert_eq!(pool.draw(1), other.draw(1));
    }

    #[tokio::test(start_paused = true)]
    async fn equal_weights_hash_as_the_weighted_score_would() {
        let pool = pool(Policy::IpHash, &THREE);
        let list = pool.list();
        let weights = [1.0; 3];
        for key in 0..2000u64 {
            let key = mix(key);
            let by_score = (0..3)
                .map(|i| {
                    let unit =
                        ((mix(key ^ list[i].name_hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    (-1.0 / unit.ln(), i)
                })
                .fold((f64::NEG_INFINITY, 0), |best, next| {
                    if next.0 > best.0 {
                        next
                    } else {
                        best
                    }
                })
                .1;
            assert_eq!(rendezvous(&list, &weights, key), by_score, "key {key}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn picks_on_one_thread_keep_pools_and_changes_apart() {
        let one = pool(Policy::Random, &THREE);
        let other = pool(Policy::Random, &[("http://x:1", 1)]);
        for _ in 0..100 {
            assert_ne!(
                &*one.pick(Moment::now(), None, &[]).unwrap().name,
                "http://x:1"
            );
            assert_eq!(
                &*other.pick(Moment::now(), None, &[]).unwrap().name,
                "http://x:1"
            );
        }
        assert!(one.remove("http://a:1"));
        for _ in 0..100 {
            assert_ne!(
                &*one.pick(Moment::now(), None, &[]).unwrap().name,
                "http://a:1"
            );
        }
        assert!(one.add("http://a:1", 1).unwrap());
        tokio::time::advance(Duration::from_secs(30)).await;
        let counts = counts(&one, 3000, |_| None);
        assert!(
            counts.iter().all(|&n| n > 800),
            "{counts:?}: the added one is picked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cached_weights_follow_each_change_and_the_end_of_an_ejection() {
        let pool = pool(Policy::Random, &THREE);
        let list = pool.list();
        let share = |pool: &Pool| counts(pool, 4000, |_| None)[0] as f64 / 4000.0;
        assert!((share(&pool) - 1.0 / 3.0).abs() < 0.03);
        list[0].set_adaptive_weight(Some(2.0));
        assert!((share(&pool) - 0.5).abs() < 0.03, "a new adaptive weight");
        list[0].drain();
        assert_eq!(share(&pool), 0.0, "draining");
        let passive = pool.config.passive_health.clone();
        let t = pool.nanos_since_origin(Moment::now());
        for _ in 0..passive.consecutive_failures {
            list[1].record(
                t,
                Duration::from_millis(1),
                true,
                pool.shared.decay,
                &passive,
            );
        }
        assert_eq!(counts(&pool, 100, |_| None), [0, 0, 100], "ejected");
        tokio::time::advance(passive.base_ejection).await;
        let counts = counts(&pool, 4000, |_| None);
        assert!(counts[1] > 0, "{counts:?}: back, slow-starting");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_available_is_none_unless_panic_mode() {
        let pool = pool(Policy::RoundRobin, &THREE);
        for (url, _) in THREE {
            pool.drain(url);
        }
        assert!(pool.pick(Moment::now(), None, &[]).is_none());
        let panicking = Pool::new(LbConfig {
            panic_mode: true,
            ..pool.config.clone()
        })
        .unwrap();
        for (url, _) in THREE {
            panicking.drain(url);
        }
        assert!(panicking.pick(Moment::now(), None, &[]).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn excluded_upstreams_are_not_picked() {
        let pool = pool(Policy::Random, &THREE);
        let exclude: Vec<Arc<str>> = vec![Arc::from("http://a:1"), Arc::from("http://b:1")];
        for _ in 0..100 {
            assert_eq!(
                &*pool.pick(Moment::now(), None, &exclude).unwrap().name,
                "http://c:1"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn adaptive_weights_follow_the_smoothed_latency() {
        let adaptive = AdaptiveConfig {
            update_interval: Duration::from_secs(1),
            ..AdaptiveConfig::default()
        };
        let pool = pool(Policy::Adaptive(adaptive), &THREE);
        let list = pool.list();
        let passive = pool.config.passive_health.clone();
        let ms = Duration::from_millis(1);
        for (upstream, latency) in list.iter().zip([10 * ms, 20 * ms, 40 * ms]) {
            for _ in 0..10 {
                upstream.record(0, latency, false, pool.shared.decay, &passive);
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(Moment::now(), None, &[]);
        let snapshot = pool.snapshot(Moment::now());
        let weights: Vec<f64> = snapshot
            .iter()
            .map(|u| u.adaptive_weight.unwrap())
            .collect();
        assert!((weights[0] / weights[1] - 2.0).abs() < 1e-9, "{weights:?}");
        assert!((weights[1] / weights[2] - 2.0).abs() < 1e-9, "{weights:?}");
        assert_eq!(snapshot[0].history, [0.01]);
        // An upstream with no answers in the next interval drifts to the mean of the others.
        for _ in 0..10 {
            list[0].record(0, 10 * ms, false, pool.shared.decay, &passive);
            list[1].record(0, 20 * ms, false, pool.shared.decay, &passive);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(Moment::now(), None, &[]);
        let snapshot = pool.snapshot(Moment::now());
        assert_eq!(snapshot[2].history.len(), 2);
        assert!((snapshot[2].history[1] - 0.015).abs() < 1e-12);
    }

    #[tokio::test(start_paused = true)]
    async fn an_added_upstream_starts_slow() {
        let pool = pool(Policy::Random, &THREE);
        assert!(pool.add("http://d:1", 1).unwrap());
        assert!(!pool.add("http://d:1", 1).unwrap(), "already there");
        let counts = counts(&pool, 10_000, |_| None);
        let share = counts[3] as f64 / 10_000.0;
        // Weight 0.1 against 3: about 3 %.
        assert!((share - 0.1 / 3.1).abs() < 0.01, "{share}");
        tokio::time::advance(Duration::from_secs(30)).await;
        let counts = self::counts(&pool, 10_000, |_| None);
        assert!((counts[3] as f64 / 10_000.0 - 0.25).abs() < 0.02);
    }
}
