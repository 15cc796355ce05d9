//! Hostile bodies through the layer: 100,000 levels of nesting, numbers past `f64`, duplicate
//! keys and invalid UTF-8. None panics or overflows the stack; each gets a clear answer.

use axum::body::Body;
use axum::extract::Request;
use axum::routing::post;
use axum::Router;
use http::StatusCode;
use http_body_util::BodyExt;
use proxflow_transform::rules::BodyRule;
use proxflow_transform::{Path, TransformLayer, When};
use serde_json::json;
use tower::ServiceExt;

/// Echoes the request body as JSON; rules on both directions.
fn app() -> Router {
    let set = || BodyRule::Set {
        path: Path::parse("seen").unwrap(),
        value: json!(true),
    };
    Router::new()
        .route(
            "/echo",
            post(|request: Request| async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                ([("content-type", "application/json")], body)
            }),
        )
        .layer(
            TransformLayer::new()
                .request_body(set(), When::always())
                .response_body(set(), When::always())
                .max_body_size(4 << 20),
        )
}

async fn post_json(body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::post("/echo")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let (status, problem) = post_json(body.into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem.contains("not valid JSON"), "{problem}");
}

#[tokio::test]
async fn numbers_past_f64_and_invalid_utf8_are_refused() {
    let (status, _) = post_json(br#"{"n": 1e400}"#.to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post_json(b"{\"s\": \"\xff\xfe\"}".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn duplicate_keys_keep_the_last_and_big_integers_stay_exact() {
    let (status, body) =
        post_json(br#"{"a": 1, "a": 2, "big": 18446744073709551615}"#.to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["a"], 2);
    assert_eq!(value["big"], json!(u64::MAX));
    assert_eq!(value["seen"], true);
}
