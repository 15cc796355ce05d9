//! [`TransformLayer`]: the rules, each with its condition, and the limits of body buffering.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};
use tower_layer::Layer;

use proxflow_core::ConfigError;

use crate::aggregate::Aggregation;
use crate::client::Client;
use crate::config::TransformConfig;
use crate::enrich::Enrichment;
use crate::headers::{HeaderRule, Template};
use crate::query::QueryRule;
use crate::rules::BodyStep;
use crate::service::Transform;

/// When a rule applies; every condition set must hold (none set: always).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    /// One of these methods.
    pub methods: Vec<Method>,
    /// A path starting with this (at a segment boundary: `/api` covers `/api` and `/api/x`,
    /// not `/apix`).
    pub path_prefix: Option<String>,
    /// A path matching this glob.
    pub path_glob: Option<PathGlob>,
    /// A request header present, and equal to the value if one is given.
    pub header: Option<(http::HeaderName, Option<String>)>,
    /// The message's content type (its essence, without parameters), case-insensitive.
    pub content_type: Option<String>,
    /// Response rules: one of these statuses.
    pub statuses: Vec<StatusCode>,
}

impl When {
    /// Always.
    pub fn always() -> When {
        When::default()
    }

    /// Whether it holds for a request (and, for response rules, its response's status and
    /// headers).
    pub(crate) fn holds(
        &self,
        method: &Method,
        uri: &Uri,
        request_headers: &HeaderMap,
        message_headers: &HeaderMap,
        status: Option<StatusCode>,
    ) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        if let Some(prefix) = &self.path_prefix {
            let prefix = prefix.trim_end_matches('/');
            let path = uri.path();
            let under = path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return false;
            }
        }
        if let Some(glob) = &self.path_glob {
            if !glob.matches(uri.path()) {
                return false;
            }
        }
        if let Some((name, expected)) = &self.header {
            let Some(value) = request_headers.get(name) else {
                return false;
            };
            if expected
                .as_ref()
                .is_some_and(|e| value.as_bytes() != e.as_bytes())
            {
                return false;
            }
        }
        if let Some(content_type) = &self.content_type {
            if !essence(message_headers).eq_ignore_ascii_case(content_type) {
                return false;
            }
        }
        if !self.statuses.is_empty() && !status.is_some_and(|s| self.statuses.contains(&s)) {
            return false;
        }
        true
    }
}

/// A glob over request paths: `*` matches within one segment (`/api/*/orders` covers
/// `/api/7/orders`, not `/api/7/8/orders`), `**` across segments (`/api/**` covers everything
/// under `/api`), `?` one character, `[a-z]` and `{a,b}` as in a shell. The path is matched as
/// it came, percent-encoded.
#[derive(Debug, Clone)]
pub struct PathGlob {
    glob: globset::Glob,
    matcher: globset::GlobMatcher,
}

impl PathGlob {
    /// Parses a glob; the error says what is wrong with it.
    pub fn new(glob: &str) -> Result<PathGlob, globset::Error> {
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()?;
        Ok(PathGlob {
            matcher: glob.compile_matcher(),
            glob,
        })
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }
}

impl PartialEq for PathGlob {
    fn eq(&self, other: &Self) -> bool {
        self.glob == other.glob
    }
}

impl Eq for PathGlob {}

/// The content type of a message without its parameters (`application/json`), or `""`.
pub(crate) fn essence(headers: &HeaderMap) -> &str {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map_or("", str::trim)
}

/// The rules of one layer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rules {
    pub(crate) request_headers: Vec<(When, HeaderRule)>,
    pub(crate) request_query: Vec<(When, QueryRule)>,
    pub(crate) response_headers: Vec<(When, HeaderRule)>,
    pub(crate) request_body: Vec<(When, BodyStep)>,
    pub(crate) response_body: Vec<(When, BodyStep)>,
    pub(crate) request_enrich: Vec<(When, Enrichment)>,
    pub(crate) aggregations: Vec<(When, Aggregation)>,
    pub(crate) response_enrich: Vec<(When, Enrichment)>,
    pub(crate) max_body_size: usize,
    pub(crate) decode_content: bool,
    pub(crate) pass_large_requests: bool,
    /// Whether a condition or a template reads the request's headers, which the layer then
    /// copies as they came (the rules change them on the way).
    pub(crate) reads_request_headers: bool,
}

impl Rules {
    /// Whether no rule reads a body or answers for the inner service.
    pub(crate) fn headers_only(&self) -> bool {
        self.request_body.is_empty()
            && self.response_body.is_empty()
            && self.request_enrich.is_empty()
            && self.response_enrich.is_empty()
            && self.aggregations.is_empty()
    }
}

