//! The serde configuration: the rules of a [`TransformLayer`](crate::TransformLayer) as a file
//! writes them, in JSON, YAML or TOML.
//!
//! ```
//! use proxflow_transform::{TransformConfig, TransformLayer};
//!
//! let config: TransformConfig = serde_yaml::from_str(r#"
//! request:
//!   headers:
//!     - add: {name: X-API-Version, value: v1}
//! response:
//!   body:
//!     - replace: {path: user.name, value: enriched}
//!       when: {path_prefix: /api/users, statuses: [200]}
//! "#)?;
//! let layer = TransformLayer::from_config(&config)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each rule is a map of one verb and, optionally, `when` (and for headers
//! `allow_protected: true`). Header verbs: `add`, `set`, `append` (`{name, value}`, the value a
//! template), `delete` (`{name}`), `rename` (`{name, to}`). Body verbs: the RFC 6902 ones,
//! `add`, `remove`, `replace`, `test` (`{path, value}`, `remove` without `value`), `move` (also
//! `rename`) and `copy` (`{from, path}`); and `set` (`{path, value}`), `delete` (`{path}`),
//! `append`, `prepend` (`{path, value, promote}`), `allow`, `deny` (`{paths}`). Paths are dotted
//! or JSON Pointers. Where a body verb takes a `value` (a JSON literal), it can take a
//! `template` instead (as in header rules, `{method} {path} {client_ip} {header.X} {query.x}`),
//! written as a JSON string. `when` holds `methods`, `path_prefix`, `path_glob` (`*` within a
//! segment, `**` across), `header` (`{name, value}`), `content_type` and `statuses`.

use http::{Method, StatusCode, Uri};
use proxflow_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use crate::aggregate::{Aggregation, Combine};
use crate::client::Client;
use crate::enrich::{Enrichment, OnFailure};
use crate::headers::{parse_name, HeaderRule, HeaderVerb, Template};
use crate::patch::Operation;
use crate::pointer::Path;
use crate::query::{QueryRule, QueryVerb};
use crate::rules::{BodyRule, BodyStep};
use crate::{PathGlob, When};

/// Everything a transform layer can be told. `{}` is valid: no rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformConfig {
    /// The rules on requests.
    pub request: Side,
    /// The rules on responses.
    pub response: Side,
    /// The most bytes of a body held to transform it. Default 1 MiB (1048576).
    pub max_body_size: Option<usize>,
    /// Whether `gzip`, `deflate`, `br` and `zstd` JSON bodies are decoded, transformed and
    /// encoded again. Default `false` (they pass untouched).
    pub decode_content: bool,
    /// Whether a request body over `max_body_size` passes untouched instead of getting 413.
    /// Default `false`.
    pub pass_large_requests: bool,
    /// Endpoints the layer answers itself from several backends (through the client given to
    /// [`TransformLayer::from_config_with_client`](crate::TransformLayer::from_config_with_client)).
    pub aggregate: Vec<AggregateConfig>,
}

/// The rules of one direction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Side {
    /// Header rules, in order.
    pub headers: Vec<HeaderRuleConfig>,
    /// Query rules, in order (requests only), written as header rules are: `name` is the
    /// parameter.
    pub query: Vec<HeaderRuleConfig>,
    /// JSON body rules, in order, applied as one set.
    pub body: Vec<BodyRuleConfig>,
    /// Enrichments of JSON bodies, after the body rules.
    pub enrich: Vec<EnrichConfig>,
}

/// An enrichment as written: `data`, and the object `from_url` answers, merged at `target`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// Static members merged.
    pub data: Map<String, Value>,
    /// A URL whose JSON object is merged too (needs a client).
    pub from_url: Option<String>,
    /// Where the merge goes (dotted or a pointer). Default: the top of the body.
    pub target: Option<String>,
    /// How long the URL has. Default 2s.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// What to do when the URL gives nothing: `skip` (the default) or `bad_gateway`.
    pub on_failure: OnFailure,
    /// How long the URL's answer is kept. Default: fetched for each body.
    #[serde(with = "humantime_serde")]
    pub keep_answer_for: Option<Duration>,
    /// When it applies.
    pub when: WhenConfig,
}

/// An aggregated endpoint as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The backends, each `{name, url}`, in order (a later one wins a merge).
    pub backends: Vec<BackendConfig>,
    /// `merge` (the default), `array` or `group`.
    #[serde(default)]
    pub combine: Combine,
    /// How long each backend has. Default 2s.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The most backends called at once. Default 8.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// Which requests it answers.
    pub when: WhenConfig,
}

