//! Content codings: precompressed siblings chosen by `Accept-Encoding` q-values, `Vary`, and
//! production-mode compression in memory (done once, and decoding back to the file).

mod common;

use std::io::Read;

use axum::Router;
use common::*;
use http::{Method, StatusCode};

/// A script large and repetitive enough to be worth compressing.
fn script() -> String {
    (0..400)
        .map(|i| format!("console.log('line {i} of a compressible script');\n"))
        .collect()
}

/// `app.js` with three fake siblings whose bytes say which one was sent.
fn site_with_siblings() -> Site {
    let site = Site::new();
    site.write("app.js", script());
    site.write("app.js.br", "BROTLI-SIBLING");
    site.write("app.js.zst", "ZSTD-SIBLING-BYTES");
    site.write("app.js.gz", "GZIP-SIBLING-BYTES-LONGER");
    site.write("only-gz.css", "body { margin: 0 }\n");
    site.write("only-gz.css.gz", "GZIP-OF-CSS");
    site.write("plain.css", "body { padding: 0 }\n");
    site.write("logo.png", [0x89, b'P', b'N', b'G', 1, 2, 3, 4]);
    site
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("valid brotli");
    out
}

#[tokio::test]
async fn accept_encoding_sent_on_several_lines_is_one_list() {
    let site = site_with_siblings();
    for (mode, app) in [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true))),
    ] {
        let lines = [
            ("accept-encoding", "identity;q=0.5"),
            ("accept-encoding", "gzip"),
        ];
        let reply = get_with(&app, "/static/app.js", &lines).await;
        assert_eq!(reply.header("content-encoding"), Some("gzip"), "{mode}");
        assert_eq!(reply.body, "GZIP-SIBLING-BYTES-LONGER", "{mode}");
        let lines = [
            ("accept-encoding", "gzip;q=0.2"),
            ("accept-encoding", "br;q=0.9"),
        ];
        let reply = get_with(&app, "/static/app.js", &lines).await;
        assert_eq!(reply.header("content-encoding"), Some("br"), "{mode}");
    }
}

#[tokio::test]
async fn siblings_are_chosen_by_q_values() {
    let site = site_with_siblings();
    let original = script();
    let cases: &[(Option<&str>, Option<&str>, &str)] = &[
        (None, None, &original),
        (Some("br"), Some("br"), "BROTLI-SIBLING"),
        (
            Some("gzip, deflate, br, zstd"),
            Some("br"),
            "BROTLI-SIBLING",
        ),
        (Some("gzip, zstd"), Some("zstd"), "ZSTD-SIBLING-BYTES"),
        (Some("gzip"), Some("gzip"), "GZIP-SIBLING-BYTES-LONGER"),
        (Some("x-gzip"), Some("gzip"), "GZIP-SIBLING-BYTES-LONGER"),
        (Some("GZIP"), Some("gzip"), "GZIP-SIBLING-BYTES-LONGER"),
        (
            Some("br;q=0.5, gzip;q=0.8"),
            Some("gzip"),
            "GZIP-SIBLING-BYTES-LONGER",
        ),
        (
            Some("br;q=0.5, gzip;q=0.8, zstd;q=0.9"),
            Some("zstd"),
            "ZSTD-SIBLING-BYTES",
        ),
        (
            Some("br;q=0, gzip"),
            Some("gzip"),
            "GZIP-SIBLING-BYTES-LONGER",
        ),
        (
            Some("br;q=abc, gzip"),
            Some("gzip"),
            "GZIP-SIBLING-BYTES-LONGER",
        ),
        (Some("*"), Some("br"), "BROTLI-SIBLING"),
        (
            Some("*;q=0.5, br;q=0.1"),
            Some("zstd"),
            "ZSTD-SIBLING-BYTES",
        ),
        (
            Some("gzip;q=0.3"),
            Some("gzip"),
            "GZIP-SIBLING-BYTES-LONGER",
        ),
        (Some("gzip;q=0.3, identity"), None, &original),
        (Some("*;q=0.1, identity;q=0.5"), None, &original),
        (Some("identity"), None, &original),
        (Some("deflate"), None, &original),
        (Some("br;q=0, gzip;q=0, zstd;q=0"), None, &original),
        (Some(""), None, &original),
    ];
    for (mode, app) in [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true).compress(false))),
    ] {
        let mut etags = std::collections::HashMap::new();
        for (accept, coding, body) in cases {
            let headers: Vec<(&str, &str)> =
                accept.iter().map(|a| ("accept-encoding", *a)).collect();
            let reply = get_with(&app, "/static/app.js", &headers).await;
            assert_eq!(reply.status, StatusCode::OK, "{accept:?}, {mode}");
            assert_eq!(
                reply.header("content-encoding"),
                *coding,
                "{accept:?}, {mode}"
            );
            assert_eq!(reply.text(), *body, "{accept:?}, {mode}");
            assert_eq!(
                reply.header("vary"),
                Some("accept-encoding"),
                "{accept:?}, {mode}"
            );
            assert_eq!(
                reply.header("content-type"),
                Some("text/javascript; charset=utf-8"),
                "{mode}"
            );
            reply.assert_length_consistent();
            let etag = reply.header("etag").unwrap().to_string();
            // One tag per representation, and never one tag for two representations.
            assert_eq!(
                *etags.entry(*coding).or_insert_with(|| etag.clone()),
                etag,
                "{accept:?}, {mode}"
            );
        }
        let distinct: std::collections::HashSet<_> = etags.values().collect();
        assert_eq!(
            distinct.len(),
            4,
            "identity, br, zstd and gzip have distinct tags, {mode}"
        );
    }
}

