//! [`LbHandle`]: changes and figures of a balancer's upstreams, and picks for traffic the
//! balancer does not send itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Health, InFlight};
use crate::config::Policy;
use crate::pool::Pool;
use crate::upstream::Upstream;

/// Changes and figures of a balancer's upstreams. Cheap to clone; every clone, and the
/// balancer's later builder calls, act on the same upstreams.
#[derive(Clone)]
pub struct LbHandle {
    pool: Arc<Pool>,
}

/// The figures of a balancer; serializes to JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LbSnapshot {
    /// The policy's name.
    pub policy: &'static str,
    /// Each upstream, in the order they were added.
    pub upstreams: Vec<UpstreamSnapshot>,
}

/// One upstream's figures, as a snapshot lists them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamSnapshot {
    /// `scheme://authority`.
    pub upstream: String,
    /// The configured weight.
    pub static_weight: u32,
    /// The weight picks use now: the static weight, ramped during slow start, times the
    /// adaptive weight; 0 when unavailable. Two candidates are drawn in proportion to it.
    pub weight: f64,
    /// Adaptive: the share of the weight its load earns now (the pool's mean is 1; between
    /// 0.01 and 100): inverse to the worse of `predicted_load` and `live_load`, each relative
    /// to the pool's median.
    pub adaptive_weight: Option<f64>,
    /// Adaptive: the smoothed prediction of the next sample, in the sample's unit (seconds of
    /// latency for the default `latency` load); `None` before the first `update_interval`.
    pub predicted_load: Option<f64>,
    /// Adaptive: the samples, oldest first, in the sample's unit.
    pub history: Vec<f64>,
    /// Adaptive: the live load, in milliseconds: the latency estimate times
    /// `1 + failure_penalty × failure_ratio`. `None` until it answers.
    pub live_load_ms: Option<f64>,
    /// Adaptive: the share of failures in its last answers (about the last 16).
    pub failure_ratio: Option<f64>,
    /// Adaptive: its share of the pool's answered (or dropped) requests in the last
    /// `update_interval`; `None` before the first.
    pub share_last_interval: Option<f64>,
    /// Requests sent and not answered.
    pub in_flight: u32,
    /// Answers received.
    pub requests: u64,
    /// Of which failures.
    pub failures: u64,
    /// Peak-EWMA latency estimate now, milliseconds: a slower answer (or a failure that took
    /// longer) sets it at once, faster answers pull it down over the 10 s decay, and it decays
    /// while no answer comes (left alone for 10 s it reads 1/e of its last value), as picks
    /// read it, so that an upstream left alone is tried again.
    pub latency_ewma_ms: f64,
    /// Whether it takes traffic, and if not why.
    pub health: Health,
    /// Ejected: milliseconds left.
    pub ejected_for_ms: Option<u64>,
}

impl LbHandle {
    pub(crate) fn new(pool: Arc<Pool>) -> LbHandle {
        LbHandle { pool }
    }

    /// Adds an upstream; it ramps up over `slow_start`. False if it is there already.
    pub fn add(&self, upstream: impl Into<Upstream>) -> bool {
        self.pool.add(upstream.into())
    }

    /// Removes an upstream (`scheme://authority`) at once; its requests in flight finish.
    /// False if unknown.
    pub fn remove(&self, upstream: &str) -> bool {
        self.pool.remove(upstream)
    }

    /// Sends no new request to an upstream (`scheme://authority`); remove it once its
    /// in-flight count is 0. False if unknown.
    pub fn drain(&self, upstream: &str) -> bool {
        self.pool.drain(upstream)
    }

