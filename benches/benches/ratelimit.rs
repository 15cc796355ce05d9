//! What `proxflow-ratelimit` costs per request, against raw governor measured in the same run.
//!
//! ```text
//! cargo bench -p proxflow-benches --bench ratelimit -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every figure is the time of one call, median of criterion's samples. Services are called the
//! way a server calls them, minus the runtime: `poll_ready`, `call`, then one poll of the
//! response future with a no-op waker (what `FutureExt::now_or_never` does); the future of an
//! admitted request is ready at once, so nothing waits.
//!
//! - `ratelimit_allowed`: the allowed path with `key: global` and a rate no run can exhaust
//!   (10^9 per second: a token per nanosecond, far faster than the calls), so every request is
//!   admitted.
//!   - `noop`: `Request::new(())`, then the no-op service, which answers what an axum handler
//!     returning a `&'static str` answers: 200 with `content-type: text/plain; charset=utf-8`
//!     (so its header map is allocated, as every real response's is); the response is dropped
//!     in the loop.
//!   - `layer_global`: the same, through `RateLimitLayer` (`key: global`, burst 100). The
//!     response carries the `RateLimit-Policy` and `RateLimit` fields, inserted and dropped in
//!     the loop.
//!   - `layer_global_fields_limited`: the same with `headers: limited` (the fields only on
//!     429s): the decision alone. For information.
//!   - `layer_global_burst_1e9`: burst 10^9: the `RateLimit` value's remaining count is
//!     outside the layer's cache of values (the counts up to 1024), so it is formatted per
//!     answer. For information.
//!   - `governor_direct`: `RateLimiter::direct(Quota::per_second(10^9)).check()`, governor's
//!     default clock (quanta, with the `quanta` feature as governor's defaults have it).
//!   - `noop_plus_two_fields`: the no-op service's response, then two fields the size of
//!     `RateLimit-Policy` and `RateLimit` inserted with static values: what writing the two
//!     fields costs any layer, whatever it decides (`noop_plus_two_fields - noop`). For
//!     information: it is the floor under the allowed-path overhead.
//!   - `governor_direct_std_clock`: the same with `MonotonicClock` (`std::time::Instant`, the
//!     clock the layer read before it read the TSC): for information.
//!
//!   - `noop_axum_body`, `layer_global_axum_body`, `tower_governor_global`: the no-op answering
//!     axum's body type (the only one `tower_governor` answers with), and over it this layer and
//!     `tower_governor` 0.8 (`GlobalKeyExtractor`, a token per nanosecond, burst 100,
//!     `use_headers()`: it writes `x-ratelimit-limit` and `x-ratelimit-remaining` on allowed
//!     answers, as this layer writes its two fields): the governor-based Tower layer most users
//!     pick, for information.
//!
//!   The overhead of the layer is `layer_global - noop`, compared with `governor_direct` (a
//!   difference of medians; the target's figures are `ratelimit_paired`'s).
//! - `ratelimit_rejected`: the rejection path (the one a flood takes): `key: global`, 1 per hour,
//!   burst 1, the one token spent, so every request gets the 429 (with `Retry-After` and the
//!   `RateLimit` fields), against governor's refusal (`Quota::per_hour(1)`, spent). The layer's
//!   cost is `layer_global - ratelimit_allowed/noop`. For information.
//! - `ratelimit_keyed_1M`: one million distinct client addresses (`ClientAddr(10.x.y.z:4000)`),
//!   all of them given state before measuring, then requests cycling over them in address order
//!   (their hashes, and so their table slots, are in random order). Quota: 1 per hour, burst
//!   1000, so every key stays live (its state is in the future: nothing idle to evict) and every
//!   request is admitted (a key comes back about every half second; a run visits each key a few
//!   dozen times, and a refused request would stop the run). Requests are not built per iteration: the inner service hands each
//!   request back (it keeps it in a slot) and the loop rewrites its `ClientAddr` for the next
//!   key, so nothing is allocated, cloned or freed for the request itself.
//!   - `noop`: rewrite the address, call the recycling no-op service.
//!   - `layer_ip`: the same through `RateLimitLayer` (`key: ip`, default `max_keys` of
//!     1,000,000: all 1M keys are held).
//!   - `layer_ip_fields_limited`: the same with `headers: limited`: the keyed decision alone.
//!     For information.
//!   - `floor_hashmap`: a `std` `HashMap<IpAddr, u64>` (SipHash) holding the same 1M addresses,
//!     one lookup and write per request: what the memory system charges any keyed limiter
//!     here (the table is far bigger than the caches). For information.
//!   - `governor_keyed`: `RateLimiter::keyed(quota).check_key(&ip)` (DashMap, `IpAddr` keys),
//!     the same 1M addresses, same quota, addresses computed in the loop.
//!
//!   The cost of the layer per request is `layer_ip - noop`.
//! - `ratelimit_paired`: the targets' overheads measured paired, as the breaker's bench measures
//!   its target: each sample times `iters` measured calls and `iters` no-op calls alternating in
//!   stretches of 1,000, and reports the difference per call. Two medians taken seconds apart
//!   carry the host's drift; a paired sample does not.
//!   - `layer_global`: the layer of `ratelimit_allowed/layer_global` against the no-op.
//!   - `governor_direct`: governor's `check()` followed by the no-op's call, against the no-op
//!     alone: governor's cost measured the same way.
//!   - `layer_ip_1M`: the keyed layer of `ratelimit_keyed_1M/layer_ip` against its no-op.
//!   - `layer_global_fields_limited`, `layer_ip_1M_fields_limited`: the same with
//!     `headers: limited`, the decision alone. For information.
//!   - `governor_keyed_1M`: governor's keyed check of the same address added to the keyed
//!     no-op's call, against the keyed no-op alone. For information.
//!
//!   The targets compare these: `layer_global / governor_direct` (<= 1.5x) and `layer_ip_1M`
//!   (<= 300 ns).
//! - `ratelimit_contended`: the same calls on 1 thread and on 2 threads at once (one per core),
//!   sharing one layer (or one governor limiter). Each thread makes `iters` calls; the time is
//!   the wall time from the first thread's start (each thread reads the clock itself) until both
//!   threads are done, divided by `iters`: the time of a call as each thread sees it. Perfect
//!   scaling keeps it equal to the 1-thread figure (twice the calls per second); `2 x t1 / t2`
//!   is the speed-up. The keyed variants start the two threads half the key space apart.
//!
//! After the runs, a markdown summary of the figures measured by this process (read back from
//! criterion's `estimates.json`) and the targets of issue 3 is printed.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use governor::clock::MonotonicClock;
use governor::{Quota, RateLimiter};
use http::{Request, Response};
use proxflow_benches::{
    call_now, call_once, criterion_dir, median_ns, noop, on_threads, paired, text_response,
};
use proxflow_ratelimit::{ClientAddr, Key, LimitHeaders, RateLimitLayer};
use tower::{Layer, Service};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;
use tower_governor::GovernorLayer;

