//! Production mode: Kalgan-style versioned URLs and their caching, content hashes, the memory
//! cache and how it notices changed files (on tokio's paused clock), and streamed large files.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use proxflow_core::Clock;
use proxflow_static::{AssetManifest, AssetVersion, StaticLayer};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn site() -> Site {
    let site = Site::new();
    site.write(
        "vendor/jquery/dist/jquery.min.js",
        "/*! jQuery */ window.$ = {};\n",
    );
    site.write("app.js", "first version\n");
    site.write("LICENSE", "MIT\n");
    site
}

#[test]
fn asset_urls_carry_the_version_in_production_only() {
    let site = site();
    let prod = site
        .layer()
        .prod(true)
        .version(AssetVersion::Query("v001".into()));
    assert_eq!(
        prod.assets().url("/vendor/jquery/dist/jquery.min.js"),
        "/static/vendor/jquery/dist/jquery.min.js?v001"
    );
    assert_eq!(
        prod.assets().url("vendor/jquery/dist/jquery.min.js"),
        "/static/vendor/jquery/dist/jquery.min.js?v001"
    );
    let dev = site.layer().version(AssetVersion::Query("v001".into()));
    assert_eq!(
        dev.assets().url("/vendor/jquery/dist/jquery.min.js"),
        "/static/vendor/jquery/dist/jquery.min.js"
    );
    let unversioned = site.layer().prod(true);
    assert_eq!(unversioned.assets().url("/app.js"), "/static/app.js");
    let trailing = StaticLayer::new("/assets/", site.root())
        .prod(true)
        .version(AssetVersion::Query("v2".into()));
    assert_eq!(trailing.assets().url("/app.js"), "/assets/app.js?v2");
}

