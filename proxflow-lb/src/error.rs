//! Errors.

use std::sync::Arc;

/// A configuration the balancer cannot run with. Each variant names the field.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value outside what it allows.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as named in the serde config.
        field: &'static str,
        /// What is allowed.
        reason: String,
    },
}

/// In the extensions of a 502 the balancer answered: the upstream and the client's error.
#[derive(Debug, Clone)]
pub struct UpstreamFailed {
    /// `scheme://authority` of the upstream that failed last.
    pub upstream: Arc<str>,
    /// Upstreams tried, in order.
    pub tried: Vec<Arc<str>>,
    /// The client's error.
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

/// In the extensions of a 503 the balancer answered: no upstream could take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoUpstream;
