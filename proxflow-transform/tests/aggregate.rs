//! An aggregated endpoint through the layer, with a client service standing in for the
//! backends: merge, array and group, a partial answer, and every backend failing.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use proxflow_transform::aggregate::{Aggregation, Combine, PARTIAL};
use proxflow_transform::{TransformLayer, When};
use serde_json::{json, Value};
use tower::ServiceExt;

fn backends(paths: &[&str]) -> Vec<(String, Uri)> {
    paths
        .iter()
        .map(|p| {
            (
                p.trim_start_matches('/').to_string(),
                format!("http://backend.test{p}").parse().unwrap(),
            )
        })
        .collect()
}

async fn call(aggregation: Aggregation) -> (StatusCode, Option<String>, Value) {
    let when = When {
        path_prefix: Some("/combined".into()),
        ..When::always()
    };
    let app = Router::new()
        .route(
            "/combined",
            get(|| async { "the inner service is not called" }),
        )
        .layer(TransformLayer::new().aggregate(aggregation.timeout(Duration::from_secs(1)), when));
    let response = app
        .oneshot(Request::get("/combined").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let partial = response
        .headers()
        .get(PARTIAL)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, partial, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(start_paused = true)]
async fn answers_merge_or_gather() {
    let (status, partial, body) =
        call(Aggregation::new(backends(&["/a", "/b"]), common::client())).await;
    assert_eq!((status, partial), (StatusCode::OK, None));
    assert_eq!(
        body,
        json!({"user": {"name": "ada", "email": "a@b"}, "source": "b"})
    );
    let (_, _, body) =
        call(Aggregation::new(backends(&["/a", "/b"]), common::client()).combine(Combine::Array))
            .await;
    assert_eq!(body[1]["source"], "b");
    let (_, _, body) =
        call(Aggregation::new(backends(&["/a", "/b"]), common::client()).combine(Combine::Group))
            .await;
    assert_eq!(body["a"]["source"], "a");
    assert_eq!(body["b"]["user"]["email"], "a@b");
}

#[tokio::test(start_paused = true)]
async fn a_partial_answer_says_so_and_all_failed_is_502() {
    let (status, partial, body) = call(Aggregation::new(
        backends(&["/a", "/slow", "/down"]),
        common::client(),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(partial.as_deref(), Some("slow, down"));
    assert_eq!(body["source"], "a");
    let (status, _, problem) = call(Aggregation::new(
        backends(&["/slow", "/down"]),
        common::client(),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["status"], 502);
}
