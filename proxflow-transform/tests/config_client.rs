//! Enrichment and aggregation from a configuration file, with a client service standing in
//! for the URLs; without a client such a file is refused with the field named.

mod common;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use http_body_util::BodyExt;
use proxflow_transform::{TransformConfig, TransformLayer};
use serde_json::{json, Value};
use tower::ServiceExt;

const CONFIG: &str = r#"
response:
  enrich:
    - data: {source: gateway}
      from_url: http://enrich.test/ok
      target: user.profile
      timeout: 500ms
      keep_answer_for: 30s
      when: {path_prefix: /user}
aggregate:
  - backends:
      - {name: a, url: "http://backend.test/a"}
      - {name: b, url: "http://backend.test/b"}
    combine: group
    max_concurrent: 2
    when: {path_glob: "/combined"}
"#;

async fn get_json(app: &Router, path: &str) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(start_paused = true)]
async fn enrichment_and_aggregation_come_from_the_file() {
    let config: TransformConfig = serde_yaml::from_str(CONFIG).unwrap();
    let layer = TransformLayer::from_config_with_client(&config, common::client()).unwrap();
    let app = Router::new()
        .route(
            "/user",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"user": {"name": "ada"}}"#,
                )
            }),
        )
        .route("/combined", get(|| async { "not called" }))
        .layer(layer);
    let (status, body) = get_json(&app, "/user").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"user": {"name": "ada", "profile": {"source": "gateway", "tier": "gold", "region": "eu"}}})
    );
    let (status, body) = get_json(&app, "/combined").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["a"]["source"], "a");
    assert_eq!(body["b"]["source"], "b");
}

#[test]
fn urls_without_a_client_or_bad_urls_are_refused_with_their_field() {
    let config: TransformConfig = serde_yaml::from_str(CONFIG).unwrap();
    let error = TransformLayer::from_config(&config).unwrap_err();
    assert_eq!(error.field, "response.enrich", "{error}");
    assert!(
        error.to_string().contains("from_config_with_client"),
        "{error}"
    );
    for (text, field) in [
        (
            "aggregate: [{backends: [{name: a, url: /relative}], when: {}}]",
            "aggregate",
        ),
        ("aggregate: [{backends: [], when: {}}]", "aggregate"),
        (
            "request: {enrich: [{from_url: 'http://x/', target: 'a\\b'}]}",
            "request.enrich",
        ),
    ] {
        let config: TransformConfig = serde_yaml::from_str(text).unwrap();
        let error = TransformLayer::from_config_with_client(&config, common::client()).unwrap_err();
        assert_eq!(error.field, field, "{text}: {error}");
    }
    let static_only: TransformConfig =
        serde_yaml::from_str("request: {enrich: [{data: {a: 1}}]}").unwrap();
    assert!(TransformLayer::from_config(&static_only).is_ok());
}
