//! The balancer over an in-process client under tokio's paused clock: ejection and return,
//! active health checks, removal while a request is pending, adaptive weights from known
//! latencies, a stalled upstream at the adaptive defaults, hashing, everything unavailable (and
//! its `Retry-After`), and the configuration files.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use proxflow_lb::{
    ActiveHealth, AdaptiveConfig, AdaptiveLb, Clock, Health, LayerBody, LbConfig, NoUpstream,
    PassiveHealth, Policy, Upstream,
};
use tokio::sync::oneshot;
use tokio::time::advance;
use tower::{Service, ServiceExt};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// How the fake upstreams answer: per authority, a status and a latency; requests are
/// counted by authority and path.
#[derive(Clone, Default)]
struct Fake {
    answers: Arc<Mutex<HashMap<String, (u16, Duration)>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn set(&self, authority: &str, status: u16, latency: Duration) {
        self.answers
            .lock()
            .unwrap()
            .insert(authority.to_string(), (status, latency));
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with(prefix))
            .count()
    }

    fn client(
        &self,
    ) -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
           + Send
           + 'static {
        let fake = self.clone();
        tower::service_fn(move |request: Request<String>| {
            let fake = fake.clone();
            async move {
                let authority = request.uri().authority().unwrap().to_string();
                fake.seen
                    .lock()
                    .unwrap()
                    .push(format!("{authority}{}", request.uri().path()));
                let (status, latency) = fake
                    .answers
                    .lock()
                    .unwrap()
                    .get(&authority)
                    .copied()
                    .unwrap_or((200, MS));
                tokio::time::sleep(latency).await;
                let mut response = Response::new(authority);
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(response)
            }
        })
    }
}

const THREE: [&str; 3] = ["http://a:80", "http://b:80", "http://c:80"];

