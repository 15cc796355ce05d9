//! The gateway: the finished proxflow layers composed in one axum application, on embedded
//! defaults, with demo upstreams started in the same process (no external service needed).
//!
//! - `/` and `/static/...`: the example site (proxflow-static, Kalgan's `|asset` versioning).
//! - `/api/...`: rate limited per client address (proxflow-ratelimit, token bucket), behind a
//!   circuit breaker (proxflow-breaker), balanced by the adaptive policy (proxflow-lb) over the
//!   demo upstreams, forwarded by hyper-util's client. The upstream sees the whole path.
//! - `/dashboard`: a page that shows `/dashboard/stats` every second, the JSON snapshots of the
//!   rate limiter, the breaker and the balancer.
//!
//! Not in it yet: the cache and transform layers (their crates do not exist), and any
//! configuration file: [`Settings`] is the whole configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_breaker::CircuitBreakerLayer;
use proxflow_lb::AdaptiveLb;
use proxflow_ratelimit::{Key, RateLimitLayer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::site;

/// What the gateway is made of. [`Settings::default`] is the embedded default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The example site's folder (`templates/` and `public/`). Default: the one in this
    /// package.
    pub site: PathBuf,
    /// Production mode for the site: versioned asset URLs cached for a year. Default `true`.
    pub prod: bool,
    /// `/api` admits `rate` requests per `per` from each client address, with bursts of
    /// `burst`. Default 20 per second, burst 40.
    pub rate: u32,
    /// See `rate`.
    pub per: Duration,
    /// See `rate`.
    pub burst: u32,
    /// The upstreams `/api` is balanced over, each started on 127.0.0.1. Default: `fast`
    /// (5 ms), `slow` (40 ms) and `flaky` (10 ms, every fourth answer a 503).
    pub upstreams: Vec<DemoUpstream>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            site: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("site"),
            prod: true,
            rate: 20,
            per: Duration::from_secs(1),
            burst: 40,
            upstreams: vec![
                DemoUpstream::new("fast", Duration::from_millis(5)),
                DemoUpstream::new("slow", Duration::from_millis(40)),
                DemoUpstream::new("flaky", Duration::from_millis(10)).failing_every(4),
            ],
        }
    }
}

/// An in-process upstream: answers every request with a line of JSON naming itself, after
/// `delay`; with `fail_every: Some(n)` every n-th answer is `503` instead.
#[derive(Debug, Clone)]
pub struct DemoUpstream {
    /// Its name, in its answers and nowhere else (the balancer knows it by address).
    pub name: &'static str,
    /// How long it takes to answer.
    pub delay: Duration,
    /// Every n-th answer fails (503). Default: none fail.
    pub fail_every: Option<u64>,
}

impl DemoUpstream {
    /// An upstream that answers after `delay` and never fails.
    pub fn new(name: &'static str, delay: Duration) -> Self {
        DemoUpstream {
            name,
            delay,
            fail_every: None,
        }
    }

    /// Every `n`-th answer is a 503.
    pub fn failing_every(mut self, n: u64) -> Self {
        self.fail_every = Some(n.max(1));
        self
    }
}

/// A running gateway's application and its upstreams' addresses.
pub struct Gateway {
    /// Serve it with [`serve`](crate::serve), or with axum's
    /// `into_make_service_with_connect_info::<SocketAddr>()`: the rate limiter keys `/api` by the
    /// client's address.
    pub router: Router,
    /// Where the demo upstreams listen, in the order of [`Settings::upstreams`].
    pub upstreams: Vec<SocketAddr>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A demo upstream could not listen.
    #[error("demo upstream: {0}")]
    Upstream(#[from] std::io::Error),
    /// The site's templates did not load.
    #[error("site templates: {0}")]
    Site(#[from] tera::Error),
    /// A layer refused its settings.
    #[error("{layer}: {message}")]
    Layer {
        /// `ratelimit` or `lb`.
        layer: &'static str,
        /// What it said.
        message: String,
    },
}

/// Starts the demo upstreams (as tasks of the current runtime) and builds the application.
pub async fn start(settings: &Settings) -> Result<Gateway, GatewayError> {
    let mut upstreams = Vec::with_capacity(settings.upstreams.len());
    for demo in &settings.upstreams {
        upstreams.push(spawn_upstream(demo.clone()).await?);
    }
    let ratelimit = RateLimitLayer::new(settings.rate, settings.per)
        .burst(settings.burst)
        .key(Key::Ip);
    let breaker = CircuitBreakerLayer::new();
    let lb = AdaptiveLb::new(upstreams.iter().copied());
    let stats = Stats {
        ratelimit: ratelimit.stats(),
        breaker: breaker.handle(),
        lb: lb.handle(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let api = ServiceBuilder::new()
        .layer(ratelimit)
        .layer(breaker)
        .layer(lb)
        .service(client);

    let router = site::router(&settings.site, settings.prod)?
        .route_service("/api/{*path}", api)
        .route("/dashboard", get(Html(DASHBOARD)))
        .route(
            "/dashboard/stats",
            get(|State(stats): State<Arc<Stats>>| async move { Json(stats.snapshot()) })
                .with_state(Arc::new(stats)),
        );
    Ok(Gateway { router, upstreams })
}

/// The layers' handles, for the dashboard.
struct Stats {
    ratelimit: proxflow_ratelimit::Stats,
    breaker: proxflow_breaker::BreakerHandle,
    lb: proxflow_lb::LbHandle,
}

impl Stats {
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "ratelimit": self.ratelimit.snapshot(),
            "breaker": self.breaker.snapshot(),
            "lb": self.lb.snapshot(),
        })
    }
}

/// Starts `demo` on 127.0.0.1 (any free port).
async fn spawn_upstream(demo: DemoUpstream) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(answer).with_state(Arc::new(Demo {
        settings: demo,
        answered: AtomicU64::new(0),
    }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "demo upstream stopped");
        }
    });
    Ok(addr)
}

struct Demo {
    settings: DemoUpstream,
    answered: AtomicU64,
}

async fn answer(State(demo): State<Arc<Demo>>, request: Request) -> Response {
    let number = demo.answered.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::time::sleep(demo.settings.delay).await;
    let name = demo.settings.name;
    if demo.settings.fail_every.is_some_and(|n| number % n == 0) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: failing on purpose\n"),
        )
            .into_response();
    }
    Json(serde_json::json!({
        "upstream": name,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "answer": number,
    }))
    .into_response()
}

/// The dashboard: the three snapshots, fetched every second.
const DASHBOARD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>proxflow gateway</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; }
section { display: inline-block; vertical-align: top; margin: 0 2em 2em 0; }
pre { background: #f4f4f4; padding: 1em; max-width: 40em; overflow: auto; }
</style>
</head>
<body>
<h1>proxflow gateway</h1>
<p>Send traffic to <code>/api/anything</code> and watch the layers. Refreshed every second from
<a href="/dashboard/stats">/dashboard/stats</a>.</p>
<section><h2>Rate limiter</h2><pre id="ratelimit">…</pre></section>
<section><h2>Circuit breaker</h2><pre id="breaker">…</pre></section>
<section><h2>Load balancer</h2><pre id="lb">…</pre></section>
<script>
async function refresh() {
  try {
    const stats = await (await fetch("/dashboard/stats")).json();
    for (const layer of ["ratelimit", "breaker", "lb"]) {
      document.getElementById(layer).textContent = JSON.stringify(stats[layer], null, 2);
    }
  } catch (error) {
    document.getElementById("ratelimit").textContent = "gateway unreachable: " + error;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;
