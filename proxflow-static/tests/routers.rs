//! The layer in the places axum gives it: `Router::layer`, `nest_service` under the mount
//! prefix (axum removes the prefix before the service sees the path), a router nested with
//! the layer inside, `fallback_service`; asset URLs that match what each serves; and the
//! handles (`stats()`, `assets()`) taken before the builder calls that configure the layer.

mod common;

use axum::Router;
use common::*;
use http::StatusCode;
use proxflow_static::{AssetVersion, ServeStatic, StaticLayer};

const APP_JS: &str = "console.log('app');\n";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn site() -> Site {
    let site = Site::new();
    site.write("app.js", APP_JS);
    site.write("docs/index.html", "<h1>docs</h1>");
    site.write("index.html", "<h1>spa</h1>");
    // A folder with the name of the mount prefix: `/static/static/inner.js`.
    site.write("static/inner.js", "inner");
    site
}

fn versioned(layer: StaticLayer) -> StaticLayer {
    layer.prod(true).version(AssetVersion::Query("v001".into()))
}

/// What every mounting below must answer the same way.
async fn assert_serves_the_site(app: &Router, url: &str, how: &str) {
    let reply = get(app, url).await;
    assert_eq!(reply.status, StatusCode::OK, "{how}: {url}");
    assert_eq!(reply.body, APP_JS, "{how}");
    assert_eq!(reply.header("cache-control"), Some(IMMUTABLE), "{how}");
    reply.assert_length_consistent();
    let plain = get(app, "/static/app.js").await;
    assert_eq!(plain.status, StatusCode::OK, "{how}");
    assert_eq!(plain.header("cache-control"), Some("no-cache"), "{how}");
    let inner = get(app, "/static/static/inner.js").await;
    assert_eq!(inner.body, "inner", "{how}: a folder named like the mount");
    let docs = get(app, "/static/docs").await;
    assert_eq!(docs.status, StatusCode::MOVED_PERMANENTLY, "{how}");
    assert_eq!(docs.header("location"), Some("docs/"), "{how}");
    assert_eq!(
        get(app, "/static/docs/").await.body,
        "<h1>docs</h1>",
        "{how}"
    );
    assert_eq!(
        get(app, "/static/missing.js").await.status,
        StatusCode::NOT_FOUND,
        "{how}"
    );
    assert_eq!(
        get(app, "/static/%2e%2e/secret.txt").await.status,
        StatusCode::BAD_REQUEST,
        "{how}"
    );
    assert_eq!(
        get(app, "/").await.body,
        HOME,
        "{how}: the router's own route"
    );
}

#[tokio::test]
async fn router_layer_serves_files_and_renders_their_urls() {
    let site = site();
    let statics = versioned(site.layer());
    let assets = statics.assets();
    let url = assets.url("/app.js");
    assert_eq!(url, "/static/app.js?v001");
    let app = inner_router().layer(statics);
    assert_serves_the_site(&app, &url, "Router::layer").await;
}

/// Needs the `axum` feature, which reads where the router nested the service.
#[cfg(feature = "axum")]
#[tokio::test]
async fn nest_service_under_the_mount_serves_files_and_renders_their_urls() {
    let site = site();
    for prod in [false, true] {
        let statics = site.layer().prod(prod);
        let app = inner_router().nest_service("/static", statics.into_service());
        let reply = get(&app, "/static/app.js").await;
        assert_eq!(reply.status, StatusCode::OK, "prod {prod}");
        assert_eq!(reply.body, APP_JS, "prod {prod}");
    }

    let statics = versioned(site.layer());
    let (assets, stats) = (statics.assets(), statics.stats());
    let app = inner_router().nest_service("/static", statics.into_service());
    let url = assets.url("/app.js");
    assert_eq!(url, "/static/app.js?v001");
    assert_serves_the_site(&app, &url, "nest_service").await;
    assert_eq!(
        get(&app, "/app.js").await.status,
        StatusCode::NOT_FOUND,
        "outside the nest the router answers"
    );
    let counted = stats.snapshot();
    assert!(counted.ok >= 4 && counted.cache_hits >= 1, "{counted:?}");
}

/// Needs the `axum` feature, which reads where the router nested the service.
#[cfg(feature = "axum")]
#[tokio::test]
async fn nest_service_on_the_wire() {
    let site = site();
    let statics = versioned(site.layer());
    let url = statics.assets().url("/app.js");
    let addr = serve(inner_router().nest_service("/static", statics.into_service())).await;
    let reply = raw(addr, &format!("GET {url} HTTP/1.1")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, APP_JS.as_bytes());
    assert_eq!(reply.header("cache-control"), Some(IMMUTABLE));
    let head = raw(addr, "HEAD /static/app.js HTTP/1.1").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("20"));
}