/// A balancer over `urls` on tokio's paused clock.
fn balancer(urls: &[&'static str]) -> AdaptiveLb {
    AdaptiveLb::new(urls.iter().map(|url| Upstream::from_static(url))).clock(Clock::tokio())
}

async fn send<S>(service: &S, path: &str) -> Response<LayerBody<String>>
where
    S: Service<Request<String>, Response = Response<LayerBody<String>>, Error = Infallible> + Clone,
{
    let request = Request::get(path).body(String::new()).unwrap();
    service.clone().oneshot(request).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn failures_in_a_row_eject_an_upstream_and_it_comes_back_slowly() {
    let fake = Fake::default();
    fake.set("a:80", 503, MS);
    let lb = balancer(&THREE)
        .policy(Policy::RoundRobin)
        .slow_start(10 * S);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    for _ in 0..15 {
        send(&service, "/").await;
    }
    assert_eq!(fake.count("a:80"), 5, "ejected after 5 failures in a row");
    let a = &handle.snapshot().upstreams[0];
    assert_eq!(a.health, Health::Ejected);
    let left = a.ejected_for_ms.unwrap();
    assert!((29_990..=30_000).contains(&left), "{left} ms left of 30 s");
    for _ in 0..30 {
        send(&service, "/").await;
    }
    assert_eq!(fake.count("a:80"), 5, "no traffic while ejected");

    // Back after 30 s, healthy now, with no history and a slow start.
    fake.set("a:80", 200, MS);
    advance(30 * S).await;
    let a = &handle.snapshot().upstreams[0];
    assert_eq!(a.health, Health::Healthy);
    assert!((a.weight - 0.1).abs() < 0.01, "{}", a.weight);
}

/// The next round of checks, and the time for its probes (1 ms each) to be answered.
async fn check_round() {
    advance(10 * S).await;
    settle().await;
    advance(100 * MS).await;
    settle().await;
}

/// Lets the woken tasks run (`advance` wakes them; they run when this task yields).
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn failing_health_checks_take_an_upstream_out_until_it_passes_again() {
    let fake = Fake::default();
    fake.set("b:80", 500, MS);
    let lb = balancer(&THREE)
        .policy(Policy::RoundRobin)
        .health_check(ActiveHealth {
            interval: 10 * S,
            ..ActiveHealth::default()
        });
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    send(&service, "/").await; // starts the checks
    for _ in 0..3 {
        check_round().await;
    }
    assert_eq!(fake.count("b:80/health"), 4, "at start, then every 10 s");
    assert_eq!(handle.snapshot().upstreams[1].health, Health::FailingChecks);
    let before = fake.count("b:80/");
    for _ in 0..10 {
        send(&service, "/").await;
    }
    assert_eq!(fake.count("b:80/"), before, "no requests, only checks");
    fake.set("b:80", 200, MS);
    for _ in 0..2 {
        check_round().await;
    }
    assert_eq!(handle.snapshot().upstreams[1].health, Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn removing_an_upstream_with_a_request_pending_is_safe() {
    // The client holds every request until the test lets it go.
    let gates: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
    let client = {
        let gates = Arc::clone(&gates);
        tower::service_fn(move |request: Request<String>| {
            let (open, wait) = oneshot::channel();
            gates.lock().unwrap().push(open);
            async move {
                let _ = wait.await;
                Ok::<_, Infallible>(Response::new(
                    request.uri().authority().unwrap().to_string(),
                ))
            }
        })
    };
    let lb = balancer(&["http://a:80", "http://b:80"]).policy(Policy::RoundRobin);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new().layer(lb).service(client);
    let pending = tokio::spawn({
        let service = service.clone();
        async move { send(&service, "/").await }
    });
    tokio::task::yield_now().await;
    assert_eq!(handle.snapshot().upstreams[0].in_flight, 1);
    assert!(handle.remove("http://a:80"));
    // New requests go to the one left, while the removed one's request is still out.
    let next = tokio::spawn({
        let service = service.clone();
        async move { send(&service, "/").await }
    });
    tokio::task::yield_now().await;
    for gate in gates.lock().unwrap().drain(..) {
        gate.send(()).unwrap();
    }
    let pending = pending.await.unwrap();
    assert_eq!(pending.status(), StatusCode::OK);
    let next = next.await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.upstreams.len(), 1);
    assert_eq!(snapshot.upstreams[0].upstream, "http://b:80");
    assert!(!handle.remove("http://a:80"), "already gone");
}

#[tokio::test(start_paused = true)]
async fn adaptive_sends_less_to_the_slow_and_the_failing() {
    let fake = Fake::default();
    fake.set("b:80", 200, 50 * MS);
    fake.set("c:80", 503, MS);
    let lb = balancer(&THREE)
        .policy(Policy::Adaptive(AdaptiveConfig {
            update_interval: S,
            ..AdaptiveConfig::default()
        }))
        .passive_health(PassiveHealth {
            consecutive_failures: 0,
            ..PassiveHealth::default()
        })
        .seed(3);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    // 10 s of one request every 10 ms, one at a time.
    for _ in 0..1000 {
        send(&service, "/").await;
        advance(10 * MS).await;
    }
    let snapshot = handle.snapshot();
    let weight = |i: usize| snapshot.upstreams[i].adaptive_weight.unwrap();
    // a: 1 ms; b: 50 ms; c: 1 ms, every answer failed (the pool's mean latency x5).
    let requests: Vec<u64> = snapshot.upstreams.iter().map(|u| u.requests).collect();
    assert!(requests[0] > 900, "{requests:?}");
    // b lost every comparison on its answers' latency after its first one; unobserved since,
    // its weight drifted back to the mean (so it will be tried again when its estimate decays).
    assert!(requests[1] < 10, "{requests:?}");
    assert!(requests[2] < 100, "{requests:?}");
    assert!(weight(0) > 3.0 * weight(2), "{snapshot:#?}");
    assert_eq!(snapshot.upstreams[0].history.len(), 10, "history_length");
}

#[tokio::test(start_paused = true)]
async fn header_hashing_keeps_a_user_on_one_upstream() {
    let fake = Fake::default();
    let lb = balancer(&THREE).policy(Policy::HeaderHash {
        header: "x-user".into(),
    });
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    let counts = || ["a:80", "b:80", "c:80"].map(|authority| fake.count(authority));
    let mut used = Vec::new();
    for user in ["ann", "bob", "cy", "dee", "eve", "fay"] {
        let before = counts();
        for _ in 0..5 {
            let request = Request::get("/")
                .header("x-user", user)
                .body(String::new())
                .unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let after = counts();
        let added: Vec<usize> = (0..3).map(|i| after[i] - before[i]).collect();
        assert!(
            added.iter().filter(|n| **n > 0).count() == 1 && added.contains(&5),
            "{user}: {added:?}: all five requests on one upstream"
        );
        used.push(added.iter().position(|n| *n == 5));
    }
    used.sort();
    used.dedup();
    assert!(used.len() > 1, "the users are spread: {used:?}");
}

#[tokio::test(start_paused = true)]
async fn with_everything_drained_the_answer_is_503() {
    let fake = Fake::default();
    let lb = balancer(&THREE);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    for url in THREE {
        assert!(handle.drain(url));
    }
    let response = send(&service, "/").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.extensions().get::<NoUpstream>().is_some());
    // Nothing says when a drained upstream comes back.
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(fake.count(""), 0);

    let panicking = balancer(&THREE).panic_mode(true);
    let handle = panicking.handle();
    let service = tower::ServiceBuilder::new()
        .layer(panicking)
        .service(fake.client());
    for url in THREE {
        handle.drain(url);
    }
    assert_eq!(send(&service, "/").await.status(), StatusCode::OK);
}

/// `Retry-After` of the 503 is the wait for the first ejected upstream's return, in whole
/// seconds rounded up.
#[tokio::test(start_paused = true)]
async fn with_every_upstream_ejected_retry_after_is_the_wait_for_the_first_return() {
    let fake = Fake::default();
    fake.set("a:80", 503, MS);
    fake.set("b:80", 503, MS);
    let lb = balancer(&THREE[..2])
        .policy(Policy::RoundRobin)
        .passive_health(PassiveHealth {
            consecutive_failures: 1,
            ..PassiveHealth::default()
        });
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    let retry_after = |response: &Response<LayerBody<String>>| {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_string()
    };
    // Each answer takes 1 ms: a is ejected for 30 s at 0.001 s (until 30.001 s), b at
    // 10.002 s.
    send(&service, "/").await;
    advance(10 * S).await;
    send(&service, "/").await;
    assert_eq!(retry_after(&send(&service, "/").await), "20", "19.999 s");
    advance(19 * S + 998 * MS).await;
    assert_eq!(retry_after(&send(&service, "/").await), "1", "1 ms");
    assert_eq!(fake.count(""), 2, "no attempt while both are ejected");
    advance(MS).await;
    fake.set("a:80", 200, MS);
    assert_eq!(send(&service, "/").await.status(), StatusCode::OK);
}

#[test]
fn config_files_read_the_origin_names() {
    let yaml = "
upstreams:
  - url: http://10.0.0.1:8080
  - url: http://10.0.0.2:8080
    weight: 3
lb_policy:
  adaptive: { history_length: 10, update_interval: 1m, alpha: 0.3 }
host: upstream
health_check: { path: /healthz, interval: 5s }
";
    let json = r#"{"upstreams": [{"url": "http://10.0.0.1:8080"}, {"url": "http://10.0.0.2:8080", "weight": 3}],
        "lb_policy": {"adaptive": {"history_length": 10, "update_interval": "1m", "alpha": 0.3}},
        "host": "upstream", "health_check": {"path": "/healthz", "interval": "5s"}}"#;
    let toml = r#"
host = "upstream"
[[upstreams]]
url = "http://10.0.0.1:8080"
[[upstreams]]
url = "http://10.0.0.2:8080"
weight = 3
[lb_policy.adaptive]
history_length = 10
update_interval = "1m"
alpha = 0.3
[health_check]
path = "/healthz"
interval = "5s"
"#;
    let from_yaml: LbConfig = serde_yaml::from_str(yaml).unwrap();
    let from_json: LbConfig = serde_json::from_str(json).unwrap();
    let from_toml: LbConfig = toml::from_str(toml).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml, from_toml);
    assert_eq!(from_yaml.upstreams[1].weight, 3);
    assert_eq!(
        from_yaml.health_check.as_ref().unwrap().unhealthy_threshold,
        3
    );
    AdaptiveLb::from_config(&from_yaml).unwrap();

    let classic: LbConfig = serde_yaml::from_str("lb_policy: round_robin").unwrap();
    assert_eq!(classic.lb_policy, Policy::RoundRobin);
    let ewma: LbConfig = serde_yaml::from_str("lb_policy: {peak_ewma: {}}").unwrap();
    assert_eq!(ewma.lb_policy, Policy::PeakEwma { decay: 10 * S });

    for (bad, field) in [
        ("upstreams: [{url: 'http://x/path'}]", "upstreams.url"),
        ("lb_policy: {adaptive: {alpha: 0}}", "alpha"),
        (
            "lb_policy: {adaptive: {history_length: 0}}",
            "history_length",
        ),
        ("lb_policy: {header_hash: {header: 'bad header'}}", "header"),
        ("health_check: {path: health}", "path"),
    ] {
        let config: LbConfig = serde_yaml::from_str(bad).unwrap();
        let error = AdaptiveLb::from_config(&config).unwrap_err();
        assert!(error.to_string().contains(field), "{bad}: {error}");
    }
    assert!(serde_yaml::from_str::<LbConfig>("lb_polcy: random").is_err());
    assert!(
        "10.0.0.1:8080".parse::<Upstream>().is_err(),
        "a scheme is needed"
    );
}

#[tokio::test(start_paused = true)]
async fn picks_for_traffic_of_your_own_count_like_requests() {
    let lb = balancer(&THREE).policy(Policy::IpHash);
    let handle = lb.handle();
    let first = handle.pick(Some(b"198.51.100.7")).unwrap();
    let chosen = first.upstream().to_string();
    let index = THREE.iter().position(|u| *u == chosen).unwrap();
    assert_eq!(handle.snapshot().upstreams[index].in_flight, 1);
    advance(20 * MS).await;
    first.finish(false);
    let figures = &handle.snapshot().upstreams[index];
    assert_eq!((figures.in_flight, figures.requests), (0, 1));
    assert!(
        (figures.latency_ewma_ms - 20.0).abs() < 0.5,
        "{}",
        figures.latency_ewma_ms
    );
    // The same key, the same upstream; five failures eject it, and the key moves.
    for _ in 0..5 {
        let pick = handle.pick(Some(b"198.51.100.7")).unwrap();
        assert_eq!(pick.upstream(), chosen);
        pick.finish(true);
    }
    assert_eq!(handle.snapshot().upstreams[index].health, Health::Ejected);
    assert_ne!(
        handle.pick(Some(b"198.51.100.7")).unwrap().upstream(),
        chosen
    );
}

#[tokio::test(start_paused = true)]
async fn a_handle_taken_before_the_builder_calls_watches_the_configured_balancer() {
    let fake = Fake::default();
    fake.set("a:80", 503, MS);
    let lb = AdaptiveLb::new(THREE.map(Upstream::from_static));
    let handle = lb.handle();
    // Configured after the handle was taken, through a clone.
    let lb = lb
        .clone()
        .policy(Policy::RoundRobin)
        .passive_health(PassiveHealth {
            consecutive_failures: 2,
            ..PassiveHealth::default()
        })
        .slow_start(Duration::ZERO)
        .clock(Clock::tokio());
    assert!(handle.add(Upstream::from_static("http://d:80")));
    let service = tower::ServiceBuilder::new()
        .layer(lb.clone())
        .service(fake.client());
    for _ in 0..10 {
        send(&service, "/").await;
    }
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.policy, "round_robin");
    let requests: Vec<u64> = snapshot.upstreams.iter().map(|u| u.requests).collect();
    assert_eq!(requests.iter().sum::<u64>(), 10, "{requests:?}");
    assert_eq!(requests[0], 2, "a: ejected after two failures in a row");
    assert_eq!(snapshot.upstreams[0].health, Health::Ejected);
    assert!(
        requests[3] > 0,
        "the upstream added through the handle serves"
    );
    assert_eq!(lb.handle().snapshot(), snapshot, "one balancer");
}

