//! A load-balancing reverse proxy on plain hyper, without axum: `AdaptiveLb` over hyper-util's
//! client, served by hyper's HTTP/1.1 server, each request tagged with its client's address
//! (`ClientAddr`) for `ip_hash` and `X-Forwarded-For`.
//!
//! ```text
//! hyper_proxy http://127.0.0.1:3001 http://127.0.0.1:3002
//! hyper_proxy --listen 0.0.0.0:8080 --policy ip_hash http://10.0.0.1:8080 http://10.0.0.2:8080
//! hyper_proxy --consecutive-failures 0 http://127.0.0.1:3001 http://127.0.0.1:3002   # no ejection
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections and stops on Ctrl-C or
//! SIGTERM. It runs one thread per core it may use (one under `taskset -c 0`). Request bodies
//! (hyper's `Incoming`) stream to the upstream as they arrive; such requests are not retried
//! on another upstream (see `AdaptiveLb::retries`).

use std::net::SocketAddr;

use clap::Parser;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proxflow_lb::{AdaptiveLb, ClientAddr, PassiveHealth, Policy, Upstream};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// Balances HTTP requests over upstreams.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The policy: adaptive, round_robin, weighted_round_robin, random, least_request,
    /// peak_ewma or ip_hash, each with its defaults.
    #[arg(long, default_value = "adaptive", value_parser = policy)]
    policy: Policy,
    /// Consecutive failures (connection errors, 502/503/504, requests dropped after waiting
    /// 1 s) that eject an upstream; 0 turns passive ejection off.
    #[arg(long, default_value_t = PassiveHealth::default().consecutive_failures)]
    consecutive_failures: u32,
    /// The upstreams, as `http://host:port`.
    #[arg(required = true)]
    upstreams: Vec<Upstream>,
}

/// A policy by its configuration name.
fn policy(name: &str) -> Result<Policy, serde_json::Error> {
    serde_json::from_value(serde_json::Value::from(name))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    proxflow_examples::runtime(None)?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    let lb = AdaptiveLb::new(args.upstreams)
        .policy(args.policy)
        .passive_health(PassiveHealth {
            consecutive_failures: args.consecutive_failures,
            ..PassiveHealth::default()
        });
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let proxy = ServiceBuilder::new().layer(lb).service(client);

    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut shutdown = std::pin::pin!(proxflow_examples::shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        // What a server knows of its client, where `ip_hash` and `X-Forwarded-For` read it.
        let service = ServiceBuilder::new()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                request
            })
            .service(proxy.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}