/// Header and JSON body transforms of requests and responses.
///
/// Rules run in the order they were added, each when its [`When`] holds. Header rules run
/// first, then body rules, which apply to JSON bodies (`application/json` or `+json`, without
/// a `Content-Encoding`) as one set: all of them or, if one fails, none (the body passes
/// unchanged and a warning is logged). A body is read only when a body rule applies, and at
/// most [`max_body_size`](Self::max_body_size) of it is held: a larger request body gets 413
/// (or passes untouched, [`pass_large_requests`](Self::pass_large_requests)), a larger
/// response body passes untouched. A request body that is not valid JSON gets 400
/// with an RFC 9457 problem; a response body that is not passes unchanged, with a warning.
/// A rewritten body gets its `Content-Length`, and a strong `ETag` is weakened (it no longer
/// names these bytes).
#[derive(Clone, Debug)]
pub struct TransformLayer {
    rules: Arc<Rules>,
}

impl TransformLayer {
    /// No rules; bodies up to 1 MiB are read when a body rule applies.
    pub fn new() -> Self {
        TransformLayer {
            rules: Arc::new(Rules {
                max_body_size: 1 << 20,
                ..Rules::default()
            }),
        }
    }

    /// This layer's rules, copied first if a clone or a service shares them: a builder call
    /// changes this layer only.
    /// A layer from a configuration; the error names the field (and the rule's position).
    /// Enrichment URLs and aggregations need a client: a configuration with them is refused
    /// here and built by [`from_config_with_client`](Self::from_config_with_client).
    pub fn from_config(config: &TransformConfig) -> Result<Self, ConfigError> {
        Self::build(config, None)
    }

    /// A layer from a configuration whose enrichment URLs and aggregation backends are
    /// fetched through `client`.
    pub fn from_config_with_client(
        config: &TransformConfig,
        client: Client,
    ) -> Result<Self, ConfigError> {
        Self::build(config, Some(&client))
    }

    fn build(config: &TransformConfig, client: Option<&Client>) -> Result<Self, ConfigError> {
        let mut layer = TransformLayer::new();
        if let Some(bytes) = config.max_body_size {
            if bytes == 0 {
                return Err(ConfigError::new("max_body_size", "at least 1 byte"));
            }
            layer = layer.max_body_size(bytes);
        }
        layer = layer
            .decode_content(config.decode_content)
            .pass_large_requests(config.pass_large_requests);
        for (index, rule) in config.request.headers.iter().enumerate() {
            let (when, rule) = rule.build("request.headers", index)?;
            layer = layer.request_header(rule, when);
        }
        for (index, rule) in config.request.query.iter().enumerate() {
            let (when, rule) = rule.build_query("request.query", index)?;
            layer = layer.request_query(rule, when);
        }
        if !config.response.query.is_empty() {
            return Err(ConfigError::new(
                "response.query",
                "query rules apply to requests only",
            ));
        }
        for (index, rule) in config.response.headers.iter().enumerate() {
            let (when, rule) = rule.build("response.headers", index)?;
            layer = layer.response_header(rule, when);
        }
        for (index, rule) in config.request.body.iter().enumerate() {
            let (when, rule) = rule.build("request.body", index)?;
            layer = layer.request_body(rule, when);
        }
        for (index, rule) in config.response.body.iter().enumerate() {
            let (when, rule) = rule.build("response.body", index)?;
            layer = layer.response_body(rule, when);
        }
        for (index, enrichment) in config.request.enrich.iter().enumerate() {
            let (when, enrichment) = enrichment.build("request.enrich", index, client)?;
            layer = layer.request_enrich(enrichment, when);
        }
        for (index, enrichment) in config.response.enrich.iter().enumerate() {
            let (when, enrichment) = enrichment.build("response.enrich", index, client)?;
            layer = layer.response_enrich(enrichment, when);
        }
        for (index, aggregation) in config.aggregate.iter().enumerate() {
            let (when, aggregation) = aggregation.build("aggregate", index, client)?;
            layer = layer.aggregate(aggregation, when);
        }
        Ok(layer)
    }

    fn rules(&mut self) -> &mut Rules {
        Arc::make_mut(&mut self.rules)
    }

    /// The rules, noting whether `when` or `template` reads the request's headers.
    fn rules_reading(&mut self, when: &When, template: Option<&Template>) -> &mut Rules {
        let rules = self.rules();
        rules.reads_request_headers |=
            when.header.is_some() || template.is_some_and(Template::reads_headers);
        rules
    }

    /// A header rule on requests, when `when` holds.
    pub fn request_header(mut self, rule: HeaderRule, when: When) -> Self {
        self.rules_reading(&when, rule.template())
            .request_headers
            .push((when, rule));
        self
    }

    /// A query rule on requests, when `when` holds.
    pub fn request_query(mut self, rule: QueryRule, when: When) -> Self {
        self.rules_reading(&when, rule.template())
            .request_query
            .push((when, rule));
        self
    }