/// A request dropped by a timeout outside the balancer counts for its upstream at its elapsed
/// time: the stalled upstream keeps a high latency estimate and failures instead of looking
/// idle, and the pick steers away from it.
#[tokio::test(start_paused = true)]
async fn a_request_dropped_by_an_outer_timeout_counts_for_its_upstream() {
    let fake = Fake::default();
    fake.set("a:80", 200, 10 * MS);
    // b never answers within the client's patience.
    fake.set("b:80", 200, 3600 * S);
    let passive = PassiveHealth {
        consecutive_failures: 0,
        ..PassiveHealth::default()
    };
    let lb = balancer(&THREE[..2])
        .policy(Policy::PeakEwma {
            decay: Duration::from_secs(10),
        })
        .passive_health(passive);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    let mut timeouts = 0;
    for _ in 0..200 {
        let request = Request::get("/").body(String::new()).unwrap();
        let call = service.clone().oneshot(request);
        if tokio::time::timeout(S, call).await.is_err() {
            timeouts += 1;
        }
        advance(10 * MS).await;
    }
    let snapshot = handle.snapshot();
    let b = snapshot
        .upstreams
        .iter()
        .find(|u| u.upstream.contains("b:80"))
        .unwrap();
    assert_eq!(b.in_flight, 0, "dropped requests leave the in-flight count");
    assert_eq!(b.failures, timeouts, "each dropped request is a failure");
    assert!(b.requests >= 1 && b.requests == timeouts);
    assert!(
        b.latency_ewma_ms >= 500.0,
        "the stalled upstream keeps a high estimate: {} ms",
        b.latency_ewma_ms
    );
    // Without the dropped requests counted, b's estimate decays and it draws traffic again.
    assert!(
        timeouts <= 10,
        "the stalled upstream got {timeouts} of 200 requests"
    );
}

