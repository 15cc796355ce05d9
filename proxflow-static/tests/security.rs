//! Hostile paths: traversal in every spelling, symlinks leaving the root, dotfiles, and a
//! property test over random paths. The file to protect, `secret.txt`, sits next to the root.

mod common;

use axum::body::Body;
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn site() -> Site {
    let site = Site::new();
    site.write("ok.txt", "ok");
    site.write("sub/file.txt", "nested");
    site.write(".env", "DATABASE_PASSWORD=hunter2");
    site.write("sub/.git/config", "[core]");
    site.write(
        ".well-known/security.txt",
        "Contact: mailto:security@example.com",
    );
    site.write("index.html", "<p>index</p>");
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let outside = site.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret2.txt"), SECRET).unwrap();
        symlink(site.secret_path(), site.root().join("link.txt")).unwrap();
        symlink(&outside, site.root().join("linkdir")).unwrap();
        symlink(
            site.root().join("ok.txt"),
            site.root().join("inside-link.txt"),
        )
        .unwrap();
        symlink("sub", site.root().join("sublink")).unwrap();
    }
    site
}

fn modes(site: &Site) -> [(&'static str, Router); 2] {
    [
        ("dev", app(site.layer())),
        ("prod", app(site.layer().prod(true).listing(true))),
    ]
}

fn assert_no_leak(what: &str, status: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains("TOP-SECRET"),
        "{what} leaked the secret: {status} {text}"
    );
    assert!(
        !text.contains("hunter2"),
        "{what} leaked a dotfile: {status} {text}"
    );
}

/// Paths the layer must refuse with `400 invalid path`.
const REFUSED: &[&str] = &[
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/../ok.txt",
    "/static/..",
    "/static/sub/..",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e./secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/%2fetc%2fpasswd",
    "/static/%2Fetc/passwd",
    "/static/..%5csecret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/sub%5c..%5c..%5csecret.txt",
    "/static/ok.txt%00",
    "/static/ok.txt%00.png",
    "/static/%00/ok.txt",
    "/static/C:/secret.txt",
    "/static/c:%5cwindows%5cwin.ini",
    "/static/c%3a/secret.txt",
    "/static/C%3A%5Csecret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/%252e%252e%252fsecret.txt",
    "/static/%252fetc%252fpasswd",
    "/static/%25%32%65%25%32%65/secret.txt",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%ff/x",
    "/static/ok%0a.txt",
];

/// Paths that are harmless but name nothing (or something hidden): 404.
const MISSING: &[&str] = &[
    "/static//etc/passwd",
    "/static///secret.txt",
    "/static/secret.txt",
    "/static/...",
    "/static/..;/secret.txt",
    "/static/.../secret.txt",
    "/static/.env",
    "/static/%2eenv",
    "/static/sub/.git/config",
    "/static/sub/%2Egit/config",
    "/static/.well-known/../.env",
];

#[tokio::test]
async fn traversal_tricks_are_refused_with_400() {
    let site = site();
    for (mode, app) in modes(&site) {
        for uri in REFUSED {
            let request = Request::builder()
                .uri(*uri)
                .body(Body::empty())
                .expect("the http crate accepts it");
            let reply = send(&app, request).await;
            assert_no_leak(uri, reply.status.as_u16(), &reply.body);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}, {mode}");
            assert_eq!(reply.body, "invalid path\n", "{uri}, {mode}");
        }
    }
}

#[tokio::test]
async fn harmless_odd_paths_and_dotfiles_are_404() {
    let site = site();
    // The absolute path of the secret, appended to the mount.
    let absolute = format!("/static/{}", site.secret_path().display());
    let mut uris: Vec<&str> = MISSING.to_vec();
    uris.push(&absolute);
    for (mode, app) in modes(&site) {
        for uri in &uris {
            let reply = get(&app, uri).await;
            assert_no_leak(uri, reply.status.as_u16(), &reply.body);
            let expected = if uri.contains("/../") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(reply.status, expected, "{uri}, {mode}");
        }
    }
}

