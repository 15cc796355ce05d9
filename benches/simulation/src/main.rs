//! Load-balancing simulation (issue 5): proxflow-lb's policies, through the real
//! `AdaptiveLb` layer, against tower's own p2c balancers (`tower::balance::p2c::Balance` over
//! `PeakEwmaDiscover` and `PendingRequestsDiscover`, the tower crate itself), on simulated
//! backends in one process.
//!
//! ```text
//! cargo build --release -p proxflow-benches --bin lb_simulation
//! target/release/lb_simulation --seeds 10 --markdown /tmp/lb.md
//! ```
//!
//! The model:
//!
//! - **Time.** Each run is a current-thread tokio runtime started with paused time: sleeps
//!   are free, the clock jumps to the next timer, and a run is deterministic for its seed.
//!   tokio's timers have a 1 ms resolution, so every latency is rounded up to the next
//!   millisecond, for every balancer alike.
//! - **Arrivals.** Open loop: Poisson arrivals from a seeded RNG, each request spawned as a
//!   task at its scheduled time whatever the state of earlier ones. Latency is the answer's
//!   time minus the scheduled time.
//! - **Client.** The client service (what hyper-util's `Client` is in a gateway) routes by
//!   the URI's authority (`http://b3:80`) to backend 3, with a 1 s timeout inside it: the
//!   balancers see a timeout as a client error after 1 s (proxflow answers it 502; tower's
//!   balancer returns the error). A request not answered 1 s after its scheduled time is a
//!   timeout and counts as 1000 ms.
//! - **Backends.** A latency drawn uniformly between a low and a high bound (tower's own
//!   balance example draws uniformly in `[0, max)`; S1 uses exactly that), taken when the
//!   request starts service. A concurrency limit: requests beyond it wait in a FIFO queue; a
//!   queued request whose client gave up leaves the queue (the server never read it), a
//!   request in service keeps its slot until its service time is over (the server does not
//!   notice the client left). S4's failing backend answers its failures with a 503 after
//!   1 ms, without taking a slot.
//! - **Errors.** A non-2xx answer (proxflow's 502 for a timeout, the 503s of S4) or a tower
//!   error. Latency percentiles are over every request, errors included at their latency.
//! - **Fair share.** A backend's share of the capacity of the pool at that moment:
//!   `limit × (1 − failure ratio) / mean latency`, over the backends in the balancer then.
//!   The "bad backend" of each scenario is sent a share of each 1 s window of sends; its
//!   settle time is how long after the bad period starts its share falls below twice its
//!   fair share and stays there until the period ends ("never" if it is above in the last
//!   window).
//!
//! proxflow-lb is used as its users get it, through `AdaptiveLb` over the client service.
//! The adaptive policy gets `update_interval 1s` (its default, 1 min, is the origin's: it
//! would take a single update in S2's 30 s bad period), `history_length 10`, `alpha 0.3`,
//! and the default `failure_penalty` 4. Passive ejection (5 failures in a row eject an
//! upstream for 30 s) is on by default in the layer and tower's balancers have nothing like
//! it, so every proxflow policy runs twice: without ejection (the policy alone, the
//! like-for-like comparison) and `+ejection` (the layer's defaults).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use http::{Request, Response, StatusCode, Uri};
use proxflow_lb::{
    AdaptiveConfig, AdaptiveLb, Clock, LbHandle, LoadMetric, PassiveHealth, Policy, Upstream,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// The client timeout, from the send (inside the client) and from the scheduled time.
const TIMEOUT: Duration = Duration::from_secs(1);
/// tokio's timer resolution: latencies closer than this are a tie.
const RESOLUTION_MS: f64 = 1.0;
/// tower's balance example: the RTT assumed for an endpoint before its first answer.
const TOWER_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// tower's balance example and proxflow's default: the decay of the peak-EWMA estimate.
const DECAY: Duration = Duration::from_secs(10);

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Deterministic load-balancing simulation: proxflow-lb vs tower p2c")]
struct Args {
    /// Seeds per scenario and policy (seeds 1..=N).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Scenarios to run, comma-separated (S1..S6).
    #[arg(long, value_delimiter = ',', default_value = "S1,S2,S3,S4,S5,S6")]
    scenarios: Vec<String>,
    /// Run only the policies whose name contains one of these, comma-separated.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Worker threads (each run is single-threaded). Default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// The adaptive policy's `failure_penalty` (exploration; the report uses the default 4).
    #[arg(long, default_value_t = 4.0)]
    failure_penalty: f64,
    /// The adaptive policy's `update_interval` in milliseconds (exploration).
    #[arg(long, default_value_t = 1000)]
    update_interval_ms: u64,
    /// The adaptive policy's `alpha` (exploration).
    #[arg(long, default_value_t = 0.3)]
    alpha: f64,
    /// Run length in seconds (60 for the report; shorter only to try things out).
    #[arg(long, default_value_t = 60)]
    duration: u32,
    /// Also append the markdown report to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Where the SVG plot goes. Default: benches/lb_simulation.svg.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

// ===== Scenarios =====

/// How a backend's latency bounds change over the run.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Uniform in `[lo, hi]` throughout.
    Fixed,
    /// Exactly `ms` during `[from, to)`, otherwise uniform.
    Pinned { from: f64, to: f64, ms: f64 },
    /// S3: uniform in `[max/2, max]`, `max` drifting 10 -> 300 ms and back ([`drift_max`]).
    Drift,
    /// Cold: the bounds times a factor falling linearly from `factor` at `at` to 1 at
    /// `at + warm`.
    Cold { at: f64, factor: f64, warm: f64 },
}

#[derive(Clone, Debug)]
struct Spec {
    lo_ms: f64,
    hi_ms: f64,
    limit: usize,
    /// Share of calls answered 503 after 1 ms.
    fail: f64,
    shape: Shape,
}

impl Spec {
    fn uniform(lo_ms: f64, hi_ms: f64, limit: usize) -> Spec {
        Spec {
            lo_ms,
            hi_ms,
            limit,
            fail: 0.0,
            shape: Shape::Fixed,
        }
    }

    /// Latency bounds (ms) of a request starting service at `t` seconds.
    fn bounds(&self, t: f64) -> (f64, f64) {
        match self.shape {
            Shape::Fixed => (self.lo_ms, self.hi_ms),
            Shape::Pinned { from, to, ms } if (from..to).contains(&t) => (ms, ms),
            Shape::Pinned { .. } => (self.lo_ms, self.hi_ms),
            Shape::Drift => {
                let max = drift_max(t);
                (max / 2.0, max)
            }
            Shape::Cold { at, factor, warm } => {
                let cold = (1.0 - (t - at) / warm).clamp(0.0, 1.0);
                let f = 1.0 + (factor - 1.0) * cold;
                (self.lo_ms * f, self.hi_ms * f)
            }
        }
    }

    fn mean_ms(&self, t: f64) -> f64 {
        let (lo, hi) = self.bounds(t);
        (lo + hi) / 2.0
    }

    /// Answers per second it can give at `t`, successes only.
    fn capacity(&self, t: f64) -> f64 {
        self.limit as f64 * (1.0 - self.fail) / (self.mean_ms(t).max(0.5) / 1000.0)
    }
}

/// S3's drifting backend: max latency 10 ms until 10 s, up to 300 ms at 25 s, held until
/// 35 s, back to 10 ms at 50 s.
fn drift_max(t: f64) -> f64 {
    if t < 10.0 {
        10.0
    } else if t < 25.0 {
        10.0 + 290.0 * (t - 10.0) / 15.0
    } else if t < 35.0 {
        300.0
    } else if t < 50.0 {
        300.0 - 290.0 * (t - 35.0) / 15.0
    } else {
        10.0
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Remove(usize),
    Add(usize),
}

/// The backend(s) whose share is watched, and when.
#[derive(Clone, Debug)]
struct Bad {
    backends: Vec<usize>,
    from: f64,
    to: f64,
    label: &'static str,
}

#[derive(Clone, Debug)]
struct Scenario {
    id: &'static str,
    title: &'static str,
    setup: String,
    rate: f64,
    backends: Vec<Spec>,
    /// Backends in the balancer at the start.
    initial: Vec<usize>,
    events: Vec<(f64, Event)>,
    bad: Bad,
}

impl Scenario {
    /// Whether backend `i` is in the balancer at `t`.
    fn in_pool(&self, i: usize, t: f64) -> bool {
        let mut present = self.initial.contains(&i);
        for &(at, event) in &self.events {
            if at <= t {
                match event {
                    Event::Remove(j) if j == i => present = false,
                    Event::Add(j) if j == i => present = true,
                    _ => {}
                }
            }
        }
        present
    }

    /// The bad backends' share of the pool's capacity at `t`.
    fn fair_share(&self, t: f64) -> f64 {
        let mut total = 0.0;
        let mut bad = 0.0;
        for (i, spec) in self.backends.iter().enumerate() {
            if !self.in_pool(i, t) {
                continue;
            }
            let capacity = spec.capacity(t);
            total += capacity;
            if self.bad.backends.contains(&i) {
                bad += capacity;
            }
        }
        if total > 0.0 {
            bad / total
        } else {
            0.0
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let normal = |limit| Spec::uniform(50.0, 100.0, limit);
    let mut list = Vec::new();

    // S1: tower's balance example's backends, with its uniform [0, max) latency.
    let maxes = [
        1.0, 5.0, 10.0, 10.0, 10.0, 100.0, 100.0, 100.0, 500.0, 1000.0,
    ];
    list.push(Scenario {
        id: "S1",
        title: "ten backends of different speed",
        setup: "10 backends, latency uniform in [0, max), max 1, 5, 10, 10, 10, 100, 100, \
                100, 500, 1000 ms; limit 50 each; 2723 rps"
            .into(),
        rate: 2723.0,
        backends: maxes
            .iter()
            .map(|&max| Spec::uniform(0.0, max, 50))
            .collect(),
        initial: all(10),
        events: vec![],
        bad: Bad {
            backends: vec![9],
            from: 0.0,
            to: 60.0,
            label: "the 1000 ms one, whole run",
        },
    });

    // S2: eleven backends ~167 ms; b0 answers in exactly 2 s from 15 s to 45 s.
    let mut backends: Vec<Spec> = (0..11).map(|_| Spec::uniform(150.0, 184.0, 50)).collect();
    backends[0].shape = Shape::Pinned {
        from: 15.0,
        to: 45.0,
        ms: 2000.0,
    };
    list.push(Scenario {
        id: "S2",
        title: "one of eleven pinned to 2 s for 30 s",
        setup: "11 backends, latency uniform in [150, 184] ms (mean 167); b0 exactly 2000 ms \
                during 15-45 s; limit 50 each; 1000 rps"
            .into(),
        rate: 1000.0,
        backends,
        initial: all(11),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from: 15.0,
            to: 45.0,
            label: "b0 during 15-45 s",
        },
    });

    // S3: one backend drifting 10 -> 300 ms and back.
    let mut backends: Vec<Spec> = (0..10).map(|_| normal(20)).collect();
    backends[0].shape = Shape::Drift;
    list.push(Scenario {
        id: "S3",
        title: "one backend drifting 10 -> 300 ms and back",
        setup: "10 backends, latency uniform in [50, 100] ms; b0 uniform in [max/2, max], \
                max 10 ms until 10 s, rising to 300 ms at 25 s, 300 ms until 35 s, back to \
                10 ms at 50 s; limit 20 each; 1200 rps"
            .into(),
        rate: 1200.0,
        backends,
        initial: all(10),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from: 23.0,
            to: 37.0,
            label: "b0 during 23-37 s (max >= 250 ms)",
        },
    });

    // S4: one backend answers 30% of calls with a 1 ms 503.
    let mut backends: Vec<Spec> = (0..10).map(|_| normal(50)).collect();
    backends[0].fail = 0.3;
    list.push(Scenario {
        id: "S4",
        title: "one backend failing 30% of calls fast",
        setup: "10 backends, latency uniform in [50, 100] ms; b0 answers 30% of calls with a \
                503 after 1 ms; limit 50 each; 500 rps"
            .into(),
        rate: 500.0,
        backends,
        initial: all(10),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from: 0.0,
            to: 60.0,
            label: "b0, whole run",
        },
    });

    // S5: b0 removed at 20 s; a cold b10 added at 30 s.
    let mut backends: Vec<Spec> = (0..11).map(|_| normal(20)).collect();
    backends[10].shape = Shape::Cold {
        at: 30.0,
        factor: 4.0,
        warm: 10.0,
    };
    list.push(Scenario {
        id: "S5",
        title: "a backend removed, a cold one added",
        setup: "10 backends, latency uniform in [50, 100] ms, limit 20 each, 1200 rps; b0 \
                removed at 20 s; b10 added at 30 s, cold: its latency 4x at first, back to 1x \
                linearly by 40 s"
            .into(),
        rate: 1200.0,
        backends,
        initial: all(10),
        events: vec![(20.0, Event::Remove(0)), (30.0, Event::Add(10))],
        bad: Bad {
            backends: vec![10],
            from: 30.0,
            to: 40.0,
            label: "the cold b10 during 30-40 s",
        },
    });

    // S6: equal latency, concurrency limits 10 vs 100.
    let backends: Vec<Spec> = (0..10)
        .map(|i| Spec::uniform(100.0, 200.0, if i < 5 { 10 } else { 100 }))
        .collect();
    list.push(Scenario {
        id: "S6",
        title: "equal latency, different capacity",
        setup: "10 backends, latency uniform in [100, 200] ms; b0-b4 limit 10, b5-b9 limit \
                100; 2000 rps (55% of capacity)"
            .into(),
        rate: 2000.0,
        backends,
        initial: all(10),
        events: vec![],
        bad: Bad {
            backends: vec![0, 1, 2, 3, 4],
            from: 0.0,
            to: 60.0,
            label: "the five limit-10 ones, whole run",
        },
    });
    list
}

// ===== Simulated backends and client =====

#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client timeout")
    }
}

