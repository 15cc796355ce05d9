//! The demo upstreams: small servers in this process whose latency and failure rate change at
//! run time, and the admin endpoint that changes them.
//!
//! Each answers every request with a line of JSON naming itself, after its latency; a share of
//! its answers (its failure rate) are 503s, spread evenly (with a rate of 0.25, every fourth).
//! Paths under `/api/cached/` carry `Cache-Control: max-age=30` so that the cache has
//! something to keep; the rest are `no-store`, so that the balancer sees them all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::config::DemoUpstreamConfig;

/// A running demo upstream.
#[derive(Debug)]
pub struct DemoUpstream {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    behaviour: Mutex<Behaviour>,
    answered: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Behaviour {
    latency: Duration,
    failure_rate: f64,
    /// Failures owed: each answer adds the rate, and a whole one is a 503.
    owed: f64,
}

impl DemoUpstream {
    /// Its latency and failure rate now.
    pub fn behaviour(&self) -> (Duration, f64) {
        let behaviour = self.lock();
        (behaviour.latency, behaviour.failure_rate)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the next answer fails, and after how long.
    fn next(&self) -> (bool, Duration) {
        let mut behaviour = self.lock();
        behaviour.owed += behaviour.failure_rate;
        let fails = behaviour.owed >= 1.0 - 1e-9;
        if fails {
            behaviour.owed -= 1.0;
        }
        (fails, behaviour.latency)
    }
}

/// Starts `config` on 127.0.0.1 (a free port), as a task of the current runtime.
pub async fn spawn(config: &DemoUpstreamConfig) -> std::io::Result<Arc<DemoUpstream>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = Arc::new(DemoUpstream {
        name: config.name.clone(),
        addr: listener.local_addr()?,
        behaviour: Mutex::new(Behaviour {
            latency: config.latency,
            failure_rate: config.failure_rate.clamp(0.0, 1.0),
            owed: 0.0,
        }),
        answered: AtomicU64::new(0),
    });
    let app = Router::new()
        .fallback(answer)
        .with_state(Arc::clone(&upstream));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "demo upstream stopped");
        }
    });
    Ok(upstream)
}

async fn answer(State(upstream): State<Arc<DemoUpstream>>, request: Request) -> Response {
    let number = upstream.answered.fetch_add(1, Ordering::Relaxed) + 1;
    let (fails, latency) = upstream.next();
    tokio::time::sleep(latency).await;
    let name = &upstream.name;
    if fails {
        let body = format!("{name}: failing on purpose\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let path = request.uri().path();
    let cache_control = if path.starts_with("/api/cached/") {
        "max-age=30"
    } else {
        "no-store"
    };
    let body = Json(serde_json::json!({
        "upstream": name,
        "method": request.method().as_str(),
        "path": path,
        "answer": number,
    }));
    ([("cache-control", cache_control)], body).into_response()
}

/// A change to an upstream: either field, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default, with = "humantime_serde")]
    latency: Option<Duration>,
    failure_rate: Option<f64>,
}

/// What the admin endpoint acts on.
#[derive(Clone)]
pub struct Admin {
    /// The demo upstreams.
    pub upstreams: Arc<Vec<Arc<DemoUpstream>>>,
    /// The breakers, one per upstream, keyed by its address.
    pub breakers: proxflow_breaker::KeyedBreakerHandle,
}

/// `GET /admin/upstreams` lists them; `POST /admin/upstreams/<name>` changes one
/// (`{"latency": "300ms", "failure_rate": 0.5}`); `POST /admin/upstreams/<name>/breaker` with
/// `{"state": "open" | "closed" | "reset"}` forces its breaker.
pub fn admin_router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/upstreams", get(list))
        .route("/admin/upstreams/{name}", post(change))
        .route("/admin/upstreams/{name}/breaker", post(force))
        .with_state(admin)
}

fn describe(upstream: &DemoUpstream) -> serde_json::Value {
    let (latency, failure_rate) = upstream.behaviour();
    serde_json::json!({
        "name": upstream.name,
        "address": upstream.addr.to_string(),
        "latency_ms": latency.as_secs_f64() * 1e3,
        "failure_rate": failure_rate,
        "answered": upstream.answered.load(Ordering::Relaxed),
    })
}

async fn list(State(admin): State<Admin>) -> Json<serde_json::Value> {
    Json(admin.upstreams.iter().map(|u| describe(u)).collect())
}

fn find<'a>(admin: &'a Admin, name: &str) -> Option<&'a Arc<DemoUpstream>> {
    admin
        .upstreams
        .iter()
        .find(|upstream| upstream.name == name)
}

fn not_found(name: &str) -> Response {
    let body = format!("no demo upstream named {name:?}\n");
    (StatusCode::NOT_FOUND, body).into_response()
}

async fn change(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    Json(change): Json<Change>,
) -> Response {
    let Some(upstream) = find(&admin, &name) else {
        return not_found(&name);
    };
    if change
        .failure_rate
        .is_some_and(|rate| !(0.0..=1.0).contains(&rate))
    {
        return (StatusCode::UNPROCESSABLE_ENTITY, "failure_rate: 0 to 1\n").into_response();
    }
    {
        let mut behaviour = upstream.lock();
        if let Some(latency) = change.latency {
            behaviour.latency = latency;
        }
        if let Some(rate) = change.failure_rate {
            behaviour.failure_rate = rate;
            behaviour.owed = 0.0;
        }
    }
    tracing::info!(upstream = %name, latency = ?change.latency, failure_rate = ?change.failure_rate, "demo upstream changed");
    Json(describe(upstream)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Force {
    state: String,
}

async fn force(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    Json(force): Json<Force>,
) -> Response {
    let Some(upstream) = find(&admin, &name) else {
        return not_found(&name);
    };
    let Some(breaker) = admin.breakers.get(&upstream.addr.to_string()) else {
        let body = "its breaker has seen no call yet: send a request to /api first\n";
        return (StatusCode::CONFLICT, body).into_response();
    };
    match force.state.as_str() {
        "open" => breaker.force_open(),
        "closed" => breaker.force_closed(),
        "reset" => breaker.reset(),
        _ => {
            let body = "state: open, closed or reset\n";
            return (StatusCode::UNPROCESSABLE_ENTITY, body).into_response();
        }
    }
    tracing::info!(upstream = %name, state = %force.state, "breaker forced");
    Json(breaker.snapshot()).into_response()
}
