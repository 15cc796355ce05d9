//! `reject: drop` on the wire: a real server on 127.0.0.1 (axum::serve, and hyper's http1
//! connection directly), a raw TCP client. The refused request must get no HTTP response byte
//! and the connection must close; the requests admitted before it on the same keep-alive
//! connection get their whole 200.
//!
//! These tests run on the real clock (paused time and real sockets do not mix: the runtime
//! would jump timers while a socket waits), so the limit is one request per hour: nothing
//! refills while a test runs, and no test sleeps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use proxflow_ratelimit::{ClientAddr, ConnectionDropped, Key, RateLimitLayer, Reject, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};

/// A guard against a hang, not a wait: every read here completes in microseconds.
const GUARD: Duration = Duration::from_secs(20);

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn dropping() -> RateLimitLayer {
    RateLimitLayer::new(1, Duration::from_secs(3600))
        .burst(2)
        .reject(Reject::Drop)
}

/// axum::serve with `ConnectInfo`, on an ephemeral port.
async fn axum_server(layer: RateLimitLayer) -> SocketAddr {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// hyper's http1 server, the layer over a plain tower service; each connection's outcome (Ok
/// or the error hyper ended it with, as text with its sources) goes to the channel.
async fn hyper_server(layer: RateLimitLayer) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (outcomes, outcome_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let inner = tower::service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            let service = layer.layer(inner).with_peer(peer);
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let result = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
                let _ = outcomes.send(match result {
                    Ok(()) => "ok".to_owned(),
                    Err(error) => describe(&error),
                });
            });
        }
    });
    (addr, outcome_rx)
}

/// An error and its sources, and whether one of them is `ConnectionDropped`.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<ConnectionDropped>() {
            text.push_str(" [ConnectionDropped]");
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads one HTTP/1.1 response with a Content-Length: (head, body).
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("body in time")
            .expect("read");
        assert!(n > 0, "connection closed inside a body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), length, "nothing after the body");
    (head, body)
}

/// How a connection ended for the client.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// An orderly close (FIN): `read` returned 0.
    Closed,
    /// The server reset the connection.
    Reset,
}

/// Everything the server sends until the connection ends, and how it ended.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("the server closes the connection instead of leaving it open")
        {
            Ok(0) => return (received, End::Closed),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return (received, End::Reset)
            }
            Err(error) => panic!("read failed: {error}"),
        }
    }
}

/// Two admitted requests on one keep-alive connection get their whole 200; the third gets
/// no byte at all and the connection ends.
async fn two_answered_then_dropped(addr: SocketAddr, stats: &Stats) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for n in 1..=2 {
        stream.write_all(GET).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "request {n}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("\r\nratelimit: "),
            "{head}"
        );
        assert_eq!(body, b"hello");
    }
    stream.write_all(GET).await.unwrap();
    let (received, end) = read_until_closed(&mut stream).await;
    eprintln!(
        "HTTP/1.1, the dropped request: {} bytes, then {end:?}",
        received.len()
    );
    assert!(
        received.is_empty(),
        "the dropped request got {} bytes ({end:?}): {:?}",
        received.len(),
        String::from_utf8_lossy(&received)
    );
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.allowed, snapshot.dropped), (2, 1));

    // A new connection from the same client is dropped too, and nothing else is counted.
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(GET).await.unwrap();
    let (received, _) = read_until_closed(&mut again).await;
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(stats.snapshot().dropped, 2);
    assert_eq!(stats.snapshot().limited, 0);
    assert_eq!(
        stats.snapshot().missing_key,
        0,
        "every request was keyed by its client's address"
    );
}

#[tokio::test]
async fn axum_serve_drops_the_connection_without_a_response() {
    let layer = dropping();
    let stats = layer.stats();
    let addr = axum_server(layer).await;
    two_answered_then_dropped(addr, &stats).await;
}

#[tokio::test]
async fn hyper_http1_drops_the_connection_without_a_response() {
    let layer = dropping();
    let stats = layer.stats();
    let (addr, mut outcomes) = hyper_server(layer).await;
    two_answered_then_dropped(addr, &stats).await;
    // hyper ended both connections with the body's error.
    for _ in 0..2 {
        let outcome = tokio::time::timeout(GUARD, outcomes.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.contains("[ConnectionDropped]"), "{outcome}");
    }
}

#[tokio::test]
async fn pipelined_requests_get_their_answers_before_the_drop() {
    let layer = dropping();
    let stats = layer.stats();
    let (addr, _) = hyper_server(layer).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Three requests in one write: the first two are admitted, the third dropped.
    stream.write_all(&GET.repeat(3)).await.unwrap();
    let (received, _) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert_eq!(stats.snapshot().dropped, 1);
}