/// Clients that go away before their answer say nothing of the upstream: drops sooner than
/// `stall_after` neither eject it nor break a run of failures. Requests dropped after waiting
/// that long (a stall behind an outer timeout) eject it.
#[tokio::test(start_paused = true)]
async fn clients_that_go_away_eject_nothing_and_a_stall_behind_a_timeout_does() {
    let fake = Fake::default();
    fake.set("a:80", 200, 100 * MS);
    // The defaults: five failures in a row eject, a drop counts after 1 s.
    let lb = balancer(&THREE[..1]);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    let call = |timeout: Duration| {
        let request = Request::get("/").body(String::new()).unwrap();
        tokio::time::timeout(timeout, service.clone().oneshot(request))
    };
    let health = || handle.snapshot().upstreams[0].health;
    for _ in 0..20 {
        assert!(call(10 * MS).await.is_err(), "the client leaves first");
    }
    assert_eq!(health(), Health::Healthy, "twenty clients left");

    fake.set("a:80", 502, MS);
    for _ in 0..4 {
        let response = call(S).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }
    fake.set("a:80", 200, 100 * MS);
    assert!(call(10 * MS).await.is_err());
    fake.set("a:80", 502, MS);
    let response = call(S).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        health(),
        Health::Ejected,
        "four failures, a client that left, a failure: five in a row"
    );

    let lb = balancer(&THREE[..1]);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    fake.set("a:80", 200, 3600 * S);
    for dropped in 1..=5 {
        assert_eq!(handle.snapshot().upstreams[0].health, Health::Healthy);
        let request = Request::get("/").body(String::new()).unwrap();
        let call = tokio::time::timeout(2 * S, service.clone().oneshot(request));
        assert!(call.await.is_err(), "drop {dropped}: the upstream stalls");
    }
    assert_eq!(
        handle.snapshot().upstreams[0].health,
        Health::Ejected,
        "five requests dropped after 2 s each"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_pick_is_a_failure_and_a_cancelled_one_is_nothing() {
    let lb = balancer(&THREE[..1]);
    let handle = lb.handle();
    let pick = handle.pick(None).unwrap();
    advance(300 * MS).await;
    drop(pick);
    let figures = &handle.snapshot().upstreams[0];
    assert_eq!(
        (figures.in_flight, figures.requests, figures.failures),
        (0, 1, 1)
    );
    assert!(
        figures.latency_ewma_ms >= 299.0,
        "{}",
        figures.latency_ewma_ms
    );
    handle.pick(None).unwrap().cancel();
    let figures = &handle.snapshot().upstreams[0];
    assert_eq!(
        (figures.in_flight, figures.requests, figures.failures),
        (0, 1, 1)
    );
}

/// The adaptive policy at its defaults (`update_interval 1m`) behind a 1 s timeout outside the
/// balancer, with open-loop traffic: a stalled upstream is dropped at the deadline, each drop
/// counts at its elapsed time, and from the first drops on it gets no more than the floor of
/// its weight (1/100 of the mean). The snapshot shows it: a high live load, a small weight and
/// share, a high predicted load after the first update.
#[tokio::test(start_paused = true)]
async fn a_stalled_upstream_behind_an_outer_timeout_gets_its_floor_share_at_the_defaults() {
    let fake = Fake::default();
    fake.set("a:80", 200, 10 * MS);
    fake.set("b:80", 200, 10 * MS);
    fake.set("c:80", 200, 3600 * S);
    let lb = balancer(&THREE)
        .passive_health(PassiveHealth {
            consecutive_failures: 0,
            ..PassiveHealth::default()
        })
        .seed(5);
    let handle = lb.handle();
    let service = tower::ServiceBuilder::new()
        .layer(lb)
        .service(fake.client());
    let mut to_c_before = 0;
    // 100 requests a second for 70 s, each under its own 1 s deadline.
    for i in 0..7000 {
        if i == 200 {
            to_c_before = fake.count("c:80");
        }
        let request = Request::get("/").body(String::new()).unwrap();
        let call = service.clone().oneshot(request);
        tokio::spawn(tokio::time::timeout(S, call));
        advance(10 * MS).await;
    }
    advance(2 * S).await;
    let to_c = fake.count("c:80") - to_c_before;
    // The floor: a weight of 1/100 of the mean (0.01 against 1.5 and 1.5) draws it as one of
    // the two candidates of 2/301 of the picks, 45 of 6800, and it loses every comparison
    // but to a decayed estimate.
    assert!(to_c <= 45, "after 2 s, c got {to_c} of 6800 requests");
    let snapshot = handle.snapshot();
    let c = &snapshot.upstreams[2];
    assert_eq!(c.failures, c.requests, "each request to c was dropped");
    assert!(c.live_load_ms.unwrap() >= 500.0, "{c:#?}");
    assert!(c.adaptive_weight.unwrap() <= 0.05, "{c:#?}");
    assert!(c.share_last_interval.unwrap() < 0.02, "{c:#?}");
    let a = &snapshot.upstreams[0];
    assert!(
        c.predicted_load.unwrap() > 10.0 * a.predicted_load.unwrap(),
        "{snapshot:#?}"
    );
    assert_eq!(a.failures, 0);
}
