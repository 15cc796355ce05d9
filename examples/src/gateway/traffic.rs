//! The gateway's own figures of the traffic it serves, counted by a middleware around every
//! route: requests, 5xx errors, cancelled requests, latency histograms (overall and per route),
//! requests in flight, and the client connections that sent requests.
//!
//! Routes are the first two segments of the path (`/api/orders/42` counts under `/api/orders`,
//! `/static/css/site.css` under `/static/css`, `/favicon.ico` under `/`); a segment that looks
//! like a file name or an id (a `.`, only digits, characters other than letters, digits, `-` and
//! `_`, more than 40 bytes) ends the route early. At most [`MAX_ROUTES`] routes are named, in
//! the order they first answer with a status other than 400, 404 or 405 (so that a scanner's
//! random paths do not take the places); the rest count under `other`.
//!
//! Latency is measured from the request to its response head (a streamed body's time is not
//! included), in a fixed log-linear histogram of microseconds: eight buckets per power of two,
//! so that a percentile read from it is within 6 % of the true value.
//!
//! Connections: the middleware sees requests, not connections (`serve` accepts them). What it
//! counts is the distinct client connections (address and port) that sent a request since the
//! last [`Traffic::take_connections`]: the connections active in the dashboard's interval.
//! Idle keep-alive connections are not seen.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;

/// How many routes get their own figures; the rest count under [`OTHER`].
pub const MAX_ROUTES: usize = 32;

/// The route of requests beyond [`MAX_ROUTES`] routes, and of unknown paths.
pub const OTHER: &str = "other";

/// How many distinct connections are remembered between two
/// [`take_connections`](Traffic::take_connections): the count stops there (a bound on memory
/// when millions of clients connect).
pub const MAX_CONNECTIONS_SEEN: usize = 65_536;

/// The counters, shared by the middleware and the dashboard. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    all: RouteCounters,
    routes: RwLock<HashMap<Box<str>, Arc<RouteCounters>>>,
    other: Arc<RouteCounters>,
    in_flight: AtomicU64,
    connections: Mutex<HashSet<SocketAddr>>,
}

#[derive(Debug, Default)]
struct RouteCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    latency: Histogram,
}

impl RouteCounters {
    fn read(&self) -> RouteReading {
        RouteReading {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            latency: self.latency.read(),
        }
    }
}

/// Buckets of the latency histogram: eight per power of two of microseconds, up to 2^36 µs
/// (19 hours; longer counts in the last bucket).
pub const BUCKETS: usize = 8 * 34;

/// A histogram of microseconds, written by many threads without a lock.
#[derive(Debug)]
struct Histogram {
    counts: Box<[AtomicU64; BUCKETS]>,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn read(&self) -> Latencies {
        Latencies {
            counts: self
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of `us` microseconds: the value itself below 8, then eight buckets per power of
/// two (the three bits after the leading one).
fn bucket_of(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (exponent - 3)) & 7) as usize;
    ((exponent - 2) * 8 + sub).min(BUCKETS - 1)
}

/// The smallest value of bucket `index`, in microseconds (`index` may be [`BUCKETS`]: the end
/// of the last one).
fn bucket_start(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let exponent = index / 8 + 2;
    let sub = (index % 8) as u64;
    (8 + sub) << (exponent - 3)
}

/// A copy of a latency histogram at one moment; the difference of two is the histogram of the
/// time between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latencies {
    counts: Box<[u64]>,
    sum_us: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum_us: 0,
        }
    }
}

impl Latencies {
    /// Values counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// What was counted after `earlier` (a reading of the same histogram).
    pub fn since(&self, earlier: &Latencies) -> Latencies {
        Latencies {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter())
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The `q` quantile (0 to 1) in milliseconds, interpolated within its bucket; `None` with
    /// nothing counted.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (index, &in_bucket) in self.counts.iter().enumerate() {
            if in_bucket == 0 {
                continue;
            }
            if (below + in_bucket) as f64 >= rank {
                let start = bucket_start(index) as f64;
                let width = (bucket_start(index + 1) - bucket_start(index)) as f64;
                let within = (rank - below as f64) / in_bucket as f64;
                return Some((start + width * within) / 1e3);
            }
            below += in_bucket;
        }
        None
    }

    /// p50, p95 and p99.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50_ms: self.quantile_ms(0.50),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
        }
    }

    /// The values below `us` microseconds, exactly when `us` is a power of two of at least 8
    /// (a bucket boundary).
    pub fn count_below(&self, us: u64) -> u64 {
        self.counts[..bucket_of(us)].iter().sum()
    }
}

