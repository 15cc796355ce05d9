//! What a pick of `proxflow-lb` costs, alone with 10 upstreams, and against tower's p2c
//! `PeakEwma` balancer with 10 and 100.
//!
//! ```text
//! cargo bench -p proxflow-benches --bench lb -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `lb_pick/<policy>`: `LbHandle::pick`, the `Pick` dropped unfinished: the policy's choice
//!   over 10 upstreams (all healthy, weight 1; the clock read, the random draws, the costs
//!   compared) and the in-flight count up and down. This is the pick the issue's target is
//!   about. One thread. `ip_hash` hashes a fixed client address.
//! - `lb_pick_finish/<policy>`: the same, then `Pick::finish(false)`: the answer's accounting
//!   as well (a second clock read, interval counts, peak-EWMA estimate, passive health), which
//!   a balanced request pays once per answer. The adaptive policy updates its weights every
//!   second (`update_interval` 1 s), inside some of the picks. For information.
//! - `lb_request/noop` and `lb_request/adaptive`: a whole request through `AdaptiveLb` over a
//!   no-op client (`service_fn` answering an empty 200), against the no-op client alone: the
//!   pick plus the request's rewriting (URI, `Host`, `X-Forwarded-*`), the boxed future and
//!   the clone of headers and extensions. For information.
//! - `lb_pick_vs_tower/<balancer>/<n>` (issue 18), over `n` = 10 and 100 no-op endpoints
//!   (`service_fn` answering `()` at once), each balancer at its defaults. A pick is one
//!   balanced request as a server makes it, minus the runtime: `poll_ready`, `call`, and one
//!   poll of the response future, which completes it. That is the only unit both balancers
//!   share, and it makes them do the same work: choose an endpoint by its load, mark the
//!   request outstanding, and record its latency when it completes.
//!   - `tower_peak_ewma`: tower 0.5's `p2c::Balance` over `PeakEwmaDiscover` of a
//!     `ServiceList` (default RTT 30 ms, decay 10 s, `CompleteOnResponse`, as the simulation's
//!     baseline). `poll_ready` polls the stream, promotes the endpoints made ready again,
//!     samples two ready endpoints and compares their loads (each a clock read and a lock of
//!     its estimate), and polls the winner's readiness; `call` moves the endpoint back to
//!     pending (a future pushed to its pending set, which the next `poll_ready` polls) and
//!     starts a PeakEwma handle (a clock read); completing the future drops the handle, which
//!     records the latency (a clock read and a lock).
//!   - `adaptive`: proxflow's generic form, `AdaptiveLb::balance` over the same `ServiceList`,
//!     at its defaults (`AdaptiveConfig::default()`: a thread weighs the endpoints again every
//!     100 ms from their live loads, and while they ramp up over the 30 s of slow start).
//!     `poll_ready` polls the stream, looks at every endpoint for one waiting to be ready
//!     again, picks by weighted power of two choices over peak-EWMA cost × in flight (one
//!     clock read), and polls the chosen endpoint's readiness; `call` counts it in flight (a clock read);
//!     completing the future records its latency, counts and passive health (a clock read and
//!     a lock).
//!   - `peak_ewma`: the same with `Policy::PeakEwma` (decay 10 s). For information.
//!   - `pick_finish`: `LbHandle::pick` and `Pick::finish(false)` over `n` upstreams of the HTTP
//!     form at `AdaptiveConfig::default()`: the same choice and accounting without the
//!     `Service` plumbing (no stream, no endpoint readiness, no future); what the HTTP form
//!     pays per request for balancing. For information.
//!
//!   The target: `adaptive` at most 1.5x `tower_peak_ewma`. A ratio of two medians taken
//!   seconds apart carries the host's drift between them, so:
//! - `lb_pick_vs_tower_paired/<n>`: `adaptive` and `tower_peak_ewma` measured paired: each
//!   sample times `iters` picks of each, alternating in stretches of 1000 (each going first in
//!   turn). Criterion reports `adaptive`'s time; the paired ratio is the sum of `adaptive`'s
//!   times over the sum of tower's, over every sample (warm-up included).
//!
//! After the runs, a markdown summary with the target of issue 5 (a pick at most 200 ns) and
//! that of issue 18 (the paired ratio, or the ratio of medians when the paired run was not
//! selected, at most 1.5x) is printed.

use std::cell::RefCell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use proxflow_benches::{alternating, call_now, criterion_dir, median_ns, verdict};
use proxflow_lb::{AdaptiveConfig, AdaptiveLb, Policy, Upstream};
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Layer, Service};

const PICK: &str = "lb_pick";
const PICK_FINISH: &str = "lb_pick_finish";
const REQUEST: &str = "lb_request";
const VERSUS: &str = "lb_pick_vs_tower";
const VERSUS_PAIRED: &str = "lb_pick_vs_tower_paired";
/// The numbers of upstreams of issue 18's comparison.
const SIZES: [usize; 2] = [10, 100];
/// tower's PeakEwma settings, as the simulation's baseline has them.
const TOWER_DEFAULT_RTT: Duration = Duration::from_millis(30);
const DECAY: Duration = Duration::from_secs(10);

