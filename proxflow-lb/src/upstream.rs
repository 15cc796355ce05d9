//! One upstream: where it is, what the picks read (lock-free), and what the answers update.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::Serialize;

use crate::adaptive::{History, Interval};
use crate::clock::Moment;
use crate::config::PassiveHealth;
use crate::error::ConfigError;

/// Scheme and authority of an upstream URL; anything after the authority is refused.
pub(crate) fn parse_base(url: &str) -> Result<(Scheme, Authority), ConfigError> {
    let invalid = || ConfigError::Invalid {
        field: "upstreams.url",
        reason: format!("{url:?}: expected http://host:port or https://host:port"),
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid())?;
    let scheme = uri.scheme().cloned().ok_or_else(invalid)?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(invalid());
    }
    let authority = uri.authority().cloned().ok_or_else(invalid)?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path != "/" {
        return Err(invalid());
    }
    Ok((scheme, authority))
}

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

/// Nanoseconds since the pool's origin, as the picks read times.
pub(crate) type Nanos = u64;

/// What the upstreams of one pool share: enough to account for an answer, so that a request
/// in flight holds its upstream only (another `Arc` per pick was a tenth of a pick).
pub(crate) struct Shared {
    pub(crate) origin: Moment,
    /// Peak-EWMA decay (`PeakEwma`'s, or 10 s for the latency shown in snapshots).
    pub(crate) decay: Duration,
    pub(crate) passive: PassiveHealth,
    /// Counts the changes of the upstream list and of anything a weight depends on but the
    /// clock, so that weights cached between changes are known to be current.
    pub(crate) version: AtomicU64,
}

impl Shared {
    pub(crate) fn new(origin: Moment, decay: Duration, passive: PassiveHealth) -> Shared {
        Shared {
            origin,
            decay,
            passive,
            version: AtomicU64::new(0),
        }
    }

    pub(crate) fn nanos_since_origin(&self, at: Moment) -> Nanos {
        at.nanos_since(self.origin)
    }

    /// After the change is stored, so that a reader of the new version sees it.
    pub(crate) fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) struct Upstream {
    /// HTTP form: scheme and authority; the generic form's endpoints have none.
    pub(crate) base: Option<Base>,
    /// `scheme://authority` (HTTP form), or the endpoint's key (generic form).
    pub(crate) name: Arc<str>,
    /// A hash of the name, for rendezvous hashing.
    pub(crate) name_hash: u64,
    pub(crate) static_weight: u32,
    pub(crate) in_flight: AtomicU32,
    /// Static × adaptive weight as `f64` bits (the mean adaptive weight is 1).
    weight_bits: AtomicU64,
    /// Slow start: the time it (re)joined; 0 when done.
    joined_at: AtomicU64,
    /// Passive ejection ends at this time; 0 when not ejected.
    ejected_until: AtomicU64,
    /// `DRAINING`, `NOT_READY`, `FAILING_CHECKS`: one load for a pick.
    flags: AtomicU8,
    /// Peak-EWMA latency estimate (ns, as `f64` bits) and when it was last updated.
    ewma_bits: AtomicU64,
    ewma_at: AtomicU64,
    /// Smooth weighted round robin's running weight (changed under the pool's lock).
    pub(crate) wrr_current: AtomicI64,
    stats: Mutex<Stats>,
    shared: Arc<Shared>,
}

/// What the answers update, under the upstream's lock.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) interval: Interval,
    pub(crate) history: History,
    pub(crate) predicted: Option<f64>,
    pub(crate) adaptive_weight: Option<f64>,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) ejections_in_a_row: u32,
    pub(crate) check_passes: u32,
    pub(crate) check_failures: u32,
}

/// Initial peak-EWMA estimate: tower's `PeakEwma` default RTT is a guess as well.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

