//! The generic form over a `Discover` stream: endpoints coming and going, a removal between
//! `poll_ready` and the next `poll_ready` (tower's stale-index fault), and an endpoint behind a
//! proxflow-breaker in readiness mode taken out while its breaker is open.

use std::convert::Infallible;
use std::time::Duration;

use proxflow_breaker::{CircuitBreakerLayer, State};
use proxflow_lb::{AdaptiveLb, Balance, BoxError, Clock, Health, Policy, Upstream};
use tokio::sync::mpsc;
use tower::discover::Change;
use tower::util::BoxService;
use tower::{Layer, Service, ServiceExt};

type Endpoint = BoxService<(), &'static str, BoxError>;
type Changes = mpsc::UnboundedSender<Change<&'static str, Endpoint>>;

fn answering(name: &'static str) -> Endpoint {
    BoxService::new(tower::service_fn(move |()| async move {
        Ok::<_, BoxError>(name)
    }))
}

/// A balancer over a channel of changes.
fn balancer(
    policy: Policy,
) -> (
    Balance<
        impl tower::discover::Discover<Key = &'static str, Service = Endpoint, Error = Infallible>
            + Unpin,
        (),
    >,
    Changes,
) {
    let (changes, mut receiver) = mpsc::unbounded_channel();
    let discover = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|change| change.map(Ok::<_, Infallible>))
    });
    let lb = AdaptiveLb::new(Vec::<Upstream>::new())
        .policy(policy)
        .seed(5)
        .clock(Clock::tokio());
    (lb.balance(discover), changes)
}

async fn send<D>(balance: &mut Balance<D, ()>) -> &'static str
where
    D: tower::discover::Discover<Key = &'static str, Service = Endpoint, Error = Infallible>
        + Unpin,
{
    balance.ready().await.unwrap().call(()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn endpoints_come_and_go_through_the_stream() {
    let (mut balance, changes) = balancer(Policy::RoundRobin);
    for name in ["a", "b", "c"] {
        changes.send(Change::Insert(name, answering(name))).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(send(&mut balance).await);
    }
    assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
    changes.send(Change::Remove("b")).unwrap();
    changes.send(Change::Insert("d", answering("d"))).unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(send(&mut balance).await);
    }
    assert!(!seen.contains(&"b"), "{seen:?}");
    assert!(seen.contains(&"d"), "{seen:?}");
    let names: Vec<String> = balance
        .handle()
        .snapshot()
        .upstreams
        .into_iter()
        .map(|u| u.upstream)
        .collect();
    assert_eq!(names, ["\"a\"", "\"c\"", "\"d\""]);
}

#[tokio::test(start_paused = true)]
async fn a_removal_after_poll_ready_never_sends_to_the_removed_endpoint() {
    let (mut balance, changes) = balancer(Policy::RoundRobin);
    changes.send(Change::Insert("a", answering("a"))).unwrap();
    changes.send(Change::Insert("b", answering("b"))).unwrap();
    // Ready, with "a" chosen (round robin starts there).
    std::future::poll_fn(|cx| balance.poll_ready(cx))
        .await
        .unwrap();
    // "a" leaves before the request is sent; tower's p2c would call whatever service took
    // its index. Here the next poll_ready forgets the choice.
    changes.send(Change::Remove("a")).unwrap();
    std::future::poll_fn(|cx| balance.poll_ready(cx))
        .await
        .unwrap();
    assert_eq!(balance.call(()).await.unwrap(), "b");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_behind_an_open_breaker_in_readiness_mode_takes_no_traffic() {
    let breaker = CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .min_requests(4)
        .recovery_timeout(Duration::from_secs(10))
        .half_open_max_requests(1)
        .readiness(true)
        .generic();
    let breaker_handle = breaker.handle();
    let failing = tower::service_fn(|()| async { Err::<&'static str, BoxError>("down".into()) });
    let guarded: Endpoint = BoxService::new(
        breaker
            .layer(failing)
            .map_err(|error| -> BoxError { Box::new(std::io::Error::other(error.to_string())) }),
    );
    let (mut balance, changes) = balancer(Policy::RoundRobin);
    changes.send(Change::Insert("flaky", guarded)).unwrap();
    changes
        .send(Change::Insert("steady", answering("steady")))
        .unwrap();

    // Round robin sends every other request to "flaky" until its breaker opens.
    let mut failures = 0;
    for _ in 0..20 {
        let ready = balance.ready().await.unwrap();
        if ready.call(()).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 4,
        "four failures open the breaker; then it is not ready"
    );
    assert_eq!(breaker_handle.state(), State::Open);
    let flaky = |balance: &Balance<_, ()>| balance.handle().snapshot().upstreams[0].clone();
    assert_eq!(flaky(&balance).health, Health::NotReady);
    assert_eq!(flaky(&balance).requests, 4);

    // After the recovery timeout the breaker lets a probe through: the endpoint is ready again.
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    let mut results = Vec::new();
    for _ in 0..4 {
        let ready = balance.ready().await.unwrap();
        results.push(ready.call(()).await.is_ok());
    }
    assert_eq!(
        flaky(&balance).requests,
        5,
        "one probe, which fails and reopens it"
    );
    assert_eq!(results.iter().filter(|ok| !**ok).count(), 1);
    assert_eq!(breaker_handle.state(), State::Open);
}

/// With every endpoint ejected the balancer is not ready, and nothing else happens that would
/// wake its caller: it wakes itself when the first ejection ends.
#[tokio::test(start_paused = true)]
async fn with_every_endpoint_ejected_poll_ready_waits_for_the_first_return() {
    let (mut balance, changes) = balancer(Policy::RoundRobin);
    let failing = || -> Endpoint {
        BoxService::new(tower::service_fn(|()| async {
            Err::<&'static str, BoxError>("down".into())
        }))
    };
    changes.send(Change::Insert("a", failing())).unwrap();
    changes.send(Change::Insert("b", failing())).unwrap();
    // Five failures in a row each eject both (default `consecutive_failures`, 30 s).
    for _ in 0..10 {
        let ready = balance.ready().await.unwrap();
        assert!(ready.call(()).await.is_err());
    }
    let health: Vec<Health> = balance
        .handle()
        .snapshot()
        .upstreams
        .iter()
        .map(|u| u.health)
        .collect();
    assert_eq!(health, [Health::Ejected, Health::Ejected]);
    let waiting = tokio::time::Instant::now();
    // The outer deadline is far beyond the ejection: without the balancer's own timer, the
    // paused clock would jump to it and only then poll the balancer again.
    tokio::time::timeout(Duration::from_secs(3600), balance.ready())
        .await
        .expect("ready once an ejection ends")
        .unwrap();
    assert_eq!(waiting.elapsed(), Duration::from_secs(30));
}