    /// Picks an upstream as a request would, for traffic the balancer does not send itself (a
    /// WebSocket or gRPC connection of your own client): the [`Pick`] counts as in flight
    /// until it is finished with its outcome, so the policy and passive health see that
    /// traffic too. `key` is the hashing policies' key (a client address, a header value).
    /// `None` when no upstream is available.
    ///
    /// The first pick fixes the balancer's settings, as its first service does.
    pub fn pick(&self, key: Option<&[u8]>) -> Option<Pick> {
        let started = self.pool.now();
        let backend = self.pool.pick(started, key, &[])?;
        Some(Pick {
            in_flight: InFlight::new(backend, started),
        })
    }

    /// The figures now.
    pub fn snapshot(&self) -> LbSnapshot {
        let settings = &self.pool.settings;
        let list = self.pool.list();
        let (draft, now, decay, weights) = match settings.get() {
            Some(running) => {
                let weights = self.pool.weights_now(running, &list);
                (
                    running.draft.clone(),
                    running.now(),
                    running.decay_nanos,
                    weights,
                )
            }
            None => {
                let draft = settings.draft();
                let decay = proxflow_core::clock::nanos(draft.decay()).max(1) as f64;
                let weights = list.iter().map(|b| f64::from(b.static_weight)).collect();
                (draft, 0, decay, weights)
            }
        };
        let adaptive = draft.adaptive().is_some();
        let upstreams = list
            .iter()
            .zip(weights)
            .map(|(backend, weight)| {
                let stats = backend.stats();
                let health = backend.health(now);
                let ramped = backend.weight(now, draft.slow_start);
                UpstreamSnapshot {
                    upstream: backend.name.to_string(),
                    static_weight: backend.static_weight,
                    weight,
                    adaptive_weight: (adaptive && ramped > 0.0).then(|| weight / ramped),
                    predicted_load: backend.predicted(),
                    history: stats.history.samples().collect(),
                    live_load_ms: adaptive
                        .then(|| backend.live_load(now, decay))
                        .flatten()
                        .map(|load| load / 1e6),
                    failure_ratio: adaptive.then_some(stats.failure_ratio),
                    share_last_interval: stats.last_share,
                    in_flight: backend.in_flight.load(Ordering::Relaxed),
                    requests: stats.requests,
                    failures: stats.failures,
                    latency_ewma_ms: backend.latency_estimate(now, decay) / 1e6,
                    health,
                    ejected_for_ms: (health == Health::Ejected)
                        .then(|| (backend.ejected_until() - now) / 1_000_000),
                }
            })
            .collect();
        LbSnapshot {
            policy: policy_name(&draft.policy),
            upstreams,
        }
    }
}

impl std::fmt::Debug for LbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// An upstream chosen by [`LbHandle::pick`], in flight until finished ([`Pick::finish`]) or
/// cancelled before it was sent ([`Pick::cancel`]). Dropped otherwise, it counts as a failed
/// request at its elapsed time, as a balanced request dropped before its answer does.
pub struct Pick {
    in_flight: InFlight,
}

impl Pick {
    /// `scheme://authority` of the chosen upstream.
    pub fn upstream(&self) -> &str {
        &self.in_flight.backend().name
    }

    /// The request ended: its latency (from the pick) and whether it failed count as a
    /// balanced request's would.
    pub fn finish(self, failed: bool) {
        let ended = self.in_flight.backend().clock().now();
        self.in_flight.answered(ended, failed);
    }

    /// The request was not sent after all: nothing is recorded for the upstream.
    pub fn cancel(self) {
        self.in_flight.not_sent();
    }
}

impl std::fmt::Debug for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("upstream", &self.upstream())
            .finish()
    }
}

fn policy_name(policy: &Policy) -> &'static str {
    match policy {
        Policy::RoundRobin => "round_robin",
        Policy::WeightedRoundRobin => "weighted_round_robin",
        Policy::Random => "random",
        Policy::LeastRequest => "least_request",
        Policy::PeakEwma { .. } => "peak_ewma",
        Policy::IpHash => "ip_hash",
        Policy::HeaderHash { .. } => "header_hash",
        Policy::Adaptive(_) => "adaptive",
    }
}
