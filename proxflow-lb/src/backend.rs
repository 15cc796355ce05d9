//! One upstream in a pool: where it is, what the picks read (lock-free), and what the answers
//! update.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use proxflow_core::Moment;
use serde::Serialize;

use crate::config::ActiveHealth;
use crate::passive::{slow_start_factor, Ejected, Ejections, SLOW_START_STEP};
use crate::policy::adaptive::{self, History, Interval};
use crate::policy::hash::{fnv1a, Candidate};
use crate::policy::{peak_ewma, Nanos};
use crate::settings::Settings;
use crate::upstream::Upstream;

/// Why an upstream takes no traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Takes traffic.
    Healthy,
    /// Ejected by passive health after failures in a row, until the ejection ends.
    Ejected,
    /// Failing active health checks.
    FailingChecks,
    /// Being drained: no new requests.
    Draining,
    /// Generic form: the endpoint service is not ready (an open proxflow-breaker in readiness
    /// mode, a full concurrency limit).
    NotReady,
}

/// Where an HTTP-form upstream is.
pub(crate) struct Base {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The authority as a `Host` value, made once instead of per request.
    pub(crate) host: Option<http::HeaderValue>,
}

const DRAINING: u8 = 1;
const NOT_READY: u8 = 2;
const FAILING_CHECKS: u8 = 4;

/// One upstream of a pool.
pub(crate) struct Backend {
    /// HTTP form: scheme and authority; the generic form's endpoints have none.
    pub(crate) base: Option<Base>,
    /// `scheme://authority` (HTTP form), or the endpoint's key (generic form).
    pub(crate) name: Arc<str>,
    /// A hash of the name, for rendezvous hashing.
    name_hash: u64,
    pub(crate) static_weight: u32,
    pub(crate) in_flight: AtomicU32,
    /// Adaptive: the history's prediction as `f64` bits; NaN before the first.
    predicted_bits: AtomicU64,
    /// Slow start: the time it (re)joined; 0 when done.
    joined_at: AtomicU64,
    /// Passive ejection ends at this time; 0 when not ejected.
    ejected_until: AtomicU64,
    /// `DRAINING`, `NOT_READY`, `FAILING_CHECKS`: one load for a pick.
    flags: AtomicU8,
    /// Peak-EWMA latency estimate (ns, as `f64` bits) and when it was last updated.
    ewma_bits: AtomicU64,
    ewma_at: AtomicU64,
    /// The live load that picks compare, as `f64` bits, decaying from `ewma_at`: the latency
    /// estimate with the adaptive policy's failure penalty (the estimate alone otherwise).
    load_bits: AtomicU64,
    /// It answered once: its estimates are its own, not the first guess.
    answered_once: AtomicBool,
    /// Smooth weighted round robin's running weight (changed under the pool's lock).
    pub(crate) wrr_current: AtomicI64,
    stats: Mutex<Stats>,
    /// The pool's settings: enough to account for an answer, so that a request in flight
    /// holds its upstream only.
    settings: Arc<Settings>,
}

/// What the answers update, under the upstream's lock.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) interval: Interval,
    pub(crate) history: History,
    /// Its share of the requests of the pool's last interval.
    pub(crate) last_share: Option<f64>,
    /// The live failure ratio of its last answers.
    pub(crate) failure_ratio: f64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    ejections: Ejections,
    check_passes: u32,
    check_failures: u32,
}

impl Backend {
    /// An HTTP-form upstream that joins at `now`, ramping up if `slow_start`.
    pub(crate) fn new(
        settings: Arc<Settings>,
        upstream: Upstream,
        now: Nanos,
        slow_start: bool,
    ) -> Backend {
        let (scheme, authority, weight) = upstream.into_parts();
        let name: Arc<str> = Arc::from(format!("{scheme}://{authority}"));
        let host = http::HeaderValue::from_str(authority.as_str()).ok();
        let base = Base {
            scheme,
            authority,
            host,
        };
        Backend::with_name(settings, name, Some(base), weight, now, slow_start)
    }

    /// A generic-form endpoint, known by its key.
    pub(crate) fn endpoint(
        settings: Arc<Settings>,
        name: Arc<str>,
        now: Nanos,
        slow_start: bool,
    ) -> Backend {
        Backend::with_name(settings, name, None, 1, now, slow_start)
    }

