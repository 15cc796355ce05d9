//! The gateway's configuration file: a section per layer, each that layer's own configuration
//! type, in YAML or TOML; the embedded default; and errors that name the file, the line and
//! the field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxflow_breaker::BreakerConfig;
use proxflow_cache::CacheConfig;
use proxflow_lb::LbConfig;
use proxflow_ratelimit::RateLimitConfig;
use proxflow_static::StaticConfig;
use proxflow_transform::TransformConfig;
use serde::{Deserialize, Serialize};

/// The embedded default.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// The embedded default as `--print-default-config` writes it: the site's folders as
/// absolute paths, so that the file works wherever it is saved.
pub fn default_yaml_for_a_file() -> String {
    let package = env!("CARGO_MANIFEST_DIR");
    DEFAULT_YAML
        .replace("templates: site/", &format!("templates: {package}/site/"))
        .replace("folders: [site/", &format!("folders: [{package}/site/"))
}

/// The whole configuration. Every section is optional in a file and defaults to that layer's
/// own defaults (not to the embedded file's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// `host:port` to listen on. Default `127.0.0.1:3000`.
    pub listen: String,
    /// The example site's templates.
    pub site: SiteConfig,
    /// proxflow-static, for the site's files.
    #[serde(rename = "static")]
    pub statics: StaticConfig,
    /// proxflow-ratelimit, on `/api`.
    pub rate_limit: RateLimitConfig,
    /// proxflow-breaker, one per upstream, on `/api`.
    pub circuit_breaker: BreakerConfig,
    /// proxflow-lb, on `/api`; the demo upstreams are added to its `upstreams`.
    pub lb: LbConfig,
    /// proxflow-cache, on `/api`.
    pub cache: CacheConfig,
    /// proxflow-transform, on `/api`.
    pub transform: TransformConfig,
    /// The live dashboard.
    pub traffic_dashboard: DashboardConfig,
    /// Upstreams started in this process.
    pub demo_upstreams: Vec<DemoUpstreamConfig>,
    /// The per-request log line.
    pub access_log: AccessLogConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:3000".into(),
            site: SiteConfig::default(),
            statics: StaticConfig::default(),
            rate_limit: RateLimitConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            lb: LbConfig::default(),
            cache: CacheConfig::default(),
            transform: TransformConfig::default(),
            traffic_dashboard: DashboardConfig::default(),
            demo_upstreams: Vec::new(),
            access_log: AccessLogConfig::default(),
        }
    }
}

/// `site`: where the templates are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// The folder of `index.html`. Default `site/templates`.
    pub templates: PathBuf,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            templates: PathBuf::from("site/templates"),
        }
    }
}

/// `traffic_dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Where the page is; its figures are at `<path>/stats` (JSON) and `<path>/events`
    /// (Server-Sent Events). Default `/dashboard`.
    pub path: String,
    /// How often the figures are sent. Default 1s.
    #[serde(with = "humantime_serde")]
    pub update_interval: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            path: "/dashboard".into(),
            update_interval: Duration::from_secs(1),
        }
    }
}

/// One demo upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUpstreamConfig {
    /// Its name (in its answers, on the dashboard, in the admin endpoint).
    pub name: String,
    /// How long it takes to answer. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
    /// The share of its answers that are 503s, 0 to 1. Default 0.
    #[serde(default)]
    pub failure_rate: f64,
}

/// `access_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Whether each request gets a line. Default on.
    pub enabled: bool,
    /// `plain` (the default) or `json`.
    pub format: LogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Plain,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text, coloured only on a terminal.
    Plain,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot be used: the file, the line when known, the field, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFileError {
    /// The file (`<embedded default>` for the embedded one).
    pub file: String,
    /// The line, from 1, when it can be told.
    pub line: Option<usize>,
    /// The field, dotted (`rate_limit.burst`), when it can be told.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// A configuration and where it came from: relative paths in it are read from `base`.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: GatewayConfig,
    /// Its text, to find the line of a field a layer refuses.
    text: String,
    /// `yaml` or `toml`.
    toml: bool,
    /// The file's name, for errors.
    pub file: String,
    /// The folder relative paths are read from.
    pub base: PathBuf,
}