impl Upstream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        url: &str,
        static_weight: u32,
        now: Nanos,
        slow_start: bool,
    ) -> Result<Upstream, ConfigError> {
        let (scheme, authority) = parse_base(url)?;
        let name: Arc<str> = Arc::from(format!("{scheme}://{authority}"));
        let host = http::HeaderValue::from_str(authority.as_str()).ok();
        let base = Base {
            scheme,
            authority,
            host,
        };
        Ok(Upstream::with_name(
            shared,
            name,
            Some(base),
            static_weight,
            now,
            slow_start,
        ))
    }

    /// A generic-form endpoint, known by its key.
    pub(crate) fn endpoint(
        shared: Arc<Shared>,
        name: Arc<str>,
        now: Nanos,
        slow_start: bool,
    ) -> Upstream {
        Upstream::with_name(shared, name, None, 1, now, slow_start)
    }

    fn with_name(
        shared: Arc<Shared>,
        name: Arc<str>,
        base: Option<Base>,
        static_weight: u32,
        now: Nanos,
        slow_start: bool,
    ) -> Upstream {
        Upstream {
            name_hash: fnv1a(name.as_bytes()),
            base,
            name,
            static_weight: static_weight.max(1),
            in_flight: AtomicU32::new(0),
            weight_bits: AtomicU64::new(f64::from(static_weight.max(1)).to_bits()),
            joined_at: AtomicU64::new(if slow_start { now.max(1) } else { 0 }),
            ejected_until: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            ewma_bits: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            ewma_at: AtomicU64::new(now),
            wrr_current: AtomicI64::new(0),
            stats: Mutex::default(),
            shared,
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

    /// The weight a pick uses now: 0 when unavailable, ramped during slow start.
    pub(crate) fn weight(&self, now: Nanos, slow_start: Duration) -> f64 {
        if self.health(now) != Health::Healthy {
            return 0.0;
        }
        self.base_weight(now, slow_start)
    }

    /// Until when [`weight`](Self::weight) stays what it is now, barring a change counted in
    /// [`Shared::version`]: the end of an ejection, or `now` while slow start ramps.
    pub(crate) fn weight_holds_until(&self, now: Nanos, slow_start: Duration) -> Nanos {
        let ejected_until = self.ejected_until.load(Ordering::Relaxed);
        if now < ejected_until {
            return ejected_until;
        }
        let joined = self.joined_at.load(Ordering::Relaxed);
        if joined != 0 && Duration::from_nanos(now.saturating_sub(joined)) < slow_start {
            return now;
        }
        Nanos::MAX
    }

    /// The weight ignoring health (panic mode).
    pub(crate) fn base_weight(&self, now: Nanos, slow_start: Duration) -> f64 {
        let weight = f64::from_bits(self.weight_bits.load(Ordering::Relaxed));
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
        weight * crate::adaptive::slow_start_factor(age, slow_start)
    }

    pub(crate) fn set_adaptive_weight(&self, adaptive: Option<f64>) {
        let weight = f64::from(self.static_weight) * adaptive.unwrap_or(1.0);
        self.weight_bits.store(weight.to_bits(), Ordering::Relaxed);
        self.shared.changed();
    }

    pub(crate) fn effective_adaptive(&self) -> f64 {
        f64::from_bits(self.weight_bits.load(Ordering::Relaxed)) / f64::from(self.static_weight)
    }

    /// Peak-EWMA cost before its decay: the latency estimate × (requests in flight + 1), and
    /// the time it decays from (not after `now`).
    fn undecayed_cost(&self, now: Nanos) -> (f64, Nanos) {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        let estimate = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed).min(now);
        (estimate * pending, at)
    }

    pub(crate) fn latency_estimate(&self, now: Nanos, decay: Duration) -> f64 {
        let estimate = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(at) as f64;
        estimate * (-elapsed / decay_nanos(decay)).exp()
    }

    /// Accounts for one answer to a request sent at `started`: counts, latency estimate,
    /// passive health.
    pub(crate) fn answered(&self, started: Moment, ended: Moment, failed: bool) {
        let shared = &*self.shared;
        let latency = ended.duration_since(started);
        let now = shared.nanos_since_origin(ended);
        if let Some(length) = self.record(now, latency, failed, shared.decay, &shared.passive) {
            tracing::warn!(upstream = %self.name, ejected_for = ?length, "upstream ejected after failures in a row");
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "proxflow_lb_requests_total",
            "upstream" => Arc::clone(&self.name),
            "outcome" => if failed { "failure" } else { "success" }
        )
        .increment(1);
    }

    /// Records one answer: the interval's counts, the peak-EWMA estimate and passive health.
    /// Returns the ejection's length if this answer ejected it.
    pub(crate) fn record(
        &self,
        now: Nanos,
        latency: Duration,
        failed: bool,
        decay: Duration,
        passive: &PassiveHealth,
    ) -> Option<Duration> {
        let mut stats = self.stats();
        stats.interval.add(latency, failed);
        stats.requests += 1;
        stats.failures += u64::from(failed);
        // Peak EWMA: a slower answer than the estimate replaces it at once; faster ones pull
        // it down with the decay.
        let rtt = latency.as_nanos() as f64;
        let at = self.ewma_at.load(Ordering::Relaxed);
        let kept = (-(now.saturating_sub(at) as f64) / decay_nanos(decay)).exp();
        let estimate = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed)) * kept;
        let updated = if rtt > estimate {
            rtt
        } else {
            estimate + rtt * (1.0 - kept)
        };
        self.ewma_bits.store(updated.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);

        if !failed {
            stats.consecutive_failures = 0;
            if now >= self.ejected_until.load(Ordering::Relaxed) {
                stats.ejections_in_a_row = 0;
            }
            return None;
        }
        stats.consecutive_failures += 1;
        if passive.consecutive_failures == 0
            || stats.consecutive_failures < passive.consecutive_failures
            || now < self.ejected_until.load(Ordering::Relaxed)
        {
            return None;
        }
        stats.consecutive_failures = 0;
        stats.ejections_in_a_row = stats.ejections_in_a_row.saturating_add(1);
        let factor = 2u32.saturating_pow(stats.ejections_in_a_row - 1);
        let length = passive
            .base_ejection
            .saturating_mul(factor)
            .min(passive.max_ejection);
        let until = now.saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        // Back from ejection it is a new upstream: no history, slow start from its return.
        stats.history.clear();
        stats.predicted = None;
        stats.adaptive_weight = None;
        self.joined_at.store(until, Ordering::Relaxed);
        self.shared.changed();
        Some(length)
    }

    /// One active health check's result; returns the new `failing_checks` if it changed.
    pub(crate) fn record_check(
        &self,
        passed: bool,
        check: &crate::config::ActiveHealth,
    ) -> Option<bool> {
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
            self.shared.changed();
        }
    }

    pub(crate) fn ejected_until(&self) -> Nanos {
        self.ejected_until.load(Ordering::Relaxed)
    }
}

