//! The cache behind a real HTTP server on 127.0.0.1: a server stops reading a body once its
//! length is reached, and the stored copy must be complete by then.

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_cache::CacheLayer;

#[tokio::test]
async fn a_body_sent_by_a_server_is_stored_when_its_length_is_reached() {
    let cache = CacheLayer::new();
    let stats = cache.stats();
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([("cache-control", "max-age=60")], "stored body") }),
        )
        .layer(cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{address}/").parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client.get(uri.clone()).await.unwrap();
        statuses.push(
            response.headers()["cache-status"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "stored body");
    }
    assert!(statuses[0].contains("fwd=uri-miss"), "{statuses:?}");
    assert!(statuses[1].starts_with("proxflow; hit"), "{statuses:?}");
    assert_eq!(stats.snapshot().hits, 1);
}
