//! Aggregation: a request the layer answers itself by calling several backends at once and
//! combining their JSON answers.
//!
//! Backends are called concurrently, at most [`Aggregation::max_concurrent`] at a time, each
//! within the timeout. Their answers combine:
//!
//! - [`Combine::Merge`]: a deep merge of the objects in the order the backends were given;
//!   where two answers disagree, the later wins (an object merges into an object member by
//!   member; anything else replaces what was there).
//! - [`Combine::Array`]: the answers in an array, in backend order.
//! - [`Combine::Group`]: an object with each answer under its backend's name.
//!
//! A backend that fails (an error, a timeout, a status other than 2xx, an answer that is not
//! JSON; for `merge`, one that is not an object) is left out, and the answer carries
//! `X-Aggregate-Partial: <the names left out>`; when every backend failed, the answer is a 502
//! problem.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::client::Client;

/// The header naming the backends left out of a partial answer.
pub const PARTIAL: HeaderName = HeaderName::from_static("x-aggregate-partial");

/// How answers combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// A deep merge of objects, the later wins. The default.
    #[default]
    Merge,
    /// An array of the answers.
    Array,
    /// An object of the answers under each backend's name.
    Group,
}

/// An aggregated endpoint.
#[derive(Clone)]
pub struct Aggregation {
    backends: Vec<(String, Uri)>,
    combine: Combine,
    timeout: Duration,
    max_concurrent: usize,
    client: Client,
}

impl Aggregation {
    /// Calls `backends` (a name and a URL each) through `client`; merges their objects, within
    /// 2 s each, at most 8 at a time.
    pub fn new(backends: Vec<(String, Uri)>, client: Client) -> Self {
        Aggregation {
            backends,
            combine: Combine::Merge,
            timeout: Duration::from_secs(2),
            max_concurrent: 8,
            client,
        }
    }

    /// How the answers combine. Default [`Combine::Merge`].
    pub fn combine(mut self, combine: Combine) -> Self {
        self.combine = combine;
        self
    }

    /// How long each backend has. Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most backends called at once. Default 8.
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    pub fn max_concurrent(mut self, max: usize) -> Self {
        assert!(max > 0, "Aggregation::max_concurrent: at least 1");
        self.max_concurrent = max;
        self
    }

    /// The combined answer.
    pub(crate) async fn answer(&self) -> (StatusCode, Option<String>, Bytes) {
        let permits = Arc::new(Semaphore::new(self.max_concurrent));
        let calls = self.backends.iter().map(|(name, url)| {
            let permits = Arc::clone(&permits);
            async move {
                let _permit = permits.acquire().await;
                let answer = self.client.get(url, self.timeout).await.and_then(|bytes| {
                    serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
                });
                (name, answer)
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut combined = match self.combine {
            Combine::Merge => Value::Object(Map::new()),
            Combine::Array => Value::Array(Vec::new()),
            Combine::Group => Value::Object(Map::new()),
        };
        let mut missing = Vec::new();
        for (name, answer) in answers {
            let answer = match answer {
                Ok(answer) if self.combine != Combine::Merge || answer.is_object() => answer,
                Ok(_) => {
                    tracing::warn!(backend = %name, "aggregate: not an object; left out");
                    missing.push(name.as_str());
                    continue;
                }
                Err(reason) => {
                    tracing::warn!(backend = %name, %reason, "aggregate: backend failed; left out");
                    missing.push(name.as_str());
                    continue;
                }
            };
            match (&mut combined, self.combine) {
                (target, Combine::Merge) => merge(target, answer),
                (Value::Array(items), Combine::Array) => items.push(answer),
                (Value::Object(groups), Combine::Group) => {
                    groups.insert(name.clone(), answer);
                }
                _ => {}
            }
        }
        if missing.len() == self.backends.len() && !self.backends.is_empty() {
            let problem = serde_json::json!({
                "type": "about:blank",
                "title": "Bad Gateway",
                "status": 502,
                "detail": format!("every backend failed: {}", missing.join(", ")),
            });
            let bytes = Bytes::from(serde_json::to_vec(&problem).unwrap_or_default());
            return (StatusCode::BAD_GATEWAY, None, bytes);
        }
        let partial = (!missing.is_empty()).then(|| missing.join(", "));
        let bytes = Bytes::from(serde_json::to_vec(&combined).unwrap_or_default());
        (StatusCode::OK, partial, bytes)
    }

    /// The combined answer as a response.
    pub(crate) async fn respond<B>(&self) -> Response<crate::TransformBody<B>> {
        let (status, partial, bytes) = self.answer().await;
        let content_type = if status.is_success() {
            "application/json"
        } else {
            "application/problem+json"
        };
        let mut response = Response::new(crate::TransformBody::bytes(bytes));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(value) = partial.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert(PARTIAL, value);
        }
        response
    }
}

impl std::fmt::Debug for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregation")
            .field("backends", &self.backends)
            .field("combine", &self.combine)
            .field("timeout", &self.timeout)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

/// A deep merge of `from` into `into`: objects member by member, anything else replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_deep_merge_lets_the_later_win() {
        let mut into = json!({"user": {"name": "a", "tags": [1]}, "x": 1});
        merge(
            &mut into,
            json!({"user": {"email": "e", "tags": [2]}, "x": {"y": 2}}),
        );
        assert_eq!(
            into,
            json!({"user": {"name": "a", "email": "e", "tags": [2]}, "x": {"y": 2}})
        );
    }
}
