//! `StaticConfig` read from YAML, TOML and JSON with Kalgan's names, turned into a working
//! layer by `StaticLayer::from_config`, and bad values refused with the field named.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use proxflow_static::{AssetManifest, AssetVersion, ConfigError, StaticConfig, StaticLayer};

fn site() -> Site {
    let site = Site::new();
    site.write("vendor/jquery.min.js", "/*! jQuery */\n");
    site.write("index.html", "<h1>home</h1>");
    site
}

/// A path as it may appear inside a YAML, TOML or JSON string.
fn quoted(path: &std::path::Path) -> String {
    serde_json::to_string(path.to_str().unwrap()).unwrap()
}

async fn assert_serves_kalgan_urls(layer: StaticLayer, mount: &str) {
    let url = layer.assets().url("/vendor/jquery.min.js");
    assert_eq!(url, format!("{mount}/vendor/jquery.min.js?v001"));
    let app = app(layer);
    let reply = get(&app, &url).await;
    assert_eq!(reply.status, StatusCode::OK, "{url}");
    assert_eq!(reply.body, "/*! jQuery */\n");
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        get(&app, "/").await.body,
        HOME,
        "the inner router keeps its paths"
    );
    assert_eq!(
        get(&app, &format!("{mount}/missing.js")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn yaml_with_kalgan_names_builds_a_working_layer() {
    let site = site();
    let yaml = format!(
        "path: /assets\nfolders:\n  - {}\nversion: v001\nis_prod: true\nrevalidate_interval: 2s\nspa: false\n",
        quoted(&site.root())
    );
    let config: StaticConfig = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(config.path, "/assets");
    assert_eq!(config.version.as_deref(), Some("v001"));
    assert!(config.is_prod);
    assert_eq!(config.revalidate_interval, Duration::from_secs(2));
    let layer = StaticLayer::from_config(&config).unwrap();
    assert_eq!(layer.config(), &config);
    assert_serves_kalgan_urls(layer, "/assets").await;
}

#[tokio::test]
async fn toml_with_kalgan_names_builds_a_working_layer() {
    let site = site();
    let toml = format!(
        "path = \"/static\"\nfolders = [{}]\nversion = \"v001\"\nis_prod = true\nunversioned_max_age = \"10m\"\n",
        quoted(&site.root())
    );
    let config: StaticConfig = toml::from_str(&toml).unwrap();
    assert_eq!(config.unversioned_max_age, Some(Duration::from_secs(600)));
    let layer = StaticLayer::from_config(&config).unwrap();
    let app = app(layer.clone());
    assert_eq!(
        get(&app, "/static/vendor/jquery.min.js")
            .await
            .header("cache-control"),
        Some("public, max-age=600")
    );
    assert_serves_kalgan_urls(layer, "/static").await;
}

#[tokio::test]
async fn json_with_kalgan_names_builds_a_working_layer() {
    let site = site();
    let json = format!(
        r#"{{"path": "/static", "folders": [{}], "version": "v001", "is_prod": true, "listing": true}}"#,
        quoted(&site.root())
    );
    let config: StaticConfig = serde_json::from_str(&json).unwrap();
    let layer = StaticLayer::from_config(&config).unwrap();
    assert_serves_kalgan_urls(layer, "/static").await;
}

#[test]
fn the_config_equals_the_builder() {
    let site = site();
    let yaml = format!(
        "path: /static\nfolders: [{}]\nversion: v001\nis_prod: true\nspa: true\nlisting: true\ncache_max_file_size: 4096\nrevalidate_interval: 500ms\n",
        quoted(&site.root())
    );
    let config: StaticConfig = serde_yaml::from_str(&yaml).unwrap();
    let built = StaticLayer::new("/static", site.root())
        .version(AssetVersion::Query("v001".into()))
        .prod(true)
        .spa(true)
        .listing(true)
        .cache_max_file_size(4096)
        .revalidate_interval(Duration::from_millis(500));
    assert_eq!(built.config(), &config);
    // The config written back reads the same.
    let written = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<StaticConfig>(&written).unwrap(),
        config
    );
}

#[tokio::test]
async fn folders_are_searched_in_order() {
    let first = site();
    let second = Site::new();
    second.write("vendor/jquery.min.js", "shadowed");
    second.write("only-second.txt", "from the second folder");
    let json = format!(
        r#"{{"folders": [{}, {}]}}"#,
        quoted(&first.root()),
        quoted(&second.root())
    );
    let config: StaticConfig = serde_json::from_str(&json).unwrap();
    let app = app(StaticLayer::from_config(&config).unwrap());
    assert_eq!(
        get(&app, "/static/vendor/jquery.min.js").await.body,
        "/*! jQuery */\n"
    );
    assert_eq!(
        get(&app, "/static/only-second.txt").await.body,
        "from the second folder"
    );
}

#[tokio::test]
async fn a_manifest_path_in_the_config_is_loaded() {
    let site = site();
    let manifest_file = site.dir.path().join("manifest.json");
    AssetManifest::build(&[site.root()])
        .unwrap()
        .write(&manifest_file)
        .unwrap();
    let yaml = format!(
        "folders: [{}]\ncontent_hash: true\nis_prod: true\nmanifest: {}\n",
        quoted(&site.root()),
        quoted(&manifest_file)
    );
    let config: StaticConfig = serde_yaml::from_str(&yaml).unwrap();
    let layer = StaticLayer::from_config(&config).unwrap();
    let url = layer.assets().url("/vendor/jquery.min.js");
    assert!(
        url.starts_with("/static/vendor/jquery.min.")
            && url.ends_with(".js")
            && url.len() == "/static/vendor/jquery.min.12345678.js".len(),
        "{url}"
    );
    let reply = get(&app(layer), &url).await;
    assert_eq!(reply.body, "/*! jQuery */\n");
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

fn from_yaml(yaml: &str) -> Result<StaticLayer, ConfigError> {
    let config: StaticConfig = serde_yaml::from_str(yaml).expect("well-formed YAML");
    StaticLayer::from_config(&config)
}

#[test]
fn bad_values_get_a_config_error_naming_the_field() {
    let site = site();
    let folders = format!("folders: [{}]\n", quoted(&site.root()));
    let cases = [
        ("path: static\n", "path"),
        ("path: \"/static?x\"\n", "path"),
        ("path: '/st\\atic'\n", "path"),
        ("version: \"v 1\"\n", "version"),
        ("version: \"\"\n", "version"),
        ("version: \"v1<script>\"\n", "version"),
        ("version: v001\ncontent_hash: true\n", "version"),
        ("index: \"\"\n", "index"),
        ("index: a/b.html\n", "index"),
        (
            "cache_max_bytes: 1000\ncache_max_file_size: 2000\n",
            "cache_max_file_size",
        ),
        ("revalidate_interval: 0s\n", "revalidate_interval"),
        ("max_ranges: 0\n", "max_ranges"),
        ("spa_exclude: [api]\n", "spa_exclude"),
        ("not_found_page: ../404.html\n", "not_found_page"),
        ("not_found_page: errors/\n", "not_found_page"),
    ];
    for (bad, field) in cases {
        let error = from_yaml(&format!("{folders}{bad}")).expect_err(bad);
        assert_eq!(error.field, field, "{bad}");
        assert!(!error.reason.is_empty(), "{bad}");
        assert!(error.source.is_none(), "{bad}: a value, not a cause");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("`{field}`")),
            "{bad}: {message}"
        );
    }

    let missing = site.dir.path().join("no-such-folder");
    let error = from_yaml(&format!("folders: [{}]\n", quoted(&missing))).unwrap_err();
    assert_eq!(error.field, "folders");
    assert!(
        error.reason.contains(missing.to_str().unwrap()),
        "the folder is named: {error}"
    );
    let cause = std::error::Error::source(&error).expect("the I/O error as the source");
    assert_eq!(
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
    assert_eq!(
        error.to_string(),
        format!("`folders`: cannot use {}: {cause}", missing.display()),
        "the message of earlier versions"
    );
    let error = from_yaml("folders: []\n").unwrap_err();
    assert_eq!(error.field, "folders");
    assert!(error.source.is_none());
    // A file is not a folder.
    let file = site.root().join("index.html");
    let error = from_yaml(&format!("folders: [{}]\n", quoted(&file))).unwrap_err();
    assert_eq!(error.field, "folders");
    assert!(error.to_string().starts_with("`folders`"), "{error}");

    let manifest = site.dir.path().join("missing-manifest.json");
    let error = from_yaml(&format!("{folders}manifest: {}\n", quoted(&manifest))).unwrap_err();
    assert_eq!(error.field, "manifest");
    assert!(
        error
            .to_string()
            .starts_with(&format!("`manifest`: cannot load {}: ", manifest.display())),
        "{error}"
    );
    assert!(error
        .source
        .as_ref()
        .is_some_and(|e| e.is::<std::io::Error>()));
    let broken = site.dir.path().join("broken.json");
    std::fs::write(&broken, "{ not json").unwrap();
    let error = from_yaml(&format!("{folders}manifest: {}\n", quoted(&broken))).unwrap_err();
    assert_eq!(error.field, "manifest");
    assert!(error.to_string().starts_with("`manifest`"), "{error}");
    assert!(error
        .source
        .as_ref()
        .is_some_and(|e| e.is::<serde_json::Error>()));
}

#[test]
fn values_of_the_wrong_shape_are_refused_while_parsing_with_the_field_named() {
    for (yaml, field) in [
        ("is_prod: maybe\n", "is_prod"),
        ("revalidate_interval: soon\n", "revalidate_interval"),
        ("max_ranges: -1\n", "max_ranges"),
        ("folders: public\n", "folders"),
        ("folder: [public]\n", "folder"),
    ] {
        let error = serde_yaml::from_str::<StaticConfig>(yaml)
            .expect_err(yaml)
            .to_string();
        assert!(error.contains(field), "{yaml}: {error}");
    }
    let error = toml::from_str::<StaticConfig>("cache_max_bytes = \"big\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("cache_max_bytes"), "{error}");
    let error = serde_json::from_str::<StaticConfig>(r#"{"unversioned_max_age": "forever"}"#)
        .unwrap_err()
        .to_string();
    // serde_json reports a position, not a path; it still says what is allowed.
    assert!(
        error.contains("expected a duration") && error.contains("column"),
        "{error}"
    );
}

#[test]
fn defaults_follow_the_documentation() {
    let config: StaticConfig = serde_yaml::from_str("{}").unwrap();
    assert_eq!(config, StaticConfig::default());
    assert_eq!(config.path, "/static");
    assert_eq!(config.folders, [std::path::PathBuf::from("public")]);
    assert_eq!(config.version, None);
    assert!(
        !config.is_prod
            && !config.spa
            && !config.listing
            && !config.dotfiles
            && !config.fallthrough
    );
    assert_eq!(config.spa_exclude, ["/api"]);
    assert_eq!(config.index, "index.html");
    assert!(config.precompressed && config.compress);
    assert_eq!(config.cache_max_bytes, 64 * 1024 * 1024);
    assert_eq!(config.cache_max_file_size, 1024 * 1024);
    assert_eq!(config.revalidate_interval, Duration::from_secs(1));
    assert_eq!(config.max_ranges, 16);
}

/// The builder applies the rules of `validate` at the call: a value the layer cannot run with
/// panics there, naming the method and what is allowed.
#[test]
fn bad_builder_values_panic_at_the_call_with_the_rule() {
    let site = site();
    let root = site.root();
    let layer = || StaticLayer::new("/static", root.clone());
    type Build<'a> = Box<dyn Fn() -> StaticLayer + 'a>;
    let cases: [(&str, Build<'_>); 11] = [
        (
            "StaticLayer::new: must start with `/`",
            Box::new(|| StaticLayer::new("static", root.clone())),
        ),
        (
            "StaticLayer::version: must be non-empty",
            Box::new(|| layer().version(AssetVersion::Query("v 1".into()))),
        ),
        (
            "StaticLayer::index: must be a file name",
            Box::new(|| layer().index("a/index.html")),
        ),
        (
            "StaticLayer::not_found_page: must name a file inside the folders",
            Box::new(|| layer().not_found_page("../404.html")),
        ),
        (
            "StaticLayer::cache_max_file_size: must not exceed `cache_max_bytes`",
            Box::new(|| layer().cache_max_file_size(100 << 20)),
        ),
        (
            "StaticLayer::cache_max_bytes: 1000 is below `cache_max_file_size`",
            Box::new(|| layer().cache_max_bytes(1000)),
        ),
        (
            "StaticLayer::revalidate_interval: must be positive",
            Box::new(|| layer().revalidate_interval(Duration::ZERO)),
        ),
        (
            "StaticLayer::max_ranges: must be at least 1",
            Box::new(|| layer().max_ranges(0)),
        ),
        (
            "StaticLayer::spa_exclude: \"api\" must start with `/`",
            Box::new(|| layer().spa_exclude(["/ok", "api"])),
        ),
        (
            "StaticLayer::new: must start with `/`",
            Box::new(|| StaticLayer::new("/static?x", root.clone())),
        ),
        (
            "StaticLayer::index: must be a file name",
            Box::new(|| layer().index("")),
        ),
    ];
    for (expected, build) in cases {
        let payload =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).expect_err(expected);
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.starts_with(expected), "{expected}: {message}");
    }

    // Raised in the order the message asks for, both sizes are accepted.
    let big = layer()
        .cache_max_bytes(1 << 30)
        .cache_max_file_size(100 << 20);
    assert_eq!(big.config().cache_max_file_size, 100 << 20);
    let small = layer().cache_max_file_size(1000).cache_max_bytes(1000);
    assert_eq!(small.config().cache_max_bytes, 1000);
    assert!(small.config().validate().is_ok());
}