impl std::error::Error for TimedOut {}

#[derive(Debug)]
struct UnknownBackend;

impl std::fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no such backend")
    }
}

impl std::error::Error for UnknownBackend {}

struct Backend {
    spec: Spec,
    slots: Arc<Semaphore>,
    rng: Mutex<fastrand::Rng>,
}

struct World {
    start: Instant,
    backends: Vec<Backend>,
    /// Requests that reached each backend, per second of the run.
    sends: Mutex<Vec<Vec<u32>>>,
}

/// A request in service keeps its backend's slot until its service time is over, even if
/// the client gave up.
struct Hold {
    permit: Option<OwnedSemaphorePermit>,
    until: Instant,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        if Instant::now() >= self.until {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let until = self.until;
            runtime.spawn(async move {
                tokio::time::sleep_until(until).await;
                drop(permit);
            });
        }
    }
}

impl World {
    fn secs(&self) -> f64 {
        Instant::now().duration_since(self.start).as_secs_f64()
    }

    /// One exchange with backend `index` through the client: its answer, or the client's
    /// timeout error after [`TIMEOUT`].
    async fn exchange(self: Arc<Self>, index: usize) -> Result<Response<String>> {
        if index >= self.backends.len() {
            return Err(Box::new(UnknownBackend));
        }
        match tokio::time::timeout(TIMEOUT, self.serve(index)).await {
            Ok(response) => Ok(response),
            Err(_) => Err(Box::new(TimedOut)),
        }
    }

