//! Faults through the real stack: an axum front server on 127.0.0.1 with an outer deadline
//! (tower-http's `TimeoutLayer`, answering 504), the balancer, hyper-util's client, and
//! upstreams that answer garbage, reset or close the connection, never answer, refuse
//! connections, or are removed with a request in flight; and a balancer with no upstreams.
//!
//! These tests run on the wall clock. Under tokio's paused clock the runtime jumps to its next
//! timer whenever it waits for a socket, so the outer deadline (or an ejection's end, or the
//! client pool's idle timer) could pass while a healthy upstream's answer is on its way over
//! the loopback. The tests assert outcomes only: statuses, bodies, counts and health, never
//! how long something took. The deadline is 1 s, far above a loopback round trip.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::any;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_lb::{AdaptiveLb, Health, LbConfig, LbHandle, PassiveHealth, Policy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tower_http::timeout::TimeoutLayer;

/// The outer deadline of the front server.
const DEADLINE: Duration = Duration::from_secs(1);

/// An HTTP upstream answering its name.
async fn healthy(name: &'static str) -> SocketAddr {
    serve_axum(Router::new().fallback(any(move || async move { name }))).await
}

async fn serve_axum(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A raw TCP upstream: `serve` gets each connection. Returns its address and the number of
/// connections it accepted.
async fn raw<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// Reads a request head (the tests send no bodies).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buffer = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Answers bytes that are not HTTP, then closes.
async fn garbage(mut stream: TcpStream) {
    read_head(&mut stream).await;
    let _ = stream
        .write_all(b"\x16\x03\x01\x00\xa5 SSH-2.0-not-http\r\n\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// Resets the connection (`SO_LINGER` 0, then close: an RST instead of a FIN).
async fn reset(mut stream: TcpStream) {
    read_head(&mut stream).await;
    stream.set_zero_linger().unwrap();
    drop(stream);
}

/// Closes the connection without answering.
async fn close(mut stream: TcpStream) {
    read_head(&mut stream).await;
    let _ = stream.shutdown().await;
}

/// Reads whatever comes and never answers.
async fn silent(mut stream: TcpStream) {
    let mut buffer = [0; 1024];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            return;
        }
    }
}

/// A port nothing listens on: connections are refused.
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The front: axum with the outer deadline over the balancer over hyper-util's client. Returns
/// its address and the number of requests the balancer handed to the client (each one a
/// connection attempt, or the use of a pooled connection).
async fn front(lb: AdaptiveLb) -> (SocketAddr, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let client = tower::ServiceBuilder::new()
        .map_request(move |request: Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let balanced = tower::ServiceBuilder::new().layer(lb).service(client);
    let app = Router::new()
        .fallback_service(balanced)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            DEADLINE,
        ));
    (serve_axum(app).await, attempts)
}

/// An answer of the front: status, `Retry-After` and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: String,
}

async fn get(front: SocketAddr) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::get(format!("http://{front}/orders"))
        .body(Body::empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        retry_after,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The balancer's log events at `warn` and above, captured on this thread: the front, the
/// upstreams and the clients run on the test's single-threaded runtime.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Captures events until the guard is dropped.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }

    /// The events whose message contains `text`.
    fn count(&self, text: &str) -> usize {
        let lines = self.0.lock().unwrap();
        lines.iter().filter(|line| line.contains(text)).count()
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("proxflow_lb") && *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{} ", event.metadata().level());
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                line += &format!("{}={value:?} ", field.name());
            },
        );
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// The figures of `upstream` (`127.0.0.1:port`).
fn figures(handle: &LbHandle, upstream: SocketAddr) -> proxflow_lb::UpstreamSnapshot {
    let name = format!("http://{upstream}");
    let snapshot = handle.snapshot();
    let found = snapshot.upstreams.into_iter().find(|u| u.upstream == name);
    found.unwrap_or_else(|| panic!("{name} is not listed"))
}

