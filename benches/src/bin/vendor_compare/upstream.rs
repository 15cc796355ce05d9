//! The upstream servers behind the proxies: in this program, on the load core, the same for
//! every contestant. Each answers every request with the same 1 KiB body, after its delay, and
//! counts what it answered (so that the report can say where each proxy sent its traffic).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use proxflow_benches::server::{serve_connections, Connections};
use proxflow_benches::vendor::Result;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// A running upstream; it stops accepting when dropped.
pub struct Upstream {
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    requests: Arc<AtomicU64>,
    /// Microseconds waited before answers, in all.
    waited_us: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// The requests it has answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The mean time it waited before an answer, in milliseconds: what its delay came to on
    /// tokio's timer, which rounds each wait up to its next millisecond tick.
    pub fn mean_wait_ms(&self) -> f64 {
        self.waited_us.load(Ordering::Relaxed) as f64 / 1000.0 / self.requests().max(1) as f64
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The body of every answer: 1024 printable bytes, so that a body that goes wrong reads as text.
pub fn body() -> Bytes {
    b"proxflow upstream body 0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
        .iter()
        .copied()
        .cycle()
        .take(1024)
        .collect()
}

/// Starts an upstream on `runtime` that answers after `delay`.
///
/// Answers under a `/cached/` path may be kept an hour (`Cache-Control: max-age=3600`), the
/// rest not at all (`no-store`), so that a caching stack in front sees both kinds.
pub fn start(runtime: &Runtime, delay: Duration) -> Result<Upstream> {
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    let waited_us = Arc::new(AtomicU64::new(0));
    let waited = Arc::clone(&waited_us);
    let body = body();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let cache_control = if request.uri().path().contains("/cached/") {
            "max-age=3600"
        } else {
            "no-store"
        };
        let response = Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CACHE_CONTROL, cache_control)
            .body(Full::new(body.clone()))
            .expect("valid static headers");
        let waited = Arc::clone(&waited);
        async move {
            if !delay.is_zero() {
                let start = Instant::now();
                tokio::time::sleep(delay).await;
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                waited.fetch_add(us, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(response)
        }
    });
    // An answer ready at once needs no watch for clients that go away (see `Connections`).
    let options = Connections {
        half_close: delay.is_zero(),
    };
    let task = runtime.spawn(async move {
        if let Err(error) = serve_connections(listener, options, move |_| service.clone()).await {
            eprintln!("upstream on port {port} failed: {error}");
        }
    });
    Ok(Upstream {
        port,
        requests,
        waited_us,
        task,
    })
}
