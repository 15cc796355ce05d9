//! HTTP semantics through a real axum `Router`: methods, validators, the RFC 9110
//! precondition order, ranges, content types, and what reaches the inner router. The last
//! tests check the bytes a real hyper server puts on the wire.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::{self, post};
use axum::Router;
use common::*;
use http::{Method, StatusCode};
use proxflow_static::{ServeStatic, StaticLayer};

const ALPHA: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

fn site() -> Site {
    let site = Site::new();
    site.write("alpha.txt", ALPHA);
    site.write("app.js", "console.log('hello');\n");
    site.write("app.js.br", "pretend brotli");
    site.write("style.css", "body { color: red }\n");
    site.write("data.json", "{\"a\":1}");
    site.write("logo.png", [0x89, b'P', b'N', b'G', 0, 1, 2, 3]);
    site.write("blob.bin", [0u8, 1, 2, 3, 255]);
    site.write("empty.txt", "");
    site
}

/// Development mode and production mode: every HTTP rule must hold in both (files are
/// streamed from disk in the first, answered from memory in the second).
fn both_modes(site: &Site) -> [(&'static str, Router); 2] {
    [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true))),
    ]
}

#[tokio::test]
async fn get_serves_the_file_with_validators_and_safe_headers() {
    let site = site();
    let path = site.root().join("alpha.txt");
    for (mode, app) in both_modes(&site) {
        let reply = get(&app, "/static/alpha.txt").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, ALPHA, "{mode}");
        reply.assert_length_consistent();
        let etag = reply.header("etag").expect("ETag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "strong ETag, {mode}: {etag}"
        );
        let last_modified = reply.header("last-modified").expect("Last-Modified");
        assert_eq!(parse_http_date(last_modified), mtime_secs(&path), "{mode}");
        assert_eq!(reply.header("accept-ranges"), Some("bytes"), "{mode}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{mode}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{mode}"
        );
        assert!(reply.header("content-encoding").is_none(), "{mode}");
        // The same request again gets the same validator.
        let again = get(&app, "/static/alpha.txt").await;
        assert_eq!(again.header("etag"), Some(etag), "{mode}");
    }
}

#[tokio::test]
async fn content_type_follows_the_extension_with_charset_only_on_text() {
    let site = site();
    let app = app(site.layer());
    let cases = [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/data.json", "application/json; charset=utf-8"),
        ("/static/logo.png", "image/png"),
        ("/static/blob.bin", "application/octet-stream"),
    ];
    for (uri, expected) in cases {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert_eq!(reply.header("content-type"), Some(expected), "{uri}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn head_has_the_get_headers_and_length_but_no_body() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let full = get(&app, "/static/alpha.txt").await;
        let head = head_with(&app, "/static/alpha.txt", &[]).await;
        assert_eq!(head.status, StatusCode::OK, "{mode}");
        assert!(head.body.is_empty(), "{mode}");
        assert_eq!(head.header("content-length"), Some("36"), "{mode}");
        for name in [
            "etag",
            "last-modified",
            "content-type",
            "cache-control",
            "accept-ranges",
        ] {
            assert_eq!(head.header(name), full.header(name), "{name}, {mode}");
        }
    }
}

#[tokio::test]
async fn empty_files_are_served() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let reply = get(&app, "/static/empty.txt").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert!(reply.body.is_empty());
        reply.assert_length_consistent();
    }
}