/// A rate nothing in a benchmark can exhaust: one token per nanosecond, a second's worth of
/// burst.
const HUGE: u32 = 1_000_000_000;
/// Distinct keys of the keyed benchmarks.
const KEYS: u64 = 1_000_000;
/// Keyed quota: one per hour with a burst of a thousand: every key keeps state for hours (it is
/// live, never idle) and is admitted on each of the benchmark's visits.
const KEYED_PER: Duration = Duration::from_secs(3600);
const KEYED_BURST: u32 = 1000;

/// The names as the layer holds them (a `&str` name would be parsed on every insert).
const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

const ALLOWED: &str = "ratelimit_allowed";
const KEYED: &str = "ratelimit_keyed_1M";
const REJECTED: &str = "ratelimit_rejected";
const CONTENDED: &str = "ratelimit_contended";
const PAIRED: &str = "ratelimit_paired";

/// A no-op service that keeps the request in `slot` instead of dropping it, so the loop can send
/// it again: no request is built or freed per iteration.
fn recycling_noop(
    slot: Rc<Cell<Option<Request<()>>>>,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    tower::service_fn(move |request| {
        slot.set(Some(request));
        std::future::ready(Ok::<_, Infallible>(text_response()))
    })
}

/// The address of key `i`: 10.0.0.0 + i, any port (the `ip` key ignores it).
fn addr(i: u64) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0A00_0000u32 + (i % KEYS) as u32);
    SocketAddr::new(IpAddr::V4(ip), 4000)
}

fn global_layer() -> RateLimitLayer {
    RateLimitLayer::new(HUGE, Duration::from_secs(1))
        .burst(100)
        .key(Key::Global)
}