fn upstreams() -> Vec<SocketAddr> {
    addresses(10)
}

/// `n` upstream addresses, 10.0.0.1:8080 up.
fn addresses(n: usize) -> Vec<SocketAddr> {
    (1..=n as u32)
        .map(|i| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 8080)))
        .collect()
}

fn policies() -> Vec<(&'static str, Policy)> {
    vec![
        ("round_robin", Policy::RoundRobin),
        ("weighted_round_robin", Policy::WeightedRoundRobin),
        ("random", Policy::Random),
        ("least_request", Policy::LeastRequest),
        (
            "peak_ewma",
            Policy::PeakEwma {
                decay: Duration::from_secs(10),
            },
        ),
        ("ip_hash", Policy::IpHash),
        ("adaptive", adaptive()),
    ]
}

fn adaptive() -> Policy {
    Policy::Adaptive(AdaptiveConfig {
        update_interval: Duration::from_secs(1),
        ..AdaptiveConfig::default()
    })
}

fn noop_client(
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    tower::service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    })
}

/// The client address `ip_hash` hashes.
const KEY: &[u8] = b"198.51.100.7";

/// A balancer over the 10 upstreams.
fn balancer(policy: Policy) -> AdaptiveLb {
    AdaptiveLb::new(upstreams()).policy(policy).seed(1)
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group(PICK);
    group.throughput(Throughput::Elements(1));
    for (name, policy) in policies() {
        let handle = balancer(policy).handle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let pick = handle.pick(Some(black_box(KEY))).expect("an upstream");
                black_box(pick.upstream());
                pick.cancel();
            });
            let in_flight: u32 = handle
                .snapshot()
                .upstreams
                .iter()
                .map(|u| u.in_flight)
                .sum();
            assert_eq!(in_flight, 0, "{name}: cancelled picks are not in flight");
        });
    }
    group.finish();

    let mut group = c.benchmark_group(PICK_FINISH);
    group.throughput(Throughput::Elements(1));
    for (name, policy) in policies() {
        let handle = balancer(policy).handle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let pick = handle.pick(Some(black_box(KEY))).expect("an upstream");
                pick.finish(false);
            });
            let figures = handle.snapshot();
            let requests: u64 = figures.upstreams.iter().map(|u| u.requests).sum();
            assert!(requests > 0, "{name}: the picks were counted");
        });
    }
    group.finish();
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group(REQUEST);
    group.throughput(Throughput::Elements(1));
    // Entered as under a server (nothing is spawned).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut client = noop_client();
    group.bench_function("noop", |b| {
        b.iter(|| black_box(call_now(&mut client, Request::new(String::new()))))
    });
    let mut service = balancer(adaptive()).layer(noop_client());
    group.bench_function("adaptive", |b| {
        b.iter(|| black_box(call_now(&mut service, Request::new(String::new()))))
    });
    group.finish();
}

/// A no-op endpoint: answers `()` at once.
type Endpoint = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), Infallible>>>;

/// `n` no-op endpoints, as a `Discover` stream.
fn endpoints(n: usize) -> ServiceList<Vec<Endpoint>> {
    let answer: fn(()) -> std::future::Ready<Result<(), Infallible>> =
        |()| std::future::ready(Ok(()));
    ServiceList::new(vec![tower::service_fn(answer); n])
}

/// tower's p2c balancer over PeakEwma, as the simulation's baseline builds it.
fn tower_peak_ewma(
    n: usize,
) -> tower::balance::p2c::Balance<PeakEwmaDiscover<ServiceList<Vec<Endpoint>>>, ()> {
    let discover = PeakEwmaDiscover::new::<()>(
        endpoints(n),
        TOWER_DEFAULT_RTT,
        DECAY,
        CompleteOnResponse::default(),
    );
    tower::balance::p2c::Balance::new(discover)
}

/// proxflow's generic form with `policy`.
fn proxflow_balance(
    policy: Policy,
    n: usize,
) -> proxflow_lb::Balance<ServiceList<Vec<Endpoint>>, ()> {
    AdaptiveLb::new(Vec::<Upstream>::new())
        .policy(policy)
        .seed(1)
        .balance(endpoints(n))
}

/// One pick: `poll_ready`, `call`, the future polled to its completion.
#[inline]
fn pick_once<S: Service<()>>(balance: &mut S)
where
    S::Error: std::fmt::Debug,
{
    call_now(balance, ());
}

/// Every pick was answered and recorded: nothing in flight, `picks` answers at least.
fn check_answered(handle: &proxflow_lb::LbHandle, name: &str) {
    let snapshot = handle.snapshot();
    let in_flight: u32 = snapshot.upstreams.iter().map(|u| u.in_flight).sum();
    let answered: u64 = snapshot.upstreams.iter().map(|u| u.requests).sum();
    assert_eq!(in_flight, 0, "{name}: every pick completed");
    assert!(answered > 0, "{name}: the picks were recorded");
}

