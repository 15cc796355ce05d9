//! The upstreams of one balancer: the list, its weights now, the policies' picks over them,
//! and the adaptive updates.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use proxflow_core::clock::nanos;
use proxflow_core::Moment;

use crate::backend::{Backend, Health};
use crate::config::{AdaptiveConfig, Policy};
use crate::policy::adaptive::{self, Interval, Sample};
use crate::policy::{hash, least_request, peak_ewma, random, round_robin, Nanos};
use crate::settings::{Draft, Running, Settings};
use crate::upstream::Upstream;

pub(crate) struct Pool {
    pub(crate) settings: Arc<Settings>,
    upstreams: RwLock<Arc<[Arc<Backend>]>>,
    /// Tells this pool's list apart from other pools' in the thread-local cache of [`LAST`].
    id: u64,
    /// Smooth weighted round robin changes all running weights at once.
    wrr: Mutex<()>,
    /// Active health checks run (they start with the first request).
    pub(crate) health_started: AtomicBool,
}

impl Pool {
    /// A pool of `upstreams` (no slow start: they are there from the start).
    pub(crate) fn new(draft: Draft, upstreams: Vec<Upstream>) -> Pool {
        let settings = Arc::new(Settings::new(draft));
        let upstreams: Vec<Arc<Backend>> = upstreams
            .into_iter()
            .map(|upstream| Arc::new(Backend::new(Arc::clone(&settings), upstream, 0, false)))
            .collect();
        static POOLS: AtomicU64 = AtomicU64::new(0);
        Pool {
            settings,
            upstreams: RwLock::new(upstreams.into()),
            id: POOLS.fetch_add(1, Ordering::Relaxed),
            wrr: Mutex::new(()),
            health_started: AtomicBool::new(false),
        }
    }

    /// The settings in force, fixed now if they are not yet.
    #[inline]
    pub(crate) fn running(&self) -> &Running {
        self.settings.running()
    }

    /// A reading of the clock in force.
    #[inline]
    pub(crate) fn now(&self) -> Moment {
        self.running().draft.clock.now()
    }

