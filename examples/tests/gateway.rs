//! The gateway through a real server on 127.0.0.1: the site, `/api` through the rate limiter,
//! the breaker and the balancer to the demo upstreams, and the dashboard's figures.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_examples::gateway::{self, DemoUpstream, Settings};

/// Starts the gateway on a free port.
async fn serve(settings: Settings) -> SocketAddr {
    let gateway = gateway::start(&settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxflow_examples::serve(listener, gateway.router));
    addr
}

async fn get(gateway: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::get(format!("http://{gateway}{path}"))
        .body(Body::empty())
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

async fn stats(gateway: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(gateway, "/dashboard/stats").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

/// Three upstreams answering at once, none failing; the rate limit never refills during a test.
fn settings(burst: u32, upstreams: Vec<DemoUpstream>) -> Settings {
    Settings {
        rate: 1,
        per: Duration::from_secs(3600),
        burst,
        upstreams,
        ..Settings::default()
    }
}

fn healthy() -> Vec<DemoUpstream> {
    ["a", "b", "c"]
        .map(|name| DemoUpstream::new(name, Duration::ZERO))
        .to_vec()
}

#[tokio::test]
async fn the_site_the_api_and_the_dashboard_work_together() {
    let gateway = serve(settings(3, healthy())).await;

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
        assert!(["a", "b", "c"].contains(&answer["upstream"].as_str().unwrap()));
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
    assert_eq!(stats["ratelimit"]["active_keys"], 1);
    assert_eq!(stats["breaker"]["state"], "closed");
    assert_eq!(
        stats["breaker"]["totals"]["successes"], 3,
        "the 429 never reached it"
    );
    let upstreams = stats["lb"]["upstreams"].as_array().unwrap();
    assert_eq!(upstreams.len(), 3);
    let answered: u64 = upstreams
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(answered, 3);

    let (status, headers, page) = get(gateway, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("/dashboard/stats"));
}

#[tokio::test]
async fn failing_upstreams_open_the_breaker_which_then_shields_them() {
    let failing = healthy()
        .into_iter()
        .map(|demo| demo.failing_every(1))
        .collect();
    let gateway = serve(settings(100, failing)).await;

    // The breaker's defaults: 10 calls in the window, half of them failed, opens it.
    for _ in 0..10 {
        let (status, _, body) = get(gateway, "/api/orders").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    let (status, headers, body) = get(gateway, "/api/orders").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("circuit breaker open"), "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "60");

    let stats = stats(gateway).await;
    assert_eq!(stats["breaker"]["state"], "open");
    assert_eq!(stats["breaker"]["totals"]["failures"], 10);
    assert_eq!(stats["breaker"]["totals"]["refused"], 1);
    let forwarded: u64 = stats["lb"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert!(
        forwarded <= 10,
        "{forwarded} requests reached the upstreams"
    );
}