fn versus_tower(c: &mut Criterion, paired_totals: &PairedTotals) {
    let mut group = c.benchmark_group(VERSUS);
    group.throughput(Throughput::Elements(1));
    let peak_ewma = Policy::PeakEwma { decay: DECAY };
    for n in SIZES {
        let mut tower = tower_peak_ewma(n);
        group.bench_function(BenchmarkId::new("tower_peak_ewma", n), |b| {
            b.iter(|| pick_once(&mut tower))
        });
        for (name, policy) in [
            ("adaptive", Policy::default()),
            ("peak_ewma", peak_ewma.clone()),
        ] {
            let mut balance = proxflow_balance(policy, n);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| pick_once(&mut balance))
            });
            check_answered(&balance.handle(), name);
        }
        let handle = AdaptiveLb::new(addresses(n)).seed(1).handle();
        group.bench_function(BenchmarkId::new("pick_finish", n), |b| {
            b.iter(|| handle.pick(None).expect("an upstream").finish(false))
        });
        check_answered(&handle, "pick_finish");
    }
    group.finish();

    let mut group = c.benchmark_group(VERSUS_PAIRED);
    group.throughput(Throughput::Elements(1));
    for (n, totals) in SIZES.into_iter().zip(paired_totals) {
        let mut tower = tower_peak_ewma(n);
        let mut adaptive = proxflow_balance(Policy::default(), n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let (adaptive, tower) =
                    alternating(iters, || pick_once(&mut adaptive), || pick_once(&mut tower));
                let mut totals = totals.borrow_mut();
                totals.0 += adaptive;
                totals.1 += tower;
                adaptive
            })
        });
        check_answered(&adaptive.handle(), "paired adaptive");
    }
    group.finish();
}

/// Per size of [`SIZES`], the paired run's total time of `adaptive`'s picks and of tower's.
type PairedTotals = [RefCell<(Duration, Duration)>; SIZES.len()];

fn summary(since: SystemTime, paired_totals: &PairedTotals) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let get = |id: &str| median_ns(&dir, since, id);
    let ns = proxflow_benches::ns;
    let mut out = String::from("\n## Load balancer picks, 10 upstreams (medians)\n\n");
    out += "| policy | pick | target <= 200 ns | pick + finish (info) |\n|---|--:|---|--:|\n";
    for (name, _) in policies() {
        let value = get(&format!("{PICK}/{name}"));
        let verdict = match value {
            Some(v) if v <= 200.0 => "PASS",
            Some(_) => "FAIL",
            None => "not measured",
        };
        let finished = get(&format!("{PICK_FINISH}/{name}"));
        out += &format!(
            "| {name} | {} | {verdict} | {} |\n",
            ns(value),
            ns(finished)
        );
    }
    let noop = get(&format!("{REQUEST}/noop"));
    let whole = get(&format!("{REQUEST}/adaptive"));
    if let (Some(noop), Some(whole)) = (noop, whole) {
        out += &format!(
            "\nA whole request through the layer over a no-op client: {whole:.1} ns vs {noop:.1} ns \
             for the client alone ({:.1} ns of layer).\n",
            whole - noop
        );
    }
    out += &versus_summary(&get, paired_totals);
    println!("{out}");
}

/// Issue 18's table: per number of upstreams, tower's pick, proxflow's, their ratio (paired
/// when measured) and the 1.5x verdict.
fn versus_summary(get: &dyn Fn(&str) -> Option<f64>, paired_totals: &PairedTotals) -> String {
    let ns = proxflow_benches::ns;
    let mut out = String::from(
        "\n## Picks against tower's p2c PeakEwma (medians; a pick is poll_ready + call + \
         completion)\n\n| upstreams | tower p2c PeakEwma | proxflow adaptive | ratio of medians \
         | paired ratio | target <= 1.5x | proxflow peak_ewma (info) | adaptive pick + finish \
         (info) |\n|--:|--:|--:|--:|--:|---|--:|--:|\n",
    );
    let ratio = |value: Option<f64>| value.map_or("n/a".to_string(), |r| format!("{r:.2}x"));
    for (n, totals) in SIZES.into_iter().zip(paired_totals) {
        let at = |name: &str| get(&format!("{VERSUS}/{name}/{n}"));
        let tower = at("tower_peak_ewma");
        let adaptive = at("adaptive");
        let of_medians = tower.zip(adaptive).map(|(t, a)| a / t);
        let (adaptive_total, tower_total) = *totals.borrow();
        let paired = (!tower_total.is_zero())
            .then(|| adaptive_total.as_secs_f64() / tower_total.as_secs_f64());
        let judged = paired.or(of_medians);
        out += &format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |\n",
            ns(tower),
            ns(adaptive),
            ratio(of_medians),
            ratio(paired),
            verdict(judged.map(|r| r <= 1.5)),
            ns(at("peak_ewma")),
            ns(at("pick_finish")),
        );
    }
    out
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let paired_totals = PairedTotals::default();
    picks(&mut c);
    requests(&mut c);
    versus_tower(&mut c, &paired_totals);
    c.final_summary();
    summary(since, &paired_totals);
}
