//! [`StaticConfig`], the serde configuration, and the value rules it shares with the builder.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use proxflow_core::ConfigError;

/// Everything a [`StaticLayer`](crate::StaticLayer) can be told, as read from YAML, TOML or
/// JSON.
///
/// The names are Kalgan's, so the `static` section of a Kalgan settings file reads as it is:
/// `static.path`, `static.folders` and `static.version` keep their names and meaning, and
/// Kalgan's `environment.is_prod` is the field `is_prod` here. `spa` and `listing` are what
/// Caflax calls `--spa` and its directory listing. Unknown fields are refused, so a misspelt
/// name is an error rather than a default.
///
/// Every field has a default, so `{}` is a valid config:
///
/// ```
/// use proxflow_static::StaticConfig;
///
/// let config: StaticConfig = serde_yaml::from_str(
///     "path: /static\nfolders: [public]\nversion: v001\nis_prod: true\n",
/// )
/// .unwrap();
/// assert_eq!(config.version.as_deref(), Some("v001"));
/// assert_eq!(config.cache_max_bytes, 64 * 1024 * 1024);
/// assert_eq!(serde_yaml::from_str::<StaticConfig>("{}").unwrap(), StaticConfig::default());
/// ```
///
/// Values of the wrong type are refused by the deserializer, which names the field (YAML,
/// TOML) or the position (JSON); values of the right type that the layer cannot run with are
/// refused by [`validate`](StaticConfig::validate), which
/// [`StaticLayer::from_config`](crate::StaticLayer::from_config) calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticConfig {
    /// URL prefix the files are served under (Kalgan `static.path`). Default `"/static"`.
    pub path: String,
    /// Folders to serve, searched in order for each request (Kalgan `static.folders`).
    /// Default `["public"]`.
    pub folders: Vec<PathBuf>,
    /// Query-string version appended to asset URLs in production (Kalgan `static.version`),
    /// e.g. `"v001"` renders `/static/app.js?v001`. Default: none.
    pub version: Option<String>,
    /// Version asset URLs by a hash of each file's contents instead (`app.3f2a9c1e.js`).
    /// Default `false`. Cannot be combined with `version`.
    pub content_hash: bool,
    /// A manifest written at build time (logical path -> versioned path) to load at start.
    pub manifest: Option<PathBuf>,
    /// Production mode (Kalgan `environment.is_prod`): memory cache, long-lived caching of
    /// versioned URLs, versioned asset URLs. Default `false` (development: `no-cache`, every
    /// request reads the disk).
    pub is_prod: bool,
    /// Serve `index.html` for missing paths that look like routes: no extension on the last
    /// segment, no dot-directory (Caflax `--spa`). Default `false`.
    pub spa: bool,
    /// Path prefixes that never get the SPA fallback, compared with the full request path
    /// (mount prefix included). Default `["/api"]`.
    pub spa_exclude: Vec<String>,
    /// The file served for a directory. Default `"index.html"`.
    pub index: String,
    /// List directories without an index, as HTML or JSON. Default `false`.
    pub listing: bool,
    /// A page (relative to the first folder) sent with status 404. Default: a short text body.
    pub not_found_page: Option<PathBuf>,
    /// Serve `.br`, `.zst` and `.gz` siblings. Default `true`.
    pub precompressed: bool,
    /// Production mode: compress compressible files once in memory when no sibling exists.
    /// Default `true`.
    pub compress: bool,
    /// Development mode: compress compressible files on each request, as production does
    /// once, so that each coding has its own ETag and 304, 206 and HEAD answer for the coding
    /// the 200 would send. Files larger than `cache_max_file_size` are sent uncompressed.
    /// Takes effect only with `compress`. Default `false`.
    pub compress_in_development: bool,
    /// Production mode: bytes the memory cache may hold. Default 64 MiB.
    pub cache_max_bytes: u64,
    /// Production mode: larger files are streamed from disk, not cached. Default 1 MiB.
    pub cache_max_file_size: u64,
    /// Production mode: how stale cached metadata may be before the file is checked again,
    /// e.g. `"1s"`. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub revalidate_interval: Duration,
    /// Production mode: at each revalidation, also read and hash every file held in memory and
    /// compare it with the cached bytes, to notice an edit that keeps the size and puts the
    /// modification time back. Costs a read of the whole file per revalidation. Default `false`
    /// (size and modification time only).
    pub revalidate_by_content: bool,
    /// `max-age` for unversioned URLs in production, e.g. `"10m"`. Default: none, which sends
    /// `no-cache` (always revalidate).
    #[serde(with = "humantime_serde")]
    pub unversioned_max_age: Option<Duration>,
    /// Serve symlinks that resolve outside the folder. Default `false`.
    pub follow_symlinks_outside: bool,
    /// Serve dotfiles; `/.well-known/` is served either way. Default `false`.
    pub dotfiles: bool,
    /// Pass methods other than GET and HEAD to the inner service instead of answering 405.
    /// Default `false`.
    pub pass_other_methods: bool,
    /// Pass requests for missing files to the inner service instead of answering 404.
    /// Default `false`.
    pub fallthrough: bool,
    /// More ranges than this in one `Range` header and the whole file is sent. Default 16.
    pub max_ranges: usize,
}

