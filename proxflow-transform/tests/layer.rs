//! The transform layer in front of an axum app: header and body rules on requests and
//! responses, their conditions, and the answers to bodies it cannot or may not transform.

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use proxflow_transform::headers::{HeaderRule, HeaderVerb, Template};
use proxflow_transform::patch::Operation;
use proxflow_transform::rules::{BodyRule, BodyStep};
use proxflow_transform::{Path, TransformLayer, When};
use serde_json::{json, Value};
use tower::ServiceExt;

fn header(name: &str, verb: HeaderVerb) -> HeaderRule {
    HeaderRule::new(name, verb, false).unwrap()
}

fn template(text: &str) -> Template {
    Template::parse(text).unwrap()
}

fn path(text: &str) -> Path {
    Path::parse(text).unwrap()
}

/// `/user` answers a JSON user with a strong ETag; `/text` plain text; `/echo` returns the
/// request's body and its `x-api-version` header; `/big` 4 KiB of JSON.
fn app(layer: TransformLayer) -> Router {
    Router::new()
        .route(
            "/user",
            get(|| async {
                (
                    [("content-type", "application/json"), ("etag", "\"u1\"")],
                    r#"{"user":{"name":"ada","email":"a@example.com"}}"#,
                )
            }),
        )
        .route("/text", get(|| async { "user.name stays" }))
        .route(
            "/uri",
            get(|request: Request| async move { request.uri().to_string() }),
        )
        .route(
            "/echo",
            post(|request: Request| async move {
                let version = request.headers().get("x-api-version").cloned();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let mut headers = HeaderMap::new();
                headers.insert("content-type", "application/json".parse().unwrap());
                if let Some(version) = version {
                    headers.insert("x-seen-version", version);
                }
                (headers, body)
            }),
        )
        .route(
            "/big",
            get(|| async {
                let items: Vec<u32> = (0..1000).collect();
                (
                    [("content-type", "application/json")],
                    json!({ "items": items }).to_string(),
                )
            }),
        )
        .layer(layer)
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    body: &str,
    content_type: &str,
) -> (StatusCode, HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn header_rules_run_on_requests_and_responses() {
    let layer = TransformLayer::new()
        .request_header(
            header("x-api-version", HeaderVerb::Add(template("v1"))),
            When::always(),
        )
        .response_header(
            header("x-path", HeaderVerb::Set(template("{method} {path}"))),
            When::always(),
        );
    let app = app(layer);
    let (_, headers, _) = send(&app, Method::POST, "/echo", "{}", "application/json").await;
    assert_eq!(headers["x-seen-version"], "v1");
    assert_eq!(headers["x-path"], "POST /echo");
}

#[tokio::test]
async fn a_response_body_rule_rewrites_json_and_its_framing() {
    let layer = TransformLayer::new().response_body(
        BodyRule::Patch(Operation::Replace {
            path: path("user.name"),
            value: json!("enriched"),
        }),
        When {
            path_prefix: Some("/user".into()),
            ..When::always()
        },
    );
    let app = app(layer);
    let (_, headers, body) = send(&app, Method::GET, "/user", "", "text/plain").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"user": {"name": "enriched", "email": "a@example.com"}})
    );
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert_eq!(
        headers["etag"], "W/\"u1\"",
        "a strong ETag no longer names these bytes"
    );
    let (_, _, text) = send(&app, Method::GET, "/text", "", "text/plain").await;
    assert_eq!(text, "user.name stays", "not JSON: untouched");
}

#[tokio::test]
async fn a_failing_rule_set_leaves_the_body_unchanged() {
    let layer = TransformLayer::new()
        .response_body(
            BodyRule::Set {
                path: path("user.role"),
                value: json!("admin"),
            },
            When::always(),
        )
        .response_body(
            BodyRule::Patch(Operation::Remove {
                path: path("/missing"),
            }),
            When::always(),
        );
    let (_, headers, body) = send(&app(layer), Method::GET, "/user", "", "text/plain").await;
    assert_eq!(body, r#"{"user":{"name":"ada","email":"a@example.com"}}"#);
    assert_eq!(headers["etag"], "\"u1\"");
}

/// Sets `source` in request bodies of at most 100 bytes.
fn set_source_within_100_bytes() -> TransformLayer {
    let rule = BodyRule::Set {
        path: path("source"),
        value: json!("gateway"),
    };
    TransformLayer::new()
        .request_body(rule, When::always())
        .max_body_size(100)
}

#[tokio::test]
async fn request_bodies_are_rewritten_or_refused_with_a_problem() {
    let layer = set_source_within_100_bytes();
    let app = app(layer);
    let (status, _, body) = send(
        &app,
        Method::POST,
        "/echo",
        r#"{"a":1}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"a": 1, "source": "gateway"})
    );
    let (status, headers, body) =
        send(&app, Method::POST, "/echo", "{not json", "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], 400);
    let large = format!(r#"{{"a":"{}"}}"#, "x".repeat(200));
    let (status, _, _) = send(&app, Method::POST, "/echo", &large, "application/json").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, body) =
        send(&app, Method::POST, "/echo", "not json at all", "text/plain").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "not json at all"),
        "not JSON: untouched"
    );
}