#[tokio::test]
async fn a_dropped_upload_gets_no_bytes_either() {
    let layer = dropping();
    let stats = layer.stats();
    let (addr, _) = hyper_server(layer).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(GET).await.unwrap();
        read_response(&mut stream).await;
    }
    // A POST whose 1 MB body the server never reads: the close may become a reset, and the
    // client's writes may fail; either way no response byte arrives.
    let body = vec![b'x'; 1 << 20];
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move { writer.write_all(&body).await.is_ok() });
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match tokio::time::timeout(GUARD, reader.read(&mut chunk))
            .await
            .expect("the server ends the connection")
        {
            Ok(0) => break End::Closed,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break End::Reset,
            Err(error) => panic!("read failed: {error}"),
        }
    };
    let uploaded = upload.await.unwrap();
    eprintln!(
        "HTTP/1.1, a dropped 1 MB upload: {} bytes, then {end:?}; the upload {}",
        received.len(),
        if uploaded {
            "was accepted by the socket"
        } else {
            "failed"
        }
    );
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(stats.snapshot().dropped, 1);
}

#[tokio::test]
async fn other_clients_are_still_answered() {
    // Keys by a header here, so that one machine can be two clients.
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .burst(1)
        .reject(Reject::Drop)
        .key(Key::Header(http::HeaderName::from_static("x-client")));
    let addr = axum_server(layer).await;
    let get =
        |client: &str| format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Client: {client}\r\n\r\n");
    let mut a = TcpStream::connect(addr).await.unwrap();
    a.write_all(get("a").as_bytes()).await.unwrap();
    assert!(read_response(&mut a).await.0.starts_with("HTTP/1.1 200"));
    a.write_all(get("a").as_bytes()).await.unwrap();
    assert!(read_until_closed(&mut a).await.0.is_empty());
    let mut b = TcpStream::connect(addr).await.unwrap();
    b.write_all(get("b").as_bytes()).await.unwrap();
    assert!(read_response(&mut b).await.0.starts_with("HTTP/1.1 200"));
}

// --- HTTP/2 (axum::serve speaks h2c with prior knowledge) -----------------------------------

/// One HTTP/2 frame: type, flags, stream, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// `GET /` on `stream`: HEADERS with END_STREAM | END_HEADERS, HPACK from the static table.
fn h2_get(stream: u32) -> Vec<u8> {
    // :method GET, :scheme http, :path /, :authority (indexed name 1) "localhost" as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    frame(HEADERS, 0x4 | END_STREAM, stream, &block)
}

/// Reads frames until `stream` ends (END_STREAM or RST_STREAM), the server sends GOAWAY or
/// closes the connection; answers SETTINGS. Returns the frames of `stream`, and what ended it.
async fn h2_exchange(connection: &mut TcpStream, stream: u32) -> (Vec<Frame>, String) {
    let mut frames = Vec::new();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buffer.len() >= 9 {
            let length = u32::from_be_bytes([0, buffer[0], buffer[1], buffer[2]]) as usize;
            if buffer.len() < 9 + length {
                break;
            }
            let frame = Frame {
                kind: buffer[3],
                flags: buffer[4],
                stream: u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]])
                    & 0x7fff_ffff,
                payload: buffer[9..9 + length].to_vec(),
            };
            buffer.drain(..9 + length);
            if frame.kind == SETTINGS && frame.flags & 1 == 0 {
                connection
                    .write_all(&self::frame(SETTINGS, 1, 0, &[]))
                    .await
                    .unwrap();
            }
            if frame.kind == GOAWAY {
                return (frames, format!("GOAWAY {:?}", frame.payload));
            }
            if frame.stream == stream {
                let ended = frame.kind == RST_STREAM
                    || (matches!(frame.kind, DATA | HEADERS) && frame.flags & END_STREAM != 0);
                let kind = frame.kind;
                frames.push(frame);
                if ended {
                    return (
                        frames,
                        if kind == RST_STREAM {
                            "RST_STREAM".into()
                        } else {
                            "END_STREAM".into()
                        },
                    );
                }
            }
        }
        match tokio::time::timeout(GUARD, connection.read(&mut chunk))
            .await
            .expect("the server ends the stream or the connection")
        {
            Ok(0) => return (frames, "connection closed".into()),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) => return (frames, format!("connection error: {error}")),
        }
    }
}

