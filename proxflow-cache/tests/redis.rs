//! Invalidations shared between two cache instances through a real `redis-server`.
//!
//! These tests need Redis, so they are ignored by a plain `cargo test`; `.ci/run` starts a
//! server and runs them. By hand:
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! PROXFLOW_REDIS_URL=redis://127.0.0.1:6390 \
//!     cargo test -p proxflow-cache --features redis --test redis -- --ignored
//! ```
//!
//! The test of a lost connection starts its own `redis-server` (from `PATH`) on a free port,
//! so that it can stop and restart it.

#![cfg(feature = "redis")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use http::{Method, StatusCode};
use proxflow_cache::{CacheLayer, DistributedSyncConfig, SharedStoreConfig, WebhookAuth};
use proxflow_core::redis::RedisConfig;

const TOKEN: &str = "a-token-of-24-characters";

fn redis_url() -> String {
    std::env::var("PROXFLOW_REDIS_URL")
        .expect("PROXFLOW_REDIS_URL (a redis-server's URL): these tests need Redis")
}

/// A channel of the test's own, so that tests running at once do not hear each other.
fn sync(address: &str, channel: &str, interval: Duration) -> DistributedSyncConfig {
    DistributedSyncConfig {
        sync_interval: interval,
        channel: format!("proxflow:test:{channel}:{}", std::process::id()),
        ..DistributedSyncConfig::new(RedisConfig::new(address))
    }
}

