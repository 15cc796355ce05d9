//! Enrichment through the layer, with a client service standing in for the enrichment URL:
//! static data and the URL's object merged at a target path, and the two failure policies.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use proxflow_transform::enrich::{Enrichment, OnFailure};
use proxflow_transform::{Path, TransformLayer, When};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

fn enrichment(url: &'static str) -> Enrichment {
    let data: Map<String, Value> = serde_json::from_value(json!({"source": "gateway"})).unwrap();
    Enrichment::new(data)
        .from_url(Uri::from_static(url), common::client())
        .target(Path::parse("user.profile").unwrap())
        .timeout(Duration::from_secs(1))
}

async fn user(enrichment: Enrichment) -> (StatusCode, Value) {
    let app = Router::new()
        .route(
            "/user",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"user": {"name": "ada", "profile": {"tier": "none"}}}"#,
                )
            }),
        )
        .layer(TransformLayer::new().response_enrich(enrichment, When::always()));
    let request = Request::get("/user").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(start_paused = true)]
async fn data_and_the_url_s_object_merge_at_the_target() {
    let (status, body) = user(enrichment("http://enrich.test/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"user": {"name": "ada", "profile": {"tier": "gold", "region": "eu", "source": "gateway"}}})
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_url_is_skipped_or_answered_502() {
    for url in [
        "http://enrich.test/down",
        "http://enrich.test/list",
        "http://enrich.test/slow",
    ] {
        let (status, body) = user(enrichment(url)).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(
            body["user"]["profile"],
            json!({"tier": "none", "source": "gateway"}),
            "{url}: data alone"
        );
        let (status, problem) = user(enrichment(url).on_failure(OnFailure::BadGateway)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{url}");
        assert!(
            problem["detail"].as_str().unwrap().contains(url),
            "{problem}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_kept_answer_saves_calls_until_it_expires() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let client = proxflow_transform::Client::new(tower::service_fn(
        move |_: http::Request<http_body_util::Full<bytes::Bytes>>| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = if n == 0 { "[]" } else { r#"{"call": 1}"# };
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(body),
                )))
            }
        },
    ));
    let enrichment = Enrichment::new(Map::new())
        .from_url(Uri::from_static("http://enrich.test/"), client)
        .target(Path::parse("user.profile").unwrap())
        .keep_answer_for(Duration::from_secs(30));

    let (_, body) = user(enrichment.clone()).await;
    assert_eq!(
        body["user"]["profile"],
        json!({"tier": "none"}),
        "not an object: skipped"
    );
    for _ in 0..3 {
        let (_, body) = user(enrichment.clone()).await;
        assert_eq!(body["user"]["profile"]["call"], 1);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a failure is not kept; an answer is"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    user(enrichment.clone()).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "expired after its ttl");
}