fn describe_frames(frames: &[Frame]) -> String {
    frames
        .iter()
        .map(|f| {
            let name = match f.kind {
                DATA => "DATA",
                HEADERS => "HEADERS",
                RST_STREAM => "RST_STREAM",
                _ => "other",
            };
            let status = if f.kind == HEADERS {
                match f.payload.first() {
                    Some(0x88) => " (:status 200)".to_owned(),
                    _ if f.payload.windows(3).any(|w| w == b"429") => " (:status 429)".to_owned(),
                    _ => String::new(),
                }
            } else {
                String::new()
            };
            format!(
                "{name}{status} flags={:#x} payload={:02x?}",
                f.flags, f.payload
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An h2c connection with the preface and empty settings sent.
async fn h2_connect(addr: SocketAddr) -> TcpStream {
    let mut connection = TcpStream::connect(addr).await.unwrap();
    connection
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    connection
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    connection
}

#[tokio::test]
async fn http2_admitted_requests_are_answered() {
    let addr = axum_server(dropping()).await;
    let mut connection = h2_connect(addr).await;
    for stream in [1, 3] {
        connection.write_all(&h2_get(stream)).await.unwrap();
        let (frames, end) = h2_exchange(&mut connection, stream).await;
        assert_eq!(end, "END_STREAM", "{}", describe_frames(&frames));
        assert_eq!(frames[0].kind, HEADERS);
        assert_eq!(frames[0].payload[0], 0x88, ":status 200");
        let data: Vec<u8> = frames
            .iter()
            .filter(|f| f.kind == DATA)
            .flat_map(|f| f.payload.clone())
            .collect();
        assert_eq!(data, b"hello");
    }
}

/// Opens an h2c connection and uses up the two admitted requests on streams 1 and 3.
async fn h2_connection_past_the_limit(addr: SocketAddr) -> TcpStream {
    let mut connection = h2_connect(addr).await;
    for stream in [1, 3] {
        connection.write_all(&h2_get(stream)).await.unwrap();
        let (_, end) = h2_exchange(&mut connection, stream).await;
        assert_eq!(end, "END_STREAM");
    }
    connection
}

/// Over HTTP/2 hyper resets the stream (RST_STREAM, INTERNAL_ERROR) before sending any HEADERS
/// frame: no response reaches the client.
#[tokio::test]
async fn http2_drop_sends_no_response_head() {
    let layer = dropping();
    let stats = layer.stats();
    let addr = axum_server(layer).await;
    let mut connection = h2_connection_past_the_limit(addr).await;
    connection.write_all(&h2_get(5)).await.unwrap();
    let (frames, end) = h2_exchange(&mut connection, 5).await;
    eprintln!(
        "HTTP/2, the dropped request's stream: [{}] then {end}",
        describe_frames(&frames)
    );
    assert_eq!(stats.snapshot().dropped, 1);
    assert!(
        frames.iter().all(|f| f.kind != HEADERS && f.kind != DATA),
        "the dropped request got a response: {} then {end}",
        describe_frames(&frames)
    );
}

/// Over HTTP/2 a layer cannot close the connection, which other streams share: the dropped
/// request's stream is reset (`RST_STREAM`) with no response head, and the connection stays
/// open, as `Reject::Drop` documents.
#[tokio::test]
async fn http2_drop_resets_the_stream_without_a_response() {
    let addr = axum_server(dropping()).await;
    let mut connection = h2_connection_past_the_limit(addr).await;
    connection.write_all(&h2_get(5)).await.unwrap();
    let (frames, end) = h2_exchange(&mut connection, 5).await;
    assert_eq!(end, "RST_STREAM");
    assert!(
        frames.iter().all(|frame| frame.kind != HEADERS),
        "no response head was sent"
    );
    connection.write_all(&h2_get(7)).await.unwrap();
    let (_, next) = h2_exchange(&mut connection, 7).await;
    assert_eq!(
        next, "RST_STREAM",
        "the next stream is decided the same way"
    );
}

/// What an outer layer inside the application sees: a 429 whose body fails on its first poll
/// with [`ConnectionDropped`] (which is what makes the server close the connection).
#[tokio::test(start_paused = true)]
async fn inside_axum_a_dropped_request_is_a_429_whose_body_fails() {
    use http_body_util::BodyExt;

    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(dropping());
    let request = || {
        let mut request = Request::new(axum::body::Body::empty());
        request
            .extensions_mut()
            .insert(ClientAddr("192.0.2.1:1000".parse().unwrap()));
        request
    };
    for _ in 0..2 {
        let response = app.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 429);
    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("the body fails");
    assert!(describe(&error).contains("[ConnectionDropped]"), "{error}");
}
