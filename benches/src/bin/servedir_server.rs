//! Baseline for the static-file comparison: tower-http's `ServeDir` serving one directory over
//! HTTP/1.1 on a single-threaded Tokio runtime, in one of two ways:
//!
//! - default (tuned): plain hyper (`http1` + `TowerToHyperService`) with `TCP_NODELAY` on every
//!   connection. That is how one would run a lone tower service when tuning for speed, and it
//!   keeps a router out of the measurement, so the figure is ServeDir's own.
//! - `--axum-defaults`: `axum::serve(listener, Router::new().fallback_service(ServeDir::new(dir)))`,
//!   exactly as the tower-http and axum docs show it. axum 0.8 leaves `TCP_NODELAY` off, so
//!   Nagle's algorithm applies; this is ServeDir as most people deploy it.
//!
//! Usage: `servedir_server --port N --dir D [--axum-defaults]` (port 0 picks a free port). Prints
//! `listening on 127.0.0.1:PORT` once the socket is bound, and stops on SIGTERM or Ctrl-C.

use std::future::IntoFuture;
use std::io::Write;
use std::path::PathBuf;

use axum::Router;
use clap::Parser;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tower_http::services::ServeDir;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Serve a directory with tower-http ServeDir (benchmark baseline)")]
struct Args {
    /// Port to listen on, on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Directory to serve.
    #[arg(long)]
    dir: PathBuf,
    /// Serve with `axum::serve` and its defaults (no TCP_NODELAY), as the docs show, instead of
    /// the tuned hyper loop.
    #[arg(long)]
    axum_defaults: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;

    // The harness waits for this line to learn the port, so flush it at once.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;

    let sigterm = signal(SignalKind::terminate())?;
    if args.axum_defaults {
        serve_axum_defaults(listener, args.dir, sigterm).await
    } else {
        serve_tuned(listener, args.dir, sigterm).await
    }
}

/// ServeDir as the docs serve it: `axum::serve` with its defaults, nothing tuned.
async fn serve_axum_defaults(
    listener: TcpListener,
    dir: PathBuf,
    mut sigterm: Signal,
) -> std::io::Result<()> {
    let app = Router::new().fallback_service(ServeDir::new(dir));
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = sigterm.recv() => Ok(()),
    }
}

/// ServeDir under a bare hyper HTTP/1.1 connection per socket, with TCP_NODELAY.
async fn serve_tuned(
    listener: TcpListener,
    dir: PathBuf,
    mut sigterm: Signal,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(ServeDir::new(dir));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Transient (e.g. EMFILE under load): keep serving the connections we have.
                Err(err) => {
                    eprintln!("accept: {err}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        };
        // Small responses would otherwise wait on Nagle; nginx sets TCP_NODELAY on keep-alive too.
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            // Connection errors (client reset, wrk stopping mid-request) are routine under load.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    Ok(())
}
