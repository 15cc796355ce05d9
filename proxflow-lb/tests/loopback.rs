//! The balancer in front of real hyper servers on 127.0.0.1, through hyper-util's client and an
//! axum front server: forwarding, headers, retries of refused connections, 502. The faults
//! (garbage, resets, silence, everything down) are in `faults.rs`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::routing::any;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_lb::{AdaptiveLb, HostHeader, Policy, UpstreamFailed};
use tower::ServiceExt;

/// An upstream answering `<name>|<method>|<uri>|host=<host>|xff=<x-forwarded-for>|
/// proto=<x-forwarded-proto>|xhost=<x-forwarded-host>`.
async fn upstream(name: &'static str) -> SocketAddr {
    let app = Router::new().fallback(any(move |request: AxumRequest| async move {
        let header = |n: &str| {
            request
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "{name}|{}|{}|host={}|xff={}|proto={}|xhost={}",
            request.method(),
            request.uri(),
            header("host"),
            header("x-forwarded-for"),
            header("x-forwarded-proto"),
            header("x-forwarded-host"),
        )
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
    // Dropped here: connections are refused.
}

/// A front server: axum with the balancer over hyper-util's client as its fallback.
async fn front(lb: AdaptiveLb) -> SocketAddr {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = tower::ServiceBuilder::new().layer(lb).service(client);
    let app = Router::new().fallback_service(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

async fn get(front: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut request = Request::get(format!("http://{front}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn forwards_in_turn_with_path_query_and_forwarding_headers() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let lb = AdaptiveLb::new([a, b]).policy(Policy::RoundRobin);
    let front = front(lb).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(
            front,
            "/orders/7?full=1",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let fields: Vec<&str> = body.split('|').collect();
        names.push(fields[0].to_string());
        assert_eq!(fields[1], "GET");
        assert_eq!(fields[2], "/orders/7?full=1");
        assert_eq!(fields[3], format!("host={front}"), "Host kept by default");
        assert_eq!(fields[4], "xff=203.0.113.9, 127.0.0.1", "appended");
        assert_eq!(fields[5], "proto=http");
        assert_eq!(fields[6], format!("xhost={front}"));
    }
    assert_eq!(names, ["a", "b", "a", "b"]);
}

#[tokio::test]
async fn host_can_be_the_upstreams() {
    let a = upstream("a").await;
    let lb = AdaptiveLb::new([a])
        .host(HostHeader::Upstream)
        .forwarded_headers(false);
    let front = front(lb).await;
    let (_, body) = get(front, "/", &[]).await;
    assert!(body.contains(&format!("host={a}")), "{body}");
    assert!(body.ends_with("xff=-|proto=-|xhost=-"), "{body}");
}

#[tokio::test]
async fn a_refused_connection_is_tried_on_another_upstream() {
    let dead = closed_port().await;
    let live = upstream("live").await;
    let lb = AdaptiveLb::new([dead, live]).policy(Policy::RoundRobin);
    let handle = lb.handle();
    let front = front(lb).await;
    for _ in 0..4 {
        let (status, body) = get(front, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("live"), "{body}");
    }
    let snapshot = handle.snapshot();
    let dead_figures = &snapshot.upstreams[0];
    assert_eq!(dead_figures.upstream, format!("http://{dead}"));
    // Its turn comes every other request; each time the request is retried on the live one.
    assert_eq!(dead_figures.failures, 2);
    assert_eq!(snapshot.upstreams[1].requests, 4);
}

#[tokio::test]
async fn without_a_retry_a_transport_failure_is_a_502_with_the_error() {
    let dead = closed_port().await;
    let lb = AdaptiveLb::new([dead]);
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = tower::ServiceBuilder::new().layer(lb).service(client);
    let request = Request::post("http://front/orders")
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let failed = response.extensions().get::<UpstreamFailed>().unwrap();
    assert_eq!(&*failed.upstream, format!("http://{dead}"));
    assert_eq!(failed.tried.len(), 1);
    assert!(
        failed.error.to_string().contains("client error"),
        "{}",
        failed.error
    );
}
