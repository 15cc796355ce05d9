//! The invalidation webhook through an axum app: authentication, invalidation by key, pattern
//! and tag, partial JSON updates, and the problem documents of refused calls.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use proxflow_cache::{CacheLayer, Clock, WebhookAuth};
use sha2::Sha256;

const TOKEN: &str = "a-token-of-24-characters";

/// An app whose every path answers JSON for 60 s, tagged by its last segment, counting the
/// requests that reach it.
fn app(auth: WebhookAuth) -> (Router, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let cache = CacheLayer::new()
        .clock(Clock::tokio())
        .webhook("/cache/invalidate", auth);
    let router = Router::new()
        .route(
            "/{*path}",
            get(move |request: Request| {
                let seen = Arc::clone(&seen);
                async move { common::tagged_json(&seen, request.uri().path()) }
            }),
        )
        .layer(cache);
    (router, count)
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let got = common::send(app, method, path, headers, body).await;
    (got.status, got.headers, got.body)
}

async fn get_status(app: &Router, path: &str) -> String {
    let (_, headers, _) = send(app, Method::GET, path, &[], "").await;
    headers["cache-status"].to_str().unwrap().to_string()
}

async fn call(app: &Router, body: &str) -> (StatusCode, http::HeaderMap, String) {
    let bearer = format!("Bearer {TOKEN}");
    send(
        app,
        Method::POST,
        "/cache/invalidate",
        &[("authorization", &bearer)],
        body,
    )
    .await
}

fn bearer() -> WebhookAuth {
    WebhookAuth::Bearer(TOKEN.into())
}

#[tokio::test(start_paused = true)]
async fn a_key_a_pattern_and_a_tag_invalidate_what_they_name() {
    let (app, _) = app(bearer());
    for path in [
        "/api/users/1",
        "/api/users/2?x=1",
        "/api/usersettings",
        "/other/7",
    ] {
        get_status(&app, path).await;
    }
    let (status, _, body) = call(&app, r#"{"action":"invalidate","key":"/other/7"}"#).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"invalidated":1}"#)
    );
    assert!(get_status(&app, "/other/7").await.contains("uri-miss"));
    let (_, _, body) = call(&app, r#"{"action":"invalidate","pattern":"api/users"}"#).await;
    assert_eq!(body, r#"{"invalidated":2}"#, "not /api/usersettings");
    assert!(get_status(&app, "/api/users/1").await.contains("uri-miss"));
    assert!(get_status(&app, "/api/usersettings")
        .await
        .starts_with("proxflow; hit"));
    let (_, _, body) = call(&app, r#"{"action":"invalidate","tag":"all"}"#).await;
    assert_eq!(
        body, r#"{"invalidated":3}"#,
        "every entry stored now carries the tag `all`"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_update_edits_the_stored_json() {
    let (app, count) = app(bearer());
    send(&app, Method::GET, "/users/user_123", &[], "").await;
    let update = r#"{"action":"partial_update","partial":{"key":"user_123","path":"user.email","value":"new@example.com"}}"#;
    let (status, _, body) = call(&app, update).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"updated":1}"#)
    );
    let (_, headers, body) = send(&app, Method::GET, "/users/user_123", &[], "").await;
    assert_eq!(
        body,
        r#"{"user":{"email":"new@example.com","path":"/users/user_123"}}"#
    );
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert!(
        headers.get("etag").is_none(),
        "the old validator no longer describes it"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "served from the store");
}

#[tokio::test(start_paused = true)]
async fn refused_calls_get_a_problem_and_change_nothing() {
    let (app, _) = app(bearer());
    send(&app, Method::GET, "/users/u1", &[], "").await;
    send(&app, Method::GET, "/notes/u1.txt", &[], "").await;
    let unauthenticated = send(
        &app,
        Method::POST,
        "/cache/invalidate",
        &[],
        r#"{"action":"invalidate","key":"/users/u1"}"#,
    )
    .await;
    assert_eq!(unauthenticated.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated.1["www-authenticate"], "Bearer");
    let wrong = send(
        &app,
        Method::POST,
        "/cache/invalidate",
        &[("authorization", "Bearer wrong-token-of-24-chars!")],
        r#"{"action":"invalidate","key":"/users/u1"}"#,
    )
    .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    for (body, status) in [
        ("{not json", StatusCode::BAD_REQUEST),
        (r#"{"action":"explode"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"action":"invalidate"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"action":"partial_update","partial":{"key":"nothing","path":"a","value":1}}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            r#"{"action":"partial_update","partial":{"key":"/notes/u1.txt","path":"a","value":1}}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            r#"{"action":"partial_update","partial":{"key":"u1","path":"user.missing.deep","value":1}}"#,
            StatusCode::CONFLICT,
        ),
    ] {
        let (got, headers, text) = call(&app, body).await;
        assert_eq!(got, status, "{body}: {text}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], status.as_u16());
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // `all` tags both entries: the text one refuses the update, so the JSON one is unchanged.
    let refused = call(
        &app,
        r#"{"action":"partial_update","partial":{"key":"all","path":"user.email","value":"x"}}"#,
    )
    .await;
    assert_eq!(refused.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, _, body) = send(&app, Method::GET, "/users/u1", &[], "").await;
    assert!(body.contains("old@example.com"), "{body}");
    assert!(get_status(&app, "/users/u1")
        .await
        .starts_with("proxflow; hit"));
}

#[tokio::test(start_paused = true)]
async fn an_hmac_signature_authenticates_the_body() {
    let secret = "a-secret-of-24-characters";
    let (app, _) = app(WebhookAuth::HmacSha256(secret.into()));
    get_status(&app, "/a").await;
    let body = r#"{"action":"invalidate","key":"/a"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let header = format!("sha256={signature}");
    let tampered = send(
        &app,
        Method::POST,
        "/cache/invalidate",
        &[("x-proxflow-signature", &header)],
        r#"{"action":"invalidate","key":"/b"}"#,
    )
    .await;
    assert_eq!(tampered.0, StatusCode::UNAUTHORIZED);
    let signed = send(
        &app,
        Method::POST,
        "/cache/invalidate",
        &[("x-proxflow-signature", &header)],
        body,
    )
    .await;
    assert_eq!(
        (signed.0, signed.2.as_str()),
        (StatusCode::OK, r#"{"invalidated":1}"#)
    );
}

#[test]
fn a_webhook_without_authentication_must_say_so() {
    let config: proxflow_cache::CacheConfig =
        serde_yaml::from_str("{webhook_path: /cache/invalidate}").unwrap();
    assert_eq!(config.validate().unwrap_err().field, "webhook_auth");
    let config: proxflow_cache::CacheConfig =
        serde_yaml::from_str("{webhook_path: /cache/invalidate, webhook_auth: none}").unwrap();
    assert!(config.validate().is_ok());
    let config: proxflow_cache::CacheConfig =
        serde_yaml::from_str("{webhook_path: /hook, webhook_auth: {bearer: short}}").unwrap();
    assert_eq!(config.validate().unwrap_err().field, "webhook_auth");
}