fn keyed_layer() -> RateLimitLayer {
    RateLimitLayer::new(1, KEYED_PER)
        .burst(KEYED_BURST)
        .key(Key::Ip)
}

fn huge_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(HUGE).expect("non-zero"))
}

fn keyed_quota() -> Quota {
    Quota::with_period(KEYED_PER)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(KEYED_BURST).expect("non-zero"))
}

type KeyedGovernor = RateLimiter<
    IpAddr,
    governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
    governor::clock::DefaultClock,
>;

/// Calls the layer keyed by `ClientAddr`, cycling over the 1M keys from `start`, with the
/// request handed back by the inner service each time.
struct KeyedCaller<S> {
    service: S,
    slot: Rc<Cell<Option<Request<()>>>>,
    next: u64,
}

impl<S> KeyedCaller<S>
where
    S: Service<Request<()>, Error = Infallible>,
{
    fn new(wrap: impl FnOnce(Rc<Cell<Option<Request<()>>>>) -> S, start: u64) -> Self {
        let slot = Rc::new(Cell::new(None));
        let mut request = Request::new(());
        request.extensions_mut().insert(ClientAddr(addr(start)));
        slot.set(Some(request));
        KeyedCaller {
            service: wrap(Rc::clone(&slot)),
            slot,
            next: start,
        }
    }

    #[inline]
    fn call(&mut self) -> S::Response {
        let mut request = self
            .slot
            .take()
            .expect("the request came back: the last one was admitted");
        if let Some(client) = request.extensions_mut().get_mut::<ClientAddr>() {
            *client = ClientAddr(addr(self.next));
        }
        self.next = (self.next + 1) % KEYS;
        call_now(&mut self.service, request)
    }
}

/// The 1M-key state shared by the keyed and contended benchmarks.
struct Keyed {
    layer: RateLimitLayer,
    layer_fields_limited: RateLimitLayer,
    governor: KeyedGovernor,
}

impl Keyed {
    /// A caller of the keyed layer, with `headers: limited` or with the defaults, from key 0.
    fn caller(
        &self,
        fields_limited: bool,
    ) -> KeyedCaller<impl Service<Request<()>, Error = Infallible>> {
        let layer = if fields_limited {
            &self.layer_fields_limited
        } else {
            &self.layer
        };
        KeyedCaller::new(|slot| layer.layer(recycling_noop(slot)), 0)
    }

    fn new() -> Keyed {
        let started = Instant::now();
        let layer = keyed_layer();
        assert_eq!(layer.config().max_keys, KEYS as usize, "the default bound");
        let layer_fields_limited = keyed_layer().headers(LimitHeaders::Limited);
        for layer in [&layer, &layer_fields_limited] {
            let mut caller = KeyedCaller::new(|slot| layer.layer(recycling_noop(slot)), 0);
            for _ in 0..KEYS {
                let response = caller.call();
                assert_eq!(response.status(), 200);
            }
        }
        let governor = RateLimiter::keyed(keyed_quota());
        for i in 0..KEYS {
            assert!(governor.check_key(&addr(i).ip()).is_ok());
        }
        let stats = layer.stats().snapshot();
        for layer in [&layer, &layer_fields_limited] {
            assert_eq!(
                layer.stats().snapshot().active_keys,
                KEYS,
                "every key is live"
            );
        }
        eprintln!(
            "prefilled {KEYS} keys in {:.1} s: layer {} live keys, {:.1} MB of tables; governor {} keys",
            started.elapsed().as_secs_f64(),
            stats.active_keys,
            stats.key_table_bytes as f64 / 1e6,
            governor.len(),
        );
        Keyed {
            layer,
            layer_fields_limited,
            governor,
        }
    }
}