/// `..`, NUL or an encoded separator after a dotfile segment gets the documented
/// `400 invalid path`, not a 404 (nor, with `.spa(true)`, the index): every segment is checked
/// before a path counts as hidden.
#[tokio::test]
async fn traversal_after_a_dotfile_segment_is_still_400() {
    let site = site();
    let spa = app(site.layer().spa(true));
    for uri in [
        "/static/.git/../../secret.txt",
        "/static/.env/%00",
        "/static/.x/..%2f..%2fsecret",
        "/static/%2e/%2e%2e/x",
    ] {
        let reply = get(&spa, uri).await;
        assert_no_leak(uri, reply.status.as_u16(), &reply.body);
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {:?}",
            reply.text()
        );
    }
}

/// A segment longer than the file system allows (255 bytes) or a path longer than `PATH_MAX`
/// (`ENAMETOOLONG`) is a missing file, 404, not a server error: any client can send one.
#[tokio::test]
async fn overlong_names_are_404_not_500() {
    let site = site();
    let long_segment = format!("/static/{}", "a".repeat(300));
    let long_file = format!("/static/sub/{}.txt", "b".repeat(300));
    let long_path = format!("/static/{}/x", ["abcdefgh"; 600].join("/"));
    for (mode, app) in modes(&site) {
        for uri in [&long_segment, &long_file, &long_path] {
            let reply = get(&app, uri).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{mode}, {} bytes: {:?}",
                uri.len(),
                reply.text()
            );
        }
    }
}

/// A symlink loop inside the folder (`ELOOP`) answers 404 like any other link that leads
/// nowhere (with a warning for the operator), not 500.
#[cfg(unix)]
#[tokio::test]
async fn symlink_loops_are_404_not_500() {
    let site = site();
    std::os::unix::fs::symlink("loop-b", site.root().join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", site.root().join("loop-b")).unwrap();
    std::os::unix::fs::symlink("nowhere", site.root().join("dangling")).unwrap();
    for (mode, app) in modes(&site) {
        assert_eq!(
            get(&app, "/static/dangling").await.status,
            StatusCode::NOT_FOUND,
            "{mode}"
        );
        for uri in ["/static/loop-a", "/static/loop-a/x.txt"] {
            let reply = get(&app, uri).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{uri}, {mode}: {:?}",
                reply.text()
            );
        }
    }
}

#[tokio::test]
async fn refused_paths_are_counted() {
    let site = site();
    let layer = site.layer();
    let stats = layer.stats();
    let app = app(layer);
    for uri in REFUSED {
        get(&app, uri).await;
    }
    assert_eq!(stats.snapshot().refused_paths, REFUSED.len() as u64);
}

#[tokio::test]
async fn dotfiles_are_hidden_but_well_known_is_served() {
    let site = site();
    for (mode, app) in modes(&site) {
        let reply = get(&app, "/static/.well-known/security.txt").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(reply.body, "Contact: mailto:security@example.com", "{mode}");
        for uri in [
            "/static/.env",
            "/static/sub/.git/config",
            "/static/sub/.git/",
            "/static/%2eenv",
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}, {mode}");
            assert_no_leak(uri, 404, &reply.body);
        }
        // Hidden from HEAD and from conditional requests too.
        let head = head_with(&app, "/static/.env", &[]).await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{mode}");
        assert_ne!(head.header("content-length"), Some("25"), "{mode}");
        let reply = get_with(&app, "/static/.env", &[("if-none-match", "*")]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{mode}");
    }
    let app = app(site.layer().dotfiles(true));
    assert_eq!(
        get(&app, "/static/.env").await.body,
        "DATABASE_PASSWORD=hunter2"
    );
    assert_eq!(get(&app, "/static/sub/.git/config").await.body, "[core]");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_leaving_the_root_are_404_unless_allowed() {
    let site = site();
    for (mode, app) in modes(&site) {
        for uri in [
            "/static/link.txt",
            "/static/linkdir/secret2.txt",
            "/static/linkdir/",
            // No redirect that adds the slash: it would show that the directory exists.
            "/static/linkdir",
        ] {
            for attempt in 0..2 {
                let reply = get(&app, uri).await;
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_FOUND,
                    "{uri} #{attempt}, {mode}"
                );
                assert_no_leak(uri, 404, &reply.body);
            }
        }
        let head = head_with(&app, "/static/link.txt", &[]).await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{mode}");
        // Links that stay inside are fine.
        assert_eq!(
            get(&app, "/static/inside-link.txt").await.body,
            "ok",
            "{mode}"
        );
        assert_eq!(
            get(&app, "/static/sublink/file.txt").await.body,
            "nested",
            "{mode}"
        );
    }
    // The prod layer above lists directories: the listing of a directory behind an outside
    // link is refused as well (checked above with `/static/linkdir/`).
    for layer in [site.layer(), site.layer().prod(true)] {
        let app = app(layer.follow_symlinks_outside(true));
        let reply = get(&app, "/static/link.txt").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, SECRET);
        assert_eq!(get(&app, "/static/linkdir/secret2.txt").await.body, SECRET);
        assert_eq!(
            get(&app, "/static/linkdir").await.status,
            StatusCode::MOVED_PERMANENTLY
        );
    }
}

