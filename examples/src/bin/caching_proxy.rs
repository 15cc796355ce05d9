//! A caching reverse proxy: proxflow-cache in front of one origin, forwarding everything it
//! does not answer itself (every method, the headers a proxy forwards, `X-Forwarded-For`).
//!
//! ```text
//! caching_proxy --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080 [--config cache.yaml]
//! ```
//!
//! The configuration is a `CacheConfig` in YAML, JSON or TOML (by the file's extension;
//! `{}` or no file: the defaults). It prints `listening on http://ADDR` once it accepts
//! connections, and stops on Ctrl-C or SIGTERM, letting open connections finish.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use clap::Parser;
use http::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_cache::{CacheConfig, CacheLayer};
use proxflow_lb::{AdaptiveLb, PassiveHealth, Upstream};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// A caching reverse proxy in front of one origin.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The origin, as `http://host:port`.
    #[arg(long)]
    upstream: Upstream,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The cache's configuration (YAML, JSON or TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn read_config(path: &Path) -> Result<CacheConfig, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let config = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text)?,
        Some("toml") => toml::from_str(&text)?,
        _ => serde_yaml::from_str(&text)?,
    };
    Ok(config)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    proxflow_examples::runtime(None)?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = match &args.config {
        Some(path) => read_config(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => CacheConfig::default(),
    };
    let cache = CacheLayer::from_config(&config)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let proxy = ServiceBuilder::new()
        // The cache sends empty bodies of the request's type when it revalidates in the
        // background: axum's `Body`, which hyper's `Incoming` becomes here.
        .map_request(|request: Request<Incoming>| request.map(Body::new))
        .layer(cache)
        // One origin: ejecting it after failures in a row would only turn its answers (5xx
        // included, which the cache may serve stale over) into the balancer's 503s.
        .layer(
            AdaptiveLb::new([args.upstream]).passive_health(PassiveHealth {
                consecutive_failures: 0,
                ..PassiveHealth::default()
            }),
        )
        .service(client);
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    proxflow_examples::serve(listener, proxy).await?;
    Ok(())
}
