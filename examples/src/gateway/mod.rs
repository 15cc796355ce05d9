//! The gateway: every proxflow layer composed in one axum application from one configuration
//! file ([`config`]; the embedded default when there is none), with demo upstreams started in
//! the same process (no external service needed).
//!
//! - `/` and `/static/...`: the example site (proxflow-static, Kalgan's `|asset` versioning).
//! - `/api/...`: transform -> cache -> rate limit -> adaptive balancer -> one circuit breaker
//!   per upstream (the keyed form, keyed by the upstream the balancer picked) -> the upstream,
//!   through hyper-util's client. The upstream sees the whole path. `/api/combined` is
//!   answered by the transform layer from two upstreams at once; the cache's invalidation
//!   webhook is at `/api/cache/invalidate`.
//! - `/admin/upstreams`: the demo upstreams' latency and failure rate, changed at run time,
//!   and their breakers forced open or closed ([`upstreams`]).
//! - `/dashboard`: the live dashboard, its figures as JSON at `/dashboard/stats`, as
//!   Server-Sent Events at `/dashboard/events` and in Prometheus text at `/metrics`
//!   ([`dashboard`]); `/health`.
//!
//! Paths are made canonical before routing ([`normalize`]), and each request gets an access
//! log line.

pub mod config;
pub mod dashboard;
pub mod normalize;
pub mod traffic;
pub mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_breaker::CircuitBreakerLayer;
use proxflow_cache::CacheLayer;
use proxflow_lb::{AdaptiveLb, UpstreamConfig};
use proxflow_ratelimit::RateLimitLayer;
use proxflow_static::StaticLayer;
use proxflow_transform::TransformLayer;
use tower::{Layer, ServiceBuilder};

use self::config::{ConfigFileError, Loaded};
use self::upstreams::DemoUpstream;

/// A running gateway's application and its demo upstreams.
pub struct Gateway {
    /// The application, paths made canonical before routing. Serve it with
    /// [`serve`](crate::serve) (or with axum's
    /// `into_make_service_with_connect_info::<SocketAddr>()`): the rate limiter keys `/api` by
    /// the client's address.
    pub router: Router,
    /// The demo upstreams, in the configuration's order.
    pub upstreams: Vec<Arc<DemoUpstream>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(#[from] ConfigFileError),
    /// A demo upstream could not listen.
    #[error("demo upstream: {0}")]
    Upstream(#[from] std::io::Error),
}

/// Starts the demo upstreams (as tasks of the current runtime) and builds the application of
/// `loaded`.
pub async fn start(loaded: &Loaded) -> Result<Gateway, GatewayError> {
    let config = &loaded.config;
    let refused = |section: &str, error: proxflow_core::ConfigError| {
        GatewayError::Config(loaded.refused(section, error.field, error.reason))
    };
    let mut demos = Vec::with_capacity(config.demo_upstreams.len());
    for demo in &config.demo_upstreams {
        demos.push(upstreams::spawn(demo).await?);
    }

    let mut statics = config.statics.clone();
    statics.folders = statics.folders.iter().map(|f| loaded.resolve(f)).collect();
    statics.manifest = statics.manifest.as_ref().map(|m| loaded.resolve(m));
    let statics = StaticLayer::from_config(&statics).map_err(|e| refused("static", e))?;
    let templates = loaded.resolve(&config.site.templates);
    let site = crate::site::pages(&templates, &statics).map_err(|error| {
        let message = format!("{}: {error}", templates.display());
        GatewayError::Config(loaded.refused("site", "templates", message))
    })?;

    let mut lb_config = config.lb.clone();
    lb_config
        .upstreams
        .extend(demos.iter().map(|demo| UpstreamConfig {
            url: format!("http://{}", demo.addr),
            weight: 1,
        }));
    let lb = AdaptiveLb::from_config(&lb_config).map_err(|e| refused("lb", e))?;
    let transitions = dashboard::Transitions::default();
    let breakers = CircuitBreakerLayer::from_config(&config.circuit_breaker)
        .map_err(|e| refused("circuit_breaker", e))?
        .on_state_change(transitions.recorder())
        .keyed();
    let ratelimit =
        RateLimitLayer::from_config(&config.rate_limit).map_err(|e| refused("rate_limit", e))?;
    let cache = CacheLayer::from_config(&config.cache).map_err(|e| refused("cache", e))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let by_name = demo_resolver(&demos, client.clone());
    let transform = TransformLayer::from_config_with_client(
        &config.transform,
        proxflow_transform::Client::new(by_name),
    )
    .map_err(|e| refused("transform", e))?;

    let traffic = traffic::Traffic::default();
    let sources = dashboard::Sources {
        ratelimit: ratelimit.stats(),
        breakers: breakers.handle(),
        transitions,
        lb: lb.handle(),
        lb_load: match &lb_config.lb_policy {
            proxflow_lb::Policy::Adaptive(adaptive) => Some(adaptive.load),
            _ => None,
        },
        cache: cache.stats(),
        names: demos.iter().map(|d| (d.name.clone(), d.addr)).collect(),
        traffic: traffic.clone(),
    };
    let admin = upstreams::Admin {
        upstreams: Arc::new(demos.clone()),
        breakers: breakers.handle(),
    };
    let api = ServiceBuilder::new()
        .layer(transform)
        // The layers below read an axum body again.
        .map_request(
            |request: http::Request<proxflow_transform::TransformBody<Body>>| {
                request.map(Body::new)
            },
        )
        .layer(cache)
        .layer(ratelimit)
        .layer(lb)
        .layer(breakers)
        .service(client);

    let router = site
        .route_service("/api/{*path}", api)
        .route("/health", get(|| async { "ok\n" }))
        .merge(upstreams::admin_router(admin))
        .merge(
            dashboard::router(sources, &config.traffic_dashboard)
                .map_err(|e| refused("traffic_dashboard", e))?,
        )
        .layer(statics)
        .layer(middleware::from_fn_with_state(traffic, traffic::record))
        .layer(middleware::from_fn(access_log));
    let router =
        Router::new().fallback_service(middleware::from_fn(normalize::normalize).layer(router));
    Ok(Gateway {
        router,
        upstreams: demos,
    })
}

/// The client of enrichment and aggregation: URLs whose host is a demo upstream's name go to
/// that upstream.
fn demo_resolver(
    demos: &[Arc<DemoUpstream>],
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let names: Arc<Vec<(String, SocketAddr)>> =
        Arc::new(demos.iter().map(|d| (d.name.clone(), d.addr)).collect());
    tower::service_fn(
        move |request: http::Request<http_body_util::Full<bytes::Bytes>>| {
            let (mut parts, body) = request.into_parts();
            let host = parts.uri.host().unwrap_or("").to_string();
            if let Some((_, addr)) = names.iter().find(|(name, _)| *name == host) {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                if let Ok(uri) = format!("http://{addr}{path}").parse::<Uri>() {
                    parts.uri = uri;
                }
            }
            client.request(http::Request::from_parts(parts, Body::new(body)))
        },
    )
}

/// One line per request: method, path, status, time, client.
async fn access_log(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    let elapsed: Duration = start.elapsed();
    tracing::info!(
        target: "access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", elapsed.as_secs_f64() * 1e3),
        %client,
    );
    response
}