    async fn serve(&self, index: usize) -> Response<String> {
        let backend = &self.backends[index];
        {
            let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
            let row = &mut sends[index];
            let second = (self.secs() as usize).min(row.len() - 1);
            row[second] += 1;
        }
        let fails = backend.spec.fail > 0.0
            && backend.rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < backend.spec.fail;
        if fails {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        let Ok(permit) = Arc::clone(&backend.slots).acquire_owned().await else {
            unreachable!("the semaphore is never closed");
        };
        let began = Instant::now();
        let (lo, hi) = backend.spec.bounds(self.secs());
        let draw = backend.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        let until = began + Duration::from_secs_f64((lo + (hi - lo) * draw) / 1000.0);
        let _hold = Hold {
            permit: Some(permit),
            until,
        };
        tokio::time::sleep_until(until).await;
        Response::new(String::new())
    }
}

/// The HTTP client of proxflow's balancer: sends to the backend named by the URI
/// (`http://b3:80` is backend 3).
#[derive(Clone)]
struct SimClient {
    world: Arc<World>,
}

type ExchangeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<String>>> + Send + 'static>>;

impl Service<Request<String>> for SimClient {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = ExchangeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let index = request
            .uri()
            .host()
            .and_then(|host| host.strip_prefix('b'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        Box::pin(Arc::clone(&self.world).exchange(index))
    }
}

/// One endpoint of tower's balancer: the same client, bound to one backend.
#[derive(Clone)]
struct SimEndpoint {
    world: Arc<World>,
    index: usize,
}

impl Service<Request<String>> for SimEndpoint {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = ExchangeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        Box::pin(Arc::clone(&self.world).exchange(self.index))
    }
}

/// tower's p2c with a seeded generator, through tower's own `Rng` trait.
struct SeededRng(fastrand::Rng);

impl tower::util::rng::Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }
}

// ===== Balancers =====

#[derive(Clone, Debug)]
enum Kind {
    Proxflow { policy: Policy, ejection: bool },
    TowerPeakEwma,
    TowerPending,
}

#[derive(Clone, Debug)]
struct Contender {
    name: String,
    kind: Kind,
}

