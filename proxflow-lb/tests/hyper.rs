//! The balancer as a plain hyper user runs it, with no axum anywhere: hyper servers on
//! 127.0.0.1, hyper-util's client over hyper's `Incoming` request bodies, and a front server
//! that tags each request with the peer's [`ClientAddr`].

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proxflow_lb::{AdaptiveLb, ClientAddr, Policy, UpstreamFailed};
use tokio::net::{TcpListener, TcpSocket};
use tower::{Service, ServiceBuilder, ServiceExt};

/// Serves the service `service_for(peer)` makes, one per connection, over HTTP/1.1.
async fn serve<F, S, B>(mut service_for: F) -> SocketAddr
where
    F: FnMut(SocketAddr) -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service_for(peer));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// An upstream answering `<name>|<method>|xff=<x-forwarded-for>|<request body>`.
async fn upstream(name: &'static str) -> SocketAddr {
    serve(move |_peer| {
        tower::service_fn(move |request: Request<Incoming>| async move {
            let method = request.method().clone();
            let xff = request
                .headers()
                .get("x-forwarded-for")
                .map_or("-".into(), |v| v.to_str().unwrap().to_string());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "{name}|{method}|xff={xff}|{body}"
            )))))
        })
    })
    .await
}

/// The front: the balancer over hyper-util's client, each request tagged with its peer.
async fn front(lb: AdaptiveLb) -> SocketAddr {
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let balanced = ServiceBuilder::new().layer(lb).service(client);
    serve(move |peer| {
        ServiceBuilder::new()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                request
            })
            .service(balanced.clone())
    })
    .await
}

/// Sends `request` to `to` over a connection from `from` (any 127.x.y.z is this machine).
async fn send_from(
    from: Ipv4Addr,
    to: SocketAddr,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "front")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn ip_hash_reads_the_client_address_a_hyper_server_tags() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let lb = AdaptiveLb::new([a, b]).policy(Policy::IpHash);
    let handle = lb.handle();
    let front = front(lb).await;
    for host in 1..=12u8 {
        let client = Ipv4Addr::new(127, 0, 0, host);
        // Where hashing the client's address sends it.
        let pick = handle.pick(Some(client.to_string().as_bytes())).unwrap();
        let expected = pick.upstream().to_string();
        pick.cancel();
        let expected = if expected == format!("http://{a}") {
            "a"
        } else {
            "b"
        };
        for n in 0..3 {
            let body = if n == 0 { "first" } else { "again" };
            let (status, answer) = send_from(client, front, post("/orders", body)).await;
            assert_eq!(status, StatusCode::OK);
            let fields: Vec<&str> = answer.split('|').collect();
            assert_eq!(fields[0], expected, "{client}: {answer}");
            assert_eq!(fields[1], "POST");
            assert_eq!(fields[2], format!("xff={client}"));
            assert_eq!(fields[3], body, "the request body is forwarded");
        }
    }
    let requests: u64 = handle.snapshot().upstreams.iter().map(|u| u.requests).sum();
    assert_eq!(requests, 36);
}

#[tokio::test]
async fn a_body_the_balancer_cannot_make_again_is_not_retried() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let live = upstream("live").await;
    let lb = AdaptiveLb::new([dead, live]).policy(Policy::RoundRobin);
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let service = ServiceBuilder::new().layer(lb).service(client);
    // A GET whose `Incoming` body is empty, sent through a real server so that the balancer
    // gets hyper's own body type.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let catcher = serve(move |_peer| {
        let tx = tx.clone();
        tower::service_fn(move |request: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                tx.send(request).unwrap();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        })
    })
    .await;
    let get = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    send_from(Ipv4Addr::LOCALHOST, catcher, get).await;
    let request = rx.recv().await.unwrap();
    let response = service.oneshot(request).await.unwrap();
    // Round robin sent it to the dead upstream first; with no empty `Incoming` to send again,
    // the refused connection is the answer.
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let failed = response.extensions().get::<UpstreamFailed>().unwrap();
    assert_eq!(&*failed.upstream, format!("http://{dead}"));
    assert_eq!(failed.tried.len(), 1);
}