impl Loaded {
    /// The embedded default, its paths read from this package's folder.
    pub fn embedded() -> Loaded {
        Loaded::parse(
            DEFAULT_YAML,
            false,
            "<embedded default>",
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
        .expect("the embedded default parses")
    }

    /// The file at `path`: TOML when its name ends in `.toml`, YAML otherwise.
    pub fn from_file(path: &Path) -> Result<Loaded, ConfigFileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError {
            file: file.clone(),
            line: None,
            field: None,
            message: error.to_string(),
        })?;
        let toml = path.extension().is_some_and(|e| e == "toml");
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Loaded::parse(&text, toml, &file, base)
    }

    /// Parses `text`, YAML or TOML.
    pub fn parse(
        text: &str,
        toml: bool,
        file: &str,
        base: &Path,
    ) -> Result<Loaded, ConfigFileError> {
        let parsed = if toml {
            toml::from_str::<GatewayConfig>(text).map_err(|error| {
                let line = error
                    .span()
                    .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
                (line, error.message().to_string())
            })
        } else {
            serde_yaml::from_str::<GatewayConfig>(text).map_err(|error| {
                let line = error.location().map(|at| at.line());
                // serde_yaml appends " at line N column M": the line is given apart.
                let message = error.to_string();
                let message = match message.find(" at line ") {
                    Some(at) => message[..at].to_string(),
                    None => message,
                };
                (line, message)
            })
        };
        match parsed {
            Ok(config) => Ok(Loaded {
                config,
                text: text.to_string(),
                toml,
                file: file.to_string(),
                base: base.to_path_buf(),
            }),
            Err((line, message)) => Err(ConfigFileError {
                file: file.to_string(),
                line,
                field: field_of(&message),
                message,
            }),
        }
    }

    /// The error for `section`'s field `field` (as a layer's `ConfigError` names it).
    pub fn refused(&self, section: &str, field: &str, message: String) -> ConfigFileError {
        let mut path = vec![section];
        path.extend(field.split('.').filter(|part| !part.is_empty()));
        ConfigFileError {
            file: self.file.clone(),
            line: if self.toml {
                toml_line(&self.text, &path)
            } else {
                yaml_line(&self.text, &path)
            },
            field: Some(path.join(".")),
            message,
        }
    }

    /// `path` as the configuration means it: relative to the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// The field serde names in its message (`unknown field `x``, `missing field `y``).
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// The line of the deepest key of `path` found in YAML `text` (a section, then a key
/// indented under it, and so on); the section's line when a deeper key is not written.
fn yaml_line(text: &str, path: &[&str]) -> Option<usize> {
    let mut found = None;
    let mut depth = 0;
    let mut indent_of_parent: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent_of_parent.is_some_and(|parent| indent <= parent) {
            break;
        }
        let key = trimmed.trim_start_matches("- ");
        let want = path[depth];
        if key.starts_with(&format!("{want}:")) || key.starts_with(&format!("{want} :")) {
            found = Some(number + 1);
            indent_of_parent = Some(indent);
            depth += 1;
            if depth == path.len() {
                break;
            }
        }
    }
    found
}

/// As [`yaml_line`] for TOML: the `[section]` table, then `key =` in it.
fn toml_line(text: &str, path: &[&str]) -> Option<usize> {
    let mut found = None;
    let mut in_section = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed.trim_matches(['[', ']']).trim() == path[0]
                || trimmed
                    .trim_matches(['[', ']'])
                    .starts_with(&format!("{}.", path[0]));
            if in_section && found.is_none() {
                found = Some(number + 1);
            }
            continue;
        }
        if in_section {
            if let Some(last) = path.last() {
                if trimmed.starts_with(&format!("{last} "))
                    || trimmed.starts_with(&format!("{last}="))
                {
                    return Some(number + 1);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_parses_and_a_bad_file_names_its_line_and_field() {
        let embedded = Loaded::embedded();
        assert_eq!(embedded.config.listen, "127.0.0.1:3000");
        assert_eq!(embedded.config.demo_upstreams.len(), 3);
        let printed = default_yaml_for_a_file();
        let elsewhere = Loaded::parse(&printed, false, "copy.yaml", Path::new("/tmp")).unwrap();
        assert!(elsewhere.config.statics.folders[0].is_absolute());
        assert!(elsewhere.config.site.templates.is_absolute());

        let text = "listen: 127.0.0.1:1\nrate_limit:\n  rate: 10\n  brust: 3\n";
        let error = Loaded::parse(text, false, "g.yaml", Path::new(".")).unwrap_err();
        assert_eq!(
            (error.line, error.field.as_deref()),
            (Some(4), Some("brust")),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("g.yaml:4: brust: "),
            "{error}"
        );

        let text = "listen = \"x\"\n[rate_limit]\nrate = \"ten\"\n";
        let error = Loaded::parse(text, true, "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
    }

    #[test]
    fn a_field_a_layer_refuses_is_found_in_the_text() {
        let text = "rate_limit:\n  rate: 10\n  burst: 0\ncache:\n  max_size: 0\n";
        let loaded = Loaded::parse(text, false, "g.yaml", Path::new(".")).unwrap();
        let error = loaded.refused("cache", "max_size", "at least 1".into());
        assert_eq!(error.to_string(), "g.yaml:5: cache.max_size: at least 1");
        let error = loaded.refused("rate_limit", "burst", "at least 1".into());
        assert_eq!(error.line, Some(3));
        let error = loaded.refused("lb", "upstreams", "none".into());
        assert_eq!(error.line, None, "not written: no line");

        let text = "[cache]\nmax_size = 0\n";
        let loaded = Loaded::parse(text, true, "g.toml", Path::new(".")).unwrap();
        assert_eq!(
            loaded.refused("cache", "max_size", "x".into()).line,
            Some(2)
        );
    }
}
