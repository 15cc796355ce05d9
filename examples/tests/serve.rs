//! `serve` through a real server on 127.0.0.1 on paused time: the client's address on every
//! request, and the header-read timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn requests_carry_the_peer_and_an_unfinished_head_is_cut_off_after_30_s() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers with the address `serve` tagged the request with.
    let peer = tower::service_fn(|request: Request<Incoming>| async move {
        let ConnectInfo(peer) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .unwrap();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(peer.to_string()))))
    });
    tokio::spawn(proxflow_examples::serve(listener, peer));

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let me = client.local_addr().unwrap().to_string();
    let mut answer = Vec::new();
    while !answer.ends_with(me.as_bytes()) {
        let mut chunk = [0; 512];
        let read = client.read(&mut chunk).await.unwrap();
        assert_ne!(read, 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
    }
    let answered = Instant::now();

    // A quiet while on the kept-alive connection, then a head that never ends: the connection
    // stays open until 30 s after the answer, and is closed then.
    tokio::time::sleep(Duration::from_secs(20)).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let before = answered + Duration::from_millis(29_990);
    let still_open = tokio::time::timeout_at(before, client.read_to_end(&mut rest)).await;
    assert!(still_open.is_err(), "closed before 30 s: {rest:?}");
    let after = answered + Duration::from_millis(30_010);
    tokio::time::timeout_at(after, client.read_to_end(&mut rest))
        .await
        .expect("closed 30 s after the answer")
        .unwrap();
}
