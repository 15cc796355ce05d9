//! Helpers shared by the integration tests: a small axum app behind the layer, requests from a
//! given client address, and header reading.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use proxflow_ratelimit::RateLimitLayer;
use tower::ServiceExt;

/// `GET /` answers `hello`, behind `layer`.
pub fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(layer)
}

/// A socket address from text; a bare IP gets port 40000.
pub fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        let ip: std::net::IpAddr = text.parse().expect("an address");
        SocketAddr::new(ip, 40000)
    })
}

/// `GET /` whose connection comes from `peer` (as axum's `ConnectInfo`).
pub fn from(peer: &str) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    request.extensions_mut().insert(ConnectInfo(addr(peer)));
    request
}

/// `GET /` from `peer` with extra headers.
pub fn from_with(peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = from(peer);
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    request
}

/// Sends one request through the app (the future owns a clone of the app).
pub fn send(
    app: &Router,
    request: Request<Body>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    let call = app.clone().oneshot(request);
    async move { call.await.expect("infallible") }
}

/// The status of one request through the app.
pub async fn status(app: &Router, request: Request<Body>) -> StatusCode {
    send(app, request).await.status()
}

/// Statuses of `n` requests made by `make`, one after another.
pub async fn statuses(app: &Router, n: usize, mut make: impl FnMut() -> Request<Body>) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(status(app, make()).await.as_u16());
    }
    out
}

/// How many of `statuses` are 200.
pub fn ok_count(statuses: &[u16]) -> usize {
    statuses.iter().filter(|&&s| s == 200).count()
}

/// A header as text, or `None`.
pub fn header<'a, B>(response: &'a Response<B>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
}

/// The body as text.
pub async fn body_text(response: Response<Body>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

/// Polls `future` exactly once (with the calling task's waker): `Some` if it finished. Time
/// does not move.
pub async fn poll_once<F: Future + ?Sized>(future: &mut Pin<Box<F>>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// A subscriber that keeps the level and message of the layer's debug and higher events on the
/// thread it is the default of (`tracing::subscriber::set_default`).
#[derive(Clone, Default)]
pub struct Messages(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let metadata = event.metadata();
        if *metadata.level() > tracing::Level::DEBUG
            || !metadata.target().starts_with("proxflow_ratelimit")
        {
            return;
        }
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push((*metadata.level(), message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Messages {
    /// The events so far, oldest first.
    pub fn take(&self) -> Vec<(tracing::Level, String)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}
