//! One update of the dashboard: rates over the interval between two readings of every layer's
//! counters, and the gauges of the later one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use proxflow_breaker::{BreakerSnapshot, State};
use proxflow_cache::CacheSnapshot;
use proxflow_lb::{Health, LbSnapshot, LoadMetric};
use proxflow_ratelimit::StatsSnapshot;
use serde::Serialize;

use super::transitions::Transition;
use crate::gateway::traffic::{Percentiles, RouteReading, TrafficReading};

/// Every counter of the gateway and its layers at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// The same moment, in milliseconds since the Unix epoch (what the page's charts read).
    pub wall_ms: u64,
    /// The gateway's own counters.
    pub traffic: TrafficReading,
    /// The connections that sent a request since the previous reading.
    pub connections: u64,
    /// The rate limiter's counters.
    pub ratelimit: StatsSnapshot,
    /// Every breaker's figures.
    pub breakers: Vec<BreakerSnapshot>,
    /// The balancer's figures.
    pub lb: LbSnapshot,
    /// The cache's counters.
    pub cache: CacheSnapshot,
}

/// Milliseconds since the Unix epoch now.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One update: rates over its interval, gauges at its end. Serializes to what
/// `<dashboard>/events` sends and `<dashboard>/stats` shows under `sample`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Its number, from 0 (the first, with no interval), one more per update.
    pub seq: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub t_ms: u64,
    /// The interval its rates are over, in milliseconds (0 for the first).
    pub interval_ms: f64,
    /// Requests answered per second.
    pub requests_per_s: f64,
    /// Answers with a 5xx status per second.
    pub errors_per_s: f64,
    /// The share of the interval's answers that were 5xx (0 to 1); `None` with no answer.
    pub error_ratio: Option<f64>,
    /// Requests dropped before their answer, per second.
    pub cancelled_per_s: f64,
    /// Requests being answered at the end of the interval.
    pub in_flight: u64,
    /// Client connections (address and port) that sent a request during the interval. The
    /// gateway sees requests, not connections: an idle keep-alive connection is not counted.
    pub active_connections: u64,
    /// Latency over the interval (to the response head).
    pub latency: Percentiles,
    /// Latency since the start.
    pub latency_total: Percentiles,
    /// Requests answered since the start.
    pub requests_total: u64,
    /// 5xx answers since the start.
    pub errors_total: u64,
    /// Each route's figures over the interval.
    pub routes: Vec<RouteSample>,
    /// Each upstream of the balancer, in its order.
    pub upstreams: Vec<UpstreamSample>,
    /// Each breaker, one per upstream that was called.
    pub breakers: Vec<BreakerSample>,
    /// The breakers' changes of state during the interval.
    pub transitions: Vec<Transition>,
    /// The rate limiter on `/api`.
    pub ratelimit: RateLimitSample,
    /// The cache on `/api`.
    pub cache: CacheSample,
}

/// One route over an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSample {
    /// `/api/orders`, `/`, or `other`.
    pub route: String,
    /// Requests answered per second.
    pub requests_per_s: f64,
    /// The share that were 5xx; `None` with no answer.
    pub error_ratio: Option<f64>,
    /// Latency over the interval.
    pub latency: Percentiles,
    /// Requests answered since the start.
    pub requests_total: u64,
    /// 5xx answers since the start.
    pub errors_total: u64,
}

/// One upstream of the balancer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSample {
    /// The demo upstream's name, or its address.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// The weight picks use now (0 when it takes no traffic).
    pub weight: f64,
    /// The configured weight.
    pub static_weight: u32,
    /// The adaptive policy's prediction of its next load sample, in `predicted_load_unit`;
    /// `None` before its first update or with another policy.
    pub predicted_load: Option<f64>,
    /// `ms` (the `latency` load), `requests` or `concurrent requests`.
    pub predicted_load_unit: &'static str,
    /// Its share of the requests the balancer answered during the interval (0 to 1); `None`
    /// when none was.
    pub share: Option<f64>,
    /// Requests it answered per second.
    pub requests_per_s: f64,
    /// The share of its interval's answers that failed; `None` with no answer.
    pub failure_ratio: Option<f64>,
    /// The balancer's peak-EWMA latency estimate, in milliseconds.
    pub latency_ms: f64,
    /// Requests sent to it and not answered.
    pub in_flight: u32,
    /// Whether the balancer sends it traffic, and if not why.
    pub health: Health,
    /// Ejected: milliseconds left.
    pub ejected_for_ms: Option<u64>,
    /// Its breaker's state; `None` until it is first called.
    pub breaker: Option<State>,
}

