//! The HTTP/1.1 server loop of the benchmark servers (`ratelimit_server`): hyper's connection
//! with the parts of hyper-util's server that run on every request replaced by cheaper ones, so
//! that a comparison with nginx measures the layer rather than the server around it.
//!
//! - [`timer::ConnectionTimer`]: one tokio timer per connection for hyper's header-read timeout,
//!   moved lazily, instead of a new timer per request.
//! - [`shutdown::Shutdown`]: graceful shutdown through one flag each connection reads when it
//!   wakes, instead of a `watch` channel polled on every wake.
//! - [`Connections::half_close`]: lets a server whose answers are ready at once skip hyper's
//!   watch for clients that go away.
//!
//! What users run (the programs in `proxflow-examples`) serves with hyper-util's own pieces.

pub mod shutdown;
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
use tokio::signal::unix::{signal, SignalKind};
use tower::Service;

/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// What [`serve_connections`] may change in how it runs a connection. Every server here keeps
/// HTTP/1.1, `TCP_NODELAY`, a 30 s header-read timeout and graceful shutdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connections {
    /// Keep answering a request after the client has shut its sending side (hyper's
    /// `half_close`). Off by default: hyper then watches for the client going away while a
    /// request is in flight and drops the handler's future when it does, as nginx cancels an
    /// upstream request whose client left. That watch is a read attempt per request, made into
    /// a fresh 8 KiB read buffer because the request in flight still holds the old one: an
    /// allocation per request. A server whose handlers answer within the poll that receives the
    /// request loses nothing by turning it on.
    pub half_close: bool,
}

/// Serves HTTP/1.1 on `listener` until Ctrl-C or SIGTERM, then lets open connections finish
/// for up to ten seconds. Each connection gets the service `service_for` makes from the peer's
/// address (to tag requests with it, as axum's `ConnectInfo` does, once per connection).
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

/// Completes on Ctrl-C or SIGTERM (the benchmark harness stops its servers with SIGTERM). The
/// handlers are installed when this is called, not at the first poll: a SIGTERM that comes
/// before the first poll would otherwise end the process by the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async move {
        let received = |signal: Option<tokio::signal::unix::Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
    }
}
