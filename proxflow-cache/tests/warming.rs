//! Predictive warming through the layer, on tokio's paused clock: a key requested often is
//! refreshed before it expires, and what tends to follow a request is fetched before it is
//! asked for.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use http::Method;
use proxflow_cache::{CacheLayer, CacheStats, Clock};

/// An app whose every path answers with the lifetime its path ends with (`/a/60`: 60 s),
/// counting what reaches it.
fn app(warming: bool) -> (Router, Arc<AtomicUsize>, CacheStats) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let cache = CacheLayer::new()
        .clock(Clock::tokio())
        .predictive_warming(warming);
    let stats = cache.stats();
    let router = Router::new()
        .route(
            "/{*path}",
            get(move |request: Request| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let lifetime = request
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or("0")
                        .to_string();
                    ([("cache-control", format!("max-age={lifetime}"))], "body")
                }
            }),
        )
        .layer(cache);
    (router, count, stats)
}

async fn status(app: &Router, path: &str) -> String {
    let got = common::send(app, Method::GET, path, &[], "").await;
    got.header("cache-status").to_string()
}

/// One request a second for 200 s of a key that lives 60 s.
async fn steady(app: &Router) -> usize {
    let mut misses = 0;
    for _ in 0..200 {
        if !status(app, "/steady/60").await.starts_with("proxflow; hit") {
            misses += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    misses
}

#[tokio::test(start_paused = true)]
async fn a_key_requested_often_is_refreshed_before_it_expires() {
    let (plain, plain_origin, _) = app(false);
    let misses_without = steady(&plain).await;
    assert_eq!(
        misses_without, 4,
        "the first request and one after each expiry"
    );
    assert_eq!(plain_origin.load(Ordering::SeqCst), 4);

    let (warm, warm_origin, stats) = app(true);
    let misses_with = steady(&warm).await;
    assert_eq!(misses_with, 1, "only the first request");
    let figures = stats.snapshot();
    assert!(figures.refreshes >= 3, "{figures:?}");
    assert_eq!(
        warm_origin.load(Ordering::SeqCst) as u64,
        1 + figures.refreshes
    );
}

#[tokio::test(start_paused = true)]
async fn what_follows_a_request_is_fetched_before_it_is_asked_for() {
    let (app, _, stats) = app(true);
    let mut detail = Vec::new();
    // Every 10 s a client lists, then opens the same short-lived detail half a second later.
    for _ in 0..12 {
        status(&app, "/list/60").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        detail.push(status(&app, "/detail/1/1").await);
        tokio::time::sleep(Duration::from_millis(9500)).await;
    }
    let hits = detail
        .iter()
        .filter(|s| s.starts_with("proxflow; hit"))
        .count();
    assert!(
        !detail[0].starts_with("proxflow; hit"),
        "nothing learned yet"
    );
    assert!(hits >= 8, "{detail:#?}");
    let figures = stats.snapshot();
    assert!(
        figures.prefetches >= 8 && figures.prefetches_used >= 8,
        "{figures:?}"
    );
}