#[tokio::test]
async fn the_etag_changes_with_the_file() {
    let site = site();
    let app = app(site.layer());
    let before = get(&app, "/static/alpha.txt").await;
    site.write("alpha.txt", "a different and longer content");
    let after = get(&app, "/static/alpha.txt").await;
    assert_eq!(after.body, "a different and longer content");
    assert_ne!(before.header("etag"), after.header("etag"));
    // The old validator no longer gives a 304.
    let old = before.header("etag").unwrap();
    let reply = get_with(&app, "/static/alpha.txt", &[("if-none-match", old)]).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn percent_encoded_names_are_served() {
    let site = site();
    site.write("with space.txt", "space");
    site.write("caf\u{e9}/men\u{fc}.txt", "unicode");
    site.write("a+b=c&d.txt", "reserved");
    for (mode, app) in both_modes(&site) {
        for (uri, body) in [
            ("/static/with%20space.txt", "space"),
            ("/static/caf%C3%A9/men%C3%BC.txt", "unicode"),
            ("/static/caf%c3%a9/men%c3%bc.txt", "unicode"),
            ("/static/a+b=c&d.txt", "reserved"),
            ("/static/a%2Bb%3Dc%26d.txt", "reserved"),
            ("/static/%61lpha.txt", ALPHA),
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}, {mode}");
            assert_eq!(reply.body, body, "{uri}, {mode}");
        }
    }
}

#[tokio::test]
async fn a_malformed_percent_escape_is_a_bad_request() {
    let site = site();
    site.write("100%.txt", "percent");
    for (mode, app) in both_modes(&site) {
        for uri in [
            "/static/100%.txt",
            "/static/%zz",
            "/static/alpha.txt%",
            "/static/a%2",
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}, {mode}");
        }
        // The name itself is reachable with its `%` escaped.
        let reply = get(&app, "/static/100%25.txt").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, "percent", "{mode}");
    }
}

#[tokio::test]
async fn malformed_header_values_are_ignored_or_fail_safely() {
    let site = site();
    let garbage = http::HeaderValue::from_bytes(b"\xff\xfe\"bad\"").unwrap();
    for (mode, app) in both_modes(&site) {
        let with = |name: &'static str| {
            let mut request = request(Method::GET, "/static/alpha.txt", &[]);
            request.headers_mut().insert(name, garbage.clone());
            request
        };
        // Not understood: the request is answered as if the header were absent...
        for name in [
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "range",
            "accept-encoding",
        ] {
            let reply = send(&app, with(name)).await;
            assert_eq!(reply.status, StatusCode::OK, "{name}, {mode}");
            assert_eq!(reply.body, ALPHA, "{name}, {mode}");
        }
        // ...except that a condition that cannot be shown to hold does not hold.
        assert_eq!(
            send(&app, with("if-match")).await.status,
            StatusCode::PRECONDITION_FAILED,
            "{mode}"
        );
        let mut ranged = with("if-range");
        ranged
            .headers_mut()
            .insert("range", http::HeaderValue::from_static("bytes=0-1"));
        let reply = send(&app, ranged).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, ALPHA, "{mode}");
    }
}

#[tokio::test]
async fn a_huge_range_header_is_not_amplified() {
    let site = site();
    let app = app(site.layer().prod(true));
    // Ten thousand one-byte ranges: more than `max_ranges`, so the whole file, once.
    let many = format!("bytes={}", vec!["0-0"; 10_000].join(","));
    let reply = get_with(&app, "/static/alpha.txt", &[("range", &many)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, ALPHA);
    // Sixteen disjoint ranges are still allowed by default; seventeen are not.
    let ranges = |n: usize| {
        format!(
            "bytes={}",
            (0..n)
                .map(|i| format!("{0}-{0}", i * 2))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let sixteen = get_with(&app, "/static/alpha.txt", &[("range", &ranges(16))]).await;
    assert_eq!(sixteen.status, StatusCode::PARTIAL_CONTENT);
    let boundary = boundary_of(sixteen.header("content-type").unwrap());
    assert_eq!(parse_multipart(&sixteen.body, &boundary).len(), 16);
    let seventeen = get_with(&app, "/static/alpha.txt", &[("range", &ranges(17))]).await;
    assert_eq!(seventeen.status, StatusCode::OK);
    assert_eq!(seventeen.body, ALPHA);
}

async fn etag_of(app: &Router, uri: &str) -> String {
    get(app, uri)
        .await
        .header("etag")
        .expect("ETag")
        .to_string()
}

#[tokio::test]
async fn if_match_needs_a_strong_match_or_answers_412() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let etag = etag_of(&app, "/static/alpha.txt").await;
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", {etag}");
        for (value, status) in [
            (etag.as_str(), StatusCode::OK),
            (listed.as_str(), StatusCode::OK),
            ("*", StatusCode::OK),
            ("\"nope\"", StatusCode::PRECONDITION_FAILED),
            (weak.as_str(), StatusCode::PRECONDITION_FAILED),
        ] {
            let reply = get_with(&app, "/static/alpha.txt", &[("if-match", value)]).await;
            assert_eq!(reply.status, status, "If-Match {value}, {mode}");
            if status == StatusCode::PRECONDITION_FAILED {
                assert!(reply.body.is_empty(), "a 412 carries no file");
            }
        }
    }
}

