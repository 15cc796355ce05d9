//! Coded JSON bodies through the layer in front of an axum app: passed untouched unless
//! `decode_content` is set, then decoded, transformed and encoded again in their coding.

#![cfg(feature = "compression")]

use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use proxflow_transform::rules::BodyRule;
use proxflow_transform::{Path, TransformLayer, When};
use serde_json::{json, Value};
use tower::ServiceExt;

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(plain).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(coded: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(coded)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

/// `/user` answers gzip-coded JSON, `/zstd` zstd-coded JSON, `/echo` the request as it came
/// (its body and `Content-Encoding`).
fn app(layer: TransformLayer) -> Router {
    Router::new()
        .route(
            "/user",
            get(|| async {
                (
                    [
                        ("content-type", "application/json"),
                        ("content-encoding", "gzip"),
                        ("etag", "\"u1\""),
                    ],
                    gzip(br#"{"user":{"name":"ada"}}"#),
                )
            }),
        )
        .route(
            "/zstd",
            get(|| async {
                let coded = zstd::bulk::compress(br#"{"user":{"name":"ada"}}"#, 1).unwrap();
                (
                    [
                        ("content-type", "application/json"),
                        ("content-encoding", "zstd"),
                    ],
                    coded,
                )
            }),
        )
        .route(
            "/echo",
            post(|request: Request| async move {
                let coding = request.headers().get("content-encoding").cloned();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let mut headers = HeaderMap::new();
                headers.insert("content-type", "application/json".parse().unwrap());
                if let Some(coding) = coding {
                    headers.insert("content-encoding", coding);
                }
                (headers, body)
            }),
        )
        .layer(layer)
}

fn rename_layer() -> TransformLayer {
    let rule = BodyRule::Set {
        path: Path::parse("user.name").unwrap(),
        value: json!("grace"),
    };
    TransformLayer::new()
        .request_body(rule.clone(), When::always())
        .response_body(rule, When::always())
}

async fn call(app: &Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn get_request(path: &str) -> http::Request<Body> {
    http::Request::get(path).body(Body::empty()).unwrap()
}

fn post_gzip(body: Vec<u8>) -> http::Request<Body> {
    http::Request::builder()
        .method(Method::POST)
        .uri("/echo")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn coded_bodies_pass_untouched_by_default() {
    let app = app(rename_layer());
    let (_, headers, body) = call(&app, get_request("/user")).await;
    assert_eq!(headers["etag"], "\"u1\"");
    assert_eq!(gunzip(&body), br#"{"user":{"name":"ada"}}"#);
}

#[tokio::test]
async fn coded_responses_are_rewritten_in_their_coding() {
    let app = app(rename_layer().decode_content(true));
    let (status, headers, body) = call(&app, get_request("/user")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert_eq!(headers["etag"], "W/\"u1\"");
    let json: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(json, json!({"user": {"name": "grace"}}));

    let (_, headers, body) = call(&app, get_request("/zstd")).await;
    assert_eq!(headers["content-encoding"], "zstd");
    let json: Value = serde_json::from_slice(&zstd::decode_all(&body[..]).unwrap()).unwrap();
    assert_eq!(json, json!({"user": {"name": "grace"}}));
}

#[tokio::test]
async fn coded_requests_are_rewritten_bombs_refused_and_garbage_answered_400() {
    let app = app(rename_layer().decode_content(true).max_body_size(64 * 1024));
    let (status, headers, body) = call(&app, post_gzip(gzip(br#"{"user":{"name":"ada"}}"#))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    let json: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(json, json!({"user": {"name": "grace"}}));

    // 8 MiB of JSON white space in a few KiB: refused at the limit, not inflated.
    let mut bomb = b"{\"user\":{}".to_vec();
    bomb.resize(8 << 20, b' ');
    bomb.push(b'}');
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 64 * 1024);
    let (status, headers, _) = call(&app, post_gzip(bomb)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["content-type"], "application/problem+json");

    let (status, _, body) = call(&app, post_gzip(b"not gzip".to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("not valid in its coding"));
}
