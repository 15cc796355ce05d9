//! The origin behind every cache: `GET /1k` answered with 1024 bytes that any cache may keep for
//! an hour; it counts the requests it gets, so the report shows that the load was served from
//! the caches.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::server::{serve_connections, Connections};
use crate::vendor::Result;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// The path measured, without its leading slash (as `vendor::http::get` takes it).
pub const FILE: &str = "1k";

/// The 1024 bytes of `/1k`: printable, so a body that goes wrong reads as text.
pub fn body() -> Bytes {
    b"proxflow cache benchmark body 0123456789abcdefghijklmnopqrstuvwxyz\n"
        .iter()
        .copied()
        .cycle()
        .take(1024)
        .collect()
}

/// A running origin.
pub struct Origin {
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    requests: Arc<AtomicU64>,
}

impl Origin {
    /// The requests it has answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts an origin on `runtime` (it runs until the runtime is dropped).
pub fn start(runtime: &Runtime) -> Result<Origin> {
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    let body = body();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let response = answer(&request, &body);
        async move { Ok::<_, Infallible>(response) }
    });
    runtime.spawn(async move {
        if let Err(error) =
            serve_connections(listener, Connections::default(), move |_| service.clone()).await
        {
            eprintln!("origin on port {port} failed: {error}");
        }
    });
    Ok(Origin { port, requests })
}

/// `/1k`, or a 404 nobody stores (the readiness probes ask for `/`).
fn answer(request: &Request<Incoming>, body: &Bytes) -> Response<Full<Bytes>> {
    let builder = Response::builder();
    let response = if request.uri().path().strip_prefix('/') == Some(FILE) {
        builder
            .header(CACHE_CONTROL, "max-age=3600")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body.clone()))
    } else {
        builder
            .status(StatusCode::NOT_FOUND)
            .header(CACHE_CONTROL, "no-store")
            .body(Full::default())
    };
    response.expect("valid static headers")
}