    pub(crate) fn list(&self) -> Arc<[Arc<Backend>]> {
        Arc::clone(&self.upstreams.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` over the list and its weights now, from this thread's cache while nothing
    /// changed and no ejection or slow start moved on, so that a pick takes no lock and reads
    /// no upstream's weight.
    fn with_weighed<R>(&self, running: &Running, now: Nanos, f: impl FnOnce(&Weighed) -> R) -> R {
        let version = self.settings.version.load(Ordering::Acquire);
        let cached = LAST.try_with(Cell::take).ok().flatten();
        let weighed = match cached {
            Some(last) if last.pool == self.id && last.version == version && now < last.until => {
                last
            }
            stale => self.weigh(running, stale, version, now),
        };
        let result = f(&weighed);
        // Fails only while the thread exits; the cache is dropped then.
        let _ = LAST.try_with(|last| last.set(Some(weighed)));
        result
    }

    /// The list and its weights at `version` (read before them) and `now`, in the buffers of
    /// `stale` if there is one.
    fn weigh(
        &self,
        running: &Running,
        stale: Option<Box<Weighed>>,
        version: u64,
        now: Nanos,
    ) -> Box<Weighed> {
        let mut weighed = stale.unwrap_or_default();
        let fresh = &mut *weighed;
        fresh.list = self.list();
        let slow_start = running.draft.slow_start;
        (fresh.total, fresh.until) = weights(&fresh.list, now, slow_start, &[], &mut fresh.weights);
        round_robin::turns(&fresh.weights, &mut fresh.turns);
        fresh.equal_weights = fresh
            .list
            .windows(2)
            .all(|pair| pair[0].static_weight == pair[1].static_weight);
        fresh.pool = self.id;
        fresh.version = version;
        weighed
    }

    /// Chooses an upstream for a request at `at`, or `None` when none is available (and
    /// panic mode is off). `key` is the hash policies' key; `exclude` the upstreams already
    /// tried.
    pub(crate) fn pick(
        &self,
        at: Moment,
        key: Option<&[u8]>,
        exclude: &[Arc<str>],
    ) -> Option<Arc<Backend>> {
        let running = self.running();
        let now = running.nanos(at);
        self.maybe_update(running, now);
        self.with_weighed(running, now, |weighed| {
            let list = &weighed.list;
            let index = if exclude.is_empty() && weighed.total > 0.0 {
                let weights = Weights {
                    weights: &weighed.weights,
                    turns: &weighed.turns,
                    total: weighed.total,
                    equal: weighed.equal_weights,
                };
                self.choose(running, list, weights, now, key)
            } else {
                // A retry, or nothing available: weights of its own.
                let slow_start = running.draft.slow_start;
                let mut weights = Vec::with_capacity(list.len());
                let (mut total, _) = self::weights(list, now, slow_start, exclude, &mut weights);
                if total <= 0.0 {
                    if !running.draft.panic_mode {
                        return None;
                    }
                    // Panic mode: every upstream not tried yet, by its weight as if healthy.
                    for (slot, backend) in weights.iter_mut().zip(list.iter()) {
                        if !exclude.iter().any(|name| **name == *backend.name) {
                            *slot = backend.base_weight(now, slow_start);
                        }
                    }
                    total = weights.iter().sum();
                    if total <= 0.0 {
                        return None;
                    }
                }
                let mut turns = Vec::with_capacity(list.len());
                round_robin::turns(&weights, &mut turns);
                let weights = Weights {
                    weights: &weights,
                    turns: &turns,
                    total,
                    equal: weighed.equal_weights,
                };
                self.choose(running, list, weights, now, key)
            };
            Some(Arc::clone(&list[index]))
        })
    }

    fn choose(
        &self,
        running: &Running,
        list: &[Arc<Backend>],
        w: Weights<'_>,
        now: Nanos,
        key: Option<&[u8]>,
    ) -> usize {
        let draw = |draws| running.draw(draws);
        match &running.draft.policy {
            Policy::RoundRobin | Policy::WeightedRoundRobin => {
                // Under the lock, plain loads and stores instead of an atomic add each.
                let _turn = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
                round_robin::pick(w.turns, |i, amount| {
                    let current = &list[i].wrr_current;
                    let sum = current.load(Ordering::Relaxed) + amount;
                    current.store(sum, Ordering::Relaxed);
                    sum
                })
            }
            Policy::Random => random::weighted(w.weights, w.total, None, random::unit(draw(1))),
            Policy::LeastRequest => random::two_choices(w.weights, w.total, draw, |b, a| {
                let load = |i: usize| (list[i].in_flight.load(Ordering::Relaxed), w.weights[i]);
                least_request::less_loaded(load(b), load(a))
            }),
            Policy::Adaptive(_) | Policy::PeakEwma { .. } => {
                random::two_choices(w.weights, w.total, draw, |b, a| {
                    peak_ewma::lower_cost(
                        list[b].ewma_cost(now, w.weights[b]),
                        list[a].ewma_cost(now, w.weights[a]),
                        running.decay_nanos,
                    )
                })
            }
            Policy::IpHash | Policy::HeaderHash { .. } => match key {
                Some(key) => {
                    let candidates = list
                        .iter()
                        .zip(w.weights)
                        .map(|(backend, &weight)| backend.candidate(weight));
                    hash::rendezvous(hash::fnv1a(key), candidates, w.equal)
                }
                None => random::weighted(w.weights, w.total, None, random::unit(draw(1))),
            },
        }
    }

    /// Adaptive: takes each upstream's sample and recomputes the weights when an interval
    /// has passed. One caller does it; the others go on with the old weights.
    fn maybe_update(&self, running: &Running, now: Nanos) {
        let Some(adaptive) = running.draft.adaptive() else {
            return;
        };
        let due = running.next_update.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let interval = nanos(adaptive.update_interval);
        let next = now.max(due.saturating_add(interval));
        if running
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
        let samples: Vec<Sample> = list
            .iter()
            .map(|backend| {
                let interval: Interval = std::mem::take(&mut backend.stats().interval);
                adaptive::sample(adaptive, &interval, length)
            })
            .collect();
        let samples = adaptive::resolve(adaptive, &samples, |i| {
            list[i].health(now) == Health::Healthy
        });
        let predicted: Vec<Option<f64>> = list
            .iter()
            .zip(&samples)
            .map(|(backend, sample)| {
                let mut stats = backend.stats();
                if let Some(sample) = sample {
                    stats.history.push(*sample, adaptive.history_length);
                }
                stats.predicted = stats.history.predict(adaptive.alpha);
                stats.predicted
            })
            .collect();
        let weights = adaptive::weights(&predicted);
        for (backend, weight) in list.iter().zip(weights) {
            backend.stats().adaptive_weight = weight;
            backend.set_adaptive_weight(weight);
        }
        tracing::debug!(
            weights = ?list.iter().map(|b| (b.name.to_string(), b.effective_adaptive())).collect::<Vec<_>>(),
            "adaptive weights updated"
        );
        #[cfg(feature = "metrics")]
        for backend in list.iter() {
            metrics::gauge!("proxflow_lb_weight", "upstream" => Arc::clone(&backend.name))
                .set(backend.effective_adaptive());
        }
    }

    /// Adds an upstream at run time (slow start applies); false if it is there already.
    pub(crate) fn add(&self, upstream: Upstream) -> bool {
        let now = self.settings.now_or_origin();
        let settings = Arc::clone(&self.settings);
        self.insert(Arc::new(Backend::new(settings, upstream, now, true)))
    }

    /// Adds a generic-form endpoint (slow start applies); false if the name is taken.
    pub(crate) fn add_endpoint(&self, name: Arc<str>) -> bool {
        let now = self.settings.now_or_origin();
        let settings = Arc::clone(&self.settings);
        self.insert(Arc::new(Backend::endpoint(settings, name, now, true)))
    }

    fn insert(&self, backend: Arc<Backend>) -> bool {
        let mut guard = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        if guard.iter().any(|b| b.name == backend.name) {
            return false;
        }
        let mut list = guard.to_vec();
        list.push(backend);
        *guard = list.into();
        self.settings.changed();
        true
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Backend>> {
        self.list().iter().find(|b| *b.name == *name).cloned()
    }

    /// Removes an upstream; requests in flight to it finish.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut guard = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        let before = guard.len();
        let list: Vec<_> = guard.iter().filter(|b| *b.name != *name).cloned().collect();
        let removed = list.len() < before;
        *guard = list.into();
        self.settings.changed();
        removed
    }

    /// Stops sending new requests to an upstream; it stays listed until removed.
    pub(crate) fn drain(&self, name: &str) -> bool {
        let list = self.list();
        let found = list.iter().find(|b| *b.name == *name);
        if let Some(backend) = found {
            backend.drain();
        }
        found.is_some()
    }
}

/// The weights of `list` now into `weights`, 0 for the names in `exclude`; their sum, and
/// until when they hold.
fn weights(
    list: &[Arc<Backend>],
    now: Nanos,
    slow_start: Duration,
    exclude: &[Arc<str>],
    weights: &mut Vec<f64>,
) -> (f64, Nanos) {
    weights.clear();
    let mut until = Nanos::MAX;
    for backend in list {
        let excluded = exclude.iter().any(|name| **name == *backend.name);
        weights.push(if excluded {
            0.0
        } else {
            backend.weight(now, slow_start)
        });
        until = until.min(backend.weight_holds_until(now, slow_start));
    }
    (weights.iter().sum(), until)
}

/// The weights one pick chooses by.
#[derive(Clone, Copy)]
struct Weights<'a> {
    weights: &'a [f64],
    /// The weights as smooth weighted round robin counts them.
    turns: &'a [i64],
    total: f64,
    /// Every upstream has the same static weight.
    equal: bool,
}

/// A pool's upstreams and their weights as a thread picked from them last (see
/// [`Pool::with_weighed`]). Boxed, so that taking it out of the thread-local and putting it
/// back moves a pointer.
#[derive(Default)]
struct Weighed {
    pool: u64,
    version: u64,
    until: Nanos,
    list: Arc<[Arc<Backend>]>,
    weights: Vec<f64>,
    total: f64,
    turns: Vec<i64>,
    equal_weights: bool,
}

thread_local! {
    static LAST: Cell<Option<Box<Weighed>>> = const { Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LbConfig;

    fn pool(policy: Policy, upstreams: &[(&'static str, u32)]) -> Pool {
        let draft = Draft {
            policy,
            seed: Some(7),
            clock: proxflow_core::Clock::tokio(),
            ..Draft::new(&LbConfig::default())
        };
        let upstreams = upstreams
            .iter()
            .map(|(url, weight)| Upstream::from_static(url).weight(*weight))
            .collect();
        Pool::new(draft, upstreams)
    }

    fn counts(pool: &Pool, picks: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> Vec<usize> {
        let list = pool.list();
        let mut counts = vec![0; list.len()];
        let t = pool.now();
        for i in 0..picks {
            let key = key(i);
            let picked = pool.pick(t, key.as_deref(), &[]).unwrap();
            counts[list.iter().position(|b| Arc::ptr_eq(b, &picked)).unwrap()] += 1;
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
        let t = pool.now();
        let order: String = (0..7)
            .map(|_| {
                let picked = pool.pick(t, None, &[]).unwrap();
                (b'a' + list.iter().position(|b| Arc::ptr_eq(b, &picked)).unwrap() as u8) as char
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
        let t = pool.now();
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
    async fn picks_on_one_thread_keep_pools_and_changes_apart() {
        let one = pool(Policy::Random, &THREE);
        let other = pool(Policy::Random, &[("http://x:1", 1)]);
        for _ in 0..100 {
            assert_ne!(&*one.pick(one.now(), None, &[]).unwrap().name, "http://x:1");
            assert_eq!(
                &*other.pick(other.now(), None, &[]).unwrap().name,
                "http://x:1"
            );
        }
        assert!(one.remove("http://a:1"));
        for _ in 0..100 {
            assert_ne!(&*one.pick(one.now(), None, &[]).unwrap().name, "http://a:1");
        }
        assert!(one.add(Upstream::from_static("http://a:1")));
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
        let running = pool.running();
        let passive = running.draft.passive.clone();
        let t = running.nanos(pool.now());
        for _ in 0..passive.consecutive_failures {
            list[1].record(
                t,
                Duration::from_millis(1),
                true,
                running.decay_nanos,
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
        assert!(pool.pick(pool.now(), None, &[]).is_none());
        let panicking = Pool::new(
            Draft {
                panic_mode: true,
                ..pool.settings.draft()
            },
            THREE
                .iter()
                .map(|(url, _)| Upstream::from_static(url))
                .collect(),
        );
        for (url, _) in THREE {
            panicking.drain(url);
        }
        assert!(panicking.pick(panicking.now(), None, &[]).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn excluded_upstreams_are_not_picked() {
        let pool = pool(Policy::Random, &THREE);
        let exclude: Vec<Arc<str>> = vec![Arc::from("http://a:1"), Arc::from("http://b:1")];
        for _ in 0..100 {
            assert_eq!(
                &*pool.pick(pool.now(), None, &exclude).unwrap().name,
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
        let running = pool.running();
        let passive = running.draft.passive.clone();
        let decay = running.decay_nanos;
        let ms = Duration::from_millis(1);
        for (backend, latency) in list.iter().zip([10 * ms, 20 * ms, 40 * ms]) {
            for _ in 0..10 {
                backend.record(0, latency, false, decay, &passive);
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(pool.now(), None, &[]);
        let weights: Vec<f64> = list
            .iter()
            .map(|b| b.stats().adaptive_weight.unwrap())
            .collect();
        assert!((weights[0] / weights[1] - 2.0).abs() < 1e-9, "{weights:?}");
        assert!((weights[1] / weights[2] - 2.0).abs() < 1e-9, "{weights:?}");
        assert_eq!(
            list[0].stats().history.samples().collect::<Vec<_>>(),
            [0.01]
        );
        // An upstream with no answers in the next interval drifts to the mean of the others.
        for _ in 0..10 {
            list[0].record(0, 10 * ms, false, decay, &passive);
            list[1].record(0, 20 * ms, false, decay, &passive);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(pool.now(), None, &[]);
        let history: Vec<f64> = list[2].stats().history.samples().collect();
        assert_eq!(history.len(), 2);
        assert!((history[1] - 0.015).abs() < 1e-12);
    }

    #[tokio::test(start_paused = true)]
    async fn an_added_upstream_starts_slow() {
        let pool = pool(Policy::Random, &THREE);
        pool.running();
        assert!(pool.add(Upstream::from_static("http://d:1")));
        assert!(
            !pool.add(Upstream::from_static("http://d:1")),
            "already there"
        );
        let counts = counts(&pool, 10_000, |_| None);
        let share = counts[3] as f64 / 10_000.0;
        // Weight 0.1 against 3: about 3 %.
        assert!((share - 0.1 / 3.1).abs() < 0.01, "{share}");
        tokio::time::advance(Duration::from_secs(30)).await;
        let counts = self::counts(&pool, 10_000, |_| None);
        assert!((counts[3] as f64 / 10_000.0 - 0.25).abs() < 0.02);
    }
}
