//! `serve`'s header-read timeout and `serve_connections`' half-close option, through a real
//! server on 127.0.0.1 on paused time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use proxflow_examples::Connections;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Sends a whole request and reads its answer.
async fn ask(client: &mut TcpStream) {
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok") {
        let mut chunk = [0; 512];
        let read = client.read(&mut chunk).await.unwrap();
        assert_ne!(read, 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_request_head_closes_the_connection_30_s_after_the_last_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ok = tower::service_fn(|_| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    tokio::spawn(proxflow_examples::serve(listener, ok));

    let mut client = TcpStream::connect(addr).await.unwrap();
    ask(&mut client).await;
    // A request 20 s later on the kept-alive connection: the wait for its head counts from the
    // first answer, so the timeout must not have been spent on it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    ask(&mut client).await;
    let answered = Instant::now();

    // Twenty more quiet seconds, then a head that never ends.
    tokio::time::sleep(Duration::from_secs(20)).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), client.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .unwrap();
    let waited = answered.elapsed();
    assert!(
        (Duration::from_secs(30)..Duration::from_millis(30_010)).contains(&waited),
        "closed {waited:?} after the last answer"
    );
}

/// What a client gets that sends a request and then shuts its sending side, from a handler
/// that answers only once the server has seen that shutdown.
async fn answer_after_half_close(options: Connections) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let handler = {
        let release = Arc::clone(&release);
        tower::service_fn(move |_| {
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    tokio::spawn(proxflow_examples::serve_connections(
        listener,
        options,
        move |_| handler.clone(),
    ));

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    // On paused time the runtime polls its sockets before it moves the clock: by the end of
    // this sleep the server has read the request and seen the shutdown.
    tokio::time::sleep(Duration::from_secs(1)).await;
    release.notify_one();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    answer
}

#[tokio::test(start_paused = true)]
async fn a_client_that_half_closes_is_answered_only_with_half_close_on() {
    let answer = answer_after_half_close(Connections { half_close: true }).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK\r\n") && answer.ends_with(b"\r\n\r\nok"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The default: the handler is dropped when the client goes, and nothing is answered.
    let answer = answer_after_half_close(Connections::default()).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}
