//! Directories: index files, the redirect that adds a slash, listings, the SPA fallback and a
//! custom 404 page.

mod common;

use axum::Router;
use common::*;
use http::{Method, StatusCode};
use proxflow_static::StaticLayer;

fn site() -> Site {
    let site = Site::new();
    site.write("index.html", "<h1>root index</h1>");
    site.write("docs/index.html", "<h1>docs index</h1>");
    site.write("docs/guide/index.html", "<h1>guide</h1>");
    site.write("files/a.txt", "a");
    site.write("files/b.json", "{}");
    site.write("files/.secret", "hidden");
    site.write("files/<b>&.txt", "odd name");
    site.mkdir("files/sub");
    site.mkdir("files/.git");
    site
}

fn both(layer: StaticLayer) -> [(&'static str, Router); 2] {
    [("dev", app(layer.clone())), ("prod", app(layer.prod(true)))]
}

#[tokio::test]
async fn a_directory_with_a_slash_serves_its_index() {
    let site = site();
    for (mode, app) in both(site.layer()) {
        for (uri, body) in [
            ("/static/", "<h1>root index</h1>"),
            ("/static/docs/", "<h1>docs index</h1>"),
            ("/static/docs/guide/", "<h1>guide</h1>"),
            ("/static/docs/index.html", "<h1>docs index</h1>"),
            ("/static//docs//", "<h1>docs index</h1>"),
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}, {mode}");
            assert_eq!(reply.body, body, "{uri}, {mode}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{uri}, {mode}"
            );
            reply.assert_length_consistent();
        }
        // A file never answers with a trailing slash.
        assert_eq!(
            get(&app, "/static/docs/index.html/").await.status,
            StatusCode::NOT_FOUND,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn a_directory_without_its_slash_redirects_relatively_keeping_the_query() {
    let site = site();
    for (mode, app) in both(site.layer()) {
        for (uri, location) in [
            ("/static/docs", "docs/"),
            ("/static/docs?lang=en&page=2", "docs/?lang=en&page=2"),
            ("/static/docs/guide", "guide/"),
            ("/static/files", "files/"),
        ] {
            for method in [Method::GET, Method::HEAD] {
                let reply = send(&app, request(method.clone(), uri, &[])).await;
                assert_eq!(
                    reply.status,
                    StatusCode::MOVED_PERMANENTLY,
                    "{method} {uri}, {mode}"
                );
                assert_eq!(
                    reply.header("location"),
                    Some(location),
                    "{method} {uri}, {mode}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_final_dot_segment_names_the_directory_itself() {
    let site = site();
    for (mode, app) in both(site.layer()) {
        // `/static/docs/.` resolves to `/static/docs/`; a redirect to `docs/` from there would
        // lead to `/static/docs/docs/`.
        for (uri, body) in [
            ("/static/docs/.", "<h1>docs index</h1>"),
            ("/static/docs/guide/.", "<h1>guide</h1>"),
            ("/static/.", "<h1>root index</h1>"),
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}, {mode}");
            assert_eq!(reply.body, body, "{uri}, {mode}");
        }
        assert_eq!(
            get(&app, "/static/docs/index.html/.").await.status,
            StatusCode::NOT_FOUND,
            "a file never answers as a directory, {mode}"
        );
    }
}

#[tokio::test]
async fn the_redirect_of_an_odd_directory_name_is_percent_encoded() {
    let site = site();
    site.write("my docs/index.html", "spaced");
    site.write("caf\u{e9}/index.html", "unicode");
    for (mode, app) in both(site.layer()) {
        for (uri, location) in [
            ("/static/my%20docs", "my%20docs/"),
            ("/static/caf%C3%A9?q=1", "caf%C3%A9/?q=1"),
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{uri}, {mode}");
            assert_eq!(reply.header("location"), Some(location), "{uri}, {mode}");
            // Following it lands on the index.
            let target = format!("{}/{}", uri.rsplit_once('/').unwrap().0, location);
            assert_eq!(
                get(&app, &target).await.status,
                StatusCode::OK,
                "{target}, {mode}"
            );
        }
    }
}

#[tokio::test]
async fn the_mount_root_redirects_to_itself_with_a_slash() {
    let site = site();
    for (mode, app) in both(site.layer()) {
        let reply = get(&app, "/static").await;
        assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{mode}");
        assert_eq!(reply.header("location"), Some("static/"), "{mode}");
        let reply = get(&app, "/static?x=1").await;
        assert_eq!(reply.header("location"), Some("static/?x=1"), "{mode}");
    }
    // Deeper mounts redirect with their last segment, which resolves against the full path.
    let app = app(StaticLayer::new("/assets/v2", site.root()));
    let reply = get(&app, "/assets/v2").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), Some("v2/"));
    assert_eq!(get(&app, "/assets/v2/").await.body, "<h1>root index</h1>");
}

/// The mount root `/static` shares the memory cache key `""` with `/static/`, where the index
/// (or the SPA fallback) is stored, yet answers the 301 to `static/` rather than the index:
/// relative links in the page must resolve against `/static/`, not `/`.
#[tokio::test]
async fn prod_mount_root_still_redirects_after_the_root_index_was_cached() {
    let site = site();
    let app = app(site.layer().prod(true));
    assert_eq!(
        get(&app, "/static").await.status,
        StatusCode::MOVED_PERMANENTLY,
        "before caching"
    );
    assert_eq!(get(&app, "/static/").await.status, StatusCode::OK);
    let reply = get(&app, "/static").await;
    assert_eq!(
        reply.status,
        StatusCode::MOVED_PERMANENTLY,
        "after /static/ was cached: {reply:?}"
    );
    assert_eq!(reply.header("location"), Some("static/"));
}

#[tokio::test]
async fn listing_is_off_by_default() {
    let site = site();
    for (mode, app) in both(site.layer()) {
        let reply = get(&app, "/static/files/").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{mode}");
        assert!(!reply.text().contains("a.txt"), "{mode}");
        assert_eq!(
            get(&app, "/static/files/sub/").await.status,
            StatusCode::NOT_FOUND,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn listing_answers_html_without_dotfiles() {
    let site = site();
    for (mode, app) in both(site.layer().listing(true)) {
        let reply = get(&app, "/static/files/").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{mode}"
        );
        assert_eq!(reply.header("vary"), Some("accept"), "{mode}");
        reply.assert_length_consistent();
        let html = reply.text();
        // Folders first, then files by name; links are relative and percent-encoded.
        assert_eq!(
            hrefs(&html),
            ["../", "sub/", "<b>&.txt", "a.txt", "b.json"],
            "{mode}: {html}"
        );
        assert!(
            !html.contains(".secret") && !html.contains(".git"),
            "dotfiles are hidden, {mode}: {html}"
        );
        assert!(
            html.contains("&lt;b&gt;&amp;.txt") && !html.contains("<b>&"),
            "names are escaped, {mode}"
        );
        // Every link leads somewhere.
        for href in raw_hrefs(&html).into_iter().skip(1) {
            let reply = get(&app, &format!("/static/files/{href}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{href}, {mode}");
        }
        // A directory with an index is never listed.
        assert_eq!(
            get(&app, "/static/docs/").await.body,
            "<h1>docs index</h1>",
            "{mode}"
        );
    }
}

#[tokio::test]
async fn listing_answers_json_for_programs() {
    let site = site();
    let app = app(site.layer().listing(true));
    let reply = get_with(&app, "/static/files/", &[("accept", "application/json")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("valid JSON");
    assert_eq!(json["path"], "/static/files/");
    let entries = json["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sub", "<b>&.txt", "a.txt", "b.json"]);
    assert_eq!(entries[0]["is_dir"], true);
    assert_eq!(entries[2]["is_dir"], false);
    assert_eq!(entries[2]["size"], 1);
    // Dotfiles listed only when dotfiles are served.
    let app = app_with_dotfiles(&site);
    let reply = get_with(&app, "/static/files/", &[("accept", "application/json")]).await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let names: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&".secret") && names.contains(&".git"),
        "{names:?}"
    );
}

/// The `href` values of a listing, as written.
fn raw_hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect()
}

/// The `href` values of a listing, percent-decoded.
fn hrefs(html: &str) -> Vec<String> {
    let decode = |href: String| {
        percent_encoding::percent_decode_str(&href)
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    raw_hrefs(html).into_iter().map(decode).collect()
}

fn app_with_dotfiles(site: &Site) -> Router {
    app(site.layer().listing(true).dotfiles(true))
}

#[tokio::test]
async fn listing_a_hidden_directory_is_refused() {
    let site = site();
    let app = app(site.layer().listing(true));
    assert_eq!(
        get(&app, "/static/files/.git/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/static/files/%2egit/").await.status,
        StatusCode::NOT_FOUND
    );
}

/// An SPA at the root: the inner router keeps `/api` through `fallthrough`.
fn spa_site() -> Site {
    let site = Site::new();
    site.write("index.html", "<div id=app></div>");
    site.write("app.js", "start()");
    site
}

#[tokio::test]
async fn spa_serves_the_index_for_extensionless_paths() {
    let site = spa_site();
    for (mode, layer) in [
        ("dev", StaticLayer::new("/", site.root())),
        ("prod", StaticLayer::new("/", site.root()).prod(true)),
    ] {
        let app = app(layer.spa(true));
        for uri in [
            "/users/42",
            "/settings",
            "/deep/client/route/",
            "/users/42?tab=1",
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}, {mode}");
            assert_eq!(reply.body, "<div id=app></div>", "{uri}, {mode}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{uri}, {mode}"
            );
            assert_eq!(
                reply.header("cache-control"),
                Some("no-cache"),
                "{uri}, {mode}"
            );
            reply.assert_length_consistent();
        }
        let head = head_with(&app, "/users/42", &[]).await;
        assert_eq!(head.status, StatusCode::OK, "{mode}");
        assert!(head.body.is_empty());
        // Real files are still files.
        assert_eq!(get(&app, "/app.js").await.body, "start()", "{mode}");
        // A missing asset is a 404, not the index.
        for uri in [
            "/missing.js",
            "/img/logo.png",
            "/users/42.json",
            "/small.txt/",
            "/app.js/",
            "/img/logo.png/",
            "/.well-known/security.txt",
            "/.well-known/acme-challenge/token",
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}, {mode}");
            assert_ne!(reply.body, "<div id=app></div>", "{uri}, {mode}");
        }
        // `/api` is excluded by default.
        for uri in ["/api", "/api/users", "/api/v1/things"] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}, {mode}");
            assert_ne!(reply.body, "<div id=app></div>", "{uri}, {mode}");
        }
        // `/apis` is not under `/api`.
        assert_eq!(get(&app, "/apis").await.status, StatusCode::OK, "{mode}");
        // Other methods do not get the index.
        let post = send(&app, request(Method::POST, "/users/42", &[])).await;
        assert_ne!(post.body, "<div id=app></div>", "{mode}");
    }
}

#[tokio::test]
async fn spa_with_fallthrough_leaves_the_api_to_the_inner_router() {
    let site = spa_site();
    let app = app(StaticLayer::new("/", site.root())
        .spa(true)
        .fallthrough(true));
    assert_eq!(get(&app, "/api/users").await.body, USERS);
    assert_eq!(get(&app, "/users/42").await.body, "<div id=app></div>");
    assert_eq!(get(&app, "/app.js").await.body, "start()");
}

#[tokio::test]
async fn spa_exclusions_are_configurable() {
    let site = spa_site();
    let app = app(StaticLayer::new("/", site.root())
        .spa(true)
        .spa_exclude(["/admin", "/api"]));
    assert_eq!(
        get(&app, "/admin/panel").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&app, "/api/x").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/administrator").await.status, StatusCode::OK);
}

#[tokio::test]
async fn spa_off_means_404() {
    let site = spa_site();
    let app = app(StaticLayer::new("/", site.root()));
    assert_eq!(get(&app, "/users/42").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_custom_404_page_is_sent_with_status_404() {
    let site = site();
    site.write("errors/404.html", "<h1>nothing here</h1>");
    for (mode, app) in both(site.layer().not_found_page("errors/404.html")) {
        for uri in [
            "/static/missing.html",
            "/static/docs/missing",
            "/static/.env",
            "/static/files/.secret",
        ] {
            let reply = get(&app, uri).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}, {mode}");
            assert_eq!(reply.body, "<h1>nothing here</h1>", "{uri}, {mode}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{uri}, {mode}"
            );
            assert!(
                reply.header("etag").is_none(),
                "a 404 must not be revalidated into a 304, {mode}"
            );
            reply.assert_length_consistent();
        }
        // Conditional and range headers do not turn the 404 into anything else.
        let etag = get(&app, "/static/errors/404.html")
            .await
            .header("etag")
            .unwrap()
            .to_string();
        let reply = get_with(
            &app,
            "/static/missing.html",
            &[("if-none-match", &etag), ("range", "bytes=0-3")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{mode}");
        assert_eq!(reply.body, "<h1>nothing here</h1>", "{mode}");
        let head = head_with(&app, "/static/missing.html", &[]).await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{mode}");
        assert!(head.body.is_empty(), "{mode}");
        // Refused paths are still 400, not the page.
        assert_eq!(
            get(&app, "/static/%2e%2e/x").await.status,
            StatusCode::BAD_REQUEST,
            "{mode}"
        );
    }
    // Without a page: a short text.
    let reply = get(&app(site.layer()), "/static/missing.html").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.body, "not found\n");
}

/// For HEAD the custom 404 page announces the `Content-Length` GET sends: RFC 9110 §9.3.2 has
/// HEAD carry the header fields GET would, and hyper sends none for an empty body on its own.
#[tokio::test]
async fn wire_head_of_the_custom_404_page_announces_the_get_length() {
    let site = site();
    site.write("404.html", "<h1>nothing here</h1>");
    let addr = serve(app(site.layer().not_found_page("404.html"))).await;
    let full = raw(addr, "GET /static/missing HTTP/1.1").await;
    assert_eq!(full.status, 404);
    assert_eq!(full.body, b"<h1>nothing here</h1>");
    let head = raw(addr, "HEAD /static/missing HTTP/1.1").await;
    assert_eq!(head.status, 404);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        full.header("content-length"),
        "HEAD: {head:?}"
    );
}
