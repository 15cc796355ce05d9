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
use crate::policy::random::Cumulative;
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
        fresh.until = weights(
            running,
            &fresh.list,
            now,
            &mut fresh.scratch,
            &mut fresh.shares,
            &mut fresh.weights,
        );
        fresh.positive = Cumulative::fill(&fresh.weights, &mut fresh.cumulative);
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
            let index = if exclude.is_empty() && weighed.positive > 0 {
                let weights = Weights {
                    weights: &weighed.weights,
                    cumulative: Cumulative {
                        sums: &weighed.cumulative,
                        positive: weighed.positive,
                    },
                    turns: &weighed.turns,
                    equal: weighed.equal_weights,
                };
                self.choose(running, list, weights, now, key)
            } else {
                // A retry, or nothing available: weights of its own.
                let excluded =
                    |backend: &Backend| exclude.iter().any(|name| **name == *backend.name);
                let mut weights = weighed.weights.clone();
                for (weight, backend) in weights.iter_mut().zip(list.iter()) {
                    if excluded(backend) {
                        *weight = 0.0;
                    }
                }
                if weights.iter().all(|&w| w <= 0.0) {
                    if !running.draft.panic_mode {
                        return None;
                    }
                    // Panic mode: every upstream not tried yet, by its weight as if healthy.
                    let slow_start = running.draft.slow_start;
                    for (i, backend) in list.iter().enumerate() {
                        if !excluded(backend) {
                            let share = weighed.shares.get(i).copied().unwrap_or(1.0);
                            weights[i] = backend.base_weight(now, slow_start) * share;
                        }
                    }
                }
                let mut cumulative = Vec::with_capacity(list.len());
                let positive = Cumulative::fill(&weights, &mut cumulative);
                if positive == 0 {
                    return None;
                }
                let mut turns = Vec::with_capacity(list.len());
                round_robin::turns(&weights, &mut turns);
                let weights = Weights {
                    weights: &weights,
                    cumulative: Cumulative {
                        sums: &cumulative,
                        positive,
                    },
                    turns: &turns,
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
            Policy::Random => random::weighted(w.cumulative, None, random::unit(draw(1))),
            Policy::LeastRequest => random::two_choices(w.cumulative, draw, |b, a| {
                let load = |i: usize| (list[i].in_flight.load(Ordering::Relaxed), w.weights[i]);
                least_request::less_loaded(load(b), load(a))
            }),
            Policy::Adaptive(_) | Policy::PeakEwma { .. } => {
                random::two_choices(w.cumulative, draw, |b, a| {
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
                None => random::weighted(w.cumulative, None, random::unit(draw(1))),
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
        let intervals: Vec<Interval> = list
            .iter()
            .map(|backend| std::mem::take(&mut backend.stats().interval))
            .collect();
        let requests: u64 = intervals.iter().map(|interval| interval.answered).sum();
        let samples: Vec<Sample> = intervals
            .iter()
            .map(|interval| adaptive::sample(adaptive, interval, length))
            .collect();
        let samples = adaptive::resolve(adaptive, &samples, |i| {
            list[i].health(now) == Health::Healthy
        });
        for ((backend, sample), interval) in list.iter().zip(&samples).zip(&intervals) {
            let mut stats = backend.stats();
            if let Some(sample) = sample {
                stats.history.push(*sample, adaptive.history_length);
            }
            stats.last_share = (requests > 0).then(|| interval.answered as f64 / requests as f64);
            backend.set_predicted(stats.history.predict(adaptive.alpha));
        }
        tracing::debug!(
            predicted = ?list.iter().map(|b| (b.name.to_string(), b.predicted())).collect::<Vec<_>>(),
            "adaptive predictions updated"
        );
        #[cfg(feature = "metrics")]
        for backend in list.iter() {
            if let Some(predicted) = backend.predicted() {
                metrics::gauge!("proxflow_lb_predicted_load", "upstream" => Arc::clone(&backend.name))
                    .set(predicted);
            }
        }
    }

    /// The weights picks use now, one per upstream of `list`: the static weight, ramped,
    /// times the adaptive share; 0 when unavailable.
    pub(crate) fn weights_now(&self, running: &Running, list: &[Arc<Backend>]) -> Vec<f64> {
        let mut weights = Vec::new();
        let (mut scratch, mut shares) = (Scratch::default(), Vec::new());
        let now = running.now();
        self::weights(running, list, now, &mut scratch, &mut shares, &mut weights);
        weights
    }

    /// How long until the first ejected upstream takes traffic again; `None` when none is
    /// ejected.
    pub(crate) fn until_one_returns(&self) -> Option<Duration> {
        let now = self.running().now();
        self.list()
            .iter()
            .filter(|backend| backend.health(now) == Health::Ejected)
            .map(|backend| Duration::from_nanos(backend.ejected_until().saturating_sub(now)))
            .min()
    }

    /// Adds an upstream at run time (slow start applies); false if it is there already.
    pub(crate) fn add(&self, upstream: Upstream) -> bool {
        let now = self.settings.now_or_origin();
        let settings = Arc::clone(&self.settings);
        self.insert(Arc::new(Backend::new(settings, upstream, now, true)), now)
    }

    /// Adds a generic-form endpoint (slow start applies); false if the name is taken.
    pub(crate) fn add_endpoint(&self, name: Arc<str>) -> bool {
        let now = self.settings.now_or_origin();
        let settings = Arc::clone(&self.settings);
        self.insert(Arc::new(Backend::endpoint(settings, name, now, true)), now)
    }

    fn insert(&self, backend: Arc<Backend>, now: Nanos) -> bool {
        let mut guard = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        if guard.iter().any(|b| b.name == backend.name) {
            return false;
        }
        // Until it answers, a newcomer is as fast as the pool's median, not as fast as a
        // first guess that could draw a flood to it.
        if let Some(running) = self.settings.get() {
            let latencies: Vec<Option<f64>> = guard
                .iter()
                .map(|b| b.own_latency(now, running.decay_nanos))
                .collect();
            if latencies.iter().any(Option::is_some) {
                backend.guess_latency(adaptive::median(&latencies, &mut Vec::new()), now);
            }
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

/// The weights picks use at `now`, one per upstream of `list`, into `weights`: the static
/// weight, ramped, times the adaptive share (into `shares`; empty for the other policies); 0
/// when unavailable. Returns until when they may be taken as they are.
fn weights(
    running: &Running,
    list: &[Arc<Backend>],
    now: Nanos,
    scratch: &mut Scratch,
    shares: &mut Vec<f64>,
    weights: &mut Vec<f64>,
) -> Nanos {
    let mut until = Nanos::MAX;
    shares.clear();
    if running.draft.adaptive().is_some() {
        adaptive_shares(running, list, now, scratch, shares);
        until = now.saturating_add(LIVE_REFRESH);
    }
    let slow_start = running.draft.slow_start;
    weights.clear();
    for (i, backend) in list.iter().enumerate() {
        let share = shares.get(i).copied().unwrap_or(1.0);
        weights.push(backend.weight(now, slow_start) * share);
        until = until.min(backend.weight_holds_until(now, slow_start));
    }
    until
}

/// How long a thread's weights of an adaptive pool follow the live loads before they are
/// weighed again.
const LIVE_REFRESH: Nanos = 100_000_000;
#[cfg(test)]
const LIVE_REFRESH_DURATION: Duration = Duration::from_nanos(LIVE_REFRESH);

/// The adaptive share of each upstream of `list` now, into `shares` (mean 1): inverse to its
/// load relative to the pool's, the worse of the history's prediction and the live load.
fn adaptive_shares(
    running: &Running,
    list: &[Arc<Backend>],
    now: Nanos,
    scratch: &mut Scratch,
    shares: &mut Vec<f64>,
) {
    let decay = running.decay_nanos;
    scratch.predicted.clear();
    scratch.predicted.extend(list.iter().map(|b| b.predicted()));
    scratch.live.clear();
    scratch
        .live
        .extend(list.iter().map(|b| b.live_load(now, decay)));
    adaptive::relative_loads(
        &scratch.predicted,
        &scratch.live,
        &mut scratch.median,
        &mut scratch.relative,
    );
    adaptive::weights(&scratch.relative, shares);
}

/// Buffers of [`adaptive_shares`], kept with a thread's weights.
#[derive(Default)]
struct Scratch {
    predicted: Vec<Option<f64>>,
    live: Vec<Option<f64>>,
    median: Vec<f64>,
    relative: Vec<f64>,
}

/// The weights one pick chooses by.
#[derive(Clone, Copy)]
struct Weights<'a> {
    weights: &'a [f64],
    cumulative: Cumulative<'a>,
    /// The weights as smooth weighted round robin counts them.
    turns: &'a [i64],
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
    /// Adaptive: each upstream's share (mean 1); empty for the other policies.
    shares: Vec<f64>,
    weights: Vec<f64>,
    cumulative: Vec<f64>,
    positive: usize,
    turns: Vec<i64>,
    equal_weights: bool,
    scratch: Scratch,
}

thread_local! {
    static LAST: Cell<Option<Box<Weighed>>> = const { Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Outcome;
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
        list[0].drain();
        assert_eq!(share(&pool), 0.0, "draining");
        let running = pool.running();
        let passive = running.draft.passive.clone();
        let t = running.nanos(pool.now());
        for _ in 0..passive.consecutive_failures {
            list[1].record(t, Duration::from_millis(1), Outcome::Failed);
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
    async fn adaptive_weights_follow_the_live_load_at_once_and_the_history_after() {
        let adaptive = AdaptiveConfig {
            update_interval: Duration::from_secs(1),
            ..AdaptiveConfig::default()
        };
        let pool = pool(Policy::Adaptive(adaptive), &THREE);
        let list = pool.list();
        let running = pool.running();
        let ms = Duration::from_millis(1);
        let share = |pool: &Pool| counts(pool, 6000, |_| None)[2] as f64 / 6000.0;
        assert!((share(&pool) - 1.0 / 3.0).abs() < 0.03, "no answers: even");
        for (backend, latency) in list.iter().zip([10 * ms, 20 * ms, 40 * ms]) {
            for _ in 0..10 {
                backend.record(0, latency, Outcome::Succeeded);
            }
        }
        // The live loads, before any update: weights 2 : 1 : 0.5.
        let weights = pool.weights_now(running, &list);
        assert!((weights[0] / weights[1] - 2.0).abs() < 1e-9, "{weights:?}");
        assert!((weights[1] / weights[2] - 2.0).abs() < 1e-9, "{weights:?}");
        tokio::time::advance(LIVE_REFRESH_DURATION).await;
        assert!(
            share(&pool) < 0.15,
            "a thread's cached weights follow within 100 ms"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(pool.now(), None, &[]);
        assert_eq!(
            list[0].stats().history.samples().collect::<Vec<_>>(),
            [0.01]
        );
        // The slow one answers as fast as the others now: its history still weighs.
        let now = running.now();
        for _ in 0..10 {
            list[2].record(now, 10 * ms, Outcome::Succeeded);
        }
        let weights = pool.weights_now(running, &list);
        assert!(
            weights[2] < weights[1] && weights[1] < weights[0],
            "{weights:?}"
        );
        // An upstream with no answers in the next interval drifts to the mean of the others.
        for _ in 0..10 {
            list[0].record(now, 10 * ms, Outcome::Succeeded);
            list[1].record(now, 20 * ms, Outcome::Succeeded);
        }
        list[2].stats().interval = Interval::default();
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(pool.now(), None, &[]);
        let history: Vec<f64> = list[2].stats().history.samples().collect();
        assert_eq!(history.len(), 2);
        assert!((history[1] - 0.015).abs() < 1e-12, "{history:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_is_as_fast_as_the_median_until_it_answers() {
        let pool = pool(Policy::Adaptive(AdaptiveConfig::default()), &THREE);
        let list = pool.list();
        let running = pool.running();
        let ms = Duration::from_millis(1);
        for (backend, latency) in list.iter().zip([10 * ms, 20 * ms, 400 * ms]) {
            backend.record(0, latency, Outcome::Succeeded);
        }
        assert!(pool.add(Upstream::from_static("http://d:1")));
        let newcomer = pool.find("http://d:1").unwrap();
        let estimate = newcomer.latency_estimate(0, running.decay_nanos);
        assert_eq!(estimate, 20e6, "the median of 10, 20 and 400 ms");
        assert_eq!(newcomer.live_load(0, running.decay_nanos), None);
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
