//! The example site renders Kalgan's asset URLs and serves them.

use std::path::PathBuf;

use axum::body::Body;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use proxflow_examples::site;
use tower::ServiceExt;

fn site_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("site")
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, http::HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn production_renders_versioned_urls_that_are_cached_for_a_year() {
    let app = site::router(&site_root(), true).unwrap();
    let (status, _, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<li>/static/vendor/jquery/dist/jquery.min.js?v001</li>"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/static/css/site.css?v001\""),
        "{page}"
    );

    let (status, headers, body) = get(&app, "/static/vendor/jquery/dist/jquery.min.js?v001").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(body.contains("jQueryStandIn"));
}

#[tokio::test]
async fn development_renders_plain_urls_that_are_revalidated() {
    let app = site::router(&site_root(), false).unwrap();
    let (_, _, page) = get(&app, "/").await;
    assert!(
        page.contains("<li>/static/vendor/jquery/dist/jquery.min.js</li>"),
        "{page}"
    );
    assert!(!page.contains("?v001"));
    let (status, headers, _) = get(&app, "/static/css/site.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
}
