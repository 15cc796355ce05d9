//! Baseline for the static-file comparison: tower-http's `ServeDir` serving one directory over
//! HTTP/1.1 on a single-threaded Tokio runtime.
//!
//! Usage: `servedir_server --port N --dir D` (port 0 picks a free port). Prints
//! `listening on 127.0.0.1:PORT` once the socket is bound, and stops on SIGTERM or Ctrl-C.
//!
//! The server is plain hyper (`http1` + `TowerToHyperService`) rather than `axum::serve`: that is
//! how one would run a lone tower service in production, and it keeps a router out of the
//! measurement, so the figure is ServeDir's own and the baseline is not handicapped.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let service = TowerToHyperService::new(ServeDir::new(&args.dir));

    // The harness waits for this line to learn the port, so flush it at once.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;

    let mut sigterm = signal(SignalKind::terminate())?;
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
