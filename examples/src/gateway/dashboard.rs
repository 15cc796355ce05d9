//! The dashboard: a page at the configured path, and the figures it shows as JSON at
//! `<path>/stats`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};

use super::config::DashboardConfig;
use super::traffic::Traffic;

/// What the dashboard reads: each layer's handle, and the gateway's own traffic figures.
#[derive(Clone)]
pub struct Sources {
    /// The rate limiter on `/api`.
    pub ratelimit: proxflow_ratelimit::Stats,
    /// The breakers, one per upstream, keyed by its address.
    pub breakers: proxflow_breaker::KeyedBreakerHandle,
    /// The balancer.
    pub lb: proxflow_lb::LbHandle,
    /// The cache on `/api`.
    pub cache: proxflow_cache::CacheStats,
    /// The upstreams' names by address (the balancer and the breakers know addresses).
    pub names: Vec<(String, SocketAddr)>,
    /// Requests, errors and requests in flight.
    pub traffic: Traffic,
}

impl Sources {
    /// Every figure, as `<path>/stats` answers them.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "traffic": self.traffic.snapshot(),
            "ratelimit": self.ratelimit.snapshot(),
            "breakers": self.breakers.snapshot(),
            "lb": self.lb.snapshot(),
            "cache": self.cache.snapshot(),
            "upstreams": self.names.iter().map(|(name, addr)| {
                serde_json::json!({"name": name, "address": addr.to_string()})
            }).collect::<Vec<_>>(),
        })
    }
}

/// The page and its figures.
pub fn router(sources: Sources, config: &DashboardConfig) -> Router {
    let path = config.path.trim_end_matches('/').to_string();
    let page = PAGE.replace("{stats}", &format!("{path}/stats"));
    Router::new()
        .route(&path, get(move || async move { Html(page) }))
        .route(
            &format!("{path}/stats"),
            get(|State(sources): State<Arc<Sources>>| async move { Json(sources.snapshot()) }),
        )
        .with_state(Arc::new(sources))
}

/// The page: the snapshots, fetched every second.
const PAGE: &str = r#"<!doctype html>
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
<a href="{stats}">/dashboard/stats</a>.</p>
<section><h2>Rate limiter</h2><pre id="ratelimit">…</pre></section>
<section><h2>Circuit breakers</h2><pre id="breakers">…</pre></section>
<section><h2>Cache</h2><pre id="cache">…</pre></section>
<section><h2>Traffic</h2><pre id="traffic">…</pre></section>
<section><h2>Load balancer</h2><pre id="lb">…</pre></section>
<script>
async function refresh() {
  try {
    const stats = await (await fetch("{stats}")).json();
    for (const layer of ["traffic", "ratelimit", "breakers", "lb", "cache"]) {
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