/// One backend of an aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Its name (the key of its answer in `combine: group`).
    pub name: String,
    /// Its URL.
    pub url: String,
}

/// A header rule as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderRuleConfig {
    /// The verb and its fields.
    #[serde(flatten)]
    pub verb: HeaderVerbConfig,
    /// When it applies. Default: always.
    #[serde(default)]
    pub when: WhenConfig,
    /// Allows a protected header (`Host`, `Content-Length`, the connection's own).
    #[serde(default)]
    pub allow_protected: bool,
}

/// A header verb as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderVerbConfig {
    /// Only if absent.
    Add {
        /// The header.
        name: String,
        /// A template.
        value: String,
    },
    /// Replace or add.
    Set {
        /// The header.
        name: String,
        /// A template.
        value: String,
    },
    /// Another line.
    Append {
        /// The header.
        name: String,
        /// A template.
        value: String,
    },
    /// Remove every line.
    Delete {
        /// The header.
        name: String,
    },
    /// Move every line to `to`.
    Rename {
        /// The header.
        name: String,
        /// Its new name.
        to: String,
    },
}

/// A body rule as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyRuleConfig {
    /// The verb and its fields.
    #[serde(flatten)]
    pub verb: BodyVerbConfig,
    /// When it applies. Default: always.
    #[serde(default)]
    pub when: WhenConfig,
}

/// A body verb as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyVerbConfig {
    /// RFC 6902 `add`.
    Add {
        /// Where.
        path: String,
        /// What.
        #[serde(flatten)]
        value: ValueConfig,
    },
    /// RFC 6902 `remove`.
    Remove {
        /// Where.
        path: String,
    },
    /// RFC 6902 `replace`: only if the target exists.
    Replace {
        /// Where.
        path: String,
        /// What.
        #[serde(flatten)]
        value: ValueConfig,
    },
    /// RFC 6902 `move`.
    #[serde(alias = "rename")]
    Move {
        /// From where.
        from: String,
        /// To where.
        path: String,
    },
    /// RFC 6902 `copy`.
    Copy {
        /// From where.
        from: String,
        /// To where.
        path: String,
    },
    /// RFC 6902 `test`.
    Test {
        /// Where.
        path: String,
        /// The value expected.
        #[serde(flatten)]
        value: ValueConfig,
    },
    /// Create or overwrite, making missing parents.
    Set {
        /// Where.
        path: String,
        /// What.
        #[serde(flatten)]
        value: ValueConfig,
    },
    /// Remove if present.
    Delete {
        /// Where.
        path: String,
    },
    /// Add at the end of an array.
    Append {
        /// Where.
        path: String,
        /// What.
        #[serde(flatten)]
        value: ValueConfig,
        /// Wrap a value that is not an array. Default false.
        #[serde(default)]
        promote: bool,
    },
    /// Add at the start of an array.
    Prepend {
        /// Where.
        path: String,
        /// What.
        #[serde(flatten)]
        value: ValueConfig,
        /// Wrap a value that is not an array. Default false.
        #[serde(default)]
        promote: bool,
    },
    /// Keep only these paths.
    Allow {
        /// The paths kept.
        paths: Vec<String>,
    },
    /// Remove these paths.
    Deny {
        /// The paths removed.
        paths: Vec<String>,
    },
}

/// The value of a body rule: a JSON literal (`value`), or a template over the request
/// (`template`, as in header rules) whose rendering is written as a JSON string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueConfig {
    /// A JSON literal.
    Value(Value),
    /// A template rendered for each request.
    Template(String),
}

/// A condition as written; every field set must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhenConfig {
    /// One of these methods.
    pub methods: Vec<String>,
    /// A path under this prefix.
    pub path_prefix: Option<String>,
    /// A glob the path matches: `*` within a segment, `**` across segments.
    pub path_glob: Option<String>,
    /// A request header present (and equal to `value` if given).
    pub header: Option<HeaderCondition>,
    /// The message's content type.
    pub content_type: Option<String>,
    /// Response rules: one of these statuses.
    pub statuses: Vec<u16>,
}

/// A header condition as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    /// The header.
    pub name: String,
    /// Its value, if it must have one.
    pub value: Option<String>,
}

fn invalid(field: &'static str, index: usize, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(field, format!("rule {index}: {reason}"))
}

