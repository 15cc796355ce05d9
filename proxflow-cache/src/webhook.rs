//! The invalidation webhook: `POST <webhook_path>` with a JSON action, authenticated, answered
//! by the cache itself.
//!
//! ```text
//! {"action": "invalidate", "key": "/api/users/1"}
//! {"action": "invalidate", "pattern": "api/users"}
//! {"action": "invalidate", "tag": "user_123"}
//! {"action": "partial_update", "partial": {"key": "user_123", "path": "user.email", "value": "new@example.com"}}
//! ```
//!
//! - A **key** that starts with `/` is a path (and query) on the webhook request's host; one
//!   that names a stored entry as the cache keys it (`host/path?query`) is that entry;
//!   anything else is a tag: the entries whose responses carried it in `Surrogate-Key`.
//! - A **pattern** is a path prefix on the webhook request's host, matched at a segment
//!   boundary: `api/users` matches `/api/users`, `/api/users/7` and `/api/users?page=2`, not
//!   `/api/usersettings`. It is a range of an ordered index, not a scan of the store.
//! - A **partial update** edits the stored JSON bodies of the key's entries at a dotted path
//!   (`user.email`, `items.0.id`) or a JSON Pointer (`/user/email`): the value there is
//!   replaced, or added to its parent object. `Content-Length` follows the new body, and
//!   `ETag` and `Last-Modified` are dropped, since they no longer describe it (the entry is
//!   refetched, not revalidated, when it goes stale). Every entry is edited or none is.
//!
//! Errors are RFC 9457 problem documents (`application/problem+json`): 401 without valid
//! credentials, 400 for a body that is not JSON, 413 over 64 KiB, 422 for an action that is
//! unknown or lacks a field, 404 when the key matches nothing, 415 when an entry is not JSON
//! (or is encoded), 409 when the path is not in a body. A rejected call changes nothing.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use proxflow_core::BoxError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::body::CacheBody;
use crate::config::WebhookAuth;
use crate::service::{host_of, Shared};
use crate::store::Stored;

/// The largest webhook body read.
const MAX_BODY: usize = 64 * 1024;

/// The header carrying `sha256=<hex>` of the body, with [`WebhookAuth::HmacSha256`].
pub const SIGNATURE_HEADER: &str = "x-proxflow-signature";

/// A webhook action, as the webhook reads it and as instances pass it to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Action {
    Invalidate {
        key: Option<String>,
        pattern: Option<String>,
        tag: Option<String>,
    },
    PartialUpdate {
        partial: Partial,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Partial {
    pub(crate) key: String,
    path: String,
    value: Value,
}

impl Action {
    /// Invalidates one entry by its full key (`host/path?query`).
    pub(crate) fn invalidate_key(key: String) -> Action {
        Action::Invalidate {
            key: Some(key),
            pattern: None,
            tag: None,
        }
    }
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Problem {
    Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("error"),
        status: status.as_u16(),
        detail: detail.into(),
    }
}

/// Answers a webhook call.
pub(crate) async fn handle<ReqBody, B>(
    shared: &Arc<Shared>,
    auth: &WebhookAuth,
    request: Request<ReqBody>,
) -> Response<CacheBody<B>>
where
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    match run(shared, auth, request).await {
        Ok(done) => json(StatusCode::OK, &done, None),
        Err(problem) => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            tracing::info!(status = problem.status, detail = %problem.detail, "cache webhook call refused");
            let scheme = match auth {
                WebhookAuth::Bearer(_) => "Bearer",
                _ => "Signature",
            };
            let challenge = (status == StatusCode::UNAUTHORIZED).then_some(scheme);
            json(status, &problem, challenge)
        }
    }
}

async fn run<ReqBody>(
    shared: &Arc<Shared>,
    auth: &WebhookAuth,
    request: Request<ReqBody>,
) -> Result<Value, Problem>
where
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    // The host the webhook's keys and patterns are paths on.
    let host = host_of(&parts.uri, &parts.headers);
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let detail = format!("the body is over {MAX_BODY} bytes, or could not be read");
            return Err(problem(StatusCode::PAYLOAD_TOO_LARGE, detail));
        }
    };
    authenticate(auth, &parts.headers, &body)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let action: Action = serde_json::from_value(value).map_err(|e| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not an action: {e}"),
        )
    })?;
    let done = apply(shared, &host, &action);
    // Another instance may hold what this one does not: the action goes out whatever it
    // found here.
    shared.publish(&host, &action);
    done
}

/// Applies `action` to this instance's store, its paths on `host`.
pub(crate) fn apply(shared: &Shared, host: &str, action: &Action) -> Result<Value, Problem> {
    let store = &shared.store;
    match action {
        Action::Invalidate { key, pattern, tag } => {
            let keys = match (key, pattern, tag) {
                (Some(key), None, None) => resolve(shared, host, key),
                (None, Some(pattern), None) => matching(shared, host, pattern),
                (None, None, Some(tag)) => store.index.tagged(tag),
                _ => {
                    let detail = "invalidate takes exactly one of key, pattern and tag";
                    return Err(problem(StatusCode::UNPROCESSABLE_ENTITY, detail));
                }
            };
            for key in &keys {
                store.remove(key);
            }
            Ok(serde_json::json!({ "invalidated": keys.len() }))
        }
        Action::PartialUpdate { partial } => {
            let keys = resolve(shared, host, &partial.key);
            if keys.is_empty() {
                let detail = format!("nothing stored for key {:?}", partial.key);
                return Err(problem(StatusCode::NOT_FOUND, detail));
            }
            let mut edited = Vec::new();
            for key in &keys {
                let Some(variants) = store.get(key) else {
                    continue;
                };
                for stored in variants.iter() {
                    edited.push((Arc::clone(key), edit(stored, partial)?));
                }
            }
            for (key, stored) in &edited {
                store.insert(Arc::clone(key), Arc::clone(stored));
            }
            Ok(serde_json::json!({ "updated": edited.len() }))
        }
    }
}