#[tokio::test]
async fn versioned_urls_are_immutable_and_the_rest_no_cache() {
    let site = site();
    let layer = site
        .layer()
        .prod(true)
        .version(AssetVersion::Query("v001".into()));
    let url = layer.assets().url("/vendor/jquery/dist/jquery.min.js");
    let app = app(layer);
    // Twice each: once loading from disk, once from memory.
    for round in 0..2 {
        let reply = get(&app, &url).await;
        assert_eq!(reply.status, StatusCode::OK, "#{round}");
        assert_eq!(reply.body, "/*! jQuery */ window.$ = {};\n");
        assert_eq!(reply.header("cache-control"), Some(IMMUTABLE), "#{round}");
        for other in [
            "/static/vendor/jquery/dist/jquery.min.js",
            "/static/vendor/jquery/dist/jquery.min.js?v002",
            "/static/vendor/jquery/dist/jquery.min.js?v001x",
            "/static/vendor/jquery/dist/jquery.min.js?x=v001",
        ] {
            let reply = get(&app, other).await;
            assert_eq!(reply.status, StatusCode::OK, "{other} #{round}");
            assert_eq!(
                reply.header("cache-control"),
                Some("no-cache"),
                "{other} #{round}"
            );
        }
    }
    // A 304 for the versioned URL repeats its Cache-Control.
    let etag = get(&app, &url).await.header("etag").unwrap().to_string();
    let reply = get_with(&app, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert_eq!(reply.header("cache-control"), Some(IMMUTABLE));
    // A missing file is not made immutable by its query.
    let reply = get(&app, "/static/missing.js?v001").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_ne!(reply.header("cache-control"), Some(IMMUTABLE));
}

#[tokio::test]
async fn development_mode_is_always_no_cache() {
    let site = site();
    let app = app(site
        .layer()
        .version(AssetVersion::Query("v001".into()))
        .unversioned_max_age(Duration::from_secs(600)));
    for uri in ["/static/app.js?v001", "/static/app.js"] {
        assert_eq!(
            get(&app, uri).await.header("cache-control"),
            Some("no-cache"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn unversioned_max_age_applies_to_unversioned_urls_in_production() {
    let site = site();
    let app = app(site
        .layer()
        .prod(true)
        .version(AssetVersion::Query("v1".into()))
        .unversioned_max_age(Duration::from_secs(600)));
    assert_eq!(
        get(&app, "/static/app.js").await.header("cache-control"),
        Some("public, max-age=600")
    );
    assert_eq!(
        get(&app, "/static/app.js?v1").await.header("cache-control"),
        Some(IMMUTABLE)
    );
}

fn is_hashed(url: &str, prefix: &str, suffix: &str) -> bool {
    url.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test]
async fn content_hash_urls_are_immutable_and_old_hashes_still_serve_the_file() {
    let site = site();
    for layer in [
        site.layer().prod(true).version(AssetVersion::ContentHash),
        site.layer()
            .prod(true)
            .version(AssetVersion::ContentHash)
            .cache_max_file_size(4),
    ] {
        let url = layer.assets().url("/app.js");
        assert!(is_hashed(&url, "/static/app.", ".js"), "{url}");
        let license = layer.assets().url("/LICENSE");
        assert!(is_hashed(&license, "/static/LICENSE.", ""), "{license}");
        let app = app(layer);
        for round in 0..2 {
            let reply = get(&app, &url).await;
            assert_eq!(reply.status, StatusCode::OK, "{url} #{round}");
            assert_eq!(reply.body, "first version\n");
            assert_eq!(
                reply.header("cache-control"),
                Some(IMMUTABLE),
                "{url} #{round}"
            );
            reply.assert_length_consistent();
            let reply = get(&app, &license).await;
            assert_eq!(reply.body, "MIT\n");
            assert_eq!(
                reply.header("cache-control"),
                Some(IMMUTABLE),
                "{license} #{round}"
            );
            for other in [
                "/static/app.js",
                "/static/app.00000000.js",
                "/static/app.deadbeef.js",
            ] {
                let reply = get(&app, other).await;
                assert_eq!(reply.status, StatusCode::OK, "{other} #{round}");
                assert_eq!(reply.body, "first version\n", "{other} #{round}");
                assert_eq!(
                    reply.header("cache-control"),
                    Some("no-cache"),
                    "{other} #{round}"
                );
            }
        }
        // A hash-shaped name of a missing file is still a 404.
        assert_eq!(
            get(&app, "/static/gone.12345678.js").await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn a_manifest_names_the_versioned_files() {
    let site = site();
    let manifest = AssetManifest::build(&[site.root()]).unwrap();
    let versioned = manifest
        .get("/vendor/jquery/dist/jquery.min.js")
        .unwrap()
        .to_string();
    let layer = site
        .layer()
        .prod(true)
        .version(AssetVersion::ContentHash)
        .manifest(manifest);
    let url = layer.assets().url("/vendor/jquery/dist/jquery.min.js");
    assert_eq!(url, format!("/static/{versioned}"));
    let app = app(layer);
    let reply = get(&app, &url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "/*! jQuery */ window.$ = {};\n");
    assert_eq!(reply.header("cache-control"), Some(IMMUTABLE));
}

#[tokio::test]
async fn the_memory_cache_is_used_and_counted() {
    let site = site();
    let layer = site.layer().prod(true);
    let stats = layer.stats();
    let app = app(layer);
    get(&app, "/static/app.js").await;
    let first = stats.snapshot();
    assert_eq!(first.cache_misses, 1);
    assert_eq!(first.cached_files, 1);
    assert!(first.cached_bytes >= "first version\n".len() as u64);
    for _ in 0..3 {
        assert_eq!(get(&app, "/static/app.js").await.body, "first version\n");
    }
    let after = stats.snapshot();
    assert_eq!(after.cache_hits, first.cache_hits + 3);
    assert_eq!(after.cache_misses, 1);
    assert_eq!(after.ok, 4);
    // The snapshot serializes for a dashboard.
    let json = serde_json::to_value(&after).unwrap();
    assert_eq!(json["cache_hits"], after.cache_hits);

    // Development mode has no cache.
    let layer = site.layer();
    let stats = layer.stats();
    let dev_app = common::app(layer);
    get(&dev_app, "/static/app.js").await;
    get(&dev_app, "/static/app.js").await;
    let dev = stats.snapshot();
    assert_eq!(
        (dev.cache_hits, dev.cache_misses, dev.cached_files, dev.ok),
        (0, 0, 0, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn missing_files_are_not_cached() {
    let site = site();
    let app = app(site.layer().clock(Clock::tokio()).prod(true));
    assert_eq!(
        get(&app, "/static/late.js").await.status,
        StatusCode::NOT_FOUND
    );
    site.write("late.js", "created after the first request");
    // No time passes: a 404 is never remembered.
    let reply = get(&app, "/static/late.js").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "created after the first request");
}

/// With several folders, a file added later to an *earlier* folder (which wins by the
/// documented search order) takes over in production once `revalidate_interval` has passed:
/// revalidation searches the folders again, not only the path the entry came from.
#[tokio::test(start_paused = true)]
async fn prod_notices_a_file_added_to_an_earlier_folder() {
    let first = Site::new();
    let second = Site::new();
    second.write("x.js", "from the second folder");
    let layer = first.layer().clock(Clock::tokio()).folder(second.root());
    let dev = app(layer.clone());
    let prod = app(layer.prod(true).revalidate_interval(Duration::from_secs(1)));
    assert_eq!(
        get(&prod, "/static/x.js").await.body,
        "from the second folder"
    );
    first.write("x.js", "from the first folder, which wins");
    assert_eq!(
        get(&dev, "/static/x.js").await.body,
        "from the first folder, which wins"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let reply = get(&prod, "/static/x.js").await;
    assert_eq!(reply.text(), "from the first folder, which wins");
}

#[tokio::test]
async fn development_mode_reads_every_change_at_once() {
    let site = site();
    let app = app(site.layer());
    assert_eq!(get(&app, "/static/app.js").await.body, "first version\n");
    site.write("app.js", "second, longer version\n");
    let reply = get(&app, "/static/app.js").await;
    assert_eq!(reply.body, "second, longer version\n");
    reply.assert_length_consistent();
    std::fs::remove_file(site.root().join("app.js")).unwrap();
    assert_eq!(
        get(&app, "/static/app.js").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The cache keeps a file for `revalidate_interval`, then checks the disk and serves the new
/// contents, with a length that always matches the body.
///
/// Once the interval has passed, the memory path claims the revalidation and hands the request
/// to the slow path, which must still read the metadata rather than take the claim for a
/// check: changed and deleted in-memory files are noticed.
#[tokio::test(start_paused = true)]
async fn a_changed_file_is_noticed_after_the_revalidate_interval() {
    let site = site();
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .revalidate_interval(Duration::from_secs(2));
    let stats = layer.stats();
    let app = app(layer);
    let first = get(&app, "/static/app.js").await;
    assert_eq!(first.body, "first version\n");
    first.assert_length_consistent();

    site.write("app.js", "second, longer version\n");
    // Within the interval the cached copy is served, consistently.
    tokio::time::advance(Duration::from_millis(500)).await;
    let cached = get(&app, "/static/app.js").await;
    assert_eq!(cached.body, "first version\n");
    cached.assert_length_consistent();
    let head = head_with(&app, "/static/app.js", &[]).await;
    assert_eq!(head.header("content-length"), Some("14"));
    assert!(stats.snapshot().cache_hits >= 2);

    tokio::time::advance(Duration::from_millis(2_000)).await;
    for attempt in 0..3 {
        let reply = get(&app, "/static/app.js").await;
        reply.assert_length_consistent();
        assert_eq!(
            reply.text(),
            "second, longer version\n",
            "attempt {attempt} after the interval"
        );
        let head = head_with(&app, "/static/app.js", &[]).await;
        assert_eq!(
            head.header("content-length"),
            Some("23"),
            "attempt {attempt}"
        );
        assert_ne!(reply.header("etag"), first.header("etag"));
    }

    // Deleted: gone after the next interval.
    std::fs::remove_file(site.root().join("app.js")).unwrap();
    tokio::time::advance(Duration::from_millis(2_500)).await;
    assert_eq!(
        get(&app, "/static/app.js").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The same revalidation seen through content hashes: after an edit `assets().url()` renders
/// the new hash at once (it checks the file), so the server answers that new URL with the new
/// bytes, not the cached old ones.
#[tokio::test(start_paused = true)]
async fn a_new_content_hash_serves_the_new_file_after_the_interval() {
    let site = site();
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .version(AssetVersion::ContentHash)
        .revalidate_interval(Duration::from_secs(1));
    let assets = layer.assets();
    let app = app(layer);
    let old_url = assets.url("/app.js");
    assert_eq!(get(&app, &old_url).await.body, "first version\n");

    site.write("app.js", "second, longer version\n");
    let new_url = assets.url("/app.js");
    assert_ne!(new_url, old_url, "the URL follows the file");
    tokio::time::advance(Duration::from_millis(1_500)).await;
    let reply = get(&app, &new_url).await;
    assert_eq!(reply.text(), "second, longer version\n");
    assert_eq!(reply.header("cache-control"), Some(IMMUTABLE));
    reply.assert_length_consistent();
    let reply = get(&app, &old_url).await;
    assert_eq!(reply.text(), "second, longer version\n");
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
}

/// Files larger than `cache_max_file_size` are streamed and checked on every request.
#[tokio::test(start_paused = true)]
async fn a_large_file_is_streamed_and_follows_replacements() {
    let site = site();
    let first: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    site.write("big.bin", &first);
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .cache_max_file_size(1024);
    let stats = layer.stats();
    let app = app(layer);
    let reply = get(&app, "/static/big.bin").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, first);
    reply.assert_length_consistent();
    let snapshot = stats.snapshot();
    assert!(
        snapshot.cached_bytes < first.len() as u64,
        "not held in memory: {snapshot:?}"
    );
    let range = get_with(&app, "/static/big.bin", &[("range", "bytes=5000-5009")]).await;
    assert_eq!(range.body, first[5000..5010]);

    let second: Vec<u8> = (0..12_345u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    site.write("big.bin", &second);
    // No time passes: streamed files are checked on every request.
    let reply = get(&app, "/static/big.bin").await;
    assert_eq!(reply.body.len(), second.len());
    assert_eq!(reply.body, second);
    reply.assert_length_consistent();
    let head = head_with(&app, "/static/big.bin", &[]).await;
    assert_eq!(head.header("content-length"), Some("12345"));
    let range = get_with(&app, "/static/big.bin", &[("range", "bytes=12340-")]).await;
    assert_eq!(range.body, second[12340..]);
    assert_eq!(
        range.header("content-range"),
        Some("bytes 12340-12344/12345")
    );

    // Shrunk below the limit: now served from memory, still correct.
    site.write("big.bin", "small now");
    tokio::time::advance(Duration::from_secs(5)).await;
    let reply = get(&app, "/static/big.bin").await;
    assert_eq!(reply.body, "small now");
    reply.assert_length_consistent();
}

#[tokio::test]
async fn stale_validators_after_a_change_do_not_give_304() {
    let site = site();
    let app = app(site.layer().prod(true).cache_max_file_size(4));
    let first = get(&app, "/static/app.js").await;
    site.write("app.js", "second, longer version\n");
    let etag = first.header("etag").unwrap();
    let reply = get_with(&app, "/static/app.js", &[("if-none-match", etag)]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "streamed files are checked on every request"
    );
    assert_eq!(reply.body, "second, longer version\n");
    let reply = get_with(
        &app,
        "/static/app.js",
        &[("if-match", etag), ("range", "bytes=0-1")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
}

/// When a cached file goes stale under load, one request checks the disk and the others keep
/// being answered from memory, instead of every request in flight queueing its own check.
#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_checked_once_while_the_others_are_served() {
    let site = site();
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .revalidate_interval(Duration::from_secs(1));
    let stats = layer.stats();
    let app = app(layer);
    assert_eq!(get(&app, "/static/app.js").await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_millis(1_500)).await;

    let replies =
        futures_util::future::join_all((0..10).map(|_| get(&app, "/static/app.js"))).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        reply.assert_length_consistent();
    }
    assert_eq!(stats.snapshot().revalidations, 1);

    // Checked: fresh again, answered from memory without another check.
    assert_eq!(get(&app, "/static/app.js").await.status, StatusCode::OK);
    assert_eq!(stats.snapshot().revalidations, 1);
}

/// A site with a compressible `style.css` and `gz` as its `.gz` sibling, and a production layer
/// that revalidates every second; returns the original's text.
fn stylesheet_site(gz: &[u8]) -> (Site, StaticLayer, String) {
    let site = site();
    let original = "body { color: red; }\n".repeat(30);
    site.write("style.css", &original);
    site.write("style.css.gz", gz);
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .revalidate_interval(Duration::from_secs(1));
    (site, layer, original)
}

/// Each precompressed sibling is revalidated on its own: a `.gz` replaced by a larger one
/// (streamed, since it exceeds `cache_max_file_size`) and a `.br` replaced by another small one
/// (held in memory) are both served anew once the interval has passed, with a length that
/// matches, while the original file is unchanged.
#[tokio::test(start_paused = true)]
async fn a_replaced_precompressed_sibling_is_served_after_the_interval() {
    let first_gz: Vec<u8> = (0..2_000u32).map(|i| (i % 251) as u8).collect();
    let (site, layer, original) = stylesheet_site(&first_gz);
    site.write("style.css.br", "first brotli");
    let app = app(layer.cache_max_file_size(1024));
    let gzip = [("accept-encoding", "gzip")];
    let brotli = [("accept-encoding", "br")];
    let reply = get_with(&app, "/static/style.css", &gzip).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.body, first_gz);
    let reply = get_with(&app, "/static/style.css", &brotli).await;
    assert_eq!(reply.body, "first brotli");

    let second_gz: Vec<u8> = (0..3_333u32).map(|i| (i % 247) as u8 ^ 0x33).collect();
    site.write("style.css.gz", &second_gz);
    site.write("style.css.br", "second, longer brotli");
    tokio::time::advance(Duration::from_millis(1_500)).await;
    for attempt in 0..3 {
        let reply = get_with(&app, "/static/style.css", &gzip).await;
        assert_eq!(reply.header("content-encoding"), Some("gzip"));
        assert_eq!(reply.body, second_gz, "attempt {attempt}");
        reply.assert_length_consistent();
        let reply = get_with(&app, "/static/style.css", &brotli).await;
        assert_eq!(reply.text(), "second, longer brotli", "attempt {attempt}");
        reply.assert_length_consistent();
    }
    let plain = get(&app, "/static/style.css").await;
    assert_eq!(plain.text(), original);
}

/// A deleted sibling stops being served after the interval: the coding is then compressed
/// anew from the original, or the original is sent. A sibling that appears is then served.
#[tokio::test(start_paused = true)]
async fn a_deleted_precompressed_sibling_is_no_longer_served() {
    use std::io::Read;
    let (site, layer, original) = stylesheet_site(b"stale gzip bytes");
    let app = app(layer);
    let gzip = [("accept-encoding", "gzip")];
    assert_eq!(
        get_with(&app, "/static/style.css", &gzip).await.body,
        "stale gzip bytes"
    );

    std::fs::remove_file(site.root().join("style.css.gz")).unwrap();
    tokio::time::advance(Duration::from_millis(1_500)).await;
    for attempt in 0..3 {
        let reply = get_with(&app, "/static/style.css", &gzip).await;
        reply.assert_length_consistent();
        assert_ne!(reply.body, "stale gzip bytes", "attempt {attempt}");
        let served = if reply.header("content-encoding") == Some("gzip") {
            let mut plain = String::new();
            flate2::read::GzDecoder::new(&reply.body[..])
                .read_to_string(&mut plain)
                .unwrap();
            plain
        } else {
            reply.text()
        };
        assert_eq!(served, original, "attempt {attempt}");
    }

    // A sibling that appears is served after the next interval.
    site.write("style.css.gz", "new gzip bytes");
    tokio::time::advance(Duration::from_millis(1_500)).await;
    let reply = get_with(&app, "/static/style.css", &gzip).await;
    assert_eq!(reply.body, "new gzip bytes");
    reply.assert_length_consistent();
}

/// Revalidation compares size and modification time, so an edit that keeps the size and puts
/// the mtime back goes unnoticed, unless `revalidate_by_content` also compares the bytes.
#[tokio::test(start_paused = true)]
async fn a_same_size_edit_with_the_old_mtime_is_noticed_only_by_content() {
    for by_content in [false, true] {
        let site = site();
        let path = site.write("same.txt", "aaaa");
        let layer = site
            .layer()
            .clock(Clock::tokio())
            .prod(true)
            .revalidate_interval(Duration::from_secs(1))
            .revalidate_by_content(by_content);
        let app = app(layer);
        assert_eq!(get(&app, "/static/same.txt").await.body, "aaaa");

        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        site.write("same.txt", "bbbb");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let reply = get(&app, "/static/same.txt").await;
        reply.assert_length_consistent();
        let expected = if by_content { "bbbb" } else { "aaaa" };
        assert_eq!(reply.body, expected, "revalidate_by_content({by_content})");
    }
}

/// A streamed file is opened before the response head exists: replaced by a rename once the
/// head is out, it still delivers the bytes and length the head announced, instead of a body
/// cut by the check that finds another file.
#[tokio::test(start_paused = true)]
async fn a_streamed_file_replaced_after_the_head_still_delivers_what_it_announced() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let site = site();
    let first: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let path = site.write("big.bin", &first);
    let layer = site
        .layer()
        .clock(Clock::tokio())
        .prod(true)
        .cache_max_file_size(1024);
    let app = app(layer);
    let request = common::request(http::Method::GET, "/static/big.bin", &[]);
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        http_body::Body::size_hint(response.body()).exact(),
        Some(10_000)
    );

    let next = site.write("next.bin", vec![9u8; 77]);
    std::fs::rename(&next, &path).unwrap();
    let body = response.into_body().collect().await.expect("body reads");
    assert_eq!(body.to_bytes(), first);
    assert_eq!(get(&app, "/static/big.bin").await.body, vec![9u8; 77]);
}
