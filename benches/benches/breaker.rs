//! What `proxflow-breaker` costs per request while the circuit is closed, against the circuit
//! breaker of `tower-resilience` (its `tower-resilience-circuitbreaker` crate) measured in the
//! same run.
//!
//! ```text
//! cargo bench -p proxflow-benches --bench breaker -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every figure is the time of one call, median of criterion's samples. Services are called the
//! way a server calls them, minus the runtime: `poll_ready`, `call`, then one poll of the
//! response future with a no-op waker (what `FutureExt::now_or_never` does). No call fails and
//! none is slow, so every breaker stays closed all run (checked after each benchmark, with the
//! breaker's count of the calls it recorded): what is measured is the closed path, admission
//! plus recording of the outcome.
//!
//! - `breaker_closed`: one thread.
//!   - `noop`: `Request::new(())`, then the no-op service, which answers what an axum handler
//!     returning a `&'static str` answers: 200 with `content-type: text/plain; charset=utf-8`
//!     (so its header map is allocated, as every real response's is); the response is dropped
//!     in the loop.
//!   - `proxflow_http`: the same through `CircuitBreakerLayer::new()` (the HTTP form, the
//!     origin's defaults: failure threshold 0.5, slow calls at 5 s with the same 0.5 threshold,
//!     10 calls minimum over a 60 s time-bucketed sliding window; 5xx are failures). Per call:
//!     two readings of the breaker's clock (the call's start and end: by default two atomic
//!     loads of the millisecond ticker's latest TSC reading), the admission (an
//!     atomic load of the state), the thread's holder of the breaker cloned and dropped (its
//!     classifier judges the response), the success counted in the thread's slot of the
//!     breaker (one compare-and-swap, no lock while closed and healthy), and the response body
//!     wrapped in `LayerBody`.
//!   - `proxflow_http_precise`: the same with `precise_clock(true)`: each of the two readings
//!     reads the TSC itself, through quanta.
//!   - `proxflow_generic`: the same through `CircuitBreakerLayer::new().generic()` (any
//!     request and response types; errors are failures, refusals are `BreakerError` values;
//!     the response is passed on unchanged).
//!   - `tower_resilience`: the same through `tower-resilience-circuitbreaker`'s
//!     `CircuitBreakerLayer`, configured as close to ours as it allows (see
//!     [`tower_resilience_layer`]: failure rate 0.5, at least 10 calls, slow calls at 5 s with
//!     a 0.5 rate, 5xx responses are failures, one circuit shared by every service the layer
//!     makes) with its count-based window, its time-based one being unusable at these rates.
//!     The result is `Result<Response<()>, CircuitBreakerError<Infallible>>`; its future is
//!     boxed (`BoxFuture`), the call admitted and recorded under a `tokio::sync::Mutex`.
//!
//!   The overhead of a breaker is `layer - noop`; the target is `proxflow_http - noop <= 100 ns`.
//!   On a shared host the no-op's own median moves between runs taken seconds apart, by as
//!   much as the overhead measured, and a difference of two medians carries both moves; so:
//! - `breaker_overhead`: the same overhead measured paired: each sample times `iters` calls
//!   of the layer and `iters` of the no-op, alternating in stretches of 1000 calls (each
//!   going first in turn), and reports the difference, per call: `proxflow_http` (the
//!   target's figure, `<= 100 ns`) and `proxflow_http_precise`. The summary shows both
//!   estimates of the one-thread overhead.
//! - `breaker_contended`: `noop`, `proxflow_http` and `tower_resilience` as above, on 1 thread
//!   and on 2 threads at once (one per core), the threads sharing one layer, so one breaker (each
//!   thread wraps its own no-op service with the shared layer before the start line). Each
//!   thread makes `iters` calls; the time is the wall time from the first thread's start (each
//!   thread reads the clock itself) until both threads are done, divided by `iters`: the time
//!   of a call as each thread sees it. Perfect scaling keeps it equal to the 1-thread figure
//!   (twice the calls per second); `2 x t1 / t2` is the speed-up.
//!   Here a response future that is pending (tower-resilience's `tokio::sync::Mutex`, when the
//!   other thread holds it, queues the call and answers `Pending`) is polled again at once until
//!   it is ready, as a busy runtime would; the re-polls are counted and reported. The target is
//!   `proxflow_http/2 - noop/2 <= 200 ns`: two threads no worse than twice the one-thread
//!   target.
//!
//! After the runs, a markdown summary of the figures measured by this process (read back from
//! criterion's `estimates.json`), the overheads, and the targets with PASS/FAIL is printed, the
//! tower-resilience figures beside ours.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use http::{Request, Response};
use proxflow_benches::{
    call_now, call_once, criterion_dir, median_ns, noop, on_threads, paired, StartLine,
};
use proxflow_breaker::{BreakerHandle, CircuitBreakerLayer, State};
use tower::{Layer, Service};
use tower_resilience_circuitbreaker::{
    CircuitBreakerHandle, CircuitBreakerLayer as ResilienceLayer, CircuitState, FailureClassifier,
    SlidingWindowType,
};