impl WhenConfig {
    fn build(&self, field: &'static str, index: usize) -> Result<When, ConfigError> {
        let methods = self
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| invalid(field, index, format!("not a method: {m:?}")))
            })
            .collect::<Result<_, _>>()?;
        let statuses = self
            .statuses
            .iter()
            .map(|&s| {
                StatusCode::from_u16(s)
                    .map_err(|_| invalid(field, index, format!("not a status: {s}")))
            })
            .collect::<Result<_, _>>()?;
        let header = match &self.header {
            Some(condition) => Some((
                parse_name(&condition.name).map_err(|e| invalid(field, index, e))?,
                condition.value.clone(),
            )),
            None => None,
        };
        let path_glob = match &self.path_glob {
            Some(glob) => Some(PathGlob::new(glob).map_err(|e| invalid(field, index, e))?),
            None => None,
        };
        Ok(When {
            methods,
            path_prefix: self.path_prefix.clone(),
            path_glob,
            header,
            content_type: self.content_type.clone(),
            statuses,
        })
    }
}

impl HeaderRuleConfig {
    pub(crate) fn build(
        &self,
        field: &'static str,
        index: usize,
    ) -> Result<(When, HeaderRule), ConfigError> {
        let template = |value: &str| Template::parse(value).map_err(|e| invalid(field, index, e));
        let (name, verb) = match &self.verb {
            HeaderVerbConfig::Add { name, value } => (name, HeaderVerb::Add(template(value)?)),
            HeaderVerbConfig::Set { name, value } => (name, HeaderVerb::Set(template(value)?)),
            HeaderVerbConfig::Append { name, value } => {
                (name, HeaderVerb::Append(template(value)?))
            }
            HeaderVerbConfig::Delete { name } => (name, HeaderVerb::Delete),
            HeaderVerbConfig::Rename { name, to } => (
                name,
                HeaderVerb::Rename(parse_name(to).map_err(|e| invalid(field, index, e))?),
            ),
        };
        let rule = HeaderRule::new(name, verb, self.allow_protected)
            .map_err(|e| invalid(field, index, e))?;
        Ok((self.when.build(field, index)?, rule))
    }
}

impl HeaderRuleConfig {
    pub(crate) fn build_query(
        &self,
        field: &'static str,
        index: usize,
    ) -> Result<(When, QueryRule), ConfigError> {
        let template = |value: &str| Template::parse(value).map_err(|e| invalid(field, index, e));
        let (name, verb) = match &self.verb {
            HeaderVerbConfig::Add { name, value } => (name, QueryVerb::Add(template(value)?)),
            HeaderVerbConfig::Set { name, value } => (name, QueryVerb::Set(template(value)?)),
            HeaderVerbConfig::Append { name, value } => (name, QueryVerb::Append(template(value)?)),
            HeaderVerbConfig::Delete { name } => (name, QueryVerb::Delete),
            HeaderVerbConfig::Rename { name, to } => (name, QueryVerb::Rename(to.clone())),
        };
        let rule = QueryRule {
            name: name.clone(),
            verb,
        };
        Ok((self.when.build(field, index)?, rule))
    }
}

impl BodyRuleConfig {
    pub(crate) fn build(
        &self,
        field: &'static str,
        index: usize,
    ) -> Result<(When, BodyStep), ConfigError> {
        let path = |text: &str| Path::parse(text).map_err(|e| invalid(field, index, e));
        let rule = match &self.verb {
            BodyVerbConfig::Add { path: p, value } => BodyRule::Patch(Operation::Add {
                path: path(p)?,
                value: value.literal(),
            }),
            BodyVerbConfig::Remove { path: p } => {
                BodyRule::Patch(Operation::Remove { path: path(p)? })
            }
            BodyVerbConfig::Replace { path: p, value } => BodyRule::Patch(Operation::Replace {
                path: path(p)?,
                value: value.literal(),
            }),
            BodyVerbConfig::Move { from, path: p } => BodyRule::Patch(Operation::Move {
                from: path(from)?,
                path: path(p)?,
            }),
            BodyVerbConfig::Copy { from, path: p } => BodyRule::Patch(Operation::Copy {
                from: path(from)?,
                path: path(p)?,
            }),
            BodyVerbConfig::Test { path: p, value } => BodyRule::Patch(Operation::Test {
                path: path(p)?,
                value: value.literal(),
            }),
            BodyVerbConfig::Set { path: p, value } => BodyRule::Set {
                path: path(p)?,
                value: value.literal(),
            },
            BodyVerbConfig::Delete { path: p } => BodyRule::Delete { path: path(p)? },
            BodyVerbConfig::Append {
                path: p,
                value,
                promote,
            } => BodyRule::Append {
                path: path(p)?,
                value: value.literal(),
                promote: *promote,
            },
            BodyVerbConfig::Prepend {
                path: p,
                value,
                promote,
            } => BodyRule::Prepend {
                path: path(p)?,
                value: value.literal(),
                promote: *promote,
            },
            BodyVerbConfig::Allow { paths } => BodyRule::Allow {
                paths: paths.iter().map(|p| path(p)).collect::<Result<_, _>>()?,
            },
            BodyVerbConfig::Deny { paths } => BodyRule::Deny {
                paths: paths.iter().map(|p| path(p)).collect::<Result<_, _>>()?,
            },
        };
        let step = match self.verb.value() {
            Some(ValueConfig::Template(text)) => BodyStep::templated(
                rule,
                Template::parse(text).map_err(|e| invalid(field, index, e))?,
            ),
            _ => BodyStep::from(rule),
        };
        Ok((self.when.build(field, index)?, step))
    }
}