/// Round robin over the faulty upstream and a healthy one, ejecting after two failures in a
/// row: the faulty one's two turns get `status` (with `body`), it is ejected, and every later
/// request goes to the healthy one. Each 502 is a warning with `logged_error`, the cause.
async fn faulty_upstream_is_ejected<F, Fut>(
    serve: F,
    status: StatusCode,
    body: &str,
    logged_error: Option<&str>,
) where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let logs = Logs::default();
    let _capture = logs.capture();
    let (faulty, accepted) = raw(serve).await;
    let ok = healthy("ok").await;
    let lb = AdaptiveLb::new([faulty, ok])
        .policy(Policy::RoundRobin)
        .passive_health(PassiveHealth {
            consecutive_failures: 2,
            ..PassiveHealth::default()
        });
    let handle = lb.handle();
    let (front, _) = front(lb).await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(get(front).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    let fault = status.as_u16();
    assert_eq!(statuses, [fault, 200, fault, 200, 200, 200, 200, 200]);
    assert_eq!(answers[0].body, body);
    assert_eq!(answers[0].retry_after, None, "not a 503");
    assert!(answers[1..]
        .iter()
        .all(|a| a.status != StatusCode::OK || a.body == "ok"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one connection per turn"
    );

    let faulty = figures(&handle, faulty);
    assert_eq!((faulty.requests, faulty.failures), (2, 2));
    assert_eq!(faulty.in_flight, 0);
    assert_eq!(faulty.health, Health::Ejected);
    assert_eq!(figures(&handle, ok).requests, 6);
    let answered_502 = logs.count("WARN message=upstream failed; answered 502");
    match logged_error {
        // Once per 502, with the cause from the bottom of hyper-util's error.
        Some(cause) => {
            assert_eq!(answered_502, 2);
            assert_eq!(logs.count(cause), 2, "{cause}: {:?}", logs.0);
        }
        None => assert_eq!(answered_502, 0),
    }
    assert_eq!(logs.count("WARN message=upstream ejected"), 1);
}

/// A faulty upstream that took the request and failed it: 502s, each logged with `cause`.
async fn bad_gateway_until_ejected<F, Fut>(serve: F, cause: &str)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let body = "bad gateway: upstream failed\n";
    faulty_upstream_is_ejected(serve, StatusCode::BAD_GATEWAY, body, Some(cause)).await;
}

#[tokio::test]
async fn an_upstream_answering_garbage_gets_502s_until_it_is_ejected() {
    bad_gateway_until_ejected(garbage, "invalid HTTP version parsed").await;
}

#[tokio::test]
async fn an_upstream_resetting_connections_gets_502s_until_it_is_ejected() {
    bad_gateway_until_ejected(reset, "Connection reset by peer").await;
}

#[tokio::test]
async fn an_upstream_closing_connections_unanswered_gets_502s_until_it_is_ejected() {
    bad_gateway_until_ejected(close, "connection closed before message completed").await;
}

/// The outer deadline ends the request (504, tower-http's answer, empty); the dropped request
/// is a failure of its upstream, so that it is ejected like the others.
#[tokio::test]
async fn an_upstream_that_never_answers_is_cut_off_at_the_deadline_and_ejected() {
    faulty_upstream_is_ejected(silent, StatusCode::GATEWAY_TIMEOUT, "", None).await;
}

