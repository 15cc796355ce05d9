//! Bad input and faults: an origin that hangs, one that fails midway through a body, bodies
//! without a length or over the limit, a `Vary` over 100 headers, and many distinct URLs.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::Got;
use http::{Method, StatusCode};
use proxflow_cache::{CacheLayer, Clock};

const S: Duration = Duration::from_secs(1);

async fn send(app: &Router, path: &str, headers: &[(&str, &str)]) -> Got {
    common::send(app, Method::GET, path, headers, "").await
}

#[tokio::test(start_paused = true)]
async fn a_hanging_origin_gets_a_504_or_the_stale_copy() {
    let cache = CacheLayer::new()
        .clock(Clock::tokio())
        .origin_timeout(2 * S);
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let app = Router::new()
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/kept",
            get(|| async {
                // Answers once, then hangs: fresh for 10 s, usable 60 s more if the origin fails.
                if CALLS.fetch_add(1, Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                ([("cache-control", "max-age=10, stale-if-error=60")], "kept")
            }),
        )
        .layer(cache);
    let started = tokio::time::Instant::now();
    let got = send(&app, "/hang", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(got
        .header("cache-status")
        .ends_with("detail=origin-timeout"));
    assert!(got.body.starts_with("gateway timeout"));
    assert_eq!(started.elapsed(), 2 * S);
    send(&app, "/kept", &[]).await;
    tokio::time::advance(20 * S).await;
    let got = send(&app, "/kept", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "kept"));
    assert!(got.header("cache-status").contains("stale-if-error"));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_midway_is_not_stored() {
    let app = Router::new()
        .route(
            "/broken",
            get(|| async {
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from("half")),
                    Err(std::io::Error::other("connection reset")),
                ];
                let body = Body::from_stream(futures_util::stream::iter(chunks));
                ([("cache-control", "max-age=60")], body)
            }),
        )
        .layer(CacheLayer::new().clock(Clock::tokio()));
    for _ in 0..2 {
        let got = send(&app, "/broken", &[]).await;
        assert!(got.error.is_some(), "the client sees the failure");
        assert!(
            got.header("cache-status").contains("fwd=uri-miss"),
            "never a hit"
        );
    }
}

fn streamed(chunks: usize, size: usize) -> Body {
    let chunks = (0..chunks).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; size])));
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test(start_paused = true)]
async fn bodies_without_a_length_are_stored_whole_or_pass_when_too_big() {
    let cache = CacheLayer::new()
        .clock(Clock::tokio())
        .max_object_size(10_000);
    let fresh = [("cache-control", "max-age=60")];
    let app = Router::new()
        .route(
            "/small",
            get(move || async move { (fresh, streamed(10, 100)) }),
        )
        .route(
            "/big",
            get(move || async move { (fresh, streamed(100, 1000)) }),
        )
        .layer(cache);
    send(&app, "/small", &[]).await;
    let got = send(&app, "/small", &[]).await;
    assert!(got.header("cache-status").starts_with("proxflow; hit"));
    assert_eq!(got.body.len(), 1000);
    assert_eq!(
        got.header("content-length"),
        "1000",
        "the stored copy is framed by its length"
    );
    for _ in 0..2 {
        let got = send(&app, "/big", &[]).await;
        assert_eq!(got.body.len(), 100_000, "passed through whole");
        assert!(
            got.header("cache-status").contains("fwd=uri-miss"),
            "not stored"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_vary_over_a_hundred_headers_selects_by_all_of_them() {
    let names: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
    let vary = names.join(", ");
    let app = Router::new()
        .route(
            "/v",
            get(move || {
                let vary = vary.clone();
                async move {
                    (
                        [("cache-control", "max-age=60".to_string()), ("vary", vary)],
                        "v",
                    )
                }
            }),
        )
        .layer(CacheLayer::new().clock(Clock::tokio()));
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    send(&app, "/v", &headers).await;
    let got = send(&app, "/v", &headers).await;
    assert!(got.header("cache-status").starts_with("proxflow; hit"));
    let mut other = headers.clone();
    other[99].1 = "2";
    let got = send(&app, "/v", &other).await;
    assert!(got.header("cache-status").contains("vary-miss"));
}

#[tokio::test(start_paused = true)]
async fn many_distinct_urls_stay_within_max_size() {
    let cache = CacheLayer::new().clock(Clock::tokio()).max_size(1);
    let stats = cache.stats();
    let app = Router::new()
        .route(
            "/{id}",
            get(|| async { ([("cache-control", "max-age=600")], "x".repeat(400)) }),
        )
        .layer(cache);
    for i in 0..20_000 {
        send(&app, &format!("/{i}"), &[]).await;
    }
    let figures = stats.snapshot();
    assert_eq!(figures.stored, 20_000);
    assert!(figures.bytes <= 1_000_000, "{figures:?}");
    // 400 bytes of body, a few headers and the 1200-byte overhead: about 1.7 KB each.
    assert!(figures.entries < 700, "{figures:?}");
    assert_eq!(figures.evicted + figures.entries, 20_000, "{figures:?}");
}