fn contenders(args: &Args) -> Vec<Contender> {
    let adaptive = |load| {
        Policy::Adaptive(AdaptiveConfig {
            history_length: 10,
            update_interval: Duration::from_millis(args.update_interval_ms),
            alpha: args.alpha,
            load,
            failure_penalty: args.failure_penalty,
        })
    };
    let classic: Vec<(&str, Policy)> = vec![
        ("round_robin", Policy::RoundRobin),
        ("random", Policy::Random),
        ("least_request", Policy::LeastRequest),
        ("peak_ewma", Policy::PeakEwma { decay: DECAY }),
    ];
    let adaptive: Vec<(&str, Policy)> = vec![
        ("adaptive/requests", adaptive(LoadMetric::Requests)),
        ("adaptive/concurrency", adaptive(LoadMetric::Concurrency)),
        ("adaptive/latency", adaptive(LoadMetric::Latency)),
    ];
    let proxflow = |name: &str, policy: &Policy, ejection: bool| Contender {
        name: if ejection {
            format!("{name} +ejection")
        } else {
            name.to_string()
        },
        kind: Kind::Proxflow {
            policy: policy.clone(),
            ejection,
        },
    };
    let mut list: Vec<Contender> = classic
        .iter()
        .map(|(name, policy)| proxflow(name, policy, false))
        .collect();
    list.push(Contender {
        name: "tower p2c PeakEwma".into(),
        kind: Kind::TowerPeakEwma,
    });
    list.push(Contender {
        name: "tower p2c PendingRequests".into(),
        kind: Kind::TowerPending,
    });
    for ejection in [false, true] {
        if ejection {
            list.extend(
                classic
                    .iter()
                    .map(|(name, policy)| proxflow(name, policy, true)),
            );
        }
        list.extend(
            adaptive
                .iter()
                .map(|(name, policy)| proxflow(name, policy, ejection)),
        );
    }
    if !args.policies.is_empty() {
        list.retain(|c| args.policies.iter().any(|p| c.name.contains(p.as_str())));
    }
    list
}

type Client = BoxCloneService<Request<String>, StatusCode, BoxError>;
type Discovered = std::result::Result<Change<usize, SimEndpoint>, Infallible>;

/// How the run adds and removes backends.
enum Control {
    Proxflow(LbHandle),
    Tower(mpsc::UnboundedSender<Discovered>),
}

fn url(i: usize) -> String {
    format!("http://b{i}:80")
}

fn build(
    kind: &Kind,
    world: &Arc<World>,
    scenario: &Scenario,
    seed: u64,
) -> Result<(Client, Control)> {
    if let Kind::Proxflow { policy, ejection } = kind {
        let urls = scenario.initial.iter().map(|&i| url(i).parse::<Upstream>());
        let mut layer = AdaptiveLb::new(urls.collect::<std::result::Result<Vec<_>, _>>()?)
            .policy(policy.clone())
            .seed(seed)
            .clock(Clock::tokio());
        if !ejection {
            layer = layer.passive_health(PassiveHealth {
                consecutive_failures: 0,
                ..PassiveHealth::default()
            });
        }
        let handle = layer.handle();
        let service = ServiceBuilder::new().layer(layer).service(SimClient {
            world: Arc::clone(world),
        });
        // The balancer never fails (it answers 502/503 itself): its error is `Infallible`.
        let client = BoxCloneService::new(
            service
                .map_response(|r| r.status())
                .map_err(|never| match never {}),
        );
        return Ok((client, Control::Proxflow(handle)));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Discovered>();
    for &index in &scenario.initial {
        let endpoint = SimEndpoint {
            world: Arc::clone(world),
            index,
        };
        tx.send(Ok(Change::Insert(index, endpoint)))?;
    }
    let discover = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let rng = SeededRng(fastrand::Rng::with_seed(seed));
    let client = match kind {
        Kind::TowerPeakEwma => {
            let discover = PeakEwmaDiscover::new::<Request<String>>(
                discover,
                TOWER_DEFAULT_RTT,
                DECAY,
                CompleteOnResponse::default(),
            );
            let balance = Balance::from_rng(discover, rng);
            BoxCloneService::new(Buffer::new(balance, 1 << 20).map_response(|r| r.status()))
        }
        _ => {
            let discover = PendingRequestsDiscover::new::<Request<String>>(
                discover,
                CompleteOnResponse::default(),
            );
            let balance = Balance::from_rng(discover, rng);
            BoxCloneService::new(Buffer::new(balance, 1 << 20).map_response(|r| r.status()))
        }
    };
    Ok((client, Control::Tower(tx)))
}

// ===== One run =====

#[derive(Clone, Copy)]
struct Record {
    latency_us: u32,
    ok: bool,
    timed_out: bool,
}

#[derive(Clone, Debug)]
struct RunResult {
    p50: f64,
    p99: f64,
    p999: f64,
    errors: f64,
    timeouts: f64,
    bad_share: f64,
    fair_share: f64,
    /// Seconds after the bad period starts; `None`: never.
    settle: Option<f64>,
}

fn run(scenario: &Scenario, contender: &Contender, seed: u64, duration: f64) -> Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let (records, sends) = runtime.block_on(simulate(scenario, &contender.kind, seed, duration))?;
    drop(runtime);
    Ok(summarize(scenario, records, &sends, duration))
}