impl Default for StaticConfig {
    fn default() -> Self {
        StaticConfig {
            path: "/static".into(),
            folders: vec![PathBuf::from("public")],
            version: None,
            content_hash: false,
            manifest: None,
            is_prod: false,
            spa: false,
            spa_exclude: vec!["/api".into()],
            index: "index.html".into(),
            listing: false,
            not_found_page: None,
            precompressed: true,
            compress: true,
            compress_in_development: false,
            cache_max_bytes: 64 * 1024 * 1024,
            cache_max_file_size: 1024 * 1024,
            revalidate_interval: Duration::from_secs(1),
            revalidate_by_content: false,
            unversioned_max_age: None,
            follow_symlinks_outside: false,
            dotfiles: false,
            pass_other_methods: false,
            fallthrough: false,
            max_ranges: 16,
        }
    }
}

impl StaticConfig {
    /// Checks every field; the error names the first bad one.
    ///
    /// [`StaticLayer::from_config`](crate::StaticLayer::from_config) calls it; the builder
    /// methods apply the same rules and panic instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |name, check: Result<(), String>| {
            check.map_err(|reason| ConfigError::new(name, reason))
        };
        field("path", check::mount(&self.path))?;
        if self.folders.is_empty() {
            return Err(ConfigError::new("folders", "needs at least one folder"));
        }
        if let Some(version) = &self.version {
            field("version", check::version(version))?;
            if self.content_hash {
                return Err(ConfigError::new(
                    "version",
                    "cannot be combined with `content_hash`",
                ));
            }
        }
        field("index", check::index(&self.index))?;
        if let Some(page) = &self.not_found_page {
            field("not_found_page", check::not_found_page(page))?;
        }
        field(
            "cache_max_file_size",
            check::cache_sizes(self.cache_max_bytes, self.cache_max_file_size),
        )?;
        field(
            "revalidate_interval",
            check::revalidate_interval(self.revalidate_interval),
        )?;
        field("max_ranges", check::max_ranges(self.max_ranges))?;
        for prefix in &self.spa_exclude {
            field("spa_exclude", check::spa_exclude(prefix))?;
        }
        for folder in &self.folders {
            std::fs::read_dir(folder).map_err(|source| {
                let reason = format!("cannot use {}: {source}", folder.display());
                ConfigError::new("folders", reason).with_source(source)
            })?;
        }
        Ok(())
    }
}

/// The rules of single values, shared by [`StaticConfig::validate`] (which names the field)
/// and the builder methods of [`StaticLayer`](crate::StaticLayer) (which panic). Each returns
/// what is allowed when the value is refused.
pub(crate) mod check {
    use std::path::Path;
    use std::time::Duration;

    use crate::path::sanitize;

    pub(crate) fn mount(path: &str) -> Result<(), String> {
        if !path.starts_with('/') || path.contains(['?', '#', '\\']) {
            return Err(format!(
                "must start with `/` and hold no `?`, `#` or `\\`; got {path:?}"
            ));
        }
        Ok(())
    }