#[tokio::test]
async fn a_request_over_the_limit_can_pass_untouched() {
    let layer = set_source_within_100_bytes().pass_large_requests(true);
    let large = format!(r#"{{"a":"{}"}}"#, "x".repeat(200));
    let (status, _, body) = send(
        &app(layer),
        Method::POST,
        "/echo",
        &large,
        "application/json",
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, large));
}

#[tokio::test]
async fn a_response_over_the_limit_passes_untouched() {
    let layer = TransformLayer::new()
        .response_body(
            BodyRule::Delete {
                path: path("items"),
            },
            When::always(),
        )
        .max_body_size(1000);
    let (_, _, body) = send(&app(layer), Method::GET, "/big", "", "text/plain").await;
    let items: Vec<u32> = (0..1000).collect();
    assert_eq!(body, json!({ "items": items }).to_string());
}

#[tokio::test]
async fn the_same_rules_from_a_configuration_file() {
    let config: proxflow_transform::TransformConfig = serde_yaml::from_str(
        r#"
request:
  headers:
    - add: {name: X-API-Version, value: v1}
response:
  headers:
    - set: {name: X-Path, value: "{method} {path}"}
      when: {statuses: [200]}
  body:
    - replace: {path: user.name, value: enriched}
      when: {path_prefix: /user}
    - deny: {paths: [user.email]}
"#,
    )
    .unwrap();
    let app = app(TransformLayer::from_config(&config).unwrap());
    let (_, headers, body) = send(&app, Method::GET, "/user", "", "text/plain").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"user": {"name": "enriched"}})
    );
    assert_eq!(headers["x-path"], "GET /user");
    let (_, headers, _) = send(&app, Method::POST, "/echo", "{}", "application/json").await;
    assert_eq!(headers["x-seen-version"], "v1");
}

#[tokio::test]
async fn body_values_can_be_templates_over_the_request() {
    let config: proxflow_transform::TransformConfig = serde_yaml::from_str(
        r#"
request:
  body:
    - set: {path: meta.route, template: "{method} {path}"}
    - set: {path: meta.literal, value: "{method} stays"}
    - add: {path: /meta/nothing, value: null}
response:
  body:
    - set: {path: user.seen_by, template: "{header.x-user}"}
      when: {path_glob: "/u*"}
"#,
    )
    .unwrap();
    let app = app(TransformLayer::from_config(&config).unwrap());
    let (_, _, body) = send(&app, Method::POST, "/echo", "{}", "application/json").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"meta": {"route": "POST /echo", "literal": "{method} stays", "nothing": null}})
    );
    let request = axum::http::Request::get("/user")
        .header("x-user", "grace")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["user"]["seen_by"],
        "grace"
    );

    let with_template = TransformLayer::new().request_body(
        BodyStep::templated(
            BodyRule::Set {
                path: path("client"),
                value: Value::Null,
            },
            template("{query.who}"),
        ),
        When::always(),
    );
    let app = self::app(with_template);
    let (_, _, body) = send(
        &app,
        Method::POST,
        "/echo?who=ada",
        "{}",
        "application/json",
    )
    .await;
    assert_eq!(body, r#"{"client":"ada"}"#);
}

#[test]
fn a_bad_rule_names_its_field_and_position() {
    for (text, field) in [
        (
            "request: {headers: [{set: {name: Host, value: x}}]}",
            "request.headers",
        ),
        (
            "response: {body: [{set: {path: 'a\\b', value: 1}}]}",
            "response.body",
        ),
        (
            "response: {headers: [{add: {name: X, value: '{nope}'}}]}",
            "response.headers",
        ),
        (
            "request: {body: [{delete: {path: a}, when: {methods: ['BAD METHOD']}}]}",
            "request.body",
        ),
        (
            "request: {body: [{set: {path: a, template: '{nope}'}}]}",
            "request.body",
        ),
        (
            "request: {body: [{delete: {path: a}, when: {path_glob: '/a/['}}]}",
            "request.body",
        ),
        ("max_body_size: 0", "max_body_size"),
    ] {
        let config: proxflow_transform::TransformConfig = serde_yaml::from_str(text).unwrap();
        let error = TransformLayer::from_config(&config).unwrap_err();
        assert_eq!(error.field, field, "{text}: {error}");
    }
    let unknown = serde_yaml::from_str::<proxflow_transform::TransformConfig>(
        "request: {body: [{explode: {path: a}}]}",
    );
    assert!(unknown.is_err());
}

#[tokio::test]
async fn query_rules_rewrite_the_request_uri() {
    let config: proxflow_transform::TransformConfig = serde_yaml::from_str(
        r#"
request:
  query:
    - add: {name: page, value: "1"}
    - set: {name: client, value: "{header.x-client}"}
    - delete: {name: debug}
"#,
    )
    .unwrap();
    let app = app(TransformLayer::from_config(&config).unwrap());
    let request = Request::get("/uri?debug=1&q=a%20b")
        .header("x-client", "web")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "/uri?q=a+b&page=1&client=web");
    let response_query: proxflow_transform::TransformConfig =
        serde_yaml::from_str("response: {query: [{delete: {name: a}}]}").unwrap();
    let error = TransformLayer::from_config(&response_query).unwrap_err();
    assert_eq!(error.field, "response.query");
}