/// Latency percentiles in milliseconds; `None` with no request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// The median.
    pub p50_ms: Option<f64>,
    /// The 95th percentile.
    pub p95_ms: Option<f64>,
    /// The 99th percentile.
    pub p99_ms: Option<f64>,
}

/// One route's counts since the start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteReading {
    /// Requests answered.
    pub requests: u64,
    /// Of which with a 5xx status.
    pub errors: u64,
    /// Requests dropped before their answer (the client went away); counted in `latency` at
    /// their elapsed time, not in `requests`.
    pub cancelled: u64,
    /// Their latency.
    pub latency: Latencies,
}

/// Every counter at one moment, histograms included: what the dashboard's sampler takes
/// differences of.
#[derive(Debug, Clone, Default)]
pub struct TrafficReading {
    /// Every route together.
    pub all: RouteReading,
    /// Each named route, sorted by name, then [`OTHER`].
    pub routes: Vec<(String, RouteReading)>,
    /// Requests being answered now.
    pub in_flight: u64,
}

/// The figures at one moment, as `<dashboard>/stats` shows them under `traffic`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficSnapshot {
    /// Requests answered since the start.
    pub requests: u64,
    /// Of which with a 5xx status.
    pub errors: u64,
    /// Requests dropped before their answer.
    pub cancelled: u64,
    /// Requests being answered now.
    pub in_flight: u64,
    /// Latency since the start.
    pub latency: Percentiles,
    /// Each route's, since the start.
    pub routes: Vec<RouteSnapshot>,
}

/// One route's figures since the start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSnapshot {
    /// `/api/orders`, `/`, or `other`.
    pub route: String,
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Requests dropped before their answer.
    pub cancelled: u64,
    /// Latency since the start.
    pub latency: Percentiles,
}

impl Traffic {
    /// Every counter now.
    pub fn read(&self) -> TrafficReading {
        let inner = &self.inner;
        let mut routes: Vec<(String, RouteReading)> = inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(route, counters)| (route.to_string(), counters.read()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes.push((OTHER.to_string(), inner.other.read()));
        TrafficReading {
            all: inner.all.read(),
            routes,
            in_flight: inner.in_flight.load(Ordering::Relaxed),
        }
    }

    /// The figures now, percentiles since the start.
    pub fn snapshot(&self) -> TrafficSnapshot {
        let reading = self.read();
        TrafficSnapshot {
            requests: reading.all.requests,
            errors: reading.all.errors,
            cancelled: reading.all.cancelled,
            in_flight: reading.in_flight,
            latency: reading.all.latency.percentiles(),
            routes: reading
                .routes
                .iter()
                .map(|(route, r)| RouteSnapshot {
                    route: route.clone(),
                    requests: r.requests,
                    errors: r.errors,
                    cancelled: r.cancelled,
                    latency: r.latency.percentiles(),
                })
                .collect(),
        }
    }

    /// The distinct client connections that sent a request since the last call (at most
    /// [`MAX_CONNECTIONS_SEEN`]), and forgets them.
    pub fn take_connections(&self) -> u64 {
        let mut seen = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = seen.len() as u64;
        seen.clear();
        count
    }

    /// The counters of `route`, named if it has a place (or gets one, when `known`), else
    /// `other`'s.
    fn counters(&self, route: &str, known: bool) -> Arc<RouteCounters> {
        let inner = &self.inner;
        {
            let routes = inner.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(counters) = routes.get(route) {
                return Arc::clone(counters);
            }
            if !known || routes.len() >= MAX_ROUTES {
                return Arc::clone(&inner.other);
            }
        }
        let mut routes = inner.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= MAX_ROUTES && !routes.contains_key(route) {
            return Arc::clone(&inner.other);
        }
        Arc::clone(routes.entry(route.into()).or_default())
    }

    fn saw_connection(&self, peer: SocketAddr) {
        let mut seen = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.len() < MAX_CONNECTIONS_SEEN {
            seen.insert(peer);
        }
    }
}

/// The route `path` counts under: its first two segments, fewer when a segment looks like a
/// file name or an id; `/` when the first does.
pub fn route_of(path: &str) -> &str {
    let mut end = 0;
    let mut at = 0;
    for segment in path.split('/').skip(1).take(2) {
        at += 1 + segment.len();
        let plain = !segment.is_empty()
            && segment.len() <= 40
            && !segment.bytes().all(|b| b.is_ascii_digit())
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            break;
        }
        end = at;
    }
    if end == 0 {
        "/"
    } else {
        &path[..end]
    }
}