/// Whether `b`'s peak-EWMA cost (the decayed latency estimate × (requests in flight + 1))
/// per unit of weight is below `a`'s. Both decay by the same factor per nanosecond, so only
/// the older estimate is decayed to the newer one's time: one `exp` where two were a tenth
/// of a pick.
pub(crate) fn lower_ewma_cost(
    (b, b_weight): (&Upstream, f64),
    (a, a_weight): (&Upstream, f64),
    now: Nanos,
    decay: Duration,
) -> bool {
    let (b_cost, b_at) = b.undecayed_cost(now);
    let (a_cost, a_at) = a.undecayed_cost(now);
    let (b_cost, a_cost) = (b_cost / b_weight, a_cost / a_weight);
    let decayed =
        |older: Nanos, newer: Nanos| (-((newer - older) as f64) / decay_nanos(decay)).exp();
    if a_at <= b_at {
        b_cost < a_cost * decayed(a_at, b_at)
    } else {
        b_cost * decayed(b_at, a_at) < a_cost
    }
}

/// As `f64` nanoseconds, through `u64`: converting the `u128` of `as_nanos` was a tenth of an
/// adaptive pick.
fn decay_nanos(decay: Duration) -> f64 {
    nanos(decay).max(1) as f64
}

/// Counts a request in flight to its upstream until it is answered or dropped.
pub(crate) struct InFlight(Arc<Upstream>);

impl InFlight {
    pub(crate) fn new(upstream: Arc<Upstream>) -> InFlight {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(upstream)
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// FNV-1a: a fixed, well-spread hash of upstream names for rendezvous hashing (stable across
/// processes, unlike `RandomState`, so that every instance maps keys alike).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn upstream() -> Upstream {
        let shared = Arc::new(Shared::new(
            Moment::now(),
            Duration::from_secs(10),
            PassiveHealth::default(),
        ));
        Upstream::new(shared, "http://a:1", 1, 0, false).unwrap()
    }