    /// A header rule on responses, when `when` holds (over the request and the response).
    pub fn response_header(mut self, rule: HeaderRule, when: When) -> Self {
        self.rules_reading(&when, rule.template())
            .response_headers
            .push((when, rule));
        self
    }

    /// A body rule on JSON request bodies: a [`BodyRule`](crate::rules::BodyRule), or a [`BodyStep`](crate::rules::BodyStep) whose value is
    /// a template over the request.
    pub fn request_body(mut self, rule: impl Into<BodyStep>, when: When) -> Self {
        let step = rule.into();
        self.rules_reading(&when, step.template())
            .request_body
            .push((when, step));
        self
    }

    /// A body rule on JSON response bodies, as [`request_body`](Self::request_body).
    pub fn response_body(mut self, rule: impl Into<BodyStep>, when: When) -> Self {
        let step = rule.into();
        self.rules_reading(&when, step.template())
            .response_body
            .push((when, step));
        self
    }

    /// An enrichment of JSON request bodies, after the body rules.
    pub fn request_enrich(mut self, enrichment: Enrichment, when: When) -> Self {
        self.rules_reading(&when, None)
            .request_enrich
            .push((when, enrichment));
        self
    }

    /// An enrichment of JSON response bodies, after the body rules.
    pub fn response_enrich(mut self, enrichment: Enrichment, when: When) -> Self {
        self.rules_reading(&when, None)
            .response_enrich
            .push((when, enrichment));
        self
    }

    /// Answers the requests for which `when` holds by `aggregation`, without calling the
    /// inner service (the first that holds, in the order added).
    pub fn aggregate(mut self, aggregation: Aggregation, when: When) -> Self {
        self.rules_reading(&when, None)
            .aggregations
            .push((when, aggregation));
        self
    }

    /// Whether JSON bodies in `gzip`, `deflate`, `br` or `zstd` are decoded for the body
    /// rules and encoded again in the same coding (feature `compression`). Default `false`:
    /// they pass untouched. Decoding stops at [`max_body_size`](Self::max_body_size) decoded
    /// bytes (a larger request gets 413, a larger response passes untouched); a request body
    /// that is not valid in its coding gets 400.
    pub fn decode_content(mut self, decode: bool) -> Self {
        self.rules().decode_content = decode;
        self
    }

    /// Whether a request body over [`max_body_size`](Self::max_body_size) goes on untouched
    /// (the bytes read so far, then the rest as it streams) instead of getting 413. Default
    /// `false`: 413, as nginx answers past `client_max_body_size`. A response body over the
    /// limit always passes untouched.
    pub fn pass_large_requests(mut self, pass: bool) -> Self {
        self.rules().pass_large_requests = pass;
        self
    }

    /// The most bytes of a body held to transform it. Default 1 MiB.
    ///
    /// # Panics
    ///
    /// If `bytes` is 0.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "TransformLayer::max_body_size: at least 1 byte");
        self.rules().max_body_size = bytes;
        self
    }
}

impl Default for TransformLayer {
    fn default() -> Self {
        TransformLayer::new()
    }
}

impl<S> Layer<S> for TransformLayer {
    type Service = Transform<S>;

    fn layer(&self, inner: S) -> Transform<S> {
        Transform::new(inner, Arc::clone(&self.rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(when: &When, path: &str) -> bool {
        let uri: Uri = path.parse().unwrap();
        let headers = HeaderMap::new();
        when.holds(&Method::GET, &uri, &headers, &headers, None)
    }

    #[test]
    fn a_path_glob_keeps_star_within_a_segment() {
        let when = |glob: &str| When {
            path_glob: Some(PathGlob::new(glob).unwrap()),
            ..When::always()
        };
        let one = when("/api/*/orders");
        assert!(holds(&one, "/api/7/orders"));
        assert!(
            holds(&one, "/api/7/orders?page=2"),
            "the query is not the path"
        );
        assert!(!holds(&one, "/api/7/8/orders"));
        assert!(!holds(&one, "/api/orders"));
        let deep = when("/api/**");
        assert!(holds(&deep, "/api/7/8/orders"));
        assert!(!holds(&deep, "/apix/7"));
        let alternatives = when("/{users,teams}/*.json");
        assert!(holds(&alternatives, "/teams/7.json"));
        assert!(!holds(&alternatives, "/groups/7.json"));
        assert!(PathGlob::new("/api/[").is_err());
    }

    #[test]
    fn a_path_prefix_ends_at_a_segment_boundary() {
        let when = When {
            path_prefix: Some("/api/".into()),
            ..When::always()
        };
        assert!(holds(&when, "/api"));
        assert!(holds(&when, "/api/x"));
        assert!(!holds(&when, "/apix"));
    }
}
