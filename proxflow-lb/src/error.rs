//! What the balancer's own answers carry in their extensions.

use std::sync::Arc;

/// In the extensions of a 502 the balancer answered, and of a 503 after refused connections:
/// the upstream and the client's error.
#[derive(Debug, Clone)]
pub struct UpstreamFailed {
    /// `scheme://authority` of the upstream that failed last.
    pub upstream: Arc<str>,
    /// Upstreams tried, in order.
    pub tried: Vec<Arc<str>>,
    /// The client's error.
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

/// In the extensions of a 503 the balancer answered: no upstream could take the request (none
/// was available, or each one tried refused the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoUpstream;