    pub(crate) fn version(version: &str) -> Result<(), String> {
        let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~=".contains(c);
        if version.is_empty() || !version.chars().all(url_safe) {
            return Err(format!(
                "must be non-empty and use only letters, digits and `-._~=`; got {version:?}"
            ));
        }
        Ok(())
    }

    pub(crate) fn index(name: &str) -> Result<(), String> {
        if name.is_empty() || name.contains(['/', '\\']) {
            return Err(format!(
                "must be a file name without separators; got {name:?}"
            ));
        }
        Ok(())
    }

    pub(crate) fn not_found_page(page: &Path) -> Result<(), String> {
        let inside = page.to_str().is_some_and(|text| {
            let rooted = format!("/{}", text.trim_start_matches('/'));
            sanitize(&rooted, true).is_ok_and(|path| !path.trailing_slash)
        });
        if !inside {
            return Err(format!(
                "must name a file inside the folders, without `..`, `\\` or `:`; got {page:?}"
            ));
        }
        Ok(())
    }

    pub(crate) fn cache_sizes(max_bytes: u64, max_file_size: u64) -> Result<(), String> {
        if max_file_size > max_bytes {
            return Err(format!(
                "must not exceed `cache_max_bytes` ({max_bytes}); got {max_file_size}"
            ));
        }
        Ok(())
    }

    pub(crate) fn revalidate_interval(interval: Duration) -> Result<(), String> {
        if interval.is_zero() {
            return Err("must be positive, e.g. \"1s\"".into());
        }
        Ok(())
    }

    pub(crate) fn max_ranges(max: usize) -> Result<(), String> {
        if max == 0 {
            return Err("must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn spa_exclude(prefix: &str) -> Result<(), String> {
        if !prefix.starts_with('/') {
            return Err(format!("{prefix:?} must start with `/`"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_yaml_and_toml() {
        let json: StaticConfig =
            serde_json::from_str(r#"{"path":"/assets","revalidate_interval":"2s","is_prod":true,"revalidate_by_content":true}"#)
                .unwrap();
        assert_eq!(json.path, "/assets");
        assert_eq!(json.revalidate_interval, Duration::from_secs(2));
        assert!(json.revalidate_by_content);
        assert!(!StaticConfig::default().revalidate_by_content);
        let yaml: StaticConfig =
            serde_yaml::from_str("version: v001\nunversioned_max_age: 10m\n").unwrap();
        assert_eq!(yaml.version.as_deref(), Some("v001"));
        assert_eq!(yaml.unversioned_max_age, Some(Duration::from_secs(600)));
        let toml: StaticConfig = toml::from_str("folders = [\"a\", \"b\"]\nspa = true\n").unwrap();
        assert_eq!(toml.folders.len(), 2);
        assert!(toml.spa);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<StaticConfig>(r#"{"folder":"x"}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `folder`"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let base = StaticConfig {
            folders: vec![dir.path().into()],
            ..StaticConfig::default()
        };
        assert!(base.validate().is_ok());
        let cases = [
            (
                StaticConfig {
                    path: "static".into(),
                    ..base.clone()
                },
                "`path`",
            ),
            (
                StaticConfig {
                    version: Some("v 1".into()),
                    ..base.clone()
                },
                "`version`",
            ),
            (
                StaticConfig {
                    version: Some("v1".into()),
                    content_hash: true,
                    ..base.clone()
                },
                "`version`",
            ),
            (
                StaticConfig {
                    cache_max_file_size: u64::MAX,
                    ..base.clone()
                },
                "`cache_max_file_size`",
            ),
            (
                StaticConfig {
                    max_ranges: 0,
                    ..base.clone()
                },
                "`max_ranges`",
            ),
            (
                StaticConfig {
                    folders: vec!["/no/such/dir".into()],
                    ..base.clone()
                },
                "`folders`",
            ),
            (
                StaticConfig {
                    spa_exclude: vec!["api".into()],
                    ..base.clone()
                },
                "`spa_exclude`",
            ),
        ];
        for (config, field) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.starts_with(field), "{message}");
        }
    }
}