    #[test]
    fn base_urls_only() {
        assert!(parse_base("http://10.0.0.1:8080").is_ok());
        assert!(parse_base("https://api.example").is_ok());
        assert!(parse_base("http://10.0.0.1:8080/").is_ok());
        for bad in [
            "10.0.0.1:8080",
            "ftp://x",
            "http://x/path",
            "http://x/?q",
            "",
            "http://",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_in_a_row_eject_for_longer_each_time() {
        let upstream = upstream();
        let passive = PassiveHealth {
            consecutive_failures: 3,
            ..PassiveHealth::default()
        };
        let decay = Duration::from_secs(10);
        let s = 1_000_000_000u64;
        assert_eq!(upstream.record(0, MS, true, decay, &passive), None);
        assert_eq!(
            upstream.record(0, MS, false, decay, &passive),
            None,
            "a success resets the count"
        );
        upstream.record(0, MS, true, decay, &passive);
        upstream.record(0, MS, true, decay, &passive);
        assert_eq!(
            upstream.record(0, MS, true, decay, &passive),
            Some(Duration::from_secs(30))
        );
        assert_eq!(upstream.health(29 * s), Health::Ejected);
        assert_eq!(upstream.weight(29 * s, Duration::from_secs(30)), 0.0);
        assert_eq!(upstream.health(30 * s), Health::Healthy);
        // Back with slow start from the end of the ejection.
        let weight = upstream.weight(30 * s, Duration::from_secs(30));
        assert!((weight - 0.1).abs() < 1e-9, "{weight}");
        for _ in 0..2 {
            upstream.record(30 * s, MS, true, decay, &passive);
        }
        assert_eq!(
            upstream.record(30 * s, MS, true, decay, &passive),
            Some(Duration::from_secs(60)),
            "second ejection in a row: twice as long"
        );
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let upstream = upstream();
        let passive = PassiveHealth::default();
        let decay = Duration::from_secs(1);
        upstream.record(0, 100 * MS, false, decay, &passive);
        assert_eq!(upstream.latency_estimate(0, decay), 100_000_000.0);
        upstream.record(0, MS, false, decay, &passive);
        assert_eq!(
            upstream.latency_estimate(0, decay),
            100_000_000.0,
            "no time passed: the peak holds"
        );
        let later = upstream.latency_estimate(1_000_000_000, decay);
        assert!((later - 100_000_000.0 / std::f64::consts::E).abs() < 1.0);
    }

    #[test]
    fn ewma_costs_compare_as_if_both_were_decayed_to_now() {
        let passive = PassiveHealth::default();
        let decay = Duration::from_secs(1);
        let s = 1_000_000_000u64;
        let upstreams: Vec<Upstream> = (0..4).map(|_| upstream()).collect();
        // Estimates of 100, 300, 20 and 1 ms, set 0, 1, 3 and 4 s in; 2 and 0 in flight.
        for (i, (latency, at)) in [(100, 0), (300, s), (20, 3 * s), (1, 4 * s)]
            .into_iter()
            .enumerate()
        {
            upstreams[i].record(at, latency * MS, false, decay, &passive);
        }
        upstreams[1].in_flight.store(2, Ordering::Relaxed);
        let weights = [1.0, 3.0, 0.5, 1.0];
        for now in [4 * s, 5 * s, 9 * s, 40 * s] {
            let cost = |i: usize| {
                let pending = f64::from(upstreams[i].in_flight.load(Ordering::Relaxed)) + 1.0;
                upstreams[i].latency_estimate(now, decay) * pending / weights[i]
            };
            for a in 0..4 {
                for b in 0..4 {
                    if a == b {
                        continue;
                    }
                    let lower = lower_ewma_cost(
                        (&upstreams[b], weights[b]),
                        (&upstreams[a], weights[a]),
                        now,
                        decay,
                    );
                    assert_eq!(lower, cost(b) < cost(a), "now {now}, {b} against {a}");
                }
            }
        }
    }

    #[test]
    fn health_checks_need_their_thresholds() {
        let upstream = upstream();
        let check = crate::config::ActiveHealth::default();
        assert_eq!(upstream.record_check(false, &check), None);
        assert_eq!(upstream.record_check(false, &check), None);
        assert_eq!(upstream.record_check(false, &check), Some(true));
        assert_eq!(upstream.health(0), Health::FailingChecks);
        assert_eq!(upstream.record_check(true, &check), None);
        assert_eq!(upstream.record_check(true, &check), Some(false));
        assert_eq!(upstream.health(0), Health::Healthy);
    }
}