fn authenticate(auth: &WebhookAuth, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    let unauthorized = |detail: &str| problem(StatusCode::UNAUTHORIZED, detail);
    match auth {
        WebhookAuth::None => Ok(()),
        WebhookAuth::Bearer(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthorized("an Authorization: Bearer token is required"))?;
            if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
                Ok(())
            } else {
                Err(unauthorized("the bearer token is not the webhook's"))
            }
        }
        WebhookAuth::HmacSha256(secret) => {
            let signature = headers
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(decode_hex)
                .ok_or_else(|| unauthorized("an X-Proxflow-Signature: sha256=<hex> is required"))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|_| unauthorized("the webhook's secret is unusable"))?;
            mac.update(body);
            mac.verify_slice(&signature)
                .map_err(|_| unauthorized("the signature does not match the body"))
        }
    }
}

/// Equal, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The stored keys a webhook key names (see the module docs).
fn resolve(shared: &Shared, host: &str, key: &str) -> Vec<Arc<str>> {
    let store = &shared.store;
    let full: Arc<str> = if key.starts_with('/') {
        Arc::from(format!("{host}{key}"))
    } else {
        Arc::from(key)
    };
    if store.get(&full).is_some() {
        return vec![full];
    }
    store.index.tagged(key)
}

/// The stored keys under a path, at a segment boundary.
fn matching(shared: &Shared, host: &str, pattern: &str) -> Vec<Arc<str>> {
    let path = pattern.trim_end_matches('/');
    let slash = if path.starts_with('/') { "" } else { "/" };
    shared.store.index.under(&format!("{host}{slash}{path}"))
}

/// The stored response with its JSON body edited at `partial.path`.
fn edit(stored: &Stored, partial: &Partial) -> Result<Arc<Stored>, Problem> {
    let is_json = stored
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
    let encoded = stored
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    if !is_json || encoded {
        let detail = "a stored entry of the key is not JSON (or is encoded): nothing changed";
        return Err(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail));
    }
    let mut body: Value = serde_json::from_slice(&stored.body).map_err(|e| {
        let detail = format!("a stored entry's body does not parse as JSON: {e}");
        problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    })?;
    set(&mut body, &partial.path, partial.value.clone()).ok_or_else(|| {
        let detail = format!(
            "{:?} is not in a stored body: nothing changed",
            partial.path
        );
        problem(StatusCode::CONFLICT, detail)
    })?;
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut headers = stored.headers.clone();
    headers.remove(header::ETAG);
    headers.remove(header::LAST_MODIFIED);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Arc::new(Stored {
        status: stored.status,
        headers,
        body: bytes,
        timing: stored.timing.clone(),
        directives: stored.directives.clone(),
        vary: stored.vary.clone(),
    }))
}

/// Sets `value` at a dotted path or JSON Pointer: replaces what is there, or adds a member
/// to an existing object. `None` when the parent is missing or an index is out of range.
fn set(body: &mut Value, path: &str, value: Value) -> Option<()> {
    let segments: Vec<String> = match path.strip_prefix('/') {
        Some(pointer) => pointer
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => path.split('.').map(str::to_string).collect(),
    };
    let (last, parents) = segments.split_last()?;
    let mut target = body;
    for segment in parents {
        target = match target {
            Value::Object(map) => map.get_mut(segment)?,
            Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match target {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => *items.get_mut(last.parse::<usize>().ok()?)? = value,
        _ => return None,
    }
    Some(())
}

fn json<B, T: Serialize>(
    status: StatusCode,
    value: &T,
    challenge: Option<&'static str>,
) -> Response<CacheBody<B>> {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let mut response = Response::new(CacheBody::stored(body));
    *response.status_mut() = status;
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(challenge) = challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_and_pointers_edit_in_place() {
        let mut body = serde_json::json!({"user": {"email": "a", "tags": ["x", "y"]}, "a/b": 1});
        set(&mut body, "user.email", "b".into()).unwrap();
        set(&mut body, "user.tags.1", "z".into()).unwrap();
        set(&mut body, "/a~1b", 2.into()).unwrap();
        set(&mut body, "user.name", "new".into()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"user": {"email": "b", "tags": ["x", "z"], "name": "new"}, "a/b": 2})
        );
        assert!(set(&mut body, "missing.field", 1.into()).is_none());
        assert!(set(&mut body, "user.tags.5", 1.into()).is_none());
        assert!(set(&mut body, "user.email.x", 1.into()).is_none());
    }

    #[test]
    fn hex_and_constant_time_comparison() {
        assert_eq!(decode_hex("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("0af"), None);
        assert_eq!(decode_hex("zz"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