/// Every upstream refusing connections: each request tries at most `retries + 1` of them and
/// is answered 502 (nginx's answer to a failed connection); each upstream is tried until it is
/// ejected, and then every request is answered 503 with the wait for the first one's return in
/// `Retry-After`, without a connection attempt.
#[tokio::test]
async fn with_every_upstream_refusing_the_answer_is_a_502_then_a_503_and_attempts_are_bounded() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let lb = AdaptiveLb::new([refusing().await, refusing().await, refusing().await]);
    let handle = lb.handle();
    let (front, attempts) = front(lb).await;
    let all_ejected = || {
        let snapshot = handle.snapshot();
        snapshot
            .upstreams
            .iter()
            .all(|u| u.health == Health::Ejected)
    };
    // At the defaults (one retry; ejection after five failures in a row, for 30 s), each
    // request tries two of the three, until fewer are left.
    let mut requests = 0;
    while !all_ejected() {
        let before = attempts.load(Ordering::SeqCst);
        let answer = get(front).await;
        requests += 1;
        let tried = attempts.load(Ordering::SeqCst) - before;
        assert!((1..=2).contains(&tried), "{tried} attempts");
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.body, "bad gateway: upstream failed\n");
        if requests <= 2 {
            // At most two failures each: none ejected yet.
            assert_eq!(tried, 2);
        }
        assert!(requests <= 15, "{:?}", handle.snapshot());
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        15,
        "five each, then ejected"
    );
    assert_eq!(logs.count("answered 502"), requests);
    assert_eq!(
        logs.count("Connection refused"),
        requests,
        "the cause is logged"
    );
    assert_eq!(logs.count("WARN message=upstream ejected"), 3);

    for _ in 0..20 {
        let answer = get(front).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body, "service unavailable: no healthy upstream\n");
        // The base ejection is 30 s; the first of them ends in 29.x s (30 s rounded up),
        // unless the machine took more than a second since.
        let wait = answer.retry_after.unwrap();
        assert!((28..=30).contains(&wait), "{answer:?}");
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        15,
        "no attempt while ejected"
    );
    assert_eq!(logs.count("WARN message=no upstream available"), 20);
}

/// No upstreams at all is allowed (they may come through the handle): every request gets
/// the same 503, until one is added.
#[tokio::test]
async fn an_empty_upstream_list_answers_503_until_an_upstream_is_added() {
    let lb = AdaptiveLb::new(Vec::<Upstream>::new());
    let handle = lb.handle();
    let (front, attempts) = front(lb).await;
    for _ in 0..3 {
        let answer = get(front).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.retry_after, Some(1));
        assert_eq!(answer.body, "service unavailable: no healthy upstream\n");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 0);
    assert!(handle.add(healthy("ok").await));
    let answer = get(front).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "ok")
    );
}

/// A configuration file without upstreams is refused, as nginx refuses an `upstream` block
/// without servers; its other fields are checked first.
#[test]
fn a_config_without_upstreams_is_refused() {
    for text in ["lb_policy: round_robin", "upstreams: []"] {
        let config: LbConfig = serde_yaml::from_str(text).unwrap();
        let error = AdaptiveLb::from_config(&config).unwrap_err();
        assert_eq!(error.field, "upstreams", "{text}: {error}");
        assert!(error.to_string().contains("at least one"), "{error}");
    }
    let config: LbConfig = serde_yaml::from_str("lb_policy: {adaptive: {alpha: 0}}").unwrap();
    assert_eq!(AdaptiveLb::from_config(&config).unwrap_err().field, "alpha");
}

/// A request in flight to an upstream that is removed completes normally, and its answer is
/// accounted to the removed upstream's own figures: the upstream added again under the same
/// name starts from nothing.
#[tokio::test]
async fn an_upstream_removed_with_a_request_in_flight_still_answers_it() {
    let (entered, mut inside) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let gate = Arc::clone(&gate);
        serve_axum(Router::new().fallback(any(move || {
            let (entered, gate) = (entered.clone(), Arc::clone(&gate));
            async move {
                entered.send(()).unwrap();
                let _permit = gate.acquire().await.unwrap();
                "held"
            }
        })))
        .await
    };
    let ok = healthy("ok").await;
    let lb = AdaptiveLb::new([held, ok]).policy(Policy::RoundRobin);
    let handle = lb.handle();
    let (front, _) = front(lb).await;
    let pending = tokio::spawn(get(front));
    inside.recv().await.unwrap();
    assert_eq!(figures(&handle, held).in_flight, 1);

    assert!(handle.remove(&format!("http://{held}")));
    let answer = get(front).await;
    assert_eq!(answer.body, "ok", "new requests go to the one left");
    // Back under the same name: a new upstream, with figures of its own.
    assert!(handle.add(held));
    gate.add_permits(1);
    let answer = pending.await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "held")
    );
    let again = figures(&handle, held);
    assert_eq!(
        (again.in_flight, again.requests, again.failures),
        (0, 0, 0),
        "the removed upstream's answer is not counted on its successor"
    );
    assert_eq!(figures(&handle, ok).requests, 1);
}