    fn with_name(
        settings: Arc<Settings>,
        name: Arc<str>,
        base: Option<Base>,
        static_weight: u32,
        now: Nanos,
        slow_start: bool,
    ) -> Backend {
        Backend {
            name_hash: fnv1a(name.as_bytes()),
            base,
            name,
            static_weight,
            in_flight: AtomicU32::new(0),
            predicted_bits: AtomicU64::new(f64::NAN.to_bits()),
            joined_at: AtomicU64::new(if slow_start { now.max(1) } else { 0 }),
            ejected_until: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            ewma_bits: AtomicU64::new(peak_ewma::DEFAULT_RTT_NS.to_bits()),
            ewma_at: AtomicU64::new(now),
            load_bits: AtomicU64::new(peak_ewma::DEFAULT_RTT_NS.to_bits()),
            answered_once: AtomicBool::new(false),
            wrr_current: AtomicI64::new(0),
            stats: Mutex::default(),
            settings,
        }
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn health(&self, now: Nanos) -> Health {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & DRAINING != 0 {
            Health::Draining
        } else if flags & NOT_READY != 0 {
            Health::NotReady
        } else if flags & FAILING_CHECKS != 0 {
            Health::FailingChecks
        } else if now < self.ejected_until.load(Ordering::Relaxed) {
            Health::Ejected
        } else {
            Health::Healthy
        }
    }

    /// The weight a pick uses now before the adaptive policy's share: 0 when unavailable,
    /// ramped during slow start.
    pub(crate) fn weight(&self, now: Nanos, slow_start: Duration) -> f64 {
        if self.health(now) != Health::Healthy {
            return 0.0;
        }
        self.base_weight(now, slow_start)
    }

    /// Until when [`weight`](Self::weight) may be taken as what it is now, barring a change
    /// counted in the settings' version: the end of an ejection, or the ramp's next step while
    /// slow start ramps.
    pub(crate) fn weight_holds_until(&self, now: Nanos, slow_start: Duration) -> Nanos {
        let ejected_until = self.ejected_until.load(Ordering::Relaxed);
        if now < ejected_until {
            return ejected_until;
        }
        let joined = self.joined_at.load(Ordering::Relaxed);
        if joined != 0 && Duration::from_nanos(now.saturating_sub(joined)) < slow_start {
            return now.saturating_add(SLOW_START_STEP);
        }
        Nanos::MAX
    }

    /// The weight ignoring health (panic mode).
    pub(crate) fn base_weight(&self, now: Nanos, slow_start: Duration) -> f64 {
        let weight = f64::from(self.static_weight);
        let joined = self.joined_at.load(Ordering::Relaxed);
        if joined == 0 {
            return weight;
        }
        let age = Duration::from_nanos(now.saturating_sub(joined));
        if age >= slow_start {
            // Done: later picks skip the arithmetic. A lost race only repeats it.
            let _ =
                self.joined_at
                    .compare_exchange(joined, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        weight * slow_start_factor(age, slow_start)
    }

    /// Adaptive: the history's prediction, once there is one.
    pub(crate) fn predicted(&self) -> Option<f64> {
        let predicted = f64::from_bits(self.predicted_bits.load(Ordering::Relaxed));
        (!predicted.is_nan()).then_some(predicted)
    }

    pub(crate) fn set_predicted(&self, predicted: Option<f64>) {
        let bits = predicted.unwrap_or(f64::NAN).to_bits();
        self.predicted_bits.store(bits, Ordering::Relaxed);
    }

    /// The peak-EWMA cost per unit of `weight` before its decay: the live load × (requests
    /// in flight + 1) / weight, and the time it decays from (not after `now`).
    #[inline]
    pub(crate) fn ewma_cost(&self, now: Nanos, weight: f64) -> (f64, Nanos) {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        let load = f64::from_bits(self.load_bits.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed).min(now);
        (load * pending / weight, at)
    }

    /// The live load now (the latency estimate in nanoseconds, with the failure penalty);
    /// `None` until it answers.
    pub(crate) fn live_load(&self, now: Nanos, decay: f64) -> Option<f64> {
        if !self.answered_once.load(Ordering::Relaxed) {
            return None;
        }
        let load = f64::from_bits(self.load_bits.load(Ordering::Relaxed));
        Some(peak_ewma::decayed(
            load,
            self.ewma_at.load(Ordering::Relaxed),
            now,
            decay,
        ))
    }

    /// The latency estimate now, once it answered.
    pub(crate) fn own_latency(&self, now: Nanos, decay: f64) -> Option<f64> {
        let answered = self.answered_once.load(Ordering::Relaxed);
        answered.then(|| self.latency_estimate(now, decay))
    }

    /// A newcomer's first guess at its latency, before it answers: what the pool shows.
    pub(crate) fn guess_latency(&self, estimate: f64, now: Nanos) {
        if !self.answered_once.load(Ordering::Relaxed) {
            self.ewma_bits.store(estimate.to_bits(), Ordering::Relaxed);
            self.load_bits.store(estimate.to_bits(), Ordering::Relaxed);
            self.ewma_at.store(now, Ordering::Relaxed);
        }
    }

    /// The latency estimate now, in nanoseconds.
    pub(crate) fn latency_estimate(&self, now: Nanos, decay: f64) -> f64 {
        let estimate = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        peak_ewma::decayed(estimate, self.ewma_at.load(Ordering::Relaxed), now, decay)
    }

    /// How rendezvous hashing sees it, with its weight now.
    #[inline]
    pub(crate) fn candidate(&self, weight: f64) -> Candidate {
        Candidate {
            name_hash: self.name_hash,
            weight: self.static_weight,
            available: weight > 0.0,
        }
    }

    /// The pool's clock.
    pub(crate) fn clock(&self) -> &proxflow_core::Clock {
        &self.settings.running().draft.clock
    }

    /// Accounts for how a request sent at `started` ended: counts, latency estimate, passive
    /// health.
    pub(crate) fn answered(&self, started: Moment, ended: Moment, outcome: Outcome) {
        let running = self.settings.running();
        let latency = running.draft.clock.duration_between(started, ended);
        let now = running.nanos(ended);
        if let Some(ejected) = self.record(now, latency, outcome) {
            tracing::warn!(upstream = %self.name, ejected_for = ?ejected.length, "upstream ejected after failures in a row");
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "proxflow_lb_requests_total",
            "upstream" => Arc::clone(&self.name),
            "outcome" => if outcome == Outcome::Succeeded { "success" } else { "failure" }
        )
        .increment(1);
    }

    /// Records how one request ended: the interval's counts, the live estimates and passive
    /// health. Returns the ejection if this answer ejected it.
    ///
    /// A failure or a drop raises the latency estimate when it took longer (a timeout, a
    /// request dropped after a while) and never lowers it, not even by its decay, so that an
    /// upstream failing fast does not look fast; the failure ratio carries it instead.
    pub(crate) fn record(
        &self,
        now: Nanos,
        latency: Duration,
        outcome: Outcome,
    ) -> Option<Ejected> {
        let failed = outcome != Outcome::Succeeded;
        let running = self.settings.running();
        let decay = running.decay_nanos;
        let mut stats = self.stats();
        stats.interval.add(latency, failed);
        stats.requests += 1;
        stats.failures += u64::from(failed);
        let estimate = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed);
        let rtt = latency.as_nanos() as f64;
        // The failure renews the estimate without decaying it: an upstream that only fails,
        // fast, stays as slow as it last was, with the failure ratio on top.
        let estimate = if failed {
            estimate.max(rtt)
        } else {
            peak_ewma::observe(estimate, at, now, rtt, decay)
        };
        stats.failure_ratio = adaptive::failure_ratio(stats.failure_ratio, failed);
        let penalty = running.draft.adaptive().map_or(0.0, |a| a.failure_penalty);
        let load = adaptive::live_load(estimate, stats.failure_ratio, penalty);
        self.ewma_bits.store(estimate.to_bits(), Ordering::Relaxed);
        self.load_bits.store(load.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
        self.answered_once.store(true, Ordering::Relaxed);

        let passive = &running.draft.passive;
        // A client that goes away says nothing of the upstream; a request that waited long
        // enough to look stalled does.
        if outcome == Outcome::Dropped && latency < passive.stall_after {
            return None;
        }
        let ejected_until = self.ejected_until.load(Ordering::Relaxed);
        let ejected = stats
            .ejections
            .answer(failed, now, ejected_until, passive)?;
        self.ejected_until.store(ejected.until, Ordering::Relaxed);
        // Back from ejection it is a new upstream: no history, slow start from its return.
        stats.history.clear();
        self.set_predicted(None);
        self.joined_at.store(ejected.until, Ordering::Relaxed);
        self.settings.changed();
        Some(ejected)
    }

    /// One active health check's result; returns the new `failing_checks` if it changed.
    pub(crate) fn record_check(&self, passed: bool, check: &ActiveHealth) -> Option<bool> {
        let mut stats = self.stats();
        if passed {
            stats.check_passes += 1;
            stats.check_failures = 0;
        } else {
            stats.check_failures += 1;
            stats.check_passes = 0;
        }
        let failing = self.flags.load(Ordering::Relaxed) & FAILING_CHECKS != 0;
        let now_failing = if failing {
            stats.check_passes < check.healthy_threshold
        } else {
            stats.check_failures >= check.unhealthy_threshold
        };
        (now_failing != failing).then(|| {
            self.set_flag(FAILING_CHECKS, now_failing);
            now_failing
        })
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & NOT_READY == 0
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.set_flag(NOT_READY, !ready);
    }

    pub(crate) fn drain(&self) {
        self.set_flag(DRAINING, true);
    }

    fn set_flag(&self, flag: u8, on: bool) {
        let before = if on {
            self.flags.fetch_or(flag, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed)
        };
        // The generic form marks endpoints not ready on every poll that finds them so.
        if (before & flag != 0) != on {
            self.settings.changed();
        }
    }

    pub(crate) fn ejected_until(&self) -> Nanos {
        self.ejected_until.load(Ordering::Relaxed)
    }
}

/// How a request to an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer that is not a failure.
    Succeeded,
    /// A connection error, or a status in `failure_statuses`.
    Failed,
    /// Dropped before its answer: a timeout outside the balancer, a client that went away.
    Dropped,
}

/// A request in flight to its upstream, from the moment it was sent.
///
/// [`InFlight::answered`] accounts for its answer. Dropped before that (an outer timeout, a
/// client that went away), it counts as a failed answer at its elapsed time, as tower's
/// PeakEwma handle does: a stalled upstream then keeps a high latency estimate instead of
/// looking idle, and once it waited `stall_after`, the failures of passive health.
pub(crate) struct InFlight {
    backend: Arc<Backend>,
    started: Moment,
    /// Answered or never sent: nothing left to record when it is dropped.
    settled: bool,
}

impl InFlight {
    pub(crate) fn new(backend: Arc<Backend>, started: Moment) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend,
            started,
            settled: false,
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The request was never sent: it leaves the in-flight count and nothing else is recorded.
    pub(crate) fn not_sent(mut self) {
        self.settled = true;
    }

    /// The answer came at `ended`: its latency and whether it failed count for the upstream.
    pub(crate) fn answered(mut self, ended: Moment, failed: bool) {
        self.settled = true;
        let outcome = if failed {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        self.backend.answered(self.started, ended, outcome);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled {
            let ended = self.backend.clock().now();
            tracing::debug!(upstream = %self.backend.name, "request dropped before its answer; counted as a failure at its elapsed time");
            self.backend.answered(self.started, ended, Outcome::Dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LbConfig, PassiveHealth};
    use crate::settings::Draft;

    const MS: Duration = Duration::from_millis(1);
    const S: Nanos = 1_000_000_000;

    fn backend_with(config: LbConfig) -> Backend {
        let settings = Arc::new(Settings::new(Draft::new(&config)));
        Backend::new(settings, Upstream::from_static("http://a:1"), 0, false)
    }

    fn backend() -> Backend {
        backend_with(LbConfig::default())
    }

    #[test]
    fn an_ejected_upstream_comes_back_slowly_and_without_history() {
        let backend = backend_with(LbConfig {
            passive_health: PassiveHealth {
                consecutive_failures: 3,
                ..PassiveHealth::default()
            },
            ..LbConfig::default()
        });
        backend.record(0, MS, Outcome::Succeeded);
        backend.stats().history.push(1.0, 10);
        for _ in 0..2 {
            assert_eq!(backend.record(0, MS, Outcome::Failed), None);
        }
        let ejected = backend.record(0, MS, Outcome::Failed).unwrap();
        assert_eq!(ejected.until, 30 * S);
        assert_eq!(backend.health(29 * S), Health::Ejected);
        assert_eq!(backend.weight(29 * S, Duration::from_secs(30)), 0.0);
        assert_eq!(backend.health(30 * S), Health::Healthy);
        assert_eq!(backend.stats().history.samples().count(), 0);
        // Back with slow start from the end of the ejection.
        let weight = backend.weight(30 * S, Duration::from_secs(30));
        assert!((weight - 0.1).abs() < 1e-9, "{weight}");
        assert_eq!(backend.stats().failures, 3);
    }

    #[test]
    fn failures_raise_the_estimate_never_lower_it_and_weigh_in_the_live_load() {
        let backend = backend();
        let decay = backend.settings.running().decay_nanos;
        assert_eq!(backend.live_load(0, decay), None, "no answer yet");
        backend.record(0, 100 * MS, Outcome::Succeeded);
        assert_eq!(backend.live_load(0, decay), Some(1e8));
        backend.record(0, MS, Outcome::Failed);
        assert_eq!(backend.latency_estimate(0, decay), 1e8, "a fast failure");
        // One failure in the ratio's memory of 16 answers, penalty 4: x1.25.
        let load = backend.live_load(0, decay).unwrap();
        assert!((load / 1e8 - 1.25).abs() < 1e-9, "{load}");
        backend.record(0, 1000 * MS, Outcome::Failed);
        assert_eq!(backend.latency_estimate(0, decay), 1e9, "a slow failure");
        backend.record(0, MS, Outcome::Succeeded);
        assert_eq!(backend.latency_estimate(0, decay), 1e9, "no time passed");
    }

    #[test]
    fn ewma_costs_compare_as_if_both_were_decayed_to_now() {
        let backends: Vec<Backend> = (0..4).map(|_| backend()).collect();
        let decay = backends[0].settings.running().decay_nanos;
        // Estimates of 100, 300, 20 and 1 ms, set 0, 10, 30 and 40 s in; 2 and 0 in flight.
        for (i, (latency, at)) in [(100, 0), (300, 10 * S), (20, 30 * S), (1, 40 * S)]
            .into_iter()
            .enumerate()
        {
            backends[i].record(at, latency * MS, Outcome::Succeeded);
        }
        backends[1].in_flight.store(2, Ordering::Relaxed);
        let weights = [1.0, 3.0, 0.5, 1.0];
        for now in [40 * S, 50 * S, 90 * S, 400 * S] {
            let cost = |i: usize| {
                let pending = f64::from(backends[i].in_flight.load(Ordering::Relaxed)) + 1.0;
                backends[i].latency_estimate(now, decay) * pending / weights[i]
            };
            for a in 0..4 {
                for b in 0..4 {
                    if a == b {
                        continue;
                    }
                    let lower = peak_ewma::lower_cost(
                        backends[b].ewma_cost(now, weights[b]),
                        backends[a].ewma_cost(now, weights[a]),
                        decay,
                    );
                    assert_eq!(lower, cost(b) < cost(a), "now {now}, {b} against {a}");
                }
            }
        }
    }

    #[test]
    fn health_checks_need_their_thresholds() {
        let backend = backend();
        let check = ActiveHealth::default();
        assert_eq!(backend.record_check(false, &check), None);
        assert_eq!(backend.record_check(false, &check), None);
        assert_eq!(backend.record_check(false, &check), Some(true));
        assert_eq!(backend.health(0), Health::FailingChecks);
        assert_eq!(backend.record_check(true, &check), None);
        assert_eq!(backend.record_check(true, &check), Some(false));
        assert_eq!(backend.health(0), Health::Healthy);
    }
}
