//! What the cache's tests share: a request to an app and what came back.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// An answer, its body read to the end.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text (lossy), up to a failure.
    pub body: String,
    /// The body's failure, if it failed.
    pub error: Option<String>,
}

impl Got {
    /// A header's value, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
}

/// Sends a request for `path` on host `example.com` with `headers` and `body`.
pub async fn send(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.com");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let (body, error) = match response.into_body().collect().await {
        Ok(collected) => (
            String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            None,
        ),
        Err(error) => (String::new(), Some(error.to_string())),
    };
    Got {
        status,
        headers,
        body,
        error,
    }
}

/// An origin answer for `path`, counted in `hits`: JSON (text for `.txt` paths) fresh for 60 s,
/// with a strong `ETag`, tagged in `Surrogate-Key` with its last segment and `all`.
pub fn tagged_json(
    hits: &std::sync::atomic::AtomicUsize,
    path: &str,
) -> ([(&'static str, String); 4], String) {
    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tag = path.rsplit('/').next().unwrap_or("");
    let content_type = if path.ends_with(".txt") {
        "text/plain"
    } else {
        "application/json"
    };
    (
        [
            ("cache-control", "max-age=60".to_string()),
            ("content-type", content_type.to_string()),
            ("etag", "\"v1\"".to_string()),
            ("surrogate-key", format!("{tag} all")),
        ],
        format!(r#"{{"user":{{"email":"old@example.com","path":"{path}"}}}}"#),
    )
}
