//! Asset URLs with a version, as Kalgan's `|asset` filter renders them, and the reverse mapping
//! the server uses to recognise a versioned URL.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use proxflow_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::entry::hash_file;
use crate::fingerprint::Fingerprint;
use crate::path::sanitize;

/// How asset URLs carry a version in production mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AssetVersion {
    /// No version: URLs are the plain paths.
    #[default]
    None,
    /// Kalgan's scheme: the string as the query, `/static/app.js?v001`. One change busts every
    /// URL at once.
    Query(String),
    /// A short hash of each file's contents in its name, `/static/app.3f2a9c1e.js`: a changed
    /// file busts only its own URL.
    ContentHash,
}

/// Characters left as they are in a rendered URL; the rest are percent-encoded, so the output
/// is safe to place in HTML without escaping.
const URL_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'\'')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'#')
    .add(b'?')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'%');

/// Length of the content hash in versioned file names, in hex digits.
const HASH_DIGITS: usize = 8;

/// Renders asset URLs: `assets.url("/vendor/jquery.min.js")`. Get one from
/// [`StaticLayer::assets`](crate::StaticLayer::assets) so it matches what the layer serves.
///
/// The URLs are those Kalgan's `|asset` template filter renders: the mount prefix, the path,
/// and in production the version as the query (`/static/vendor/jquery.min.js?v001`), so Kalgan
/// templates keep working through `register_tera` or `register_minijinja` (features `tera`,
/// `minijinja`).
///
/// A handle from a layer follows that layer's builder calls until it renders its first URL or
/// the layer makes its first service; from then on its settings are fixed.
#[derive(Clone)]
pub struct Assets {
    inner: Arc<AssetsInner>,
}

/// How URLs are rendered.
#[derive(Debug, Clone, Default)]
pub(crate) struct AssetSettings {
    /// The mount prefix without a trailing slash.
    pub(crate) mount: String,
    pub(crate) folders: Vec<PathBuf>,
    pub(crate) version: AssetVersion,
    pub(crate) prod: bool,
    pub(crate) manifest: Option<AssetManifest>,
}

struct AssetsInner {
    /// The settings while the layer's builder may still change them; taken when they are fixed.
    open: Mutex<Option<AssetSettings>>,
    settings: OnceLock<AssetSettings>,
    /// Hashes computed on demand, checked against the file's metadata on every use.
    hashes: Mutex<HashMap<String, (Fingerprint, u64)>>,
}

impl Assets {
    /// Asset URLs under `mount` for files in `folders`. Versions are added only when `prod`.
    pub fn new(mount: &str, folders: Vec<PathBuf>, version: AssetVersion, prod: bool) -> Self {
        Assets::with_manifest(mount, folders, version, prod, None)
    }

    pub(crate) fn with_manifest(
        mount: &str,
        folders: Vec<PathBuf>,
        version: AssetVersion,
        prod: bool,
        manifest: Option<AssetManifest>,
    ) -> Self {
        Assets::open(AssetSettings {
            mount: mount.trim_end_matches('/').to_string(),
            folders,
            version,
            prod,
            manifest,
        })
    }

