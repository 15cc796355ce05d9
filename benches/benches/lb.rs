//! What a pick of `proxflow-lb` costs with 10 upstreams.
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
//!
//! After the runs, a markdown summary with the target of issue 5 (a pick at most 200 ns) is
//! printed.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use http::{Request, Response};
use proxflow_benches::{call_now, criterion_dir, median_ns};
use proxflow_lb::{AdaptiveConfig, AdaptiveLb, Policy};
use tower::{Layer, Service};

const PICK: &str = "lb_pick";
const PICK_FINISH: &str = "lb_pick_finish";
const REQUEST: &str = "lb_request";

fn upstreams() -> Vec<SocketAddr> {
    (1..=10)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
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

fn summary(since: SystemTime) {
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
    println!("{out}");
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    picks(&mut c);
    requests(&mut c);
    c.final_summary();
    summary(since);
}
