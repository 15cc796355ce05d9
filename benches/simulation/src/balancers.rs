//! The balancers under test: proxflow-lb's policies through `AdaptiveLb`, and tower's p2c
//! balancers, each built over the simulated client.

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

use crate::backends::{BoxError, Result, SimClient, SimEndpoint, World};
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
    Proxflow { policy: Policy, ejection: bool },
    TowerPeakEwma,
    TowerPending,
}

/// A balancer under test, by its name in the report.
#[derive(Clone, Debug)]
pub struct Contender {
    pub name: String,
    pub kind: Kind,
}

/// The contenders in the report's order, kept to those `--policies` names.
pub fn contenders(args: &Args) -> Vec<Contender> {
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

/// A balancer over the simulated client, answering with the status only.
pub type Client = BoxCloneService<Request<String>, StatusCode, BoxError>;
type Discovered = std::result::Result<Change<usize, SimEndpoint>, Infallible>;

/// How the run adds and removes backends.
pub enum Control {
    Proxflow(LbHandle),
    Tower(mpsc::UnboundedSender<Discovered>),
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
            (Control::Tower(tx), Event::Remove(i)) => {
                let _ = tx.send(Ok(Change::Remove(i)));
            }
            (Control::Tower(tx), Event::Add(i)) => {
                let endpoint = SimEndpoint {
                    world: Arc::clone(world),
                    index: i,
                };
                let _ = tx.send(Ok(Change::Insert(i, endpoint)));
            }
        }
    }
}

/// Backend `i`'s URL: the simulated client sends to the backend it names.
fn url(i: usize) -> String {
    format!("http://b{i}:80")
}

/// The balancer of `kind` over the scenario's initial backends, and what changes its pool.
pub fn build(
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