#[tokio::test]
async fn list_preconditions_sent_on_several_lines_are_one_list() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let etag = etag_of(&app, "/static/alpha.txt").await;
        let weak = format!("W/{etag}");
        let lines = [("if-match", "\"zzz\""), ("if-match", etag.as_str())];
        let reply = get_with(&app, "/static/alpha.txt", &lines).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "If-Match on two lines, {mode}"
        );
        assert_eq!(reply.body, ALPHA, "{mode}");
        let lines = [("if-match", "\"zzz\""), ("if-match", "\"yyy\"")];
        let reply = get_with(&app, "/static/alpha.txt", &lines).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{mode}");
        let lines = [
            ("if-none-match", "\"zzz\""),
            ("if-none-match", weak.as_str()),
        ];
        let reply = get_with(&app, "/static/alpha.txt", &lines).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match on two lines, {mode}"
        );
    }
}

#[tokio::test]
async fn if_unmodified_since_earlier_than_the_file_answers_412() {
    let site = site();
    let modified = mtime_secs(&site.root().join("alpha.txt"));
    for (mode, app) in both_modes(&site) {
        let earlier = http_date(modified - 60);
        let reply = get_with(
            &app,
            "/static/alpha.txt",
            &[("if-unmodified-since", &earlier)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{mode}");
        let same = http_date(modified);
        let reply = get_with(&app, "/static/alpha.txt", &[("if-unmodified-since", &same)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        // Step 2 only runs without If-Match (RFC 9110 §13.2.2).
        let etag = etag_of(&app, "/static/alpha.txt").await;
        let both = [
            ("if-match", etag.as_str()),
            ("if-unmodified-since", earlier.as_str()),
        ];
        assert_eq!(
            get_with(&app, "/static/alpha.txt", &both).await.status,
            StatusCode::OK,
            "{mode}"
        );
        // A malformed date is ignored.
        let garbage = [("if-unmodified-since", "yesterday")];
        assert_eq!(
            get_with(&app, "/static/alpha.txt", &garbage).await.status,
            StatusCode::OK,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn if_none_match_answers_304_with_the_headers_of_the_200() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let full = get(&app, "/static/app.js").await;
        let etag = full.header("etag").unwrap().to_string();
        let weak = format!("W/{etag}");
        for value in [etag.as_str(), weak.as_str(), "\"x\", \"y\", ", "*"] {
            let value = if value.ends_with(", ") {
                format!("{value}{etag}")
            } else {
                value.to_string()
            };
            for method in [Method::GET, Method::HEAD] {
                let reply = send(
                    &app,
                    request(
                        method.clone(),
                        "/static/app.js",
                        &[("if-none-match", &value)],
                    ),
                )
                .await;
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_MODIFIED,
                    "{method} If-None-Match {value}, {mode}"
                );
                assert!(reply.body.is_empty());
                assert_eq!(reply.header("etag"), Some(etag.as_str()), "{mode}");
                assert_eq!(reply.header("cache-control"), Some("no-cache"), "{mode}");
                assert_eq!(
                    reply.header("vary"),
                    Some("accept-encoding"),
                    "app.js has a .br sibling, {mode}"
                );
                assert_eq!(
                    reply.header("last-modified"),
                    full.header("last-modified"),
                    "{mode}"
                );
            }
        }
        let reply = get_with(&app, "/static/app.js", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, full.body);
    }
}

#[tokio::test]
async fn if_match_failure_wins_over_a_matching_if_none_match() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let etag = etag_of(&app, "/static/alpha.txt").await;
        let headers = [("if-match", "\"nope\""), ("if-none-match", etag.as_str())];
        let reply = get_with(&app, "/static/alpha.txt", &headers).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{mode}");
        // And If-Unmodified-Since failing wins over If-Modified-Since.
        let modified = mtime_secs(&site.root().join("alpha.txt"));
        let headers = [
            ("if-unmodified-since", http_date(modified - 60)),
            ("if-modified-since", http_date(modified)),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = get_with(&app, "/static/alpha.txt", &headers).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{mode}");
    }
}

#[tokio::test]
async fn if_modified_since_answers_304_unless_the_file_is_newer() {
    let site = site();
    let modified = mtime_secs(&site.root().join("alpha.txt"));
    for (mode, app) in both_modes(&site) {
        let same = http_date(modified);
        let reply = get_with(&app, "/static/alpha.txt", &[("if-modified-since", &same)]).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{mode}");
        assert!(reply.body.is_empty());
        assert!(reply.header("etag").is_some(), "{mode}");
        let earlier = http_date(modified - 60);
        let reply = get_with(
            &app,
            "/static/alpha.txt",
            &[("if-modified-since", &earlier)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, ALPHA);
        // If-None-Match present: If-Modified-Since is ignored (RFC 9110 §13.1.3).
        let headers = [
            ("if-none-match", "\"other\""),
            ("if-modified-since", same.as_str()),
        ];
        assert_eq!(
            get_with(&app, "/static/alpha.txt", &headers).await.status,
            StatusCode::OK,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn if_range_honours_the_range_only_for_the_current_validator() {
    let site = site();
    let modified = mtime_secs(&site.root().join("alpha.txt"));
    for (mode, app) in both_modes(&site) {
        let etag = etag_of(&app, "/static/alpha.txt").await;
        let weak = format!("W/{etag}");
        let same_date = http_date(modified);
        let other_date = http_date(modified - 60);
        for (if_range, partial) in [
            (etag.as_str(), true),
            (same_date.as_str(), true),
            ("\"old\"", false),
            (weak.as_str(), false),
            (other_date.as_str(), false),
        ] {
            let headers = [("range", "bytes=0-4"), ("if-range", if_range)];
            let reply = get_with(&app, "/static/alpha.txt", &headers).await;
            reply.assert_length_consistent();
            if partial {
                assert_eq!(
                    reply.status,
                    StatusCode::PARTIAL_CONTENT,
                    "If-Range {if_range}, {mode}"
                );
                assert_eq!(reply.body, "01234");
            } else {
                assert_eq!(reply.status, StatusCode::OK, "If-Range {if_range}, {mode}");
                assert_eq!(reply.body, ALPHA);
                assert!(reply.header("content-range").is_none());
            }
        }
    }
}

#[tokio::test]
async fn a_single_range_gets_206_with_content_range() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        for (range, body, content_range) in [
            ("bytes=0-4", "01234", "bytes 0-4/36"),
            ("bytes=10-12", "abc", "bytes 10-12/36"),
            ("bytes=33-", "xyz", "bytes 33-35/36"),
            ("bytes=-2", "yz", "bytes 34-35/36"),
            ("bytes=30-1000", "uvwxyz", "bytes 30-35/36"),
            ("bytes=-1000", ALPHA, "bytes 0-35/36"),
        ] {
            let reply = get_with(&app, "/static/alpha.txt", &[("range", range)]).await;
            assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}, {mode}");
            assert_eq!(reply.body, body, "{range}, {mode}");
            assert_eq!(
                reply.header("content-range"),
                Some(content_range),
                "{range}, {mode}"
            );
            assert_eq!(
                reply.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{mode}"
            );
            assert!(reply.header("etag").is_some());
            reply.assert_length_consistent();
        }
    }
}

#[tokio::test]
async fn several_ranges_get_a_multipart_byteranges_body() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        // Out of order on purpose: parts come back in the order asked (RFC 9110 §14.2).
        let reply = get_with(
            &app,
            "/static/alpha.txt",
            &[("range", "bytes=20-22, 0-2,-3")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{mode}");
        reply.assert_length_consistent();
        assert!(
            reply.header("content-range").is_none(),
            "multipart has Content-Range per part, {mode}"
        );
        let boundary = boundary_of(reply.header("content-type").unwrap());
        let parts = parse_multipart(&reply.body, &boundary);
        let expected = [
            ("bytes 20-22/36", "klm"),
            ("bytes 0-2/36", "012"),
            ("bytes 33-35/36", "xyz"),
        ];
        assert_eq!(parts.len(), expected.len(), "{mode}: {parts:?}");
        for (part, (content_range, data)) in parts.iter().zip(expected) {
            assert_eq!(part.header("content-range"), Some(content_range), "{mode}");
            assert_eq!(
                part.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{mode}"
            );
            assert_eq!(part.data, data.as_bytes(), "{mode}");
        }
        // The boundary differs per response, so that file bytes cannot forge it.
        let again = get_with(&app, "/static/alpha.txt", &[("range", "bytes=0-0,2-2")]).await;
        assert_ne!(boundary_of(again.header("content-type").unwrap()), boundary);
    }
}

#[tokio::test]
async fn an_unsatisfiable_range_gets_416_with_the_length() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        for range in ["bytes=36-", "bytes=100-200", "bytes=-0", "bytes=50-60,70-"] {
            let reply = get_with(&app, "/static/alpha.txt", &[("range", range)]).await;
            assert_eq!(
                reply.status,
                StatusCode::RANGE_NOT_SATISFIABLE,
                "{range}, {mode}"
            );
            assert_eq!(
                reply.header("content-range"),
                Some("bytes */36"),
                "{range}, {mode}"
            );
            assert!(reply.body.is_empty());
        }
        let reply = get_with(&app, "/static/empty.txt", &[("range", "bytes=0-")]).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{mode}");
        assert_eq!(reply.header("content-range"), Some("bytes */0"), "{mode}");
    }
}

#[tokio::test]
async fn malformed_overlapping_or_too_many_ranges_send_the_whole_file() {
    let site = site();
    let app = app(site.layer().max_ranges(2));
    for range in [
        "bytes=a-b",
        "items=0-1",
        "bytes=5-1",
        "bytes=0-10,5-20",
        "bytes=5-20,0-10",
        "bytes=0-0,2-2,4-4",
    ] {
        let reply = get_with(&app, "/static/alpha.txt", &[("range", range)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{range}");
        assert_eq!(reply.body, ALPHA, "{range}");
    }
    // A Range on HEAD is ignored (range handling is defined for GET only).
    let reply = head_with(&app, "/static/alpha.txt", &[("range", "bytes=0-4")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), Some("36"));
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            let reply = send(&app, request(method.clone(), "/static/alpha.txt", &[])).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}, {mode}"
            );
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}, {mode}");
            assert_ne!(reply.body, ALPHA);
        }
    }
}