const CLOSED: &str = "breaker_closed";
const OVERHEAD: &str = "breaker_overhead";
const CONTENDED: &str = "breaker_contended";

/// The one-thread target: `proxflow_http - noop`.
const TARGET_ONE_NS: f64 = 100.0;
/// The two-thread target: `proxflow_http/2 - noop/2`, per call as each thread sees it.
const TARGET_TWO_NS: f64 = 200.0;

/// As [`call_now`], but a pending `poll_ready` or response future is polled again at once until
/// it is ready (a lock held by the other thread); each such re-poll adds one to `repolls`.
fn call_spin<S, R>(service: &mut S, request: R, repolls: &mut u64) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(error)) => panic!("service not ready: {error:?}"),
            Poll::Pending => {
                *repolls += 1;
                std::hint::spin_loop();
            }
        }
    }
    let mut future = pin!(service.call(request));
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(response)) => return response,
            Poll::Ready(Err(error)) => panic!("service failed: {error:?}"),
            Poll::Pending => {
                *repolls += 1;
                std::hint::spin_loop();
            }
        }
    }
}

/// tower-resilience's circuit breaker (`tower-resilience-circuitbreaker` 0.14), configured as
/// close to `CircuitBreakerLayer::new()` as it allows:
///
/// - failure rate 0.5, at least 10 calls (`minimum_number_of_calls`), slow calls at 5 s with
///   a slow-call rate of 0.5 (ours: `latency_threshold` 5 s, the slow-call threshold defaults
///   to the failure threshold), open 60 s, 3 half-open probes, name `default`;
/// - 5xx responses are failures (`classify_response`), as our HTTP form's classifier judges;
/// - built with `build_with_handle`, so that every service the layer makes shares one circuit,
///   as every service of one of our layers shares one breaker (`build()` gives each service
///   its own circuit, and the 2-thread runs would share nothing);
/// - **count-based window** (`SlidingWindowType::CountBased`, size 10 so the window needs 10
///   calls, as ours). Ours is time-based (60 s, 20 buckets). tower-resilience has a
///   time-based window too, but it keeps one record per call in a `VecDeque` and scans every
///   record of the window on every call: at millions of calls per second over 60 s that is
///   gigabytes and a scan of millions of records per call, so it would measure that scan, not
///   a breaker. Its count-based window is O(1) per call: counters since the last change of
///   state, not a rolling window.
fn tower_resilience_layer() -> (
    ResilienceLayer<impl FailureClassifier<Response<()>, Infallible> + 'static>,
    CircuitBreakerHandle<impl Sized>,
) {
    ResilienceLayer::builder()
        .name("default")
        .failure_rate_threshold(0.5)
        .sliding_window_type(SlidingWindowType::CountBased)
        .sliding_window_size(10)
        .minimum_number_of_calls(10)
        .slow_call_duration_threshold(Duration::from_secs(5))
        .slow_call_rate_threshold(0.5)
        .wait_duration_in_open(Duration::from_secs(60))
        .permitted_calls_in_half_open(3)
        .classify_response(|response: &Response<()>| response.status().is_server_error())
        .build_with_handle()
        .expect("a valid tower-resilience configuration")
}

/// Asserts our breaker stayed closed and recorded at least `calls` successes.
fn check_proxflow(handle: &BreakerHandle, calls: u64) {
    let snapshot = handle.snapshot();
    assert_eq!(
        snapshot.state,
        State::Closed,
        "proxflow breaker left closed"
    );
    assert!(
        snapshot.totals.successes >= calls,
        "proxflow breaker recorded {} successes, expected at least {calls}",
        snapshot.totals.successes
    );
}

/// Asserts tower-resilience's circuit stayed closed and counted at least `calls` calls.
fn check_resilience<C>(handle: &CircuitBreakerHandle<C>, calls: u64) {
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "tower-resilience left closed"
    );
    let metrics = handle
        .metrics()
        .now_or_never()
        .expect("tower-resilience's circuit lock is free between runs");
    assert!(
        metrics.total_calls as u64 >= calls,
        "tower-resilience counted {} calls, expected at least {calls}",
        metrics.total_calls
    );
}

fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group(CLOSED);
    group.throughput(Throughput::Elements(1));

    let mut service = noop();
    group.bench_function("noop", |b| each_call(b, &mut service));

    let layer = CircuitBreakerLayer::new();
    bench_proxflow(
        &mut group,
        "proxflow_http",
        layer.handle(),
        layer.layer(noop()),
        each_call,
    );
    let layer = CircuitBreakerLayer::new().precise_clock(true);
    bench_proxflow(
        &mut group,
        "proxflow_http_precise",
        layer.handle(),
        layer.layer(noop()),
        each_call,
    );
    let layer = CircuitBreakerLayer::new().generic();
    bench_proxflow(
        &mut group,
        "proxflow_generic",
        layer.handle(),
        layer.layer(noop()),
        each_call,
    );

    let (layer, handle) = tower_resilience_layer();
    let mut service = layer.layer(noop());
    assert_eq!(call_now(&mut service, Request::new(())).status(), 200);
    let mut ran = false;
    group.bench_function("tower_resilience", |b| {
        ran = true;
        each_call(b, &mut service)
    });
    check_resilience(&handle, if ran { 2 } else { 1 });
    group.finish();
}

/// Times each call of `service`, one at a time.
fn each_call<S>(b: &mut Bencher<'_, WallTime>, service: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    b.iter(|| call_once(service))
}

/// Benchmarks `service`, one of ours, with `measure`, then checks that its breaker (`handle`)
/// counted every call a success.
fn bench_proxflow<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    handle: BreakerHandle,
    mut service: S,
    mut measure: impl FnMut(&mut Bencher<'_, WallTime>, &mut S),
) where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    call_now(&mut service, Request::new(()));
    let mut ran = false;
    group.bench_function(name, |b| {
        ran = true;
        measure(b, &mut service)
    });
    check_proxflow(&handle, if ran { 2 } else { 1 });
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group(OVERHEAD);
    group.throughput(Throughput::Elements(1));
    let mut bare = noop();
    for (name, layer) in [
        ("proxflow_http", CircuitBreakerLayer::new()),
        (
            "proxflow_http_precise",
            CircuitBreakerLayer::new().precise_clock(true),
        ),
    ] {
        bench_proxflow(
            &mut group,
            name,
            layer.handle(),
            layer.layer(noop()),
            |b, service| {
                b.iter_custom(|iters| paired(iters, || call_once(service), || call_once(&mut bare)))
            },
        );
    }
    group.finish();
}

/// Calls made and re-polls of pending futures, per contended benchmark.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    repolls: AtomicU64,
}

impl Tally {
    fn add(&self, calls: u64, repolls: u64) {
        self.calls.fetch_add(calls, Ordering::Relaxed);
        self.repolls.fetch_add(repolls, Ordering::Relaxed);
    }
}

/// The contended benchmarks, in summary order.
const CONTENDERS: [&str; 3] = ["noop", "proxflow_http", "tower_resilience"];

/// Re-poll tallies, indexed `[contender][threads - 1]`.
type Tallies = [[Tally; 2]; 3];

/// `iters` calls of `service` from the start line, counted in `tally`.
fn contend<S>(mut service: S, iters: u64, start: &StartLine, tally: &Tally)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let mut repolls = 0;
    start.wait();
    for _ in 0..iters {
        black_box(call_spin(
            &mut service,
            black_box(Request::new(())),
            &mut repolls,
        ));
    }
    tally.add(iters, repolls);
}

fn contended(c: &mut Criterion, tallies: &Tallies) {
    let mut group = c.benchmark_group(CONTENDED);
    let proxflow = CircuitBreakerLayer::new();
    let proxflow_handle = proxflow.handle();
    let (resilience, resilience_handle) = tower_resilience_layer();
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        let [noop_tally, proxflow_tally, resilience_tally] =
            [0, 1, 2].map(|i| &tallies[i][threads - 1]);
        group.bench_function(BenchmarkId::new(CONTENDERS[0], threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    contend(noop(), iters, start, noop_tally)
                })
            })
        });
        group.bench_function(BenchmarkId::new(CONTENDERS[1], threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    contend(proxflow.layer(noop()), iters, start, proxflow_tally)
                })
            })
        });
        group.bench_function(BenchmarkId::new(CONTENDERS[2], threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_, iters, start| {
                    contend(resilience.layer(noop()), iters, start, resilience_tally)
                })
            })
        });
    }
    group.finish();
    let calls = |i: usize| {
        tallies[i]
            .iter()
            .map(|t| t.calls.load(Ordering::Relaxed))
            .sum()
    };
    check_proxflow(&proxflow_handle, calls(1));
    check_resilience(&resilience_handle, calls(2));
}