async fn simulate(
    scenario: &Scenario,
    kind: &Kind,
    seed: u64,
    duration: f64,
) -> Result<(Vec<Record>, Vec<Vec<u32>>)> {
    let start = Instant::now();
    let seconds = duration as usize + 3;
    let world = Arc::new(World {
        start,
        backends: scenario
            .backends
            .iter()
            .enumerate()
            .map(|(i, spec)| Backend {
                spec: spec.clone(),
                slots: Arc::new(Semaphore::new(spec.limit)),
                rng: Mutex::new(fastrand::Rng::with_seed(
                    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64 + 1),
                )),
            })
            .collect(),
        sends: Mutex::new(vec![vec![0; seconds]; scenario.backends.len()]),
    });
    let (client, control) = build(kind, &world, scenario, seed)?;
    let control = Arc::new(control);

    let events = scenario.events.clone();
    let control_task = Arc::clone(&control);
    let world_task = Arc::clone(&world);
    tokio::spawn(async move {
        for (at, event) in events {
            tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
            match (&*control_task, event) {
                (Control::Proxflow(handle), Event::Remove(i)) => {
                    handle.remove(&url(i));
                }
                (Control::Proxflow(handle), Event::Add(i)) => {
                    if let Ok(upstream) = url(i).parse::<Upstream>() {
                        handle.add(upstream);
                    }
                }
                (Control::Tower(tx), Event::Remove(i)) => {
                    let _ = tx.send(Ok(Change::Remove(i)));
                }
                (Control::Tower(tx), Event::Add(i)) => {
                    let endpoint = SimEndpoint {
                        world: Arc::clone(&world_task),
                        index: i,
                    };
                    let _ = tx.send(Ok(Change::Insert(i, endpoint)));
                }
            }
        }
    });

    let expected = (scenario.rate * duration * 1.05) as usize;
    let records = Arc::new(Mutex::new(Vec::with_capacity(expected)));
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x00a1_1fe5_0000_0000);
    let uri = Uri::from_static("http://service/");
    let mut t = 0.0;
    loop {
        t += -(1.0 - rng.f64()).ln() / scenario.rate;
        if t >= duration {
            break;
        }
        let scheduled = start + Duration::from_secs_f64(t);
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled).await;
        }
        let client = client.clone();
        let records = Arc::clone(&records);
        let mut request = Request::new(String::new());
        *request.uri_mut() = uri.clone();
        tokio::spawn(async move {
            // A little grace: the client's own timeout (from its send) answers first.
            let deadline = scheduled + TIMEOUT + Duration::from_millis(5);
            let outcome = tokio::time::timeout_at(deadline, client.oneshot(request)).await;
            let latency = Instant::now().saturating_duration_since(scheduled);
            let timed_out = latency >= TIMEOUT;
            let ok = !timed_out && matches!(outcome, Ok(Ok(status)) if status.is_success());
            let record = Record {
                latency_us: latency.min(TIMEOUT).as_micros() as u32,
                ok,
                timed_out,
            };
            records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record);
        });
    }
    // Every request is answered or timed out by then.
    tokio::time::sleep(TIMEOUT + Duration::from_millis(50)).await;
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    let sends = world
        .sends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((records, sends))
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn summarize(
    scenario: &Scenario,
    records: Vec<Record>,
    sends: &[Vec<u32>],
    duration: f64,
) -> RunResult {
    let n = records.len().max(1) as f64;
    let errors = records.iter().filter(|r| !r.ok).count() as f64 / n;
    let timeouts = records.iter().filter(|r| r.timed_out).count() as f64 / n;
    let mut latencies: Vec<u32> = records.iter().map(|r| r.latency_us).collect();
    latencies.sort_unstable();

    let bad = &scenario.bad;
    let first = bad.from.floor() as usize;
    let last = (bad.to.min(duration).ceil() as usize).max(first + 1);
    let mut below = Vec::new();
    let (mut bad_sends, mut all_sends, mut fair_sum) = (0u64, 0u64, 0.0);
    for second in first..last {
        let all: u64 = sends.iter().map(|row| u64::from(row[second])).sum();
        let to_bad: u64 = bad
            .backends
            .iter()
            .map(|&i| u64::from(sends[i][second]))
            .sum();
        let fair = scenario.fair_share(second as f64 + 0.5);
        fair_sum += fair;
        bad_sends += to_bad;
        all_sends += all;
        if all > 0 {
            below.push((to_bad as f64 / all as f64) < 2.0 * fair);
        } else {
            below.push(true);
        }
    }
    let settle = if below.last().copied().unwrap_or(true) {
        let settled_from = below.iter().rposition(|b| !b).map_or(0, |i| i + 1);
        Some(((first + settled_from) as f64 - bad.from).max(0.0))
    } else {
        None
    };
    RunResult {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        errors,
        timeouts,
        bad_share: bad_sends as f64 / all_sends.max(1) as f64,
        fair_share: fair_sum / (last - first) as f64,
        settle,
    }
}

// ===== Aggregation and report =====

/// The median and the worst of one figure over the seeds.
#[derive(Clone, Copy, Debug)]
struct Figure {
    median: f64,
    worst: f64,
}

fn figure(values: impl Iterator<Item = f64>) -> Figure {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Figure {
        median,
        worst: v.last().copied().unwrap_or(f64::NAN),
    }
}

#[derive(Clone, Debug)]
struct Summary {
    p50: Figure,
    p99: Figure,
    p999: Figure,
    errors: Figure,
    timeouts: Figure,
    bad_share: Figure,
    fair_share: f64,
    /// Median settle time (infinite: never), and in how many runs it never settled.
    settle: Figure,
    never: usize,
    runs: usize,
}