    /// A handle whose settings [`Assets::reconfigure`] may still replace.
    pub(crate) fn open(settings: AssetSettings) -> Self {
        let inner = AssetsInner {
            open: Mutex::new(Some(settings)),
            settings: OnceLock::new(),
            hashes: Mutex::default(),
        };
        Assets {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the settings, unless they are fixed already (then returns false).
    pub(crate) fn reconfigure(&self, settings: AssetSettings) -> bool {
        let mut open = lock(&self.inner.open);
        match open.as_mut() {
            Some(current) => {
                *current = settings;
                true
            }
            None => false,
        }
    }

    /// The settings, fixed from the first call on.
    fn settings(&self) -> &AssetSettings {
        self.inner
            .settings
            .get_or_init(|| lock(&self.inner.open).take().unwrap_or_default())
    }

    /// The URL of the asset at `logical` (relative to the served folders, with or without a
    /// leading `/`). In development it is the plain path; in production it carries the version.
    /// A missing file, or a path that could leave the folders, gets its plain URL.
    pub fn url(&self, logical: &str) -> String {
        let inner = self.settings();
        let relative = logical.trim_start_matches('/');
        let plain = || {
            format!(
                "{}/{}",
                inner.mount,
                utf8_percent_encode(relative, URL_PATH)
            )
        };
        if !inner.prod {
            return plain();
        }
        match &inner.version {
            AssetVersion::None => plain(),
            AssetVersion::Query(version) => format!("{}?{version}", plain()),
            AssetVersion::ContentHash => {
                let versioned = match inner.manifest.as_ref().and_then(|m| m.get(relative)) {
                    Some(versioned) => versioned.to_string(),
                    None => match self.current_hash(relative) {
                        Some(hash) => hashed_name(relative, hash),
                        None => return plain(),
                    },
                };
                format!(
                    "{}/{}",
                    inner.mount,
                    utf8_percent_encode(&versioned, URL_PATH)
                )
            }
        }
    }

    /// The version scheme.
    pub fn version(&self) -> &AssetVersion {
        &self.settings().version
    }

    fn current_hash(&self, relative: &str) -> Option<u64> {
        let rooted = format!("/{relative}");
        let safe = sanitize(&rooted, false).ok()?;
        let (path, metadata) = self
            .settings()
            .folders
            .iter()
            .map(|folder| folder.join(safe.relative()))
            .find_map(|path| {
                fs::metadata(&path)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| (path, m))
            })?;
        let fingerprint = Fingerprint::of(&metadata);
        let mut hashes = lock(&self.inner.hashes);
        if let Some((known, hash)) = hashes.get(relative) {
            if *known == fingerprint {
                return Some(*hash);
            }
        }
        let hash = hash_file(&path).ok()?;
        hashes.insert(relative.to_string(), (fingerprint, hash));
        Some(hash)
    }

    /// A Tera filter `asset`: `{{ "/vendor/jquery.min.js" | asset }}`.
    #[cfg(feature = "tera")]
    pub fn register_tera(&self, tera: &mut tera::Tera) {
        tera.register_filter("asset", TeraAssetFilter(self.clone()));
    }

    /// A minijinja function `asset`: `{{ asset("/vendor/jquery.min.js") }}`, also registered as
    /// a filter so Kalgan templates (`{{ "/x.js" | asset }}`) render unchanged.
    #[cfg(feature = "minijinja")]
    pub fn register_minijinja(&self, env: &mut minijinja::Environment<'_>) {
        let assets = self.clone();
        let render = move |path: &str| minijinja::Value::from_safe_string(assets.url(path));
        env.add_function("asset", render.clone());
        env.add_filter("asset", render);
    }
}

impl std::fmt::Debug for Assets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Printing must not fix the settings, so it reads them wherever they are.
        let open = lock(&self.inner.open).clone();
        let Some(settings) = open.as_ref().or(self.inner.settings.get()) else {
            return f.debug_struct("Assets").finish_non_exhaustive();
        };
        f.debug_struct("Assets")
            .field("mount", &settings.mount)
            .field("version", &settings.version)
            .field("prod", &settings.prod)
            .finish()
    }
}

#[cfg(feature = "tera")]
struct TeraAssetFilter(Assets);

#[cfg(feature = "tera")]
impl tera::Filter for TeraAssetFilter {
    fn filter(
        &self,
        value: &tera::Value,
        _: &HashMap<String, tera::Value>,
    ) -> tera::Result<tera::Value> {
        let path = value
            .as_str()
            .ok_or_else(|| tera::Error::msg("the `asset` filter takes a string path"))?;
        Ok(tera::Value::String(self.0.url(path)))
    }

    // The URL is percent-encoded, so HTML escaping would only turn `/` into `&#x2F;`.
    fn is_safe(&self) -> bool {
        true
    }
}

/// A lock that a panic elsewhere does not poison: both maps stay valid after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The short content hash used in versioned names.
pub(crate) fn short_hash(hash: u64) -> String {
    format!("{:08x}", hash >> 32)
}

/// `vendor/app.min.js` -> `vendor/app.min.3f2a9c1e.js`; `LICENSE` -> `LICENSE.3f2a9c1e`.
fn hashed_name(relative: &str, hash: u64) -> String {
    let short = short_hash(hash);
    let name_start = relative.rfind('/').map_or(0, |i| i + 1);
    match relative[name_start..].rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => {
            let dot = name_start + dot;
            format!("{}.{short}{}", &relative[..dot], &relative[dot..])
        }
        None => format!("{relative}.{short}"),
    }
}

/// The reverse of [`hashed_name`]: the logical path and the hash, when `key` has that shape.
pub(crate) fn split_hashed(key: &str) -> Option<(String, &str)> {
    let name_start = key.rfind('/').map_or(0, |i| i + 1);
    let name = &key[name_start..];
    let is_hash =
        |text: &str| text.len() == HASH_DIGITS && text.bytes().all(|b| b.is_ascii_hexdigit());
    // `stem.HASH.ext`
    if let Some(ext_dot) = name.rfind('.') {
        let stem = &name[..ext_dot];
        if let Some(hash_dot) = stem
            .rfind('.')
            .filter(|&d| d > 0 && is_hash(&stem[d + 1..]))
        {
            let hash = &stem[hash_dot + 1..];
            let logical = format!(
                "{}{}{}",
                &key[..name_start],
                &stem[..hash_dot],
                &name[ext_dot..]
            );
            return Some((logical, hash));
        }
        // `name.HASH` (a file without extension)
        let hash = &name[ext_dot + 1..];
        if ext_dot > 0 && is_hash(hash) {
            return Some((format!("{}{}", &key[..name_start], &name[..ext_dot]), hash));
        }
    }
    None
}

/// Logical path -> versioned path for every file, written at build time and loaded at start so
/// that production never hashes a file to render a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetManifest {
    entries: BTreeMap<String, String>,
}