/// One breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSample {
    /// The upstream's name, or the breaker's key.
    pub name: String,
    /// The breaker's key (the upstream's `host:port`).
    pub key: String,
    /// The state now.
    pub state: State,
    /// Failure rate over its window (0 to 1).
    pub failure_rate: f64,
    /// Slow-call rate over its window (0 to 1).
    pub slow_call_rate: f64,
    /// Calls in its window.
    pub calls_in_window: u32,
    /// Milliseconds in the current state.
    pub time_in_state_ms: u64,
    /// Open: milliseconds until the probes.
    pub retry_after_ms: u64,
    /// The share of calls let through now.
    pub admitted_share: f64,
    /// Calls refused per second over the interval.
    pub refused_per_s: f64,
    /// Changes of state since it was made.
    pub transitions_total: u64,
}

/// The rate limiter over an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitSample {
    /// Requests passed on at once, per second.
    pub allowed_per_s: f64,
    /// Requests refused (429) per second.
    pub limited_per_s: f64,
    /// Requests held before being passed on, per second.
    pub delayed_per_s: f64,
    /// Requests whose connection was closed unanswered, per second.
    pub dropped_per_s: f64,
    /// Admitted since the start.
    pub allowed_total: u64,
    /// Refused since the start.
    pub limited_total: u64,
    /// Keys with state now.
    pub active_keys: u64,
}

/// The cache over an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheSample {
    /// Answers from the store per second.
    pub hits_per_s: f64,
    /// Lookups with nothing stored per second.
    pub misses_per_s: f64,
    /// hits / (hits + misses) over the interval; `None` with no lookup.
    pub hit_ratio: Option<f64>,
    /// The same since the start.
    pub hit_ratio_total: Option<f64>,
    /// Stored responses now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// What a sample needs besides the two readings.
pub struct Context<'a> {
    /// The upstreams' names by address.
    pub names: &'a [(String, SocketAddr)],
    /// The adaptive policy's load sample, when the balancer uses it.
    pub load: Option<LoadMetric>,
}

