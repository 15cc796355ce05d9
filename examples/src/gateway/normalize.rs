//! Request paths made canonical before routing, as nginx does: `.` and `..` segments resolved
//! (also when percent-encoded, `%2e%2e`, and across encoded slashes, `%2f`), repeated slashes
//! merged; a path that climbs above the root is refused with 400. So `/api/../static/x` is
//! routed as `/static/x`, and `/api/..%2f..%2fetc%2fpasswd` never reaches an upstream.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, Uri};

/// A path that climbs above the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboveRoot;

/// The canonical form of `path`: `Ok(None)` when it is canonical already.
pub fn canonical(path: &str) -> Result<Option<String>, AboveRoot> {
    // Slashes and dots written as escapes count as what they are; other escapes stay as sent.
    let decoded = decode_slashes_and_dots(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(AboveRoot);
                }
            }
            segment => segments.push(segment),
        }
    }
    let trailing = decoded.len() > 1 && (decoded.ends_with('/') || decoded.ends_with("/."));
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if canonical.is_empty() || trailing {
        canonical.push('/');
    }
    Ok((canonical != path).then_some(canonical))
}

/// `%2f`, `%5c` and `%2e` (either case) as `/`, `\` and `.`.
fn decode_slashes_and_dots(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3).unwrap_or("");
        match escape.to_ascii_lowercase().as_str() {
            "2f" => out.push('/'),
            "5c" => out.push('\\'),
            "2e" => out.push('.'),
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// The middleware: rewrites the request's path to its canonical form, or answers 400.
pub async fn normalize(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    match canonical(path) {
        Ok(None) => next.run(request).await,
        Ok(Some(canonical)) => {
            let query = request
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            match format!("{canonical}{query}").parse::<Uri>() {
                Ok(uri) => {
                    *request.uri_mut() = uri;
                    next.run(request).await
                }
                Err(_) => bad_request(),
            }
        }
        Err(AboveRoot) => bad_request(),
    }
}

fn bad_request() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "bad request: the path leaves the root\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_resolve_and_escapes_count() {
        assert_eq!(canonical("/api/users"), Ok(None));
        assert_eq!(canonical("/"), Ok(None));
        assert_eq!(canonical("/api/../static/x"), Ok(Some("/static/x".into())));
        assert_eq!(canonical("/api/./x//y/"), Ok(Some("/api/x/y/".into())));
        assert_eq!(
            canonical("/api/%2e%2E/static/x"),
            Ok(Some("/static/x".into()))
        );
        assert_eq!(canonical("/api/..%2f..%2fetc%2fpasswd"), Err(AboveRoot));
        assert_eq!(canonical("/../etc/passwd"), Err(AboveRoot));
        assert_eq!(canonical("/a\\..\\..\\b"), Err(AboveRoot));
        assert_eq!(
            canonical("/api/caf%C3%A9/x"),
            Ok(None),
            "other escapes stay as sent"
        );
        assert_eq!(canonical("/api/100%"), Ok(None));
    }
}
