//! The `ip` key behind a server that records no client address (a plain `axum::serve`): every
//! such request would share one bucket. The layer says so once, as a warning, and counts them.
//! Alone in this test binary, for the reason tests/events.rs gives.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxflow_ratelimit::{RateLimitLayer, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `layer` on 127.0.0.1 with a real `axum::serve`, with or without `ConnectInfo`.
async fn serve(layer: RateLimitLayer, connect_info: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(layer);
    tokio::spawn(async move {
        if connect_info {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        } else {
            axum::serve(listener, app).await.unwrap();
        }
    });
    addr
}

/// The status of `GET /` on a connection of its own.
async fn get(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).expect("a status line");
    status.parse().unwrap()
}

async fn statuses(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr).await);
    }
    out
}

fn limit() -> (RateLimitLayer, Stats) {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600)).burst(2);
    let stats = layer.stats();
    (layer, stats)
}

fn warnings(messages: &Messages) -> Vec<String> {
    messages
        .take()
        .into_iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .map(|(_, message)| message)
        .collect()
}

#[tokio::test]
async fn a_plain_axum_serve_is_warned_once_and_counted() {
    // The runtime is the test's thread, so the connections' tasks report here.
    let messages = Messages::default();
    let _guard = tracing::subscriber::set_default(messages.clone());

    // With ConnectInfo, every request has its address: no warning, nothing counted.
    let (layer, stats) = limit();
    let addr = serve(layer, true).await;
    assert_eq!(statuses(addr, 3).await, [200, 200, 429]);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.no_client_address, snapshot.missing_key), (0, 0));
    assert_eq!(warnings(&messages), Vec::<String>::new());

    // Without it, no request has an address: counted every time, warned once.
    let (layer, stats) = limit();
    let addr = serve(layer, false).await;
    assert_eq!(
        statuses(addr, 4).await,
        [200, 200, 429, 429],
        "one shared bucket"
    );
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.no_client_address, 4);
    assert_eq!(
        snapshot.missing_key, 4,
        "each is a request without a key, too"
    );
    assert_eq!((snapshot.allowed, snapshot.limited), (2, 2));
    let warned = warnings(&messages);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    for what in [
        "no client address",
        "into_make_service_with_connect_info",
        "with_peer",
        "ClientAddr",
    ] {
        assert!(warned[0].contains(what), "{what}: {}", warned[0]);
    }

    // Another layer warns once of its own.
    let (layer, stats) = limit();
    let addr = serve(layer, false).await;
    statuses(addr, 2).await;
    assert_eq!(stats.snapshot().no_client_address, 2);
    assert_eq!(warnings(&messages).len(), 1);
}