#[tokio::test]
async fn vary_is_sent_on_negotiable_files_even_for_identity_answers() {
    let site = site_with_siblings();
    for (mode, app) in [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true))),
    ] {
        for accept in [None, Some("identity"), Some("deflate")] {
            let headers: Vec<(&str, &str)> =
                accept.iter().map(|a| ("accept-encoding", *a)).collect();
            for uri in ["/static/app.js", "/static/only-gz.css"] {
                let reply = get_with(&app, uri, &headers).await;
                assert!(
                    reply.header("content-encoding").is_none(),
                    "{uri} {accept:?}, {mode}"
                );
                assert_eq!(
                    reply.header("vary"),
                    Some("accept-encoding"),
                    "{uri} {accept:?}, {mode}"
                );
                let head = head_with(&app, uri, &headers).await;
                assert_eq!(
                    head.header("vary"),
                    Some("accept-encoding"),
                    "HEAD {uri} {accept:?}, {mode}"
                );
            }
        }
    }
    // Without a sibling and without compression (development), nothing varies.
    let app = app(site.layer());
    for uri in ["/static/plain.css", "/static/logo.png"] {
        let reply = get_with(&app, uri, &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("vary").is_none(), "{uri}");
        assert!(reply.header("content-encoding").is_none(), "{uri}");
    }
}

#[tokio::test]
async fn only_existing_siblings_are_offered() {
    let site = site_with_siblings();
    let app = app(site.layer());
    let reply = get_with(
        &app,
        "/static/only-gz.css",
        &[("accept-encoding", "br, zstd, gzip;q=0.2")],
    )
    .await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.body, "GZIP-OF-CSS");
    let reply = get_with(
        &app,
        "/static/only-gz.css",
        &[("accept-encoding", "br, zstd")],
    )
    .await;
    assert!(reply.header("content-encoding").is_none());
    assert_eq!(reply.body, "body { margin: 0 }\n");
}

#[tokio::test]
async fn precompressed_off_ignores_siblings() {
    let site = site_with_siblings();
    let app = app(site.layer().precompressed(false));
    let reply = get_with(&app, "/static/app.js", &[("accept-encoding", "br, gzip")]).await;
    assert!(reply.header("content-encoding").is_none());
    assert_eq!(reply.text(), script());
}