/// An inner router with handlers under the mount prefix that count their calls.
fn counting_router(calls: Arc<AtomicUsize>) -> Router {
    let on_post = Arc::clone(&calls);
    let on_get = Arc::clone(&calls);
    let on_dynamic = calls;
    inner_router()
        .route(
            "/static/alpha.txt",
            post(move || async move {
                on_post.fetch_add(1, Ordering::SeqCst);
                "posted to the inner router"
            })
            .get(move || async move {
                on_get.fetch_add(1, Ordering::SeqCst);
                "the inner router's GET"
            }),
        )
        .route(
            "/static/dynamic",
            routing::get(move || async move {
                on_dynamic.fetch_add(1, Ordering::SeqCst);
                "generated by the inner router"
            }),
        )
}

#[tokio::test]
async fn pass_other_methods_sends_them_to_the_inner_router() {
    let site = site();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = counting_router(Arc::clone(&calls)).layer(site.layer().pass_other_methods(true));
    let reply = send(&app, request(Method::POST, "/static/alpha.txt", &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "posted to the inner router");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // GET is still answered by the layer, from the file.
    let reply = get(&app, "/static/alpha.txt").await;
    assert_eq!(reply.body, ALPHA);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_pass_other_methods_the_inner_router_never_sees_the_mount() {
    let site = site();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = counting_router(Arc::clone(&calls)).layer(site.layer());
    assert_eq!(
        send(&app, request(Method::POST, "/static/alpha.txt", &[]))
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(get(&app, "/static/alpha.txt").await.body, ALPHA);
    let missing = get(&app, "/static/dynamic").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no request under the mount reached the inner router"
    );
}

#[tokio::test]
async fn fallthrough_sends_missing_files_to_the_inner_router() {
    let site = site();
    let calls = Arc::new(AtomicUsize::new(0));
    for (mode, layer) in [("dev", site.layer()), ("prod", site.layer().prod(true))] {
        let app = counting_router(Arc::clone(&calls)).layer(layer.fallthrough(true));
        let reply = get(&app, "/static/dynamic").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, "generated by the inner router", "{mode}");
        // Existing files are still the layer's.
        assert_eq!(get(&app, "/static/alpha.txt").await.body, ALPHA, "{mode}");
        // A refused path is not "missing": it does not fall through.
        assert_eq!(
            get(&app, "/static/../dynamic").await.status,
            StatusCode::BAD_REQUEST,
            "{mode}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn requests_outside_the_mount_reach_the_inner_router_without_touching_the_disk() {
    let site = site();
    // Files whose names collide with the inner router's paths.
    site.write("api/users", "a file, not the router");
    site.write("index.html", "<p>static index</p>");
    let layer = site.layer().prod(true);
    let stats = layer.stats();
    let app = app(layer);
    assert_eq!(get(&app, "/").await.body, HOME);
    assert_eq!(get(&app, "/api/users").await.body, USERS);
    for uri in [
        "/alpha.txt",
        "/staticx/alpha.txt",
        "/static-alpha.txt",
        "/Static/alpha.txt",
        "/other/../static/x",
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{uri}: the inner router's 404"
        );
        assert!(
            reply.body.is_empty(),
            "{uri}: axum's own 404 has no body, the layer's has text"
        );
    }
    let post = send(&app, request(Method::POST, "/api/users", &[])).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_ne!(
        post.header("allow"),
        Some("GET, HEAD"),
        "axum's 405 for its own route, not the layer's"
    );
    assert_eq!(
        stats.snapshot(),
        Default::default(),
        "the layer did no work for these requests"
    );
}

#[tokio::test]
async fn into_service_works_as_an_axum_fallback_service() {
    let site = site();
    let app = Router::new()
        .route("/", routing::get(|| async { HOME }))
        .fallback_service(StaticLayer::new("/", site.root()).into_service());
    assert_eq!(get(&app, "/").await.body, HOME);
    let reply = get(&app, "/alpha.txt").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, ALPHA);
    assert_eq!(
        get(&app, "/missing.txt").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/%2e%2e/secret.txt").await.status,
        StatusCode::BAD_REQUEST
    );

    let app = Router::new().fallback_service(ServeStatic::new(site.root()));
    assert_eq!(
        get_with(&app, "/alpha.txt", &[("range", "bytes=1-2")])
            .await
            .body,
        "12"
    );

    // Mounted under a prefix, it answers 404 elsewhere.
    let app = Router::new().fallback_service(site.layer().into_service());
    assert_eq!(get(&app, "/static/alpha.txt").await.body, ALPHA);
    let outside = get(&app, "/alpha.txt").await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
}

// ---- On the wire, through a real hyper server ----

#[tokio::test]
async fn wire_head_sends_the_content_length_of_get_and_no_body() {
    let site = site();
    for (mode, app) in both_modes(&site) {
        let addr = serve(app).await;
        let head = raw(addr, "HEAD /static/alpha.txt HTTP/1.1").await;
        assert_eq!(head.status, 200, "{mode}");
        assert_eq!(head.header("content-length"), Some("36"), "{mode}");
        assert_eq!(head.header_count("content-length"), 1, "{mode}");
        assert!(head.header("transfer-encoding").is_none(), "{mode}");
        assert!(head.body.is_empty(), "{mode}: {:?}", head.body);

        let full = raw(addr, "GET /static/alpha.txt HTTP/1.1").await;
        assert_eq!(full.status, 200, "{mode}");
        assert_eq!(full.header("content-length"), Some("36"), "{mode}");
        assert!(
            full.header("transfer-encoding").is_none(),
            "{mode}: files are never chunked"
        );
        assert_eq!(full.body, ALPHA.as_bytes(), "{mode}");
        assert_eq!(full.header("etag"), head.header("etag"), "{mode}");
    }
}

#[tokio::test]
async fn wire_multipart_ranges_have_an_exact_length_and_well_formed_parts() {
    let site = site();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    site.write("big.bin", &big);
    for (mode, app) in both_modes(&site) {
        let addr = serve(app).await;
        let reply = raw(
            addr,
            "GET /static/big.bin HTTP/1.1\r\nRange: bytes=99990-, 0-9, 50000-50099",
        )
        .await;
        assert_eq!(reply.status, 206, "{mode}");
        assert!(reply.header("transfer-encoding").is_none(), "{mode}");
        let length: usize = reply
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(length, reply.body.len(), "{mode}");
        let boundary = boundary_of(reply.header("content-type").unwrap());
        let parts = parse_multipart(&reply.body, &boundary);
        let expected = [(99_990usize, 99_999usize), (0, 9), (50_000, 50_099)];
        assert_eq!(parts.len(), 3, "{mode}");
        for (part, (first, last)) in parts.iter().zip(expected) {
            let content_range = format!("bytes {first}-{last}/100000");
            assert_eq!(
                part.header("content-range"),
                Some(content_range.as_str()),
                "{mode}"
            );
            assert_eq!(
                part.header("content-type"),
                Some("application/octet-stream"),
                "{mode}"
            );
            assert_eq!(part.data, &big[first..=last], "{mode}");
        }

        let single = raw(
            addr,
            "GET /static/big.bin HTTP/1.1\r\nRange: bytes=12345-12349",
        )
        .await;
        assert_eq!(single.status, 206);
        assert_eq!(
            single.header("content-range"),
            Some("bytes 12345-12349/100000")
        );
        assert_eq!(single.header("content-length"), Some("5"));
        assert_eq!(single.body, &big[12345..12350]);

        let unsatisfiable = raw(addr, "GET /static/big.bin HTTP/1.1\r\nRange: bytes=100000-").await;
        assert_eq!(unsatisfiable.status, 416);
        assert_eq!(
            unsatisfiable.header("content-range"),
            Some("bytes */100000")
        );
        assert!(unsatisfiable.body.is_empty());
    }
}

#[tokio::test]
async fn wire_304_and_405_are_well_formed() {
    let site = site();
    let addr = serve(app(site.layer())).await;
    let full = raw(addr, "GET /static/app.js HTTP/1.1").await;
    let etag = full.header("etag").unwrap().to_string();
    let not_modified = raw(
        addr,
        &format!("GET /static/app.js HTTP/1.1\r\nIf-None-Match: {etag}"),
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("vary"), Some("accept-encoding"));
    let post = raw(addr, "POST /static/app.js HTTP/1.1\r\nContent-Length: 0").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
