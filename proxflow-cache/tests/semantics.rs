//! The cache in front of an axum origin, on tokio's paused clock: what is stored and reused,
//! revalidation, `Vary`, stale content, invalidation, the size limits, and the headers it adds.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::Got;
use http::{Method, StatusCode};
use proxflow_cache::{CacheLayer, CacheStats, Clock};

/// The origin's answer for a request: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

type AnswerFn = dyn Fn(&Request) -> Answer + Send + Sync;

/// An origin whose answer can be changed between requests; it counts the requests.
#[derive(Clone)]
struct Origin {
    answer: Arc<Mutex<Box<AnswerFn>>>,
    count: Arc<AtomicUsize>,
    /// How long it takes to answer.
    delay: Arc<Mutex<Duration>>,
}

impl Origin {
    fn new(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Origin {
        Origin {
            answer: Arc::new(Mutex::new(Box::new(answer))),
            count: Arc::default(),
            delay: Arc::default(),
        }
    }

    fn set(&self, answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Box::new(answer);
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn router(&self, cache: CacheLayer) -> Router {
        let origin = self.clone();
        Router::new()
            .route(
                "/{*path}",
                any(move |request: Request| {
                    let origin = origin.clone();
                    async move {
                        origin.count.fetch_add(1, Ordering::SeqCst);
                        let delay = *origin.delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        let (status, headers, body) = (origin.answer.lock().unwrap())(&request);
                        let mut response = Response::new(Body::from(body));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        for (name, value) in headers {
                            response.headers_mut().append(name, value.parse().unwrap());
                        }
                        response
                    }
                }),
            )
            .layer(cache)
    }
}

fn ok(headers: &[(&'static str, &str)], body: &str) -> Answer {
    (
        200,
        headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        body.to_string(),
    )
}

fn cache() -> (CacheLayer, CacheStats) {
    let layer = CacheLayer::new().clock(Clock::tokio());
    let stats = layer.stats();
    (layer, stats)
}

async fn get(app: &Router, path: &str) -> Got {
    send(app, Method::GET, path, &[]).await
}

async fn send(app: &Router, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
    common::send(app, method, path, headers, "").await
}

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_fresh_response_is_served_from_the_store_with_its_age() {
    let origin = Origin::new(|_| ok(&[("cache-control", "max-age=60")], "one"));
    let (layer, stats) = cache();
    let app = origin.router(layer);
    let first = get(&app, "/a").await;
    assert_eq!(first.body, "one");
    assert_eq!(
        first.header("cache-status"),
        "proxflow; fwd=uri-miss; fwd-status=200; stored"
    );
    tokio::time::advance(10 * S).await;
    let second = get(&app, "/a").await;
    assert_eq!(second.body, "one");
    assert_eq!(second.header("age"), "10");
    assert_eq!(second.header("cache-status"), "proxflow; hit; ttl=50");
    assert_eq!(origin.requests(), 1);
    let other = get(&app, "/b").await;
    assert_eq!(
        other.header("cache-status"),
        "proxflow; fwd=uri-miss; fwd-status=200; stored"
    );
    let figures = stats.snapshot();
    assert_eq!((figures.hits, figures.misses, figures.stored), (1, 2, 2));
    assert!(figures.bytes > 0 && figures.entries == 2, "{figures:?}");
}

#[tokio::test(start_paused = true)]
async fn what_must_not_be_stored_is_not() {
    let origin = Origin::new(|request| {
        let directive = request.uri().path().trim_start_matches('/').to_string();
        match directive.as_str() {
            "vary-star" => ok(&[("cache-control", "max-age=60"), ("vary", "*")], "x"),
            "none" => (302, vec![], "x".into()),
            other => ok(&[("cache-control", other)], "x"),
        }
    });
    let (layer, _) = cache();
    let app = origin.router(layer);
    for (path, reason) in [
        ("/no-store", "no-store"),
        ("/private", "private"),
        ("/vary-star", "vary-star"),
        ("/none", "no-freshness"),
    ] {
        for _ in 0..2 {
            let got = get(&app, path).await;
            let expected = format!("detail={reason}");
            assert!(
                got.header("cache-status").ends_with(&expected),
                "{path}: {}",
                got.header("cache-status")
            );
        }
    }
    assert_eq!(origin.requests(), 8, "nothing served from the store");
    let authorized = send(
        &app,
        Method::GET,
        "/max-age=60",
        &[("authorization", "Bearer x")],
    )
    .await;
    assert!(authorized
        .header("cache-status")
        .ends_with("detail=authorization"));
}

#[tokio::test(start_paused = true)]
async fn a_stale_response_is_revalidated_and_a_304_refreshes_it() {
    let origin = Origin::new(|_| {
        ok(
            &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "body",
        )
    });
    let (layer, stats) = cache();
    let app = origin.router(layer);
    get(&app, "/r").await;
    tokio::time::advance(11 * S).await;
    origin.set(|request| {
        assert_eq!(request.headers()["if-none-match"], "\"v1\"");
        (
            304,
            vec![
                ("cache-control", "max-age=20".into()),
                ("x-version", "2".into()),
            ],
            String::new(),
        )
    });
    let revalidated = get(&app, "/r").await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.body, "body");
    assert_eq!(
        revalidated.header("x-version"),
        "2",
        "the 304's headers merged in"
    );
    assert_eq!(revalidated.header("age"), "0");
    assert_eq!(
        revalidated.header("cache-status"),
        "proxflow; fwd=stale; fwd-status=304; ttl=20"
    );
    tokio::time::advance(15 * S).await;
    let hit = get(&app, "/r").await;
    assert_eq!(hit.header("cache-status"), "proxflow; hit; ttl=5");
    assert_eq!(origin.requests(), 2);
    assert_eq!(stats.snapshot().revalidations, 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_conditional_and_head_are_answered_from_the_store() {
    let origin = Origin::new(|_| {
        ok(
            &[("cache-control", "max-age=60"), ("etag", "\"e\"")],
            "text",
        )
    });
    let (layer, _) = cache();
    let app = origin.router(layer);
    get(&app, "/c").await;
    let not_modified = send(&app, Method::GET, "/c", &[("if-none-match", "\"e\"")]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.header("etag"), "\"e\"");
    let head = send(&app, Method::HEAD, "/c", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, "");
    assert_eq!(head.header("content-length"), "4");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_variant_per_selecting_value() {
    let origin = Origin::new(|request| {
        let language = request
            .headers()
            .get("accept-language")
            .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
        ok(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            &language,
        )
    });
    let (layer, _) = cache();
    let app = origin.router(layer);
    for _ in 0..2 {
        for language in ["en", "fr"] {
            let got = send(&app, Method::GET, "/v", &[("accept-language", language)]).await;
            assert_eq!(got.body, language);
        }
        assert_eq!(get(&app, "/v").await.body, "none");
    }
    assert_eq!(origin.requests(), 3, "one per variant");
}

#[tokio::test(start_paused = true)]
async fn request_directives_are_honoured() {
    let origin = Origin::new(|_| ok(&[("cache-control", "max-age=60")], "x"));
    let (layer, _) = cache();
    let app = origin.router(layer);
    let absent = send(
        &app,
        Method::GET,
        "/o",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(absent.status, StatusCode::GATEWAY_TIMEOUT);
    get(&app, "/o").await;
    tokio::time::advance(30 * S).await;
    let young = send(&app, Method::GET, "/o", &[("cache-control", "max-age=10")]).await;
    assert!(
        young.header("cache-status").contains("fwd=stale"),
        "{}",
        young.header("cache-status")
    );
    let fresh = send(
        &app,
        Method::GET,
        "/o",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(fresh.status, StatusCode::OK);
    let no_cache = send(&app, Method::GET, "/o", &[("pragma", "no-cache")]).await;
    assert!(no_cache.header("cache-status").contains("fwd=stale"));
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_unsafe_method_invalidates_its_target_and_locations() {
    let origin = Origin::new(|request| match *request.method() {
        Method::POST => (201, vec![("location", "/items/2".into())], String::new()),
        _ => ok(&[("cache-control", "max-age=60")], "list"),
    });
    let (layer, stats) = cache();
    let app = origin.router(layer);
    get(&app, "/items").await;
    get(&app, "/items/2").await;
    let posted = send(&app, Method::POST, "/items", &[]).await;
    assert_eq!(posted.header("cache-status"), "proxflow; fwd=method");
    assert_eq!(stats.snapshot().invalidated, 2);
    assert!(get(&app, "/items")
        .await
        .header("cache-status")
        .contains("uri-miss"));
    assert!(get(&app, "/items/2")
        .await
        .header("cache-status")
        .contains("uri-miss"));
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let origin = Origin::new(|_| {
        ok(
            &[("cache-control", "max-age=10, stale-while-revalidate=30")],
            "old",
        )
    });
    let (layer, stats) = cache();
    let app = origin.router(layer);
    get(&app, "/s").await;
    tokio::time::advance(12 * S).await;
    origin.set(|_| {
        ok(
            &[("cache-control", "max-age=10, stale-while-revalidate=30")],
            "new",
        )
    });
    let first = get(&app, "/s").await;
    let second = get(&app, "/s").await;
    assert_eq!((first.body.as_str(), second.body.as_str()), ("old", "old"));
    assert_eq!(first.header("cache-status"), "proxflow; hit; ttl=-2");
    // The background refresh runs (a paused clock runs every ready task before it moves).
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(get(&app, "/s").await.body, "new");
    assert_eq!(
        origin.requests(),
        2,
        "one refresh for the two stale answers"
    );
    assert_eq!(stats.snapshot().stale, 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_stands_in_for_a_failing_origin() {
    let origin = Origin::new(|_| {
        ok(
            &[("cache-control", "max-age=10, stale-if-error=60")],
            "kept",
        )
    });
    let (layer, _) = cache();
    let app = origin.router(layer);
    get(&app, "/e").await;
    tokio::time::advance(20 * S).await;
    origin.set(|_| (503, vec![], "down".into()));
    let got = get(&app, "/e").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "kept");
    assert_eq!(
        got.header("cache-status"),
        "proxflow; hit; fwd=stale; fwd-status=503; detail=stale-if-error; ttl=-10"
    );
    tokio::time::advance(60 * S).await;
    assert_eq!(
        get(&app, "/e").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "past the window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_object_limit_streams_through_unstored() {
    let big = "x".repeat(2000);
    let origin = Origin::new(move |_| ok(&[("cache-control", "max-age=60")], &big));
    let layer = CacheLayer::new()
        .clock(Clock::tokio())
        .max_object_size(1000);
    let app = origin.router(layer);
    for _ in 0..2 {
        let got = get(&app, "/big").await;
        assert_eq!(got.body.len(), 2000);
        assert!(
            got.header("cache-status").ends_with("detail=too-big"),
            "{}",
            got.header("cache-status")
        );
    }
    assert_eq!(origin.requests(), 2);
}

/// Ten concurrent requests for `path` (each in its own task), their answers in order.
async fn ten_at_once(app: &Router, path: &'static str) -> Vec<Got> {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, path).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_origin_request() {
    let origin = Origin::new(|_| ok(&[("cache-control", "max-age=60")], "shared"));
    *origin.delay.lock().unwrap() = Duration::from_millis(100);
    let (layer, stats) = cache();
    let app = origin.router(layer);
    let answers = ten_at_once(&app, "/c").await;
    assert_eq!(origin.requests(), 1);
    assert!(answers.iter().all(|got| got.body == "shared"));
    let collapsed = answers
        .iter()
        .filter(|got| {
            got.header("cache-status")
                .starts_with("proxflow; hit; collapsed")
        })
        .count();
    assert_eq!(collapsed, 9);
    assert_eq!(stats.snapshot().coalesced, 9);
}

#[tokio::test(start_paused = true)]
async fn waiters_for_an_answer_that_is_not_stored_make_their_own_requests() {
    let origin = Origin::new(|_| ok(&[("cache-control", "no-store")], "own"));
    *origin.delay.lock().unwrap() = Duration::from_millis(100);
    let (layer, _) = cache();
    let app = origin.router(layer);
    let answers = ten_at_once(&app, "/n").await;
    assert_eq!(origin.requests(), 10);
    assert!(answers.iter().all(|got| got.body == "own"));
    let collapsed = answers
        .iter()
        .filter(|got| {
            got.header("cache-status")
                .contains("fwd=uri-miss; collapsed")
        })
        .count();
    assert_eq!(collapsed, 9, "each waited once, then went itself");
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_a_slow_origin_is_bounded() {
    let origin = Origin::new(|_| ok(&[("cache-control", "max-age=60")], "slow"));
    *origin.delay.lock().unwrap() = Duration::from_secs(10);
    let layer = CacheLayer::new()
        .clock(Clock::tokio())
        .coalesce_wait(Duration::from_secs(2));
    let app = origin.router(layer);
    let started = tokio::time::Instant::now();
    let answers = ten_at_once(&app, "/slow").await;
    assert_eq!(origin.requests(), 10, "after 2 s each went on its own");
    assert!(answers.iter().all(|got| got.body == "slow"));
    assert_eq!(started.elapsed(), Duration::from_secs(12));
}