#[tokio::test]
async fn conditionals_and_ranges_apply_to_the_chosen_representation() {
    let site = site_with_siblings();
    for (mode, app) in [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true))),
    ] {
        let br = [("accept-encoding", "br")];
        let first = get_with(&app, "/static/app.js", &br).await;
        let br_tag = first.header("etag").unwrap().to_string();
        // A 304 carries Vary but no representation metadata (RFC 9110 §15.4.5).
        for method in [Method::GET, Method::HEAD] {
            let headers = [
                ("accept-encoding", "br"),
                ("if-none-match", br_tag.as_str()),
            ];
            let reply = send(&app, request(method.clone(), "/static/app.js", &headers)).await;
            assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{method}, {mode}");
            assert_eq!(reply.header("content-encoding"), None, "{method}, {mode}");
            assert_eq!(
                reply.header("vary"),
                Some("accept-encoding"),
                "{method}, {mode}"
            );
            assert_eq!(reply.header("etag"), Some(br_tag.as_str()), "{mode}");
        }
        // The brotli tag does not validate the identity representation.
        let reply = get_with(&app, "/static/app.js", &[("if-none-match", &br_tag)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.text(), script(), "{mode}");
        // A range counts bytes of the coded representation.
        let reply = get_with(
            &app,
            "/static/app.js",
            &[("accept-encoding", "br"), ("range", "bytes=0-5")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{mode}");
        assert_eq!(reply.body, "BROTLI", "{mode}");
        assert_eq!(
            reply.header("content-range"),
            Some("bytes 0-5/14"),
            "{mode}"
        );
        // HEAD announces the coded length.
        let head = head_with(&app, "/static/app.js", &br).await;
        assert_eq!(head.header("content-length"), Some("14"), "{mode}");
        assert_eq!(head.header("content-encoding"), Some("br"), "{mode}");
    }
}

/// Production mode, no siblings: the file is compressed in memory the first time a coding is
/// asked for, and never again.
#[tokio::test]
async fn production_compresses_once_per_coding_and_the_bytes_decode_to_the_file() {
    let site = Site::new();
    site.write("app.js", script());
    let original = script().into_bytes();
    let layer = site.layer().prod(true);
    let stats = layer.stats();
    let app = app(layer);

    let first = get_with(&app, "/static/app.js", &[("accept-encoding", "br")]).await;
    assert_eq!(first.header("content-encoding"), Some("br"));
    assert_eq!(first.header("vary"), Some("accept-encoding"));
    first.assert_length_consistent();
    assert!(
        first.body.len() < original.len() / 4,
        "compressed: {} bytes",
        first.body.len()
    );
    assert_eq!(unbrotli(&first.body), original);
    assert_eq!(stats.snapshot().compressions, 1);

    let second = get_with(
        &app,
        "/static/app.js",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(second.header("content-encoding"), Some("br"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(
        stats.snapshot().compressions,
        1,
        "the second br request reuses the first result"
    );

    let gzip = get_with(&app, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&gzip.body), original);
    assert_ne!(gzip.header("etag"), first.header("etag"));
    assert_eq!(stats.snapshot().compressions, 2);
    let gzip_again = get_with(&app, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip_again.body, gzip.body);
    assert_eq!(stats.snapshot().compressions, 2);

    let identity = get(&app, "/static/app.js").await;
    assert!(identity.header("content-encoding").is_none());
    assert_eq!(identity.body, original);
    assert_eq!(identity.header("vary"), Some("accept-encoding"));
    assert_ne!(identity.header("etag"), first.header("etag"));

    let head = head_with(&app, "/static/app.js", &[("accept-encoding", "br")]).await;
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert_eq!(stats.snapshot().compressions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_compress_once() {
    let site = Site::new();
    site.write("app.js", script());
    let layer = site.layer().prod(true);
    let stats = layer.stats();
    let app: Router = app(layer);
    let requests = (0..16).map(|_| {
        let app = app.clone();
        tokio::spawn(
            async move { get_with(&app, "/static/app.js", &[("accept-encoding", "br")]).await },
        )
    });
    let mut bodies = Vec::new();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.header("content-encoding"), Some("br"));
        bodies.push(reply.body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(unbrotli(&bodies[0]), script().into_bytes());
    assert_eq!(stats.snapshot().compressions, 1);
}

#[tokio::test]
async fn compression_is_skipped_where_it_does_not_pay() {
    let site = Site::new();
    site.write("tiny.js", "let a = 1;\n");
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    site.write("photo.png", &noise);
    site.write("app.js", script());
    let layer = site.layer().prod(true);
    let stats = layer.stats();
    let router = app(layer);
    let accept = [("accept-encoding", "br, gzip, zstd")];

    let tiny = get_with(&router, "/static/tiny.js", &accept).await;
    assert!(tiny.header("content-encoding").is_none(), "under 256 bytes");
    assert_eq!(tiny.body, "let a = 1;\n");
    let photo = get_with(&router, "/static/photo.png", &accept).await;
    assert!(
        photo.header("content-encoding").is_none(),
        "images are not compressible"
    );
    assert_eq!(photo.body, noise);
    assert!(photo.header("vary").is_none());
    assert_eq!(stats.snapshot().compressions, 0);

    // Development mode and `.compress(false)` never compress.
    for layer in [site.layer(), site.layer().prod(true).compress(false)] {
        let stats = layer.stats();
        let app = app(layer);
        let reply = get_with(&app, "/static/app.js", &accept).await;
        assert!(reply.header("content-encoding").is_none());
        assert_eq!(reply.text(), script());
        assert_eq!(stats.snapshot().compressions, 0);
    }
}

#[tokio::test]
async fn ranges_of_a_compressed_representation_are_slices_of_it() {
    let site = Site::new();
    site.write("app.js", script());
    let app = app(site.layer().prod(true));
    let whole = get_with(&app, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    let len = whole.body.len();
    let reply = get_with(
        &app,
        "/static/app.js",
        &[("accept-encoding", "gzip"), ("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.body, whole.body.slice(0..10));
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes 0-9/{len}").as_str())
    );
}

/// Development mode with `compress_in_development`: each coding is a representation of its
/// own, so validators, ranges and HEAD all answer for the coding the 200 would send.
#[tokio::test]
async fn development_compression_gives_each_coding_its_own_tag_and_answers() {
    let site = Site::new();
    site.write("app.js", script());
    site.write("logo.png", vec![0u8; 4096]);
    let app = app(site.layer().compress_in_development(true));
    let original = script();

    let gzip = get_with(&app, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.status, StatusCode::OK);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(gzip.header("vary"), Some("accept-encoding"));
    assert_eq!(gzip.header("cache-control"), Some("no-cache"));
    assert_eq!(gunzip(&gzip.body), original.as_bytes());
    gzip.assert_length_consistent();
    let br = get_with(&app, "/static/app.js", &[("accept-encoding", "br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&br.body), original.as_bytes());
    let identity = get(&app, "/static/app.js").await;
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.header("vary"), Some("accept-encoding"));
    let gzip_tag = gzip.header("etag").unwrap();
    let br_tag = br.header("etag").unwrap();
    let identity_tag = identity.header("etag").unwrap();
    assert_ne!(gzip_tag, br_tag);
    assert_ne!(gzip_tag, identity_tag);
    assert_ne!(br_tag, identity_tag);

    // A 304 for the gzip representation: its tag, Vary, no Content-Encoding, no body.
    let headers = [("accept-encoding", "gzip"), ("if-none-match", gzip_tag)];
    let not_modified = get_with(&app, "/static/app.js", &headers).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.header("etag"), Some(gzip_tag));
    assert_eq!(not_modified.header("vary"), Some("accept-encoding"));
    assert_eq!(not_modified.header("content-encoding"), None);
    assert!(not_modified.body.is_empty());
    // The gzip tag does not match the brotli representation.
    let headers = [("accept-encoding", "br"), ("if-none-match", gzip_tag)];
    let other = get_with(&app, "/static/app.js", &headers).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("content-encoding"), Some("br"));

    // HEAD carries what the GET carries.
    let head = head_with(&app, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    for name in ["content-encoding", "vary", "etag", "content-type"] {
        assert_eq!(head.header(name), gzip.header(name), "{name}");
    }
    let length = gzip.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()));

    // A range is a range of the chosen representation.
    let headers = [("accept-encoding", "gzip"), ("range", "bytes=0-9")];
    let partial = get_with(&app, "/static/app.js", &headers).await;
    assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.header("content-encoding"), Some("gzip"));
    assert_eq!(partial.header("vary"), Some("accept-encoding"));
    assert_eq!(partial.header("etag"), Some(gzip_tag));
    let total = gzip.body.len();
    assert_eq!(
        partial.header("content-range"),
        Some(format!("bytes 0-9/{total}").as_str())
    );
    assert_eq!(&partial.body[..], &gzip.body[..10]);

    // Several ranges come from the identity representation: a multipart body with a
    // `Content-Encoding` would have to be decoded as a whole, and is never compressed.
    let headers = [("accept-encoding", "gzip"), ("range", "bytes=20-29,0-9")];
    let multi = get_with(&app, "/static/app.js", &headers).await;
    assert_eq!(multi.status, StatusCode::PARTIAL_CONTENT);
    assert!(multi
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    assert_eq!(multi.header("content-encoding"), None);
    assert_eq!(multi.header("vary"), Some("accept-encoding"));
    assert_eq!(multi.header("etag"), Some(identity_tag));
    let text = multi.text();
    let len = original.len();
    let first = text
        .find(&format!("bytes 20-29/{len}"))
        .expect("first part");
    let second = text.find(&format!("bytes 0-9/{len}")).expect("second part");
    assert!(first < second, "parts in the order asked: {text}");
    assert!(text.contains(&original[20..30]));
    assert!(text.contains(&original[..10]));

    // Files that do not compress are sent as they are, without Vary.
    let png = get_with(&app, "/static/logo.png", &[("accept-encoding", "gzip")]).await;
    assert_eq!(png.header("content-encoding"), None);
    assert_eq!(png.header("vary"), None);
}

/// Development mode compresses only when asked: files are sent as they are on disk.
#[tokio::test]
async fn development_does_not_compress_by_default() {
    let site = Site::new();
    site.write("app.js", script());
    let app = app(site.layer());
    let reply = get_with(&app, "/static/app.js", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.header("vary"), None);
    assert_eq!(reply.body, script());
}

/// Several ranges of a file with siblings, in either mode, come from the identity file.
#[tokio::test]
async fn several_ranges_are_never_sent_with_a_content_encoding() {
    let site = site_with_siblings();
    let original = script();
    for (mode, app) in [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true))),
    ] {
        let headers = [
            ("accept-encoding", "gzip, br"),
            ("range", "bytes=0-4,10-14"),
        ];
        let reply = get_with(&app, "/static/app.js", &headers).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{mode}");
        assert_eq!(reply.header("content-encoding"), None, "{mode}");
        assert_eq!(reply.header("vary"), Some("accept-encoding"), "{mode}");
        let text = reply.text();
        assert!(text.contains(&original[0..5]), "{mode}: {text}");
        assert!(text.contains(&original[10..15]), "{mode}: {text}");
    }
}
