//! The cache behind a real HTTP server on 127.0.0.1: a server stops reading a body once its
//! length is reached, or does not read one that has ended already, and the stored copy must be
//! complete by then.

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_cache::CacheLayer;

#[tokio::test]
async fn a_body_sent_by_a_server_is_stored_when_its_length_is_reached_or_when_empty() {
    let cache = CacheLayer::new();
    let stats = cache.stats();
    let fresh = [("cache-control", "max-age=60")];
    let app = Router::new()
        .route("/", get(move || async move { (fresh, "stored body") }))
        .route(
            "/empty",
            get(move || async move { (StatusCode::NO_CONTENT, fresh) }),
        )
        .layer(cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for (path, body) in [("/", "stored body"), ("/empty", "")] {
        let uri: http::Uri = format!("http://{address}{path}").parse().unwrap();
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let response = client.get(uri.clone()).await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap();
            statuses.push(status.to_string());
            let got = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, body);
        }
        assert!(statuses[0].contains("fwd=uri-miss"), "{path}: {statuses:?}");
        assert!(
            statuses[1].starts_with("proxflow; hit"),
            "{path}: {statuses:?}"
        );
    }
    assert_eq!(stats.snapshot().hits, 2);
}