/// A link inside the root flipped between an inside file and the secret outside while requests
/// run: whatever instant the path is checked and the file opened, the secret never goes out,
/// neither from a fresh load, nor from the memory cache, nor from a file streamed from disk.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_during_requests_never_serves_the_outside_file() {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tower::ServiceExt;

    let site = Site::new();
    // As long as the secret, so that no length check tells them apart.
    let inside = format!("{}\n", "i".repeat(SECRET.len() - 1));
    site.write("inside.txt", &inside);
    let link = site.root().join("swap.txt");
    std::os::unix::fs::symlink(site.root().join("inside.txt"), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, link) = (Arc::clone(&stop), link.clone());
        let targets = [site.secret_path(), site.root().join("inside.txt")];
        let staging = site.root().join("swap.tmp");
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&staging);
                std::os::unix::fs::symlink(&targets[(swaps % 2) as usize], &staging).unwrap();
                std::fs::rename(&staging, &link).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let modes = [
        ("dev", site.layer()),
        (
            "prod",
            site.layer()
                .prod(true)
                .revalidate_interval(Duration::from_millis(1)),
        ),
        (
            "prod streamed",
            site.layer().prod(true).cache_max_file_size(8),
        ),
    ];
    for (mode, layer) in modes {
        let app = app(layer);
        let until = Instant::now() + Duration::from_millis(700);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    let (mut served, mut leaked) = (0u64, Vec::new());
                    while Instant::now() < until {
                        let request = Request::get("/static/swap.txt").body(Body::empty());
                        let response = app.clone().oneshot(request.unwrap()).await.unwrap();
                        let status = response.status();
                        // A streamed file swapped after its headers ends the body with an error.
                        let body = match response.into_body().collect().await {
                            Ok(body) => body.to_bytes(),
                            Err(_) => continue,
                        };
                        if body == SECRET || find(&body, b"TOP-SECRET").is_some() {
                            leaked.push(status);
                        } else if status == StatusCode::OK {
                            served += 1;
                        }
                    }
                    (served, leaked)
                })
            })
            .collect();
        let mut served = 0;
        for worker in workers {
            let (ok, leaked) = worker.await.unwrap();
            assert!(
                leaked.is_empty(),
                "{mode}: {} leaks: {leaked:?}",
                leaked.len()
            );
            served += ok;
        }
        assert!(served > 0, "{mode}: the inside file was never served");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 100, "the link was hardly swapped");
}

