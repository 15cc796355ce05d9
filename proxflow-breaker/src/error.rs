//! Errors.

use std::fmt;
use std::time::Duration;

use crate::machine::State;

/// A configuration the breaker cannot run with. Each variant names the field.
#[derive(Debug, thiserror::Error)]
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

/// The error of the generic (non-HTTP) form: the breaker's refusal, its timeout, or the inner
/// service's own error.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// Not called: the breaker refused.
    Open {
        /// When asking again makes sense.
        retry_after: Duration,
        /// The state that refused (open, half-open with its probes out, ramp-up, forced open).
        state: State,
    },
    /// The call ran longer than `timeout`; it was dropped and counted as a failure.
    Timeout(Duration),
    /// The inner service failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { retry_after, state } => write!(
                f,
                "circuit breaker refused the call ({state:?}); retry after {retry_after:?}"
            ),
            BreakerError::Timeout(after) => write!(f, "call timed out after {after:?}"),
            BreakerError::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Inner(error) => Some(error),
            _ => None,
        }
    }
}