/// One instance: a cache with its webhook over an origin of [`common::tagged_json`] answers
/// (and 204 to a POST).
fn instance(sync: DistributedSyncConfig, origin_hits: &Arc<AtomicUsize>) -> Router {
    let seen = Arc::clone(origin_hits);
    let cache = CacheLayer::new()
        .webhook("/cache/invalidate", WebhookAuth::Bearer(TOKEN.into()))
        .distributed_sync(sync);
    Router::new()
        .route(
            "/{*path}",
            get(move |request: Request| {
                let seen = Arc::clone(&seen);
                async move { common::tagged_json(&seen, request.uri().path()) }
            })
            .post(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(cache)
}

async fn webhook(app: &Router, body: &str) -> StatusCode {
    let bearer = format!("Bearer {TOKEN}");
    let headers = [("authorization", bearer.as_str())];
    common::send(app, Method::POST, "/cache/invalidate", &headers, body)
        .await
        .status
}

/// Whether `path` is stored (answered by `only-if-cached` without the origin).
async fn stored(app: &Router, path: &str) -> bool {
    let headers = [("cache-control", "only-if-cached")];
    let got = common::send(app, Method::GET, path, &headers, "").await;
    got.status == StatusCode::OK
}

/// Waits until `path` is no longer stored on `app`; how long it took.
async fn gone(app: &Router, path: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while stored(app, path).await {
        assert!(
            start.elapsed() < within,
            "{path} still stored after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// Two instances on one Redis, both subscribed (each has answered one request).
async fn pair(channel: &str) -> (Router, Router, Arc<AtomicUsize>) {
    let url = redis_url();
    let hits = Arc::new(AtomicUsize::new(0));
    let config = sync(&url, channel, Duration::from_millis(200));
    let a = instance(config.clone(), &hits);
    let b = instance(config, &hits);
    // The subscription starts with the first request and drops what was stored before.
    common::send(&a, Method::GET, "/warmup", &[], "").await;
    common::send(&b, Method::GET, "/warmup", &[], "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (a, b, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn every_kind_of_invalidation_reaches_the_other_instance() {
    let (a, b, _) = pair("kinds").await;
    for path in ["/users/1", "/users/2", "/teams/3", "/items/4"] {
        common::send(&b, Method::GET, path, &[], "").await;
        assert!(stored(&b, path).await, "{path} stored on b");
    }
    let status = webhook(&a, r#"{"action":"invalidate","key":"/users/1"}"#).await;
    assert_eq!(status, StatusCode::OK);
    gone(&b, "/users/1", Duration::from_secs(2)).await;
    assert!(stored(&b, "/users/2").await, "only the key");

    webhook(&a, r#"{"action":"invalidate","tag":"3"}"#).await;
    gone(&b, "/teams/3", Duration::from_secs(2)).await;

    webhook(&a, r#"{"action":"invalidate","pattern":"users"}"#).await;
    gone(&b, "/users/2", Duration::from_secs(2)).await;

    // An unsafe method that succeeds on a invalidates its target on b too.
    let got = common::send(&a, Method::POST, "/items/4", &[], "").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    gone(&b, "/items/4", Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn a_partial_update_made_on_one_instance_edits_the_other_s_body() {
    let (a, b, hits) = pair("partial").await;
    common::send(&b, Method::GET, "/users/9", &[], "").await;
    let before = hits.load(Ordering::SeqCst);
    // a stores nothing for the key (a 404 here), and b still gets the update.
    let status = webhook(
        &a,
        r#"{"action":"partial_update","partial":{"key":"/users/9","path":"user.email","value":"new@example.com"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let start = Instant::now();
    loop {
        let got = common::send(&b, Method::GET, "/users/9", &[], "").await;
        if got.body.contains("new@example.com") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{}", got.body);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "edited in b's store, not refetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn invalidations_propagate_within_100_ms_at_the_99th_percentile() {
    let (a, b, _) = pair("delay").await;
    let mut delays = Vec::new();
    for round in 0..200 {
        let path = format!("/round/{round}");
        common::send(&b, Method::GET, &path, &[], "").await;
        let body = format!(r#"{{"action":"invalidate","key":"{path}"}}"#);
        // From the webhook's answer on a to the entry's absence on b.
        webhook(&a, &body).await;
        delays.push(gone(&b, &path, Duration::from_secs(2)).await);
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    println!(
        "propagation over loopback Redis: p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays[delays.len() - 1]
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

/// A `redis-server` of the test's own, on `port`, without persistence.
fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn after_losing_redis_an_instance_drops_what_it_stored_before_the_gap() {
    let _ = redis_url();
    let port = free_port();
    let mut redis = start_redis(port);
    let address = format!("127.0.0.1:{port}");
    let interval = Duration::from_millis(200);
    let hits = Arc::new(AtomicUsize::new(0));
    let config = DistributedSyncConfig {
        shared_store: Some(SharedStoreConfig::default()),
        ..sync(&address, "gap", interval)
    };
    let a = instance(config.clone(), &hits);
    let b = instance(config, &hits);
    common::send(&a, Method::GET, "/warmup", &[], "").await;
    common::send(&b, Method::GET, "/warmup", &[], "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::send(&b, Method::GET, "/users/1", &[], "").await;
    common::send(&b, Method::GET, "/users/2", &[], "").await;

    redis.kill().unwrap();
    redis.wait().unwrap();
    // Made while Redis is down: a cannot tell b, which keeps serving what it stored.
    let status = webhook(&a, r#"{"action":"invalidate","key":"/users/1"}"#).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the webhook answers for its own store"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        stored(&b, "/users/1").await,
        "no word from a while Redis is down"
    );

    let mut redis = start_redis(port);
    let back = Instant::now();
    // The documented bound: 2 x sync_interval + 2 s of backoff, after Redis is back.
    let bound = interval * 2 + Duration::from_secs(2) + Duration::from_millis(500);
    gone(&b, "/users/1", bound).await;
    gone(&b, "/users/2", bound).await;
    println!(
        "entries stored before the gap dropped {:?} after Redis came back",
        back.elapsed()
    );

    // Subscribed again: invalidations flow as before.
    common::send(&b, Method::GET, "/users/3", &[], "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    webhook(&a, r#"{"action":"invalidate","key":"/users/3"}"#).await;
    gone(&b, "/users/3", Duration::from_secs(2)).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// Three instances sharing a second level in Redis, each subscribed.
async fn trio(channel: &str) -> ([Router; 3], Arc<AtomicUsize>) {
    let url = redis_url();
    let hits = Arc::new(AtomicUsize::new(0));
    let config = DistributedSyncConfig {
        shared_store: Some(SharedStoreConfig::default()),
        ..sync(&url, channel, Duration::from_millis(200))
    };
    let trio = [(); 3].map(|()| instance(config.clone(), &hits));
    for app in &trio {
        common::send(app, Method::GET, "/warmup", &[], "").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    hits.store(0, Ordering::SeqCst);
    (trio, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn a_miss_on_one_instance_is_a_hit_from_another_s_store() {
    let ([a, b, _], hits) = trio("second-level").await;
    common::send(&a, Method::GET, "/users/1", &[], "").await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // a writes in the background: b may miss the value for a moment.
    let start = Instant::now();
    let got = loop {
        let got = common::send(
            &b,
            Method::GET,
            "/users/1",
            &[("cache-control", "only-if-cached")],
            "",
        )
        .await;
        if got.status == StatusCode::OK {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{}", got.status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        got.header("cache-status")
            .starts_with("proxflow; hit; detail=shared"),
        "{}",
        got.header("cache-status")
    );
    assert!(got.body.contains("/users/1"));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the origin was asked once");
    // Now in b's own store.
    let got = common::send(&b, Method::GET, "/users/1", &[], "").await;
    let status = got.header("cache-status");
    assert!(
        status.starts_with("proxflow; hit") && !status.contains("shared"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server (see the file's docs)"]
async fn an_invalidation_leaves_nothing_in_the_second_level_to_read_back() {
    let ([a, b, c], hits) = trio("second-level-invalidation").await;
    for path in ["/users/1", "/users/2", "/teams/3"] {
        common::send(&a, Method::GET, path, &[], "").await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/users/1", "/teams/3"] {
        assert!(stored(&b, path).await, "{path} from the second level");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    webhook(&b, r#"{"action":"invalidate","pattern":"users"}"#).await;
    webhook(&b, r#"{"action":"invalidate","tag":"3"}"#).await;
    for app in [&a, &b] {
        gone(app, "/teams/3", Duration::from_secs(2)).await;
        gone(app, "/users/1", Duration::from_secs(2)).await;
    }
    // c never stored them: nothing in Redis answers it either.
    for path in ["/users/1", "/users/2", "/teams/3"] {
        assert!(!stored(&c, path).await, "{path} left in the second level");
    }
}