impl AssetManifest {
    /// Hashes every file under `folders` (earlier folders win, dotfiles and precompressed
    /// siblings are skipped).
    pub fn build<P: AsRef<Path>>(folders: &[P]) -> io::Result<Self> {
        let mut entries = BTreeMap::new();
        for folder in folders {
            let mut files = Vec::new();
            collect_files(folder.as_ref(), String::new(), &mut files)?;
            for (relative, path) in files {
                if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(relative) {
                    let versioned = hashed_name(slot.key(), hash_file(&path)?);
                    slot.insert(versioned);
                }
            }
        }
        Ok(AssetManifest { entries })
    }

    /// The versioned path of `logical` (without a leading slash).
    pub fn get(&self, logical: &str) -> Option<&str> {
        self.entries
            .get(logical.trim_start_matches('/'))
            .map(String::as_str)
    }

    /// Number of files listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Writes the manifest as JSON.
    pub fn write(&self, path: impl AsRef<Path>) -> io::Result<()> {
        fs::write(path, self.to_json())
    }

    /// Reads a manifest written by [`AssetManifest::write`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let error = |cause: Box<dyn std::error::Error + Send + Sync>| {
            let reason = format!("cannot load {}: {cause}", path.display());
            ConfigError::new("manifest", reason).with_source(cause)
        };
        let text = fs::read_to_string(path).map_err(|e| error(e.into()))?;
        serde_json::from_str(&text).map_err(|e| error(e.into()))
    }
}

fn collect_files(dir: &Path, prefix: String, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let is_sibling = [".br", ".gz", ".zst"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if name.starts_with('.') || is_sibling {
            continue;
        }
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = item.file_type()?;
        if file_type.is_dir() {
            collect_files(&item.path(), relative, out)?;
        } else {
            out.push((relative, item.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_version_matches_kalgan() {
        let assets = Assets::new("/static", vec![], AssetVersion::Query("v001".into()), true);
        assert_eq!(
            assets.url("/vendor/jquery/dist/jquery.min.js"),
            "/static/vendor/jquery/dist/jquery.min.js?v001"
        );
        let dev = Assets::new("/static", vec![], AssetVersion::Query("v001".into()), false);
        assert_eq!(
            dev.url("/vendor/jquery/dist/jquery.min.js"),
            "/static/vendor/jquery/dist/jquery.min.js"
        );
    }

    #[test]
    fn rendered_urls_are_html_safe() {
        let assets = Assets::new("/static/", vec![], AssetVersion::None, true);
        assert_eq!(
            assets.url("a b/\"><script>.js"),
            "/static/a%20b/%22%3E%3Cscript%3E.js"
        );
    }

    #[test]
    fn hashed_names_round_trip() {
        let hash = 0x3f2a_9c1e_0000_0000;
        assert_eq!(
            hashed_name("vendor/app.min.js", hash),
            "vendor/app.min.3f2a9c1e.js"
        );
        assert_eq!(hashed_name("LICENSE", hash), "LICENSE.3f2a9c1e");
        assert_eq!(hashed_name(".well-known/x", hash), ".well-known/x.3f2a9c1e");
        assert_eq!(
            split_hashed("vendor/app.min.3f2a9c1e.js"),
            Some(("vendor/app.min.js".into(), "3f2a9c1e"))
        );
        assert_eq!(
            split_hashed("LICENSE.3f2a9c1e"),
            Some(("LICENSE".into(), "3f2a9c1e"))
        );
        assert_eq!(split_hashed("vendor/app.min.js"), None);
        assert_eq!(split_hashed("app.3f2a9c1.js"), None);
    }

    #[test]
    fn content_hash_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("app.js"), "one").unwrap();
        let assets = Assets::new(
            "/static",
            vec![dir.path().into()],
            AssetVersion::ContentHash,
            true,
        );
        let first = assets.url("/app.js");
        assert!(
            first.starts_with("/static/app.") && first.ends_with(".js") && first.len() == 23,
            "{first}"
        );
        assert_eq!(assets.url("app.js"), first);
        fs::write(dir.path().join("app.js"), "two, longer").unwrap();
        assert_ne!(assets.url("/app.js"), first);
        assert_eq!(assets.url("/missing.js"), "/static/missing.js");
        assert_eq!(
            assets.url("/../etc/passwd"),
            "/static/../etc/passwd",
            "never hashed, never read"
        );
    }

    #[test]
    fn manifest_builds_writes_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("css")).unwrap();
        fs::write(dir.path().join("css/site.css"), "body{}").unwrap();
        fs::write(dir.path().join("css/site.css.gz"), "x").unwrap();
        fs::write(dir.path().join(".env"), "secret").unwrap();
        let manifest = AssetManifest::build(&[dir.path()]).unwrap();
        assert_eq!(manifest.len(), 1);
        let versioned = manifest.get("/css/site.css").unwrap().to_string();
        assert!(versioned.starts_with("css/site.") && versioned.ends_with(".css"));
        let file = dir.path().join("manifest.json");
        manifest.write(&file).unwrap();
        assert_eq!(AssetManifest::load(&file).unwrap(), manifest);
        let assets = Assets::with_manifest(
            "/static",
            vec![],
            AssetVersion::ContentHash,
            true,
            Some(manifest),
        );
        assert_eq!(assets.url("/css/site.css"), format!("/static/{versioned}"));
    }
}
