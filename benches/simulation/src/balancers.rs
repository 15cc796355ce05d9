//! The balancers under test: proxflow-lb's policies through `AdaptiveLb` (its layer over the
//! simulated client, or its generic form over one tower service per backend), and tower's p2c
//! balancers over the same services.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use proxflow_lb::{
    AdaptiveConfig, AdaptiveLb, Clock, LbHandle, LoadMetric, PassiveHealth, Policy, Upstream,
};
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

use crate::backends::{BoxError, Placement, Result, SimClient, SimEndpoint, World};
use crate::cli::Args;
use crate::scenarios::{Event, Scenario};

/// tower's balance example: the RTT assumed for an endpoint before its first answer.
const TOWER_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// tower's balance example and proxflow's default: the decay of the peak-EWMA estimate.
const DECAY: Duration = Duration::from_secs(10);

/// tower's p2c with a seeded generator, through tower's own `Rng` trait.
struct SeededRng(fastrand::Rng);

impl tower::util::rng::Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }
}

/// Which balancer a contender is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// proxflow-lb with `policy`: the policy alone (no passive ejection, no retry), or with
    /// the layer's defaults (`ejection`: 5 failures in a row eject an upstream for 30 s, and a
    /// refused connection is retried once on another upstream).
    Proxflow {
        policy: Policy,
        ejection: bool,
    },
    TowerPeakEwma,
    TowerPending,
}

/// A balancer under test with the timeout where `placement` says, by its name in the report.
#[derive(Clone, Debug)]
pub struct Contender {
    pub name: String,
    pub kind: Kind,
    pub placement: Placement,
}

/// The adaptive policy's settings: its defaults, with the exploration overrides of the
/// command line.
pub fn adaptive_config(args: &Args) -> AdaptiveConfig {
    let defaults = AdaptiveConfig::default();
    AdaptiveConfig {
        update_interval: args
            .update_interval_ms
            .map_or(defaults.update_interval, Duration::from_millis),
        alpha: args.alpha.unwrap_or(defaults.alpha),
        ..defaults
    }
}

/// Every balancer, in the report's order, and whether it runs when `--policies` does not
/// name it.
fn balancers(args: &Args) -> Vec<(String, Kind, bool)> {
    let config = adaptive_config(args);
    let adaptive = |load| {
        Policy::Adaptive(AdaptiveConfig {
            load,
            ..config.clone()
        })
    };
    let classic = [
        ("round_robin", Policy::RoundRobin),
        ("random", Policy::Random),
        ("least_request", Policy::LeastRequest),
        ("peak_ewma", Policy::PeakEwma { decay: DECAY }),
    ];
    // The default load metric, then the others, which only run when named.
    let adaptive = [
        ("adaptive", adaptive(config.load), true),
        ("adaptive/requests", adaptive(LoadMetric::Requests), false),
        (
            "adaptive/concurrency",
            adaptive(LoadMetric::Concurrency),
            false,
        ),
    ];
    let proxflow = |name: &str, policy: &Policy, ejection: bool, default: bool| {
        let name = if ejection {
            format!("{name} +ejection")
        } else {
            name.to_string()
        };
        let policy = policy.clone();
        (name, Kind::Proxflow { policy, ejection }, default)
    };
    let mut list = Vec::new();
    for (name, policy) in &classic {
        list.push(proxflow(name, policy, false, true));
    }
    list.push(("tower p2c PeakEwma".into(), Kind::TowerPeakEwma, true));
    list.push(("tower p2c PendingRequests".into(), Kind::TowerPending, true));
    for (name, policy, default) in &adaptive {
        list.push(proxflow(name, policy, false, *default));
    }
    for (name, policy) in &classic {
        list.push(proxflow(name, policy, true, false));
    }
    for (name, policy, default) in &adaptive {
        list.push(proxflow(name, policy, true, *default));
    }
    list
}