/// Whether a status says the path names nothing the application has.
fn unknown_path(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    )
}

/// Counts a request that is dropped before its answer, at its elapsed time.
struct Pending<'a> {
    traffic: &'a Traffic,
    route: &'a str,
    start: Instant,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let inner = &self.traffic.inner;
        inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.answered {
            return;
        }
        let elapsed = self.start.elapsed();
        let counters = self.traffic.counters(self.route, false);
        for counters in [&inner.all, &*counters] {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            counters.latency.record(elapsed);
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(traffic, record)`).
pub async fn record(State(traffic): State<Traffic>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let inner = &traffic.inner;
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        traffic.saw_connection(*peer);
    }
    let path = request.uri().path().to_string();
    let route = route_of(&path);
    inner.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut pending = Pending {
        traffic: &traffic,
        route,
        start,
        answered: false,
    };
    let response = next.run(request).await;
    pending.answered = true;
    let elapsed = start.elapsed();
    let status = response.status();
    let counters = traffic.counters(route, !unknown_path(status));
    for counters in [&inner.all, &*counters] {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        counters.latency.record(elapsed);
    }
    drop(pending);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_first_two_plain_segments() {
        for (path, route) in [
            ("/", "/"),
            ("/api/orders/42", "/api/orders"),
            ("/api/orders", "/api/orders"),
            ("/api", "/api"),
            ("/api/", "/api"),
            ("/static/css/site.css", "/static/css"),
            ("/static/app.js", "/static"),
            ("/favicon.ico", "/"),
            ("/api/12345/items", "/api"),
            ("/dashboard/events", "/dashboard/events"),
            ("/api/%2e%2e", "/api"),
            (
                "/x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "/x",
            ),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_percentiles_are_within_their_bucket() {
        for index in 0..BUCKETS {
            let start = bucket_start(index);
            assert_eq!(bucket_of(start), index);
            assert_eq!(bucket_of(bucket_start(index + 1) - 1), index);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);

        let histogram = Histogram::default();
        // 1..=1000 ms: p50 500 ms, p99 990 ms.
        for ms in 1..=1000u64 {
            histogram.record(Duration::from_millis(ms));
        }
        let reading = histogram.read();
        assert_eq!(reading.count(), 1000);
        let p = reading.percentiles();
        for (got, want) in [(p.p50_ms, 500.0), (p.p95_ms, 950.0), (p.p99_ms, 990.0)] {
            let got = got.unwrap();
            assert!((got - want).abs() / want < 0.07, "{got} vs {want}");
        }
        assert!((reading.sum_seconds() - 500.5).abs() < 1e-9);

        let before = reading.clone();
        for _ in 0..10 {
            histogram.record(Duration::from_micros(100));
        }
        let interval = histogram.read().since(&before);
        assert_eq!(interval.count(), 10);
        let p99 = interval.quantile_ms(0.99).unwrap();
        assert!((0.096..=0.104).contains(&p99), "{p99}");
        assert_eq!(Latencies::default().quantile_ms(0.5), None);
        assert_eq!(interval.count_below(64), 0);
        assert_eq!(interval.count_below(128), 10);
    }

    #[test]
    fn routes_are_bounded_and_unknown_paths_take_no_place() {
        let traffic = Traffic::default();
        let unknown = traffic.counters("/scan/me", false);
        assert!(Arc::ptr_eq(&unknown, &traffic.inner.other));
        for n in 0..MAX_ROUTES + 5 {
            traffic.counters(&format!("/r{n}"), true);
        }
        let reading = traffic.read();
        assert_eq!(reading.routes.len(), MAX_ROUTES + 1);
        assert_eq!(reading.routes.last().unwrap().0, OTHER);
        let over = traffic.counters("/r40", true);
        assert!(Arc::ptr_eq(&over, &traffic.inner.other));
    }
}
