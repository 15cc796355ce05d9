//! Pieces shared by the example programs: serving a Tower service over hyper with graceful
//! shutdown, the example site, and the gateway.

pub mod gateway;
pub mod shutdown;
pub mod site;
pub mod timer;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Service;

/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Serves `service` over HTTP/1.1 on `listener` until Ctrl-C or SIGTERM, then lets open
/// connections finish for up to ten seconds.
///
/// HTTP/1.1 only and one task per connection: what a static file server behind a CDN or
/// a browser in development needs, without the protocol sniffing of an auto (h1 + h2) server.
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
    serve_connections(listener, Connections::default(), move |_peer| {
        service.clone()
    })
    .await
}

/// What [`serve_connections`] may change in how it runs a connection. Every server here keeps
/// HTTP/1.1, `TCP_NODELAY`, a 30 s header-read timeout and graceful shutdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connections {
    /// Keep answering a request after the client has shut its sending side (hyper's
    /// `half_close`). Off by default: hyper then watches for the client going away while a
    /// request is in flight and drops the handler's future when it does, as nginx cancels an
    /// upstream request whose client left. That watch is a read attempt per request, made into
    /// a fresh 8 KiB read buffer because the request in flight still holds the old one: about
    /// 340 instructions of allocation per request in `ratelimit_server` (callgrind). A server
    /// whose handlers answer within the poll that receives the request loses nothing by it.
    pub half_close: bool,
}

/// [`serve`] with a service made per connection from the peer's address (to tag requests
/// with it, as axum's `ConnectInfo` does).
pub async fn serve_connections<F, S, B>(
    listener: TcpListener,
    options: Connections,
    mut service_for: F,
) -> std::io::Result<()>
where
    F: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = shutdown::Shutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
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
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(timer::ConnectionTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .half_close(options.half_close)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service_for(peer)),
            );
        let mut watcher = connections.watcher();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = poll_fn(|cx| {
                if watcher.poll_closing(cx) {
                    // Finishes the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                }
                connection.as_mut().poll(cx)
            })
            .await;
            // Resets by clients (and a rate limiter's `reject: drop`) end connections with an
            // error: routine.
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down; waiting for open connections");
    if tokio::time::timeout(DRAIN_TIME, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIME:?}; closing them");
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
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