/// Raw request targets, some of which the `http` crate refuses to build, sent over TCP to a
/// real server. hyper may answer 400 itself; either way nothing leaks.
#[tokio::test]
async fn raw_request_targets_over_tcp_never_leak() {
    let site = site();
    for (mode, app) in modes(&site) {
        let addr = serve(app).await;
        let targets = [
            "/static/..\\secret.txt",
            "/static/sub\\..\\..\\secret.txt",
            "/static/..\\..\\secret.txt",
            "/static/../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/%2e%2e%5csecret.txt",
            "/static/ok.txt%00",
            "/static/C:\\secret.txt",
            "//static/../secret.txt",
            "/static//etc/passwd",
            "/static/%252e%252e/secret.txt",
            "http://127.0.0.1/static/../secret.txt",
            "/static/\u{7f}/x",
            "*",
        ];
        for target in targets {
            let reply = raw(addr, &format!("GET {target} HTTP/1.1")).await;
            assert_no_leak(target, reply.status, &reply.body);
            assert!(
                matches!(reply.status, 400 | 404),
                "{target}, {mode}: {reply:?}"
            );
        }
        // A fragment is not part of the path: this is `/static/ok.txt`.
        let reply = raw(addr, "GET /static/ok.txt#/../../secret.txt HTTP/1.1").await;
        assert_no_leak("fragment", reply.status, &reply.body);
        assert!(reply.status == 400 || reply.body == b"ok", "{reply:?}");
        // The control: a good path over the same server works.
        assert_eq!(raw(addr, "GET /static/ok.txt HTTP/1.1").await.body, b"ok");
        // Raw NUL and space in the target are refused by hyper before any layer runs.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /static/ok.txt\0/../../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        assert_no_leak("raw NUL", 0, &bytes);
    }
}

/// Random paths built from the pieces traversal attacks are made of: a 200 never carries the
/// secret file, and no path makes the layer fail.
#[test]
fn random_paths_never_serve_the_secret() {
    let site = site();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let apps = runtime.block_on(async {
        [
            app(site.layer()),
            app(site.layer().prod(true).listing(true).spa(true)),
            app(proxflow_static::StaticLayer::new("/", site.root())
                .dotfiles(true)
                .listing(true)),
        ]
    });
    let piece = prop::sample::select(vec![
        "..",
        ".",
        "",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "\\",
        "%00",
        "%252e",
        "%252f",
        "%25",
        "C:",
        "c%3a",
        "%c0%ae",
        "%e0%80%ae",
        ";",
        "secret.txt",
        "public",
        "ok.txt",
        "sub",
        "link.txt",
        "linkdir",
        "secret2.txt",
        ".env",
        "static",
        "outside",
        "%20",
        "~",
        "index.html",
    ]);
    let separator = prop::sample::select(vec!["/", "/", "/", "%2f", "\\", "%5c", "//", ""]);
    let path = prop::collection::vec((piece, separator), 0..8).prop_map(|pieces| {
        let mut path = String::new();
        for (piece, separator) in pieces {
            path.push_str(piece);
            path.push_str(separator);
        }
        path
    });
    let prefix = prop::sample::select(vec!["/static/", "/static", "/", "/static/sub/", "//"]);
    let uri = (prefix, path).prop_map(|(prefix, path)| format!("{prefix}{path}"));

    let config = Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    runner
        .run(&uri, |uri| {
            if Request::builder().uri(uri.as_str()).body(()).is_err() {
                return Ok(());
            }
            for app in &apps {
                let request = Request::builder()
                    .uri(uri.as_str())
                    .body(Body::empty())
                    .unwrap();
                let reply = runtime.block_on(send(app, request));
                let body = String::from_utf8_lossy(&reply.body);
                prop_assert!(
                    !body.contains("TOP-SECRET"),
                    "{uri}: {} {body}",
                    reply.status
                );
                prop_assert!(!reply.status.is_server_error(), "{uri}: {}", reply.status);
                // Redirects stay relative and on this site: no open redirect.
                if let Some(location) = reply.header("location") {
                    prop_assert!(reply.status == StatusCode::MOVED_PERMANENTLY, "{uri}");
                    prop_assert!(
                        location.ends_with('/') || location.contains("/?"),
                        "{uri}: {location}"
                    );
                    prop_assert!(
                        !location.starts_with('/') && !location.contains(':'),
                        "{uri}: {location}"
                    );
                    prop_assert!(
                        !location.contains('\\') && !location.contains("//"),
                        "{uri}: {location}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}