impl BodyVerbConfig {
    fn value(&self) -> Option<&ValueConfig> {
        match self {
            BodyVerbConfig::Add { value, .. }
            | BodyVerbConfig::Replace { value, .. }
            | BodyVerbConfig::Test { value, .. }
            | BodyVerbConfig::Set { value, .. }
            | BodyVerbConfig::Append { value, .. }
            | BodyVerbConfig::Prepend { value, .. } => Some(value),
            _ => None,
        }
    }
}

impl ValueConfig {
    /// The literal; a template's place holder until it is rendered.
    fn literal(&self) -> Value {
        match self {
            ValueConfig::Value(value) => value.clone(),
            ValueConfig::Template(_) => Value::Null,
        }
    }
}

/// `text` as a URL for `field`'s rule `index`.
fn url(field: &'static str, index: usize, text: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|e| invalid(field, index, format!("{text:?} is not a URL: {e}")))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(invalid(
            field,
            index,
            format!("{text:?} is not an absolute URL"),
        ));
    }
    Ok(uri)
}

fn needs_client(field: &'static str, index: usize) -> ConfigError {
    invalid(
        field,
        index,
        "a URL needs a client: build the layer with TransformLayer::from_config_with_client",
    )
}

impl EnrichConfig {
    pub(crate) fn build(
        &self,
        field: &'static str,
        index: usize,
        client: Option<&Client>,
    ) -> Result<(When, Enrichment), ConfigError> {
        let mut enrichment = Enrichment::new(self.data.clone()).on_failure(self.on_failure);
        if let Some(text) = &self.from_url {
            let client = client.ok_or_else(|| needs_client(field, index))?;
            enrichment = enrichment.from_url(url(field, index, text)?, client.clone());
        }
        if let Some(target) = &self.target {
            enrichment =
                enrichment.target(Path::parse(target).map_err(|e| invalid(field, index, e))?);
        }
        if let Some(timeout) = self.timeout {
            enrichment = enrichment.timeout(timeout);
        }
        if let Some(ttl) = self.keep_answer_for {
            enrichment = enrichment.keep_answer_for(ttl);
        }
        Ok((self.when.build(field, index)?, enrichment))
    }
}

impl AggregateConfig {
    pub(crate) fn build(
        &self,
        field: &'static str,
        index: usize,
        client: Option<&Client>,
    ) -> Result<(When, Aggregation), ConfigError> {
        let client = client.ok_or_else(|| needs_client(field, index))?;
        if self.backends.is_empty() {
            return Err(invalid(field, index, "no backends"));
        }
        let backends = self
            .backends
            .iter()
            .map(|backend| Ok((backend.name.clone(), url(field, index, &backend.url)?)))
            .collect::<Result<_, ConfigError>>()?;
        let mut aggregation = Aggregation::new(backends, client.clone()).combine(self.combine);
        if let Some(timeout) = self.timeout {
            aggregation = aggregation.timeout(timeout);
        }
        if let Some(max) = self.max_concurrent {
            if max == 0 {
                return Err(invalid(field, index, "max_concurrent: at least 1"));
            }
            aggregation = aggregation.max_concurrent(max);
        }
        Ok((self.when.build(field, index)?, aggregation))
    }
}