fn allowed(c: &mut Criterion) {
    let mut group = c.benchmark_group(ALLOWED);
    group.throughput(Throughput::Elements(1));

    let mut service = noop();
    group.bench_function("noop", |b| b.iter(|| call_once(&mut service)));

    let variants = [
        ("layer_global", global_layer()),
        (
            "layer_global_fields_limited",
            global_layer().headers(LimitHeaders::Limited),
        ),
        ("layer_global_burst_1e9", global_layer().burst(HUGE)),
    ];
    for (name, layer) in variants {
        let mut service = layer.layer(noop());
        let first = call_now(&mut service, Request::new(()));
        assert_eq!(first.status(), 200);
        assert_eq!(
            first.headers().contains_key("ratelimit"),
            name != "layer_global_fields_limited"
        );
        group.bench_function(name, |b| b.iter(|| call_once(&mut service)));
    }

    let governor = RateLimiter::direct(huge_quota());
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(governor.check()).is_ok())
    });

    let governor = RateLimiter::direct_with_clock(huge_quota(), MonotonicClock);
    let mut service = noop();
    let policy = http::HeaderValue::from_static("\"default\";q=1000000000;w=1");
    let limit = http::HeaderValue::from_static("\"default\";r=99;t=1");
    group.bench_function("noop_plus_two_fields", |b| {
        b.iter(|| {
            let mut response = call_now(&mut service, black_box(Request::new(())));
            let headers = response.headers_mut();
            headers.insert(RATELIMIT_POLICY, policy.clone());
            headers.insert(RATELIMIT, limit.clone());
            black_box(response)
        })
    });

    group.bench_function("governor_direct_std_clock", |b| {
        b.iter(|| black_box(governor.check()).is_ok())
    });

    // tower_governor answers with axum's body type only: both layers over the same no-op
    // answering it.
    let mut service = axum_noop();
    group.bench_function("noop_axum_body", |b| b.iter(|| call_once(&mut service)));
    let mut service = global_layer().layer(axum_noop());
    group.bench_function("layer_global_axum_body", |b| {
        b.iter(|| call_once(&mut service))
    });
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(100)
        .key_extractor(GlobalKeyExtractor)
        .use_headers()
        .finish()
        .expect("a valid quota");
    let mut service = GovernorLayer::new(config).layer(axum_noop());
    let first = call_now(&mut service, Request::new(()));
    assert_eq!(first.status(), 200);
    assert!(first.headers().contains_key("x-ratelimit-remaining"));
    group.bench_function("tower_governor_global", |b| {
        b.iter(|| call_once(&mut service))
    });
    group.finish();
}

/// The no-op service with axum's body type.
fn axum_noop() -> impl Service<
    Request<()>,
    Response = Response<axum::body::Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone {
    tower::service_fn(|_| async { Ok(text_response().map(|()| axum::body::Body::empty())) })
}

fn rejected(c: &mut Criterion) {
    let mut group = c.benchmark_group(REJECTED);
    group.throughput(Throughput::Elements(1));
    // One request per hour, and the one spent: every request is refused.
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .burst(1)
        .key(Key::Global);
    let mut service = layer.layer(noop());
    assert_eq!(call_now(&mut service, Request::new(())).status(), 200);
    assert_eq!(call_now(&mut service, Request::new(())).status(), 429);
    group.bench_function("layer_global", |b| b.iter(|| call_once(&mut service)));
    let governor = RateLimiter::direct(Quota::per_hour(NonZeroU32::MIN));
    assert!(governor.check().is_ok());
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(governor.check()).is_err())
    });
    group.finish();
}

fn keyed(c: &mut Criterion, state: &OnceLock<Keyed>) {
    let mut group = c.benchmark_group(KEYED);
    group.throughput(Throughput::Elements(1));

    let mut caller = KeyedCaller::new(recycling_noop, 0);
    group.bench_function("noop", |b| b.iter(|| black_box(caller.call())));

    for (name, fields_limited) in [("layer_ip", false), ("layer_ip_fields_limited", true)] {
        // Made on first use and kept, so that each sample goes on where the last one stopped.
        let mut caller = None;
        group.bench_function(name, |b| {
            let caller =
                caller.get_or_insert_with(|| state.get_or_init(Keyed::new).caller(fields_limited));
            b.iter(|| black_box(caller.call()))
        });
    }

    // The floor of any keyed limiter here: hash the address, find its slot among 1M, write it.
    let mut floor: Option<HashMap<IpAddr, u64>> = None;
    let mut next = 0u64;
    group.bench_function("floor_hashmap", |b| {
        let floor = floor.get_or_insert_with(|| (0..KEYS).map(|i| (addr(i).ip(), i)).collect());
        b.iter(|| {
            let ip = addr(next).ip();
            next = (next + 1) % KEYS;
            if let Some(value) = floor.get_mut(&ip) {
                *value += 1;
            }
        })
    });

    let mut next = 0u64;
    group.bench_function("governor_keyed", |b| {
        let governor = &state.get_or_init(Keyed::new).governor;
        b.iter(|| {
            let ip = addr(next).ip();
            next = (next + 1) % KEYS;
            black_box(governor.check_key(&ip)).is_ok()
        })
    });
    group.finish();
}

