//! What a pick of `proxflow-lb` costs with 10 upstreams.
//!
//! ```text
//! cargo bench -p proxflow-benches --bench lb -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `lb_pick/<policy>`: `LbHandle::pick` then `Pick::finish(false)`: the policy's choice over
//!   10 upstreams (all healthy, weight 1), the in-flight count up and down, and the answer's
//!   accounting (interval counts, peak-EWMA estimate, passive health), which a balanced
//!   request pays as well. One thread. `ip_hash` hashes a fixed client address. The adaptive
//!   policy updates its weights every second (`update_interval` 1 s), inside some of the picks.
//! - `lb_request/noop` and `lb_request/adaptive`: a whole request through `AdaptiveLb` over a
//!   no-op client (`service_fn` answering an empty 200), against the no-op client alone: the
//!   pick plus the request's rewriting (URI, `Host`, `X-Forwarded-*`), the boxed future and
//!   the clone of headers and extensions. For information.
//!
//! After the runs, a markdown summary with the target of issue 5 (a pick at most 200 ns) is
//! printed.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use http::{Request, Response};
use proxflow_lb::{AdaptiveConfig, AdaptiveLb, Policy};
use tower::{Layer, Service};

const PICK: &str = "lb_pick";
const REQUEST: &str = "lb_request";

fn upstreams() -> Vec<String> {
    (1..=10)
        .map(|i| format!("http://10.0.0.{i}:8080"))
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

/// `poll_ready`, `call`, one poll with a no-op waker; nothing here waits.
fn call_now<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("service not ready: {other:?}"),
    }
    let mut future = pin!(service.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("service failed: {error:?}"),
        Poll::Pending => panic!("response future pending"),
    }
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

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group(PICK);
    group.throughput(Throughput::Elements(1));
    for (name, policy) in policies() {
        let lb = AdaptiveLb::new(upstreams())
            .expect("valid upstreams")
            .policy(policy)
            .expect("valid policy")
            .seed(1);
        let handle = lb.handle();
        let key: &[u8] = b"198.51.100.7";
        group.bench_function(name, |b| {
            b.iter(|| {
                let pick = handle.pick(Some(black_box(key))).expect("an upstream");
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
    // The balancer reads tokio's clock; a runtime must be entered (nothing is spawned).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut client = noop_client();
    group.bench_function("noop", |b| {
        b.iter(|| black_box(call_now(&mut client, Request::new(String::new()))))
    });
    let lb = AdaptiveLb::new(upstreams())
        .expect("valid upstreams")
        .policy(adaptive())
        .expect("valid policy")
        .seed(1);
    let mut service = lb.layer(noop_client());
    group.bench_function("adaptive", |b| {
        b.iter(|| black_box(call_now(&mut service, Request::new(String::new()))))
    });
    group.finish();
}

/// Where criterion writes its estimates (as criterion finds it).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(PathBuf::from(metadata["target_directory"].as_str()?).join("criterion"))
}

/// The median time per iteration (ns) of a benchmark this process measured.
fn median_ns(dir: &std::path::Path, since: SystemTime, id: &str) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn summary(since: SystemTime) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let get = |id: &str| median_ns(&dir, since, id);
    let mut out = String::from("\n## Load balancer picks, 10 upstreams (medians)\n\n");
    out += "| policy | pick + finish | target <= 200 ns |\n|---|--:|---|\n";
    for (name, _) in policies() {
        let value = get(&format!("{PICK}/{name}"));
        let verdict = match value {
            Some(v) if v <= 200.0 => "PASS",
            Some(_) => "FAIL",
            None => "not measured",
        };
        out += &format!(
            "| {name} | {} | {verdict} |\n",
            value.map_or("n/a".into(), |v| format!("{v:.1} ns"))
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
