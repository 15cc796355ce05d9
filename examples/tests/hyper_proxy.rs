//! The hyper_proxy program: two upstreams on 127.0.0.1, the proxy in front of them, and
//! requests with bodies through it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An upstream answering `<name>|<method> <uri>|xff=<x-forwarded-for>|<body length>|<body>`.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service =
                hyper::service::service_fn(move |request: Request<Incoming>| async move {
                    let line = format!("{} {}", request.method(), request.uri());
                    let xff = request
                        .headers()
                        .get("x-forwarded-for")
                        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let answer = format!(
                        "{name}|{line}|xff={xff}|{}|{}",
                        body.len(),
                        String::from_utf8_lossy(&body)
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The proxy's process, killed when dropped.
struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_with_bodies_are_spread_over_the_upstreams() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let (a, b) = (format!("http://{a}"), format!("http://{b}"));
    let args = ["--listen", "127.0.0.1:0", "--policy", "round_robin", &a, &b];
    let (proxy, front) = common::start(env!("CARGO_BIN_EXE_hyper_proxy"), &args);
    let _proxy = Proxy(proxy);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut names = Vec::new();
    for i in 0..6 {
        // Small bodies, and one of 256 KiB, larger than any single read.
        let body = if i == 3 {
            "x".repeat(256 * 1024)
        } else {
            format!("order {i}")
        };
        let request = Request::post(format!("http://{front}/orders?n={i}"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        let answer = String::from_utf8(answer.to_vec()).unwrap();
        let fields: Vec<&str> = answer.splitn(5, '|').collect();
        assert_eq!(fields[1], format!("POST /orders?n={i}"));
        assert_eq!(
            fields[2], "xff=127.0.0.1",
            "the client address is forwarded"
        );
        assert_eq!(fields[3], body.len().to_string());
        assert!(fields[4] == body, "the body arrives whole");
        names.push(fields[0].to_string());
    }
    assert_eq!(names, ["a", "b", "a", "b", "a", "b"], "spread in turn");
}