#[tokio::test]
async fn a_service_mounted_at_the_root_serves_below_wherever_it_is_nested() {
    let site = site();
    let app = inner_router().nest_service("/files", ServeStatic::new(site.root()));
    assert_eq!(get(&app, "/files/app.js").await.body, APP_JS);
    assert_eq!(get(&app, "/files/static/inner.js").await.body, "inner");
    assert_eq!(get(&app, "/").await.body, HOME);
}

/// Needs the `axum` feature, which reads where the router nested the service.
#[cfg(feature = "axum")]
#[tokio::test]
async fn the_spa_fallback_under_nest_service_sees_the_path_the_client_sent() {
    let site = site();
    let statics = site
        .layer()
        .spa(true)
        .spa_exclude(["/static/api"])
        .into_service();
    let app = Router::new().nest_service("/static", statics);
    assert_eq!(get(&app, "/static/settings").await.body, "<h1>spa</h1>");
    assert_eq!(
        get(&app, "/static/api/users").await.status,
        StatusCode::NOT_FOUND,
        "`spa_exclude` is compared with the full path"
    );
}

/// Needs the `axum` feature, which reads where the router nested the service.
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_layer_inside_a_nested_router_matches_the_full_path() {
    let site = site();
    let statics = StaticLayer::new("/site/static", site.root());
    let assets = statics.assets();
    let inner = Router::new()
        .route("/", axum::routing::get(|| async { HOME }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "inner fallback") })
        .layer(statics);
    let app = Router::new().nest("/site", inner);
    assert_eq!(assets.url("/app.js"), "/site/static/app.js");
    assert_eq!(get(&app, "/site/static/app.js").await.body, APP_JS);
    assert_eq!(get(&app, "/site").await.body, HOME);
}

#[tokio::test]
async fn into_service_as_a_fallback_keeps_the_mount_prefix() {
    let site = site();
    let app = inner_router().fallback_service(site.layer().into_service());
    assert_eq!(get(&app, "/static/app.js").await.body, APP_JS);
    assert_eq!(get(&app, "/app.js").await.status, StatusCode::NOT_FOUND);
}

// ---- Handles taken first ----

#[tokio::test]
async fn handles_taken_before_the_builder_calls_see_the_served_traffic() {
    let site = site();
    let layer = StaticLayer::new("/static", site.root());
    let stats = layer.stats();
    let assets = layer.assets();
    let layer = versioned(layer).revalidate_interval(std::time::Duration::from_secs(60));
    assert_eq!(assets.url("/app.js"), "/static/app.js?v001");

    let app = inner_router().layer(layer);
    for _ in 0..3 {
        let reply = get(&app, "/static/app.js?v001").await;
        assert_eq!(reply.header("cache-control"), Some(IMMUTABLE));
    }
    let seen = stats.snapshot();
    assert_eq!((seen.ok, seen.cache_misses), (3, 1), "{seen:?}");
    assert_eq!(seen.cache_hits, 2, "{seen:?}");
    assert_eq!(seen.cached_files, 1, "the production cache: {seen:?}");
}

/// Needs the `axum` feature, which reads where the router nested the service.
#[cfg(feature = "axum")]
#[tokio::test]
async fn handles_taken_first_follow_into_service_too() {
    let site = site();
    let layer = StaticLayer::new("/static", site.root());
    let stats = layer.stats();
    let assets = layer.assets();
    let files = versioned(layer).into_service();
    let app = Router::new().nest_service("/static", files);
    let url = assets.url("/app.js");
    assert_eq!(
        get(&app, &url).await.header("cache-control"),
        Some(IMMUTABLE)
    );
    assert_eq!(stats.snapshot().ok, 1);
}

/// A builder call on a layer that has made a service, or that has clones, configures a new
/// layer: the services made before keep their state, and so do the handles on it.
#[tokio::test]
async fn a_builder_call_after_a_service_starts_a_new_state() {
    let site = site();
    let layer = site.layer();
    let stats = layer.stats();
    let dev = inner_router().layer(layer.clone());
    let prod_layer = layer.prod(true);
    let prod_stats = prod_layer.stats();
    let prod = inner_router().layer(prod_layer);
    get(&dev, "/static/app.js").await;
    get(&prod, "/static/app.js").await;
    get(&prod, "/static/app.js").await;
    assert_eq!(
        stats.snapshot().ok,
        1,
        "the development layer's own traffic"
    );
    let prod_seen = prod_stats.snapshot();
    assert_eq!(
        (prod_seen.ok, prod_seen.cache_hits),
        (2, 1),
        "{prod_seen:?}"
    );

    // A clone configured apart leaves the original as it was.
    let original = site.layer();
    let original_assets = original.assets();
    let _versioned = versioned(original.clone());
    let app = inner_router().layer(original);
    assert_eq!(original_assets.url("/app.js"), "/static/app.js");
    assert_eq!(
        get(&app, "/static/app.js").await.header("cache-control"),
        Some("no-cache")
    );
}
