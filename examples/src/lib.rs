//! Pieces shared by the example programs: serving a Tower service over hyper with graceful
//! shutdown, the example site, and the gateway.

/// The README's example, compiled as a doc test so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct Readme;

pub mod gateway;
pub mod site;

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use axum::extract::ConnectInfo;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// How long a client may take to send a request head. `axum::serve` sets no such limit, so a
/// client that sends a head a byte at a time would hold its connection for as long as it likes.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `service` over HTTP/1.1 on `listener` until Ctrl-C or SIGTERM, then lets open
/// connections finish for up to ten seconds.
///
/// Each request carries the client's address as axum's [`ConnectInfo`] (what the rate
/// limiter's `ip` key reads), as with `into_make_service_with_connect_info::<SocketAddr>()`.
/// Clients get 30 s to send a request head, and `TCP_NODELAY` is on, so that an answer written
/// in two parts is not held back by Nagle's algorithm. HTTP/1.1 only and one task per
/// connection: what a server behind a CDN or a browser in development needs, without the
/// protocol sniffing of an auto (h1 + h2) server.
pub async fn serve<S, B>(listener: TcpListener, service: S) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Resets by clients (and a rate limiter's `reject: drop`) end connections with an
            // error: routine.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down; waiting for open connections");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIME) => {
            tracing::warn!("connections still open after {DRAIN_TIME:?}; closing them");
        }
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that comes before the first poll (a server's first select may take a connection
/// first) is then still seen, instead of ending the process as the default action does.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        let received = |signal: Option<Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        async move {
            tokio::select! {
                () = received(interrupt) => {},
                () = received(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The runtime the programs run on: one thread per core the process may use (so `taskset -c 0`
/// gives a single-threaded runtime without work-stealing overhead).
pub fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