/// The targets' overheads measured paired (see [`paired`]): each sample alternates the measured
/// calls with the same number of no-op calls and keeps the difference.
fn paired_overheads(c: &mut Criterion, state: &OnceLock<Keyed>) {
    let mut group = c.benchmark_group(PAIRED);
    group.throughput(Throughput::Elements(1));
    let mut bare = noop();

    for (name, headers) in [
        ("layer_global", LimitHeaders::Always),
        ("layer_global_fields_limited", LimitHeaders::Limited),
    ] {
        let mut layered = global_layer().headers(headers).layer(noop());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                paired(iters, || call_once(&mut layered), || call_once(&mut bare))
            })
        });
    }

    // governor's check added to the no-op's call, against the no-op alone: its cost in the
    // same loop and measured the same way as the layer's.
    let governor = RateLimiter::direct(huge_quota());
    let mut beside = noop();
    group.bench_function("governor_direct", |b| {
        b.iter_custom(|iters| {
            paired(
                iters,
                || {
                    let _ = black_box(governor.check()).is_ok();
                    call_once(&mut beside);
                },
                || call_once(&mut bare),
            )
        })
    });

    let mut keyed_bare = KeyedCaller::new(recycling_noop, 0);
    for (name, fields_limited) in [("layer_ip_1M", false), ("layer_ip_1M_fields_limited", true)] {
        let mut keyed = None;
        group.bench_function(name, |b| {
            let keyed =
                keyed.get_or_insert_with(|| state.get_or_init(Keyed::new).caller(fields_limited));
            b.iter_custom(|iters| {
                paired(
                    iters,
                    || drop(black_box(keyed.call())),
                    || drop(black_box(keyed_bare.call())),
                )
            })
        });
    }

    // governor's keyed check added to the keyed no-op's call (the same address), against the
    // keyed no-op alone.
    let mut keyed_beside = KeyedCaller::new(recycling_noop, 0);
    group.bench_function("governor_keyed_1M", |b| {
        let governor = &state.get_or_init(Keyed::new).governor;
        b.iter_custom(|iters| {
            paired(
                iters,
                || {
                    let ip = addr(keyed_beside.next).ip();
                    let _ = black_box(governor.check_key(&ip)).is_ok();
                    drop(black_box(keyed_beside.call()));
                },
                || drop(black_box(keyed_bare.call())),
            )
        })
    });
    group.finish();
}