fn summary(runs: &[RunResult]) -> Summary {
    Summary {
        p50: figure(runs.iter().map(|r| r.p50)),
        p99: figure(runs.iter().map(|r| r.p99)),
        p999: figure(runs.iter().map(|r| r.p999)),
        errors: figure(runs.iter().map(|r| r.errors)),
        timeouts: figure(runs.iter().map(|r| r.timeouts)),
        bad_share: figure(runs.iter().map(|r| r.bad_share)),
        fair_share: runs.first().map_or(f64::NAN, |r| r.fair_share),
        settle: figure(runs.iter().map(|r| r.settle.unwrap_or(f64::INFINITY))),
        never: runs.iter().filter(|r| r.settle.is_none()).count(),
        runs: runs.len(),
    }
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn pct(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value == 0.0 {
        "0".into()
    } else if value < 0.001 {
        format!("{:.3}%", value * 100.0)
    } else {
        format!("{:.2}%", value * 100.0)
    }
}

fn settle_text(s: &Summary) -> String {
    let median = if s.settle.median.is_finite() {
        format!("{:.0} s", s.settle.median)
    } else {
        "never".into()
    };
    if s.never == s.runs {
        format!("never ({}/{})", s.never, s.runs)
    } else if s.never > 0 {
        format!("{median} (never in {}/{})", s.never, s.runs)
    } else {
        median
    }
}

type Results = BTreeMap<(usize, usize), Summary>;

struct Check {
    text: String,
    scenario: usize,
    /// p99 or errors; against which contender; allowed ratio; strict.
    metric: Metric,
    baseline: Baseline,
}

#[derive(Clone, Copy)]
enum Metric {
    /// Median p99 at most `ratio` times the baseline's.
    P99AtMost(f64),
    /// Median error rate lower than the baseline's.
    ErrorsBelow,
}

#[derive(Clone, Copy)]
enum Baseline {
    TowerPeakEwma,
    /// Round robin of the same family (with or without ejection).
    RoundRobin,
}

fn checks(scenarios: &[Scenario]) -> Vec<Check> {
    let index = |id: &str| scenarios.iter().position(|s| s.id == id);
    let mut list = Vec::new();
    for id in ["S1", "S2", "S3", "S6"] {
        if let Some(scenario) = index(id) {
            list.push(Check {
                text: format!("{id}: p99 <= tower PeakEwma's"),
                scenario,
                metric: Metric::P99AtMost(1.0),
                baseline: Baseline::TowerPeakEwma,
            });
        }
    }
    if let Some(scenario) = index("S4") {
        list.push(Check {
            text: "S4: error rate < tower PeakEwma's".into(),
            scenario,
            metric: Metric::ErrorsBelow,
            baseline: Baseline::TowerPeakEwma,
        });
    }
    for id in ["S1", "S2"] {
        if let Some(scenario) = index(id) {
            list.push(Check {
                text: format!("{id}: p99 <= 1/2 round robin's"),
                scenario,
                metric: Metric::P99AtMost(0.5),
                baseline: Baseline::RoundRobin,
            });
        }
    }
    list
}

/// "PASS (120 vs 318)" for one adaptive contender and one check, or `None` if a figure is
/// missing.
fn verdict(
    check: &Check,
    candidate: usize,
    contenders: &[Contender],
    results: &Results,
) -> Option<(bool, String)> {
    let ejection = contenders[candidate].name.ends_with("+ejection");
    let baseline_name = match check.baseline {
        Baseline::TowerPeakEwma => "tower p2c PeakEwma".to_string(),
        Baseline::RoundRobin if ejection => "round_robin +ejection".to_string(),
        Baseline::RoundRobin => "round_robin".to_string(),
    };
    let baseline = contenders.iter().position(|c| c.name == baseline_name)?;
    let mine = results.get(&(check.scenario, candidate))?;
    let theirs = results.get(&(check.scenario, baseline))?;
    Some(match check.metric {
        Metric::P99AtMost(ratio) => {
            let bound = ratio * theirs.p99.median;
            // Differences below the timer's resolution are not measured: a tie.
            let tie = mine.p99.median > bound && mine.p99.median <= bound + RESOLUTION_MS;
            let pass = mine.p99.median <= bound + RESOLUTION_MS;
            let bound = if ratio == 1.0 {
                format!("{:.1}", theirs.p99.median)
            } else {
                format!("{:.1} x {ratio}", theirs.p99.median)
            };
            let cap = TIMEOUT.as_secs_f64() * 1000.0;
            let capped = mine.p99.median >= cap && theirs.p99.median >= cap;
            let verdict = match (pass, tie, capped) {
                (true, _, true) => "PASS (both at the 1 s timeout)",
                (true, false, _) => "PASS",
                (true, true, _) => "PASS (tie within 1 ms)",
                _ => "FAIL",
            };
            (
                pass,
                format!("{verdict} ({:.1} vs {bound} ms)", mine.p99.median),
            )
        }
        Metric::ErrorsBelow => {
            let pass = mine.errors.median < theirs.errors.median;
            (
                pass,
                format!(
                    "{} ({} vs {})",
                    if pass { "PASS" } else { "FAIL" },
                    pct(mine.errors.median),
                    pct(theirs.errors.median)
                ),
            )
        }
    })
}

fn report(
    args: &Args,
    scenarios: &[Scenario],
    contenders: &[Contender],
    results: &Results,
    svg_name: &str,
    elapsed: Duration,
) -> String {
    let mut md = String::new();
    // The program's name without the build directory, and its arguments.
    let command: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 {
                "target/release/lb_simulation".to_string()
            } else {
                arg
            }
        })
        .collect();
    let _ = writeln!(
        md,
        "### Load balancing: proxflow-lb vs tower's p2c, simulated (issue 5)\n"
    );
    let _ = writeln!(
        md,
        "Command: `{}` ({}; {} seeds per scenario and policy, {} s runs, {:.0} s of wall \
         time).\n",
        command.join(" "),
        proxflow_benches::utc_now(),
        args.seeds,
        args.duration,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Model (benches/simulation/src/main.rs): every run is a current-thread tokio \
         runtime with paused time (deterministic per seed; tokio's timers round every latency \
         up to the next millisecond); open-loop Poisson arrivals, each request a task at its \
         scheduled time, latency measured from that time; backends in the process, reached \
         through a client service with a 1 s timeout (the balancers see a timeout as a \
         client error after 1 s; it counts as 1000 ms and as an error); a backend queues \
         requests beyond its concurrency limit (FIFO; a queued request whose client gave up \
         leaves the queue, one in service keeps its slot to the end). Percentiles are over \
         every request, errors included; figures are medians over the seeds, \"worst\" the \
         worst seed. proxflow-lb runs through `AdaptiveLb` over the client service; the \
         adaptive policy with `update_interval {}ms`, `history_length 10`, `alpha {}`, \
         `failure_penalty {}` (the default interval, 1 min, would allow a single update \
         in S2's 30 s bad period). tower 0.5's `p2c::Balance` (seeded through tower's `Rng` \
         trait) over `PeakEwmaDiscover` (default RTT 30 ms and decay 10 s, as in tower's \
         balance example) or `PendingRequestsDiscover`, behind a `Buffer`. Plain proxflow \
         names have passive ejection off (the policy alone, like tower); `+ejection` is the \
         layer's defaults (5 failures in a row eject an upstream for 30 s; slow start 30 s \
         applies to both).\n",
        args.update_interval_ms, args.alpha, args.failure_penalty
    );
    let _ = writeln!(
        md,
        "| scenario | setup | watched backend | its fair share |\n|---|---|---|--:|"
    );
    for s in scenarios {
        let fair = results
            .iter()
            .find(|((i, _), _)| scenarios[*i].id == s.id)
            .map_or(f64::NAN, |(_, r)| r.fair_share);
        let _ = writeln!(
            md,
            "| {} {} | {} | {} | {} |",
            s.id,
            s.title,
            s.setup,
            s.bad.label,
            pct(fair)
        );
    }
    let _ = writeln!(
        md,
        "\nFair share: the backend's share of the pool's capacity (limit x success ratio / \
         mean latency) at that moment. Settle: seconds after the watched period starts until \
         the backend's share of each 1 s window stays below twice its fair share to the end \
         of the period.\n"
    );

    // Matrices.
    for (title, value) in [
        ("p99 latency, ms (median over seeds)", 0),
        ("error rate (median over seeds)", 1),
    ] {
        let _ = writeln!(md, "**{title}**\n");
        let mut header = "| policy |".to_string();
        let mut rule = "|---|".to_string();
        for s in scenarios {
            let _ = write!(header, " {} |", s.id);
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for (c, contender) in contenders.iter().enumerate() {
            let mut row = format!("| {} |", contender.name);
            for (s, _) in scenarios.iter().enumerate() {
                let cell = results.get(&(s, c)).map_or("-".into(), |r| {
                    if value == 0 {
                        ms(r.p99.median)
                    } else {
                        pct(r.errors.median)
                    }
                });
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "![p99 latency and error rate per policy and scenario]({svg_name})\n"
    );

    // Targets.
    let adaptive: Vec<usize> = contenders
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("adaptive/"))
        .map(|(i, _)| i)
        .collect();
    let checks = checks(scenarios);
    if !adaptive.is_empty() && !checks.is_empty() {
        let _ = writeln!(
            md,
            "**Targets** (medians over seeds; `+ejection` variants are compared with round \
             robin +ejection; a p99 within 1 ms of the bound, the timer's resolution, is a \
             tie and passes, marked as such)\n"
        );
        let mut header = "| target |".to_string();
        let mut rule = "|---|".to_string();
        for &a in &adaptive {
            let _ = write!(header, " {} |", contenders[a].name);
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        let mut passes = vec![0usize; adaptive.len()];
        for check in &checks {
            let mut row = format!("| {} |", check.text);
            for (k, &a) in adaptive.iter().enumerate() {
                let cell = match verdict(check, a, contenders, results) {
                    Some((pass, text)) => {
                        passes[k] += usize::from(pass);
                        text
                    }
                    None => "-".into(),
                };
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(md, "{row}");
        }
        let mut row = "| **passed** |".to_string();
        for p in &passes {
            let _ = write!(row, " **{p}/{}** |", checks.len());
        }
        let _ = writeln!(md, "{row}");
        // Over every scenario: how far from tower's PeakEwma on p99, and the errors.
        let peak = contenders
            .iter()
            .position(|c| c.name == "tower p2c PeakEwma");
        let mut ratios = "| geometric mean of p99 / tower PeakEwma's, all scenarios |".to_string();
        let mut errors = "| mean error rate, all scenarios |".to_string();
        for &a in &adaptive {
            let mut logs = Vec::new();
            let mut errs = Vec::new();
            for s in 0..scenarios.len() {
                if let Some(mine) = results.get(&(s, a)) {
                    errs.push(mine.errors.median);
                    if let Some(theirs) = peak.and_then(|p| results.get(&(s, p))) {
                        logs.push((mine.p99.median / theirs.p99.median).ln());
                    }
                }
            }
            let geomean = (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp();
            let _ = write!(ratios, " {geomean:.2} |");
            let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
            let _ = write!(errors, " {} |", pct(mean));
        }
        if peak.is_some() {
            let _ = writeln!(md, "{ratios}");
        }
        let _ = writeln!(md, "{errors}\n");
    }

    // Details.
    for (s, scenario) in scenarios.iter().enumerate() {
        let _ = writeln!(
            md,
            "**{} {}** ({}). Watched: {}.\n",
            scenario.id, scenario.title, scenario.setup, scenario.bad.label
        );
        let _ = writeln!(
            md,
            "| policy | p50 ms | p99 ms | p99.9 ms | errors | of which timeouts | watched \
             share | 2x fair | settle | worst p99 ms | worst errors |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for (c, contender) in contenders.iter().enumerate() {
            let Some(r) = results.get(&(s, c)) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                contender.name,
                ms(r.p50.median),
                ms(r.p99.median),
                ms(r.p999.median),
                pct(r.errors.median),
                pct(r.timeouts.median),
                pct(r.bad_share.median),
                pct(2.0 * r.fair_share),
                settle_text(r),
                ms(r.p99.worst),
                pct(r.errors.worst),
            );
        }
        let _ = writeln!(md);
    }
    md
}

// ===== SVG =====

/// A policy's colour in the plot: its `+ejection` variant gets the lighter shade.
fn colour(name: &str) -> &'static str {
    let ejection = name.ends_with(" +ejection");
    let (dark, light) = match name.trim_end_matches(" +ejection") {
        "round_robin" => ("#1f77b4", "#aec7e8"),
        "random" => ("#ff7f0e", "#ffbb78"),
        "least_request" => ("#2ca02c", "#98df8a"),
        "peak_ewma" => ("#9467bd", "#c5b0d5"),
        "adaptive/requests" => ("#8c564b", "#c49c94"),
        "adaptive/concurrency" => ("#e377c2", "#f7b6d2"),
        "adaptive/latency" => ("#d62728", "#ff9896"),
        "tower p2c PeakEwma" => ("#111111", "#111111"),
        "tower p2c PendingRequests" => ("#7f7f7f", "#7f7f7f"),
        _ => ("#17becf", "#9edae5"),
    };
    if ejection {
        light
    } else {
        dark
    }
}

/// One panel of the plot: a log scale from `min` to `max`.
struct Panel {
    title: &'static str,
    min: f64,
    max: f64,
    ticks: Vec<(f64, String)>,
    /// Error rates (else p99 latencies).
    errors: bool,
}

/// Two panels of grouped bars on log scales: p99 (1..1000 ms) and error rate
/// (0.01%..100%), a group per scenario, a bar per policy.
fn svg(scenarios: &[Scenario], contenders: &[Contender], results: &Results) -> String {
    let bar = 9.0;
    let gap = 24.0;
    let left = 70.0;
    let group = bar * contenders.len() as f64 + gap;
    let width = left + group * scenarios.len() as f64 + 20.0;
    let panel_height = 230.0;
    let legend_rows = contenders.len().div_ceil(3);
    let height = 40.0 + 2.0 * (panel_height + 60.0) + 18.0 * legend_rows as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">proxflow-lb vs tower p2c: median over seeds (log scales)</text>"#
    );
    let panels = [
        Panel {
            title: "p99 latency (ms)",
            min: 1.0,
            max: 1000.0,
            ticks: [1.0, 10.0, 100.0, 1000.0]
                .iter()
                .map(|&v| (v, format!("{v}")))
                .collect(),
            errors: false,
        },
        Panel {
            title: "error rate",
            min: 1e-5,
            max: 1.0,
            ticks: [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
                .iter()
                .map(|&v| (v, pct(v)))
                .collect(),
            errors: true,
        },
    ];
    for (p, panel) in panels.iter().enumerate() {
        let Panel {
            title,
            min,
            max,
            ticks,
            errors,
        } = panel;
        let top = 40.0 + p as f64 * (panel_height + 60.0);
        let bottom = top + panel_height;
        let y = |v: f64| {
            let f = (v.clamp(*min, *max).log10() - min.log10()) / (max.log10() - min.log10());
            bottom - f * (panel_height - 10.0)
        };
        let _ = writeln!(
            out,
            r#"<text x="{left}" y="{:.0}" font-size="12">{title}</text>"#,
            top - 4.0
        );
        for (v, label) in ticks {
            let ty = y(*v);
            let _ = writeln!(
                out,
                r##"<line x1="{left}" x2="{:.0}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}</text>"##,
                width - 20.0,
                left - 4.0,
                ty + 4.0
            );
        }
        for (s, scenario) in scenarios.iter().enumerate() {
            let x0 = left + gap / 2.0 + s as f64 * group;
            for (c, _) in contenders.iter().enumerate() {
                let Some(r) = results.get(&(s, c)) else {
                    continue;
                };
                let value = if *errors {
                    r.errors.median
                } else {
                    r.p99.median
                };
                let x = x0 + c as f64 * bar;
                if value <= 0.0 || value.is_nan() {
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="2" fill="{}"/>"#,
                        bottom - 2.0,
                        bar - 1.0,
                        colour(&contenders[c].name)
                    );
                    continue;
                }
                let ty = y(value);
                let _ = writeln!(
                    out,
                    r#"<rect x="{x:.1}" y="{ty:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                    bar - 1.0,
                    (bottom - ty).max(1.0),
                    colour(&contenders[c].name),
                    scenario.id,
                    contenders[c].name,
                    if *errors {
                        pct(value)
                    } else {
                        format!("{} ms", ms(value))
                    }
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
                x0 + bar * contenders.len() as f64 / 2.0,
                bottom + 16.0,
                scenario.id
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{:.0}" y1="{bottom}" y2="{bottom}" stroke="#333"/>"##,
            width - 20.0
        );
    }
    let legend_top = 40.0 + 2.0 * (panel_height + 60.0);
    let column = (width - left) / 3.0;
    for (c, contender) in contenders.iter().enumerate() {
        let x = left + (c % 3) as f64 * column;
        let y = legend_top + (c / 3) as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            y - 10.0,
            colour(&contenders[c].name),
            x + 16.0,
            y,
            contender.name
        );
    }
    out.push_str("</svg>\n");
    out
}

// ===== main =====

fn main() {
    if let Err(error) = real_main(Args::parse()) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<()> {
    let wall = std::time::Instant::now();
    let scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| {
            args.scenarios
                .iter()
                .any(|id| id.eq_ignore_ascii_case(s.id))
        })
        .collect();
    if scenarios.is_empty() {
        return Err("no scenario selected (S1..S6)".into());
    }
    let contenders = contenders(&args);
    if contenders.is_empty() {
        return Err("no policy selected".into());
    }
    let duration = f64::from(args.duration);
    let mut jobs = Vec::new();
    for s in 0..scenarios.len() {
        for c in 0..contenders.len() {
            for seed in 1..=args.seeds {
                jobs.push((s, c, seed));
            }
        }
    }
    // The heaviest scenarios first, so that the threads finish together.
    jobs.sort_by(|a, b| scenarios[b.0].rate.total_cmp(&scenarios[a.0].rate));
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Result<RunResult>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(s, c, seed)) = jobs.get(i) else {
                    break;
                };
                let outcome = run(&scenarios[s], &contenders[c], seed, duration);
                outcomes.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprint!(
                    "\r{finished}/{} runs ({} {} seed {seed})          ",
                    jobs.len(),
                    scenarios[s].id,
                    contenders[c].name
                );
            });
        }
    });
    eprintln!();
    let mut runs: BTreeMap<(usize, usize), Vec<RunResult>> = BTreeMap::new();
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    for (&(s, c, _), outcome) in jobs.iter().zip(outcomes) {
        let result = outcome.ok_or("a run did not finish")??;
        runs.entry((s, c)).or_default().push(result);
    }
    let results: Results = runs.iter().map(|(&k, v)| (k, summary(v))).collect();

    let svg_path = args.svg.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb_simulation.svg")
    });
    std::fs::write(&svg_path, svg(&scenarios, &contenders, &results))?;
    let svg_name = svg_path
        .file_name()
        .map_or("lb_simulation.svg".into(), |n| {
            n.to_string_lossy().into_owned()
        });
    let md = report(
        &args,
        &scenarios,
        &contenders,
        &results,
        &svg_name,
        wall.elapsed(),
    );
    print!("{md}");
    if let Some(path) = &args.markdown {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(md.as_bytes())?;
    }
    eprintln!("plot written to {}", svg_path.display());
    Ok(())
}
