//! What the transform tests share: a client service standing in for remote URLs.

#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use proxflow_transform::Client;

/// A client answering by path: `/ok`, `/a`, `/b` JSON objects, `/list` an array, `/slow` an
/// object after 10 s, anything else a 503.
pub fn client() -> Client {
    Client::new(tower::service_fn(
        |request: http::Request<Full<Bytes>>| async move {
            let (status, body) = match request.uri().path() {
                "/ok" => (200, r#"{"tier": "gold", "region": "eu"}"#),
                "/a" => (200, r#"{"user": {"name": "ada"}, "source": "a"}"#),
                "/b" => (200, r#"{"user": {"email": "a@b"}, "source": "b"}"#),
                "/list" => (200, "[1, 2]"),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    (200, r#"{"late": true}"#)
                }
                _ => (503, "down"),
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        },
    ))
}