fn contended(c: &mut Criterion, state: &OnceLock<Keyed>) {
    let mut group = c.benchmark_group(CONTENDED);
    let global = global_layer();
    let direct = RateLimiter::direct(huge_quota());
    // Where the keyed threads start, moved on by each sample so that the runs visit all keys.
    let cursor = AtomicU64::new(0);
    let start_of = |thread: usize, iters: u64| {
        let base = cursor.fetch_add(iters, Ordering::Relaxed);
        (base + thread as u64 * KEYS / 2) % KEYS
    };
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::new("noop", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    let mut service = noop();
                    start.wait();
                    for _ in 0..iters {
                        call_once(&mut service);
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("layer_global", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    let mut service = global.layer(noop());
                    start.wait();
                    for _ in 0..iters {
                        call_once(&mut service);
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("governor_direct", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    start.wait();
                    for _ in 0..iters {
                        let _ = black_box(direct.check()).is_ok();
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("noop_keyed", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |thread, iters, start| {
                    let mut caller = KeyedCaller::new(recycling_noop, start_of(thread, iters));
                    start.wait();
                    for _ in 0..iters {
                        black_box(caller.call());
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("layer_ip_1M", threads), |b| {
            // Filled here, not inside `iter_custom`: criterion sizes the samples from the wall
            // time of the first calls, and a 4 s fill there would leave it 1-iteration samples.
            let layer = &state.get_or_init(Keyed::new).layer;
            b.iter_custom(|iters| {
                on_threads(threads, iters, |thread, iters, start| {
                    let mut caller = KeyedCaller::new(
                        |slot| layer.layer(recycling_noop(slot)),
                        start_of(thread, iters),
                    );
                    start.wait();
                    for _ in 0..iters {
                        black_box(caller.call());
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("governor_keyed_1M", threads), |b| {
            let governor = &state.get_or_init(Keyed::new).governor;
            b.iter_custom(|iters| {
                on_threads(threads, iters, |thread, iters, start| {
                    let mut next = start_of(thread, iters);
                    start.wait();
                    for _ in 0..iters {
                        let ip = addr(next).ip();
                        next = (next + 1) % KEYS;
                        let _ = black_box(governor.check_key(&ip)).is_ok();
                    }
                })
            })
        });
    }
    group.finish();
}

fn summary(since: SystemTime) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let get = |id: &str| median_ns(&dir, since, id);
    let (ns, verdict) = (proxflow_benches::ns, proxflow_benches::verdict);
    let mut out = String::from("\n## Rate limiter micro-benchmarks (medians per call)\n\n");
    out += "| benchmark | median |\n|---|--:|\n";
    let ids = [
        format!("{ALLOWED}/noop"),
        format!("{ALLOWED}/layer_global"),
        format!("{ALLOWED}/layer_global_fields_limited"),
        format!("{ALLOWED}/layer_global_burst_1e9"),
        format!("{ALLOWED}/governor_direct"),
        format!("{ALLOWED}/governor_direct_std_clock"),
        format!("{ALLOWED}/noop_plus_two_fields"),
        format!("{ALLOWED}/noop_axum_body"),
        format!("{ALLOWED}/layer_global_axum_body"),
        format!("{ALLOWED}/tower_governor_global"),
        format!("{REJECTED}/layer_global"),
        format!("{REJECTED}/governor_direct"),
        format!("{KEYED}/noop"),
        format!("{KEYED}/layer_ip"),
        format!("{KEYED}/layer_ip_fields_limited"),
        format!("{KEYED}/floor_hashmap"),
        format!("{KEYED}/governor_keyed"),
    ];
    for id in &ids {
        out += &format!("| {id} | {} |\n", ns(get(id)));
    }

    let id = |group: &str, name: &str| get(&format!("{group}/{name}"));
    let vs = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .map_or("n/a".to_string(), |(a, b)| format!("{:.2}x", a / b))
    };
    let noop = id(ALLOWED, "noop");
    let overhead = id(ALLOWED, "layer_global").zip(noop).map(|(l, n)| l - n);
    let governor = id(ALLOWED, "governor_direct");
    let governor_std = id(ALLOWED, "governor_direct_std_clock");
    let ratio = overhead.zip(governor).map(|(o, g)| o / g);
    let ratio_std = overhead.zip(governor_std).map(|(o, g)| o / g);
    let rejected = id(REJECTED, "layer_global").zip(noop).map(|(l, n)| l - n);
    let over_noop = |name: &str| id(ALLOWED, name).zip(noop).map(|(l, n)| l - n);
    let decision = over_noop("layer_global_fields_limited");
    let two_fields = over_noop("noop_plus_two_fields");
    let keyed_noop = id(KEYED, "noop");
    let keyed = id(KEYED, "layer_ip").zip(keyed_noop).map(|(l, n)| l - n);
    let keyed_limited = id(KEYED, "layer_ip_fields_limited")
        .zip(keyed_noop)
        .map(|(l, n)| l - n);
    out += "\n| derived | value | target | result |\n|---|--:|--:|---|\n";
    out += &format!(
        "| layer overhead, allowed, global (layer_global - noop) | {} | | |\n",
        ns(overhead)
    );
    let paired_layer = id(PAIRED, "layer_global");
    let paired_governor = id(PAIRED, "governor_direct");
    let paired_ratio = paired_layer.zip(paired_governor).map(|(l, g)| l / g);
    out += &format!(
        "| paired: layer overhead {}, governor's check {} (ratelimit_paired/layer_global, governor_direct); ratio | {} | <= 1.5x | {} |\n",
        ns(paired_layer),
        ns(paired_governor),
        paired_ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
        verdict(paired_ratio.map(|r| r <= 1.5)),
    );
    let paired_decision = id(PAIRED, "layer_global_fields_limited");
    out += &format!(
        "| paired: the decision alone (`headers: limited`) {} / governor's check | {} | | info |\n",
        ns(paired_decision),
        vs(paired_decision, paired_governor),
    );
    out += &format!(
        "| difference of medians: overhead / governor_direct (quanta clock) | {} | | info |\n",
        ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
    );
    out += &format!(
        "| overhead / governor_direct_std_clock | {} | | info |\n",
        ratio_std.map_or("n/a".into(), |r| format!("{r:.2}x")),
    );
    out += &format!(
        "| overhead with `headers: limited` (the decision alone) / governor_direct | {} ({}) | | info |\n",
        decision.zip(governor).map_or("n/a".into(), |(d, g)| format!("{:.2}x", d / g)),
        ns(decision),
    );
    out += &format!(
        "| two fields inserted, nothing decided (noop_plus_two_fields - noop) / governor_direct | {} ({}) | | info |\n",
        two_fields.zip(governor).map_or("n/a".into(), |(f, g)| format!("{:.2}x", f / g)),
        ns(two_fields),
    );
    out += &format!(
        "| the floor of any limiter that writes the two fields: (governor_direct + the two fields) / governor_direct | {} | | info |\n",
        two_fields.zip(governor).map_or("n/a".into(), |(f, g)| format!("{:.2}x", (g + f) / g)),
    );
    let over_axum_noop = |name: &str| {
        id(ALLOWED, name)
            .zip(id(ALLOWED, "noop_axum_body"))
            .map(|(l, n)| l - n)
    };
    let ours_axum = over_axum_noop("layer_global_axum_body");
    let tower_governor = over_axum_noop("tower_governor_global");
    out += &format!(
        "| overheads over the axum-body no-op: this layer {}, tower_governor {}; ratio | {} | | info |\n",
        ns(ours_axum),
        ns(tower_governor),
        ours_axum
            .zip(tower_governor)
            .map_or("n/a".into(), |(o, t)| format!("{:.2}x", o / t)),
    );
    out += &format!(
        "| layer, rejected path, global (ratelimit_rejected/layer_global - ratelimit_allowed/noop) | {} | | info |\n",
        ns(rejected)
    );
    let paired_keyed = id(PAIRED, "layer_ip_1M");
    out += &format!(
        "| keyed, 1M live keys, paired (ratelimit_paired/layer_ip_1M) | {} | <= 300 ns | {} |\n",
        ns(paired_keyed),
        verdict(paired_keyed.map(|k| k <= 300.0)),
    );
    let paired_keyed_limited = id(PAIRED, "layer_ip_1M_fields_limited");
    let paired_governor_keyed = id(PAIRED, "governor_keyed_1M");
    out += &format!(
        "| keyed, paired: `headers: limited` {}; governor's keyed check {}; layer / governor | {} | | info |\n",
        ns(paired_keyed_limited),
        ns(paired_governor_keyed),
        vs(paired_keyed, paired_governor_keyed),
    );
    out += &format!(
        "| keyed, 1M live keys, difference of medians (layer_ip - noop) | {} | | info |\n",
        ns(keyed),
    );
    out += &format!(
        "| keyed, 1M keys, `headers: limited` (layer_ip_fields_limited - noop) | {} | | info |\n",
        ns(keyed_limited),
    );
    out += &format!(
        "| keyed layer cost / governor_keyed | {} | | info |\n",
        vs(keyed, id(KEYED, "governor_keyed")),
    );
    out += &format!(
        "| keyed layer cost / floor_hashmap | {} | | info |\n",
        vs(keyed, id(KEYED, "floor_hashmap")),
    );

    out += "\n| contended: time per call as each thread sees it | 1 thread | 2 threads | speed-up (2 x t1 / t2) |\n|---|--:|--:|--:|\n";
    for name in [
        "noop",
        "layer_global",
        "governor_direct",
        "noop_keyed",
        "layer_ip_1M",
        "governor_keyed_1M",
    ] {
        let one = get(&format!("{CONTENDED}/{name}/1"));
        let two = get(&format!("{CONTENDED}/{name}/2"));
        let speedup = one.zip(two).map(|(a, b)| 2.0 * a / b);
        out += &format!(
            "| {name} | {} | {} | {} |\n",
            ns(one),
            ns(two),
            speedup.map_or("n/a".into(), |s| format!("{s:.2}x"))
        );
    }
    println!("{out}");
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    allowed(&mut c);
    rejected(&mut c);
    // Filled on first use: criterion calls a benchmark's closure only if it is selected.
    let state = OnceLock::new();
    keyed(&mut c, &state);
    paired_overheads(&mut c, &state);
    contended(&mut c, &state);
    c.final_summary();
    summary(since);
}
