//! The gateway through a real server on 127.0.0.1: the site, `/api` through every layer to the
//! demo upstreams, paths made canonical, the admin endpoint, and the dashboard's figures.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_examples::gateway::config::{DemoUpstreamConfig, Loaded};
use proxflow_examples::gateway::{self};

/// Starts the gateway of `loaded` on a free port.
async fn serve(loaded: Loaded) -> SocketAddr {
    let gateway = gateway::start(&loaded).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxflow_examples::serve(listener, gateway.router));
    addr
}

async fn send(
    gateway: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn get(gateway: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    send(gateway, Method::GET, path, "").await
}

async fn stats(gateway: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(gateway, "/dashboard/stats").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

fn demo(name: &str, failure_rate: f64) -> DemoUpstreamConfig {
    DemoUpstreamConfig {
        name: name.into(),
        latency: Duration::ZERO,
        failure_rate,
    }
}

/// The embedded configuration with `demos`, and a rate limit that never refills during a test.
fn loaded(burst: u32, demos: Vec<DemoUpstreamConfig>) -> Loaded {
    let mut loaded = Loaded::embedded();
    let config = &mut loaded.config;
    config.rate_limit.rate = 1;
    config.rate_limit.per = Duration::from_secs(3600);
    config.rate_limit.burst = burst;
    config.demo_upstreams = demos;
    config.access_log.enabled = false;
    loaded
}

fn healthy() -> Vec<DemoUpstreamConfig> {
    ["fast", "slow", "flaky"]
        .map(|name| demo(name, 0.0))
        .to_vec()
}

#[tokio::test]
async fn the_site_the_api_and_the_dashboard_work_together() {
    let gateway = serve(loaded(3, healthy())).await;

    let (status, _, page) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/static/css/site.css?v001"), "{page}");

    for remaining in [2, 1, 0] {
        let (status, headers, body) = get(gateway, "/api/hello?x=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            answer["path"], "/api/hello",
            "the upstream sees the whole path"
        );
        assert_eq!(
            answer["gateway"]["route"], "GET /api/hello",
            "the transform's stamp"
        );
        assert_eq!(headers["x-served-by"], "proxflow-gateway");
        assert!(["fast", "slow", "flaky"].contains(&answer["upstream"].as_str().unwrap()));
        let limit = headers["ratelimit"].to_str().unwrap();
        assert!(
            limit.starts_with(&format!("\"default\";r={remaining};")),
            "{limit}"
        );
    }
    let (status, headers, _) = get(gateway, "/api/hello").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));

    let stats = stats(gateway).await;
    assert_eq!(stats["ratelimit"]["allowed"], 3);
    assert_eq!(stats["ratelimit"]["limited"], 1);
    assert_eq!(
        stats["ratelimit"]["missing_key"], 0,
        "every request carries its client's address"
    );
    let breakers = stats["breakers"].as_array().unwrap();
    let successes: u64 = breakers
        .iter()
        .map(|b| b["totals"]["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(successes, 3, "the 429 never reached them");
    assert!(breakers.iter().all(|b| b["state"] == "closed"));
    let answered: u64 = stats["lb"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(answered, 3);
    assert!(stats["traffic"]["requests"].as_u64().unwrap() >= 5);

    let (status, headers, page) = get(gateway, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("/dashboard/stats"));
    assert_eq!(get(gateway, "/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_upstream_opens_its_own_breaker_only() {
    let mut loaded = loaded(1000, vec![demo("broken", 1.0), demo("fine", 0.0)]);
    // Round robin, so that the broken upstream keeps its half (the adaptive policy would
    // starve it before its breaker saw ten calls).
    loaded.config.lb.lb_policy = proxflow_lb::Policy::RoundRobin;
    let gateway = serve(loaded).await;
    // Enough calls for the broken upstream's breaker (10 in its window, half failed).
    for _ in 0..60 {
        get(gateway, "/api/orders").await;
    }
    let stats = stats(gateway).await;
    let breakers = stats["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 2, "one per upstream: {breakers:?}");
    let states: Vec<&str> = breakers
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"open") && states.contains(&"closed"),
        "{states:?}"
    );
    // With the broken one's breaker open, the balancer sends the rest to the fine one.
    let (status, _, body) = get(gateway, "/api/orders").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn paths_are_made_canonical_before_routing() {
    let gateway = serve(loaded(100, healthy())).await;
    let (status, _, body) = get(gateway, "/api/../static/css/site.css").await;
    assert_eq!(status, StatusCode::OK, "routed as /static/css/site.css");
    assert!(body.contains('{'), "{body}");
    for path in [
        "/api/..%2f..%2fetc%2fpasswd",
        "/api/../../etc/passwd",
        "/api/%2e%2e/%2e%2e/x",
    ] {
        let (status, _, _) = get(gateway, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    let stats = stats(gateway).await;
    let forwarded: u64 = stats["lb"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(forwarded, 0, "nothing reached an upstream");
}

#[tokio::test]
async fn the_admin_endpoint_changes_an_upstream_and_forces_its_breaker() {
    let gateway = serve(loaded(1000, vec![demo("only", 0.0)])).await;
    let (status, _, body) = send(
        gateway,
        Method::POST,
        "/admin/upstreams/only",
        r#"{"failure_rate": 1.0}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(gateway, "/api/x").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    send(
        gateway,
        Method::POST,
        "/admin/upstreams/only",
        r#"{"failure_rate": 0, "latency": "1ms"}"#,
    )
    .await;
    assert_eq!(get(gateway, "/api/x").await.0, StatusCode::OK);

    let (status, _, body) = send(
        gateway,
        Method::POST,
        "/admin/upstreams/only/breaker",
        r#"{"state": "open"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get(gateway, "/api/x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("circuit breaker open") || body.contains("no upstream"),
        "{body}"
    );
    assert_eq!(
        send(gateway, Method::POST, "/admin/upstreams/nobody", "{}")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_aggregated_endpoint_and_the_cache_work_through_the_gateway() {
    let gateway = serve(loaded(1000, healthy())).await;
    let (status, _, body) = get(gateway, "/api/combined").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let combined: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(combined["fast"]["upstream"], "fast");
    assert_eq!(combined["slow"]["upstream"], "slow");

    let (_, headers, _) = get(gateway, "/api/cached/item").await;
    assert!(
        headers["cache-status"].to_str().unwrap().contains("stored"),
        "{headers:?}"
    );
    let (_, headers, _) = get(gateway, "/api/cached/item").await;
    assert!(
        headers["cache-status"].to_str().unwrap().contains("hit"),
        "{headers:?}"
    );
}