impl Context<'_> {
    /// The name of the upstream at `authority` (`host:port`), or the authority.
    pub fn name_of(&self, authority: &str) -> String {
        self.names
            .iter()
            .find(|(_, addr)| addr.to_string() == authority)
            .map_or_else(|| authority.to_string(), |(name, _)| name.clone())
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// `scheme://authority` without the scheme.
fn authority(upstream: &str) -> &str {
    upstream
        .split_once("://")
        .map_or(upstream, |(_, authority)| authority)
}

impl Sample {
    /// The update number `seq`, over the time from `before` to `now`.
    pub fn between(
        seq: u64,
        before: &Reading,
        now: &Reading,
        context: &Context<'_>,
        transitions: Vec<Transition>,
    ) -> Sample {
        let seconds = now.at.saturating_duration_since(before.at).as_secs_f64();
        let per_s = |now: u64, before: u64| {
            if seconds > 0.0 {
                now.saturating_sub(before) as f64 / seconds
            } else {
                0.0
            }
        };
        let route = |now: &RouteReading, before: Option<&RouteReading>| {
            let empty = RouteReading::default();
            let before = before.unwrap_or(&empty);
            let requests = now.requests.saturating_sub(before.requests);
            let errors = now.errors.saturating_sub(before.errors);
            (
                per_s(now.requests, before.requests),
                ratio(errors, requests),
                now.latency.since(&before.latency).percentiles(),
            )
        };
        let (requests_per_s, error_ratio, latency) =
            route(&now.traffic.all, Some(&before.traffic.all));
        let routes = now
            .traffic
            .routes
            .iter()
            .map(|(name, reading)| {
                let earlier = before
                    .traffic
                    .routes
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, r)| r);
                let (requests_per_s, error_ratio, latency) = route(reading, earlier);
                RouteSample {
                    route: name.clone(),
                    requests_per_s,
                    error_ratio,
                    latency,
                    requests_total: reading.requests,
                    errors_total: reading.errors,
                }
            })
            .collect();

        let answered = |u: &proxflow_lb::UpstreamSnapshot| {
            let earlier = before
                .lb
                .upstreams
                .iter()
                .find(|b| b.upstream == u.upstream);
            (
                u.requests.saturating_sub(earlier.map_or(0, |b| b.requests)),
                u.failures.saturating_sub(earlier.map_or(0, |b| b.failures)),
            )
        };
        let all_answered: u64 = now.lb.upstreams.iter().map(|u| answered(u).0).sum();
        let (scale, unit) = match context.load {
            Some(LoadMetric::Latency) => (1e3, "ms"),
            Some(LoadMetric::Requests) => (1.0, "requests"),
            Some(LoadMetric::Concurrency) => (1.0, "concurrent requests"),
            None => (1.0, ""),
        };
        let upstreams = now
            .lb
            .upstreams
            .iter()
            .map(|u| {
                let address = authority(&u.upstream);
                let (requests, failures) = answered(u);
                let earlier = before
                    .lb
                    .upstreams
                    .iter()
                    .find(|b| b.upstream == u.upstream);
                UpstreamSample {
                    name: context.name_of(address),
                    address: address.to_string(),
                    weight: u.weight,
                    static_weight: u.static_weight,
                    predicted_load: u.predicted_load.map(|load| load * scale),
                    predicted_load_unit: unit,
                    share: ratio(requests, all_answered),
                    requests_per_s: per_s(u.requests, earlier.map_or(0, |b| b.requests)),
                    failure_ratio: ratio(failures, requests),
                    latency_ms: u.latency_ewma_ms,
                    in_flight: u.in_flight,
                    health: u.health,
                    ejected_for_ms: u.ejected_for_ms,
                    breaker: now
                        .breakers
                        .iter()
                        .find(|b| &*b.breaker == address)
                        .map(|b| b.state),
                }
            })
            .collect();
        let breakers = now
            .breakers
            .iter()
            .map(|b| {
                let earlier = before.breakers.iter().find(|e| e.breaker == b.breaker);
                BreakerSample {
                    name: context.name_of(&b.breaker),
                    key: b.breaker.to_string(),
                    state: b.state,
                    failure_rate: b.failure_rate,
                    slow_call_rate: b.slow_call_rate,
                    calls_in_window: b.calls_in_window,
                    time_in_state_ms: b.time_in_state_ms,
                    retry_after_ms: b.retry_after_ms,
                    admitted_share: b.admitted_share,
                    refused_per_s: per_s(b.totals.refused, earlier.map_or(0, |e| e.totals.refused)),
                    transitions_total: b.totals.transitions,
                }
            })
            .collect();
        let (rl, rl0) = (&now.ratelimit, &before.ratelimit);
        let (cache, cache0) = (&now.cache, &before.cache);
        let hits = cache.hits.saturating_sub(cache0.hits);
        let misses = cache.misses.saturating_sub(cache0.misses);
        Sample {
            seq,
            t_ms: now.wall_ms,
            interval_ms: seconds * 1e3,
            requests_per_s,
            errors_per_s: per_s(now.traffic.all.errors, before.traffic.all.errors),
            error_ratio,
            cancelled_per_s: per_s(now.traffic.all.cancelled, before.traffic.all.cancelled),
            in_flight: now.traffic.in_flight,
            active_connections: now.connections,
            latency,
            latency_total: now.traffic.all.latency.percentiles(),
            requests_total: now.traffic.all.requests,
            errors_total: now.traffic.all.errors,
            routes,
            upstreams,
            breakers,
            transitions,
            ratelimit: RateLimitSample {
                allowed_per_s: per_s(rl.allowed, rl0.allowed),
                limited_per_s: per_s(rl.limited, rl0.limited),
                delayed_per_s: per_s(rl.delayed, rl0.delayed),
                dropped_per_s: per_s(rl.dropped, rl0.dropped),
                allowed_total: rl.allowed,
                limited_total: rl.limited,
                active_keys: rl.active_keys,
            },
            cache: CacheSample {
                hits_per_s: per_s(cache.hits, cache0.hits),
                misses_per_s: per_s(cache.misses, cache0.misses),
                hit_ratio: ratio(hits, hits + misses),
                hit_ratio_total: ratio(cache.hits, cache.hits + cache.misses),
                entries: cache.entries,
                bytes: cache.bytes,
            },
        }
    }
}

/// The breaker's name of a transition, as the sample shows it.
pub fn named(transition: &Transition, context: &Context<'_>) -> Transition {
    Transition {
        upstream: Arc::from(context.name_of(&transition.key)),
        ..transition.clone()
    }
}
