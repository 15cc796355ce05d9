//! Helpers shared by the integration tests: a temporary site, a router around the layer,
//! one-shot requests, a real server with a raw TCP client, and a multipart parser.
//!
//! Every test file uses only part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::routing;
use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use proxflow_static::StaticLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// The contents of the file placed next to (outside) the served folder.
pub const SECRET: &str = "TOP-SECRET-7f3a9c1e: this file lives outside the static root\n";

/// What the inner router answers on `/`.
pub const HOME: &str = "home from the inner router";

/// What the inner router answers on `/api/users`.
pub const USERS: &str = "users from the inner router";

/// A temporary directory with `public/` (the root to serve) and `secret.txt` beside it.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        Site { dir }
    }

    /// The folder the layer serves.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    /// The file outside the root.
    pub fn secret_path(&self) -> PathBuf {
        self.dir.path().join("secret.txt")
    }

    /// Writes a file below the root, creating its folders.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Creates a folder below the root.
    pub fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.root().join(relative);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The layer mounted at `/static` on this site's root, in development mode.
    pub fn layer(&self) -> StaticLayer {
        StaticLayer::new("/static", self.root())
    }
}

/// The whole-second modification time of a file, as HTTP dates carry it.
pub fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HTTP date `secs` seconds after the epoch.
pub fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn parse_http_date(text: &str) -> u64 {
    httpdate::parse_http_date(text)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A router with two routes of its own, wrapped in `layer`.
pub fn app(layer: StaticLayer) -> Router {
    inner_router().layer(layer)
}

pub fn inner_router() -> Router {
    Router::new()
        .route("/", routing::get(|| async { HOME }))
        .route("/api/users", routing::get(|| async { USERS }))
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The exact length the body announced before it was read (hyper's `Content-Length`).
    pub size_hint: Option<u64>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is text"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics unless the announced length and, when present, `Content-Length` equal the body's.
    pub fn assert_length_consistent(&self) {
        assert_eq!(
            self.size_hint,
            Some(self.body.len() as u64),
            "size hint vs body: {self:?}"
        );
        if let Some(length) = self.header("content-length") {
            assert_eq!(
                length.parse::<u64>().unwrap(),
                self.body.len() as u64,
                "Content-Length vs body"
            );
        }
    }
}

pub fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let size_hint = body.size_hint().exact();
    let body = body.collect().await.expect("body reads").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        size_hint,
    }
}

pub async fn get(app: &Router, uri: &str) -> Reply {
    send(app, request(Method::GET, uri, &[])).await
}

pub async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    send(app, request(Method::GET, uri, headers)).await
}

pub async fn head_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    send(app, request(Method::HEAD, uri, headers)).await
}

/// Serves `app` on 127.0.0.1 with a real axum/hyper server; the task ends with the test's runtime.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// Sends `head` (a request line and headers, without the final empty line; `Connection: close`
/// is added) and reads the answer until the server closes the connection.
pub async fn raw(addr: SocketAddr, head: &str) -> RawReply {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let message = format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    // A guard against a hung server, not a delay: the exchange takes milliseconds.
    let bytes = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("server answered");
    parse_raw(&bytes)
}

pub fn parse_raw(bytes: &[u8]) -> RawReply {
    let end = find(bytes, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).expect("head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut words = status_line.split(' ');
    assert_eq!(words.next(), Some("HTTP/1.1"), "{status_line}");
    let status = words.next().unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_string(), value.trim().to_string())
        })
        .collect();
    RawReply {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// One part of a `multipart/byteranges` body.
#[derive(Debug)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The boundary of a `multipart/byteranges; boundary=...` content type.
pub fn boundary_of(content_type: &str) -> String {
    let (essence, params) = content_type.split_once(';').expect("parameters");
    assert_eq!(essence.trim(), "multipart/byteranges");
    let boundary = params
        .trim()
        .strip_prefix("boundary=")
        .expect("boundary parameter");
    boundary.trim_matches('"').to_string()
}

/// Parses a multipart body strictly (RFC 2046 §5.1.1): optional CRLF, then parts separated by
/// `CRLF--boundary`, closed by `CRLF--boundary--`.
pub fn parse_multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut rest: &[u8] = body;
    // The first delimiter may come without its CRLF at the very start.
    if rest.starts_with(&delimiter[2..]) {
        rest = &rest[delimiter.len() - 2..];
    } else {
        assert!(
            rest.starts_with(&delimiter),
            "body does not open with a boundary: {:?}",
            String::from_utf8_lossy(body)
        );
        rest = &rest[delimiter.len()..];
    }
    let mut parts = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            assert!(
                after.is_empty() || after == b"\r\n",
                "bytes after the close delimiter: {after:?}"
            );
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a boundary");
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let headers = std::str::from_utf8(&rest[..head_end])
            .unwrap()
            .split("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect();
        rest = &rest[head_end + 4..];
        let data_end = find(rest, &delimiter).expect("next boundary");
        parts.push(Part {
            headers,
            data: rest[..data_end].to_vec(),
        });
        rest = &rest[data_end + delimiter.len()..];
    }
}