/// The contenders, each balancer at each timeout placement: those `--policies` names, or the
/// default ones.
pub fn contenders(args: &Args) -> Vec<Contender> {
    let chosen: Vec<(String, Kind)> = balancers(args)
        .into_iter()
        .filter(|(name, _, default)| {
            if args.policies.is_empty() {
                *default
            } else {
                args.policies.iter().any(|p| name.contains(p.as_str()))
            }
        })
        .map(|(name, kind, _)| (name, kind))
        .collect();
    let mut list = Vec::new();
    for placement in args.placements() {
        for (name, kind) in &chosen {
            list.push(Contender {
                name: name.clone(),
                kind: kind.clone(),
                placement,
            });
        }
    }
    list
}

/// A balancer over the simulated client, answering with the status only.
pub type Client = BoxCloneService<Request<String>, StatusCode, BoxError>;
type Discovered = std::result::Result<Change<usize, SimEndpoint>, Infallible>;

/// How the run adds and removes backends.
pub enum Control {
    /// Through proxflow's handle.
    Proxflow(LbHandle),
    /// Through the `Discover` stream of a balancer over tower services.
    Discover(mpsc::UnboundedSender<Discovered>),
}

impl Control {
    /// Adds or removes a backend, as the scenario says at this moment.
    pub fn apply(&self, event: Event, world: &Arc<World>) {
        match (self, event) {
            (Control::Proxflow(handle), Event::Remove(i)) => {
                handle.remove(&url(i));
            }
            (Control::Proxflow(handle), Event::Add(i)) => {
                if let Ok(upstream) = url(i).parse::<Upstream>() {
                    handle.add(upstream);
                }
            }
            (Control::Discover(tx), Event::Remove(i)) => {
                let _ = tx.send(Ok(Change::Remove(i)));
            }
            (Control::Discover(tx), Event::Add(i)) => {
                let _ = tx.send(Ok(Change::Insert(i, SimEndpoint::new(world, i))));
            }
        }
    }
}

/// Backend `i`'s URL: the simulated client sends to the backend it names.
fn url(i: usize) -> String {
    format!("http://b{i}:80")
}

/// proxflow's layer with `policy`, alone or with its defaults (`ejection`), seeded and on
/// tokio's clock.
fn layer(policy: &Policy, ejection: bool, seed: u64, upstreams: Vec<Upstream>) -> AdaptiveLb {
    let layer = AdaptiveLb::new(upstreams)
        .policy(policy.clone())
        .seed(seed)
        .clock(Clock::tokio());
    if ejection {
        return layer;
    }
    layer.retries(0).passive_health(PassiveHealth {
        consecutive_failures: 0,
        ..PassiveHealth::default()
    })
}

/// The balancer of `kind` over the scenario's initial backends, and what changes its pool:
/// proxflow's layer over the client, or, for tower's balancers and in a scenario where a
/// backend can be not ready, a balancer over one tower service per backend.
pub fn build(
    kind: &Kind,
    world: &Arc<World>,
    scenario: &Scenario,
    seed: u64,
) -> Result<(Client, Control)> {
    if let Kind::Proxflow { policy, ejection } = kind {
        if !scenario.has_readiness() {
            let urls = scenario.initial.iter().map(|&i| url(i).parse::<Upstream>());
            let urls = urls.collect::<std::result::Result<Vec<_>, _>>()?;
            let layer = layer(policy, *ejection, seed, urls);
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
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Discovered>();
    for &index in &scenario.initial {
        tx.send(Ok(Change::Insert(index, SimEndpoint::new(world, index))))?;
    }
    let discover = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let rng = SeededRng(fastrand::Rng::with_seed(seed));
    // Each behind a `Buffer`, which makes it a cloneable service as the layer is.
    let client = match kind {
        Kind::Proxflow { policy, ejection } => {
            let balance =
                layer(policy, *ejection, seed, Vec::new()).balance::<_, Request<String>>(discover);
            BoxCloneService::new(Buffer::new(balance, 1 << 20).map_response(|r| r.status()))
        }
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
        Kind::TowerPending => {
            let discover = PendingRequestsDiscover::new::<Request<String>>(
                discover,
                CompleteOnResponse::default(),
            );
            let balance = Balance::from_rng(discover, rng);
            BoxCloneService::new(Buffer::new(balance, 1 << 20).map_response(|r| r.status()))
        }
    };
    Ok((client, Control::Discover(tx)))
}