fn summary(since: SystemTime, tallies: &Tallies) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let get = |id: &str| median_ns(&dir, since, id);
    let (ns, verdict) = (proxflow_benches::ns, proxflow_benches::verdict);
    let ratio = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .map_or("n/a".to_string(), |(a, b)| format!("{:.2}x", a / b))
    };
    let mut out = String::from("\n## Circuit breaker, closed path (medians per call)\n\n");
    out += "| benchmark | median |\n|---|--:|\n";
    for name in [
        "noop",
        "proxflow_http",
        "proxflow_http_precise",
        "proxflow_generic",
        "tower_resilience",
    ] {
        let id = format!("{CLOSED}/{name}");
        out += &format!("| {id} | {} |\n", ns(get(&id)));
    }

    let closed = |name: &str| get(&format!("{CLOSED}/{name}"));
    let contended = |name: &str, threads: usize| get(&format!("{CONTENDED}/{name}/{threads}"));
    let minus = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let noop = closed("noop");
    let http = minus(closed("proxflow_http"), noop);
    let precise = minus(closed("proxflow_http_precise"), noop);
    let generic = minus(closed("proxflow_generic"), noop);
    let resilience = minus(closed("tower_resilience"), noop);
    let paired = |name: &str| get(&format!("{OVERHEAD}/{name}"));
    let http_paired = paired("proxflow_http");
    let precise_paired = paired("proxflow_http_precise");
    let noop2 = contended("noop", 2);
    let http2 = minus(contended("proxflow_http", 2), noop2);
    let resilience2 = minus(contended("tower_resilience", 2), noop2);
    let noop1 = contended("noop", 1);
    let http1 = minus(contended("proxflow_http", 1), noop1);
    let resilience1 = minus(contended("tower_resilience", 1), noop1);

    out += "\n| overhead (layer - noop) | proxflow | target | result | tower_resilience | tower_resilience / proxflow |\n|---|--:|--:|---|--:|--:|\n";
    // One row: what is measured, our overhead, its target if it has one, tower-resilience's.
    let mut row = |what: &str, ours: Option<f64>, target: Option<f64>, theirs: Option<f64>| {
        let (target, result) = match target {
            Some(target) => (
                format!("<= {target:.0} ns"),
                verdict(ours.map(|o| o <= target)),
            ),
            None => (String::new(), "info"),
        };
        out += &format!(
            "| {what} | {} | {target} | {result} | {} | {} |\n",
            ns(ours),
            ns(theirs),
            ratio(theirs, ours),
        );
    };
    let one = Some(TARGET_ONE_NS);
    row(
        "1 thread, HTTP form, paired (breaker_overhead/proxflow_http)",
        http_paired,
        one,
        resilience,
    );
    row(
        "1 thread, HTTP form, `precise_clock(true)`, paired (breaker_overhead/proxflow_http_precise)",
        precise_paired,
        None,
        resilience,
    );
    row(
        "1 thread, HTTP form (breaker_closed/proxflow_http - noop)",
        http,
        one,
        resilience,
    );
    row(
        "1 thread, HTTP form, `precise_clock(true)` (breaker_closed/proxflow_http_precise - noop)",
        precise,
        None,
        resilience,
    );
    row(
        "1 thread, generic form (breaker_closed/proxflow_generic - noop)",
        generic,
        None,
        resilience,
    );
    row(
        "contended, 1 thread (breaker_contended/proxflow_http/1 - noop/1)",
        http1,
        None,
        resilience1,
    );
    row(
        "contended, 2 threads, per call as each thread sees it (breaker_contended/proxflow_http/2 - noop/2)",
        http2,
        Some(TARGET_TWO_NS),
        resilience2,
    );

    out += "\n| contended: time per call as each thread sees it | 1 thread | 2 threads | speed-up (2 x t1 / t2) | re-polls per 1000 calls, 2 threads |\n|---|--:|--:|--:|--:|\n";
    for (i, name) in CONTENDERS.iter().enumerate() {
        let one = contended(name, 1);
        let two = contended(name, 2);
        let speedup = one.zip(two).map(|(a, b)| 2.0 * a / b);
        let tally = &tallies[i][1];
        let calls = tally.calls.load(Ordering::Relaxed);
        let repolls = tally.repolls.load(Ordering::Relaxed);
        let per_mille = if calls == 0 {
            "n/a".to_string()
        } else {
            format!("{:.2}", repolls as f64 * 1000.0 / calls as f64)
        };
        out += &format!(
            "| {name} | {} | {} | {} | {per_mille} |\n",
            ns(one),
            ns(two),
            speedup.map_or("n/a".into(), |s| format!("{s:.2}x")),
        );
    }
    out += "\ntower_resilience: tower-resilience-circuitbreaker 0.14, count-based window \
            (size 10, min calls 10), failure rate 0.5, slow calls 5 s at 0.5, 5xx fail, \
            one shared circuit (build_with_handle).\n";
    println!("{out}");
}

fn main() {
    let since = SystemTime::now();
    let tallies = Tallies::default();
    let mut c = Criterion::default().configure_from_args();
    closed(&mut c);
    overhead(&mut c);
    contended(&mut c, &tallies);
    c.final_summary();
    summary(since, &tallies);
}
